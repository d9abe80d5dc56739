"""The HTTP edge the intake connectors share: problem answers, bodies read within a
limit, JSON bodies, 503 with Retry-After, the ``/healthz`` and ``/readyz`` probes, and
a SERVER span per request when tracing is on.

Every refusal is a JSON body ``{"error": <one line>, "problems": [...]}``; each
connector says how its problems read as that one line.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import orjson
from aiohttp import web
from opentelemetry.trace import Span, SpanKind, StatusCode, Tracer

from .problems import Problem
from .publisher import PublishUnavailable, Readiness
from .tracing import extract_http

PROBES = frozenset({"/healthz", "/readyz"})
"""Paths never traced: probes every few seconds would bury the requests in spans."""

JsonDumps = Callable[[Any], str]
ErrorResponse = Callable[[int, list[Problem]], web.Response]
"""A connector's problem answer: status and problems in, response out."""


def dumps(obj: Any) -> str:
    return orjson.dumps(obj).decode()


def dumps_lenient(obj: Any) -> str:
    """As :func:`dumps`, writing what JSON has no type for (a date, a decimal) as text."""
    return orjson.dumps(obj, default=str).decode()


def problem_response(
    status: int, problems: list[Problem], error: str, encode: JsonDumps = dumps
) -> web.Response:
    return web.json_response({"error": error, "problems": problems}, status=status, dumps=encode)


def accepted(event_ids: list[str], encode: JsonDumps = dumps, **counts: int) -> web.Response:
    """202: the touchpoints published, by event id, with any other ``counts``."""
    body = {"accepted": len(event_ids), **counts, "event_ids": event_ids}
    return web.json_response(body, status=202, dumps=encode)


def too_large(limit: int) -> Problem:
    return {"field": "(body)", "message": f"expected a body of at most {limit} bytes, found more"}


async def read_body(request: web.Request, limit: int, error: ErrorResponse) -> bytes | web.Response:
    """The request body, or a 413 answer when it is longer than ``limit`` (the
    application's ``client_max_size``)."""
    try:
        return await request.read()
    except web.HTTPRequestEntityTooLarge:
        return error(413, [too_large(limit)])


def parse_json(body: bytes, error: ErrorResponse) -> Any:
    """The JSON value of ``body``, or a 400 answer (a :class:`web.Response`) naming the
    fault."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        return error(400, [{"field": "(body)", "message": f"expected JSON, found: {exc}"}])


Located = dict[str, int]
"""Where an item of a body stands: ``{"index": n}`` in a JSON list, ``{"line": n}`` in
JSON lines."""


def json_items(body: bytes, item_field: str) -> tuple[list[tuple[Any, Located]], list[Problem]]:
    """The items of a body that is one JSON value (a list is its items), or JSON lines
    (one item a line, blank lines skipped), each with where it stands; or the problems:
    ``(body)`` when it is neither, and each line that is not JSON (as ``item_field``)."""
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as whole:
        lines = [(n, line) for n, line in enumerate(body.splitlines(), start=1) if line.strip()]
        if len(lines) < 2:
            message = f"expected JSON or JSON lines, found: {whole}"
            return [], [{"field": "(body)", "message": message}]
        items: list[tuple[Any, Located]] = []
        problems: list[Problem] = []
        for number, line in lines:
            try:
                items.append((orjson.loads(line), {"line": number}))
            except orjson.JSONDecodeError as exc:
                message = f"expected JSON, found: {exc}"
                problems.append({"line": number, "field": item_field, "message": message})
        return items, problems
    listed = payload if isinstance(payload, list) else [payload]
    return [(item, {"index": n}) for n, item in enumerate(listed)], []


async def read_json(request: web.Request, limit: int, error: ErrorResponse) -> Any:
    """The JSON value of the request body, or the 413 or 400 answer (a
    :class:`web.Response`) of :func:`read_body` or :func:`parse_json`."""
    body = await read_body(request, limit, error)
    if isinstance(body, web.Response):
        return body
    return parse_json(body, error)


def with_retry_after(response: web.Response, seconds: float) -> web.Response:
    """``Retry-After`` in whole seconds, at least one."""
    response.headers["Retry-After"] = str(max(1, round(seconds)))
    return response


def unavailable(error: ErrorResponse, exc: PublishUnavailable) -> web.Response:
    """503: Kafka did not take the touchpoints now (nothing landed); retry after the
    time it names."""
    response = error(503, [{"field": "(kafka)", "message": str(exc)}])
    return with_retry_after(response, exc.retry_after_seconds)


def add_probes(
    app: web.Application,
    readiness: Callable[[], Readiness],
    *,
    counts: Callable[[], Mapping[str, Any]] = dict,
    detail: bool = False,
    encode: JsonDumps = json.dumps,
) -> None:
    """``GET /healthz``: the process is up (liveness), with ``counts``; ``GET /readyz``:
    200 when it can publish now, else 503 with the reason (with ``detail``, also the
    producer's transactional id, its recoveries and its last error)."""

    async def health(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", **counts()})

    async def ready(request: web.Request) -> web.Response:
        state = readiness()
        body: dict[str, Any] = {
            "status": "ready" if state.ready else "not ready",
            "reason": state.reason,
        }
        if detail:
            body["transactional_id"] = state.transactional_id
            body["recoveries"] = state.recoveries
            body["last_error"] = state.last_error
        return web.json_response(body, status=200 if state.ready else 503, dumps=encode)

    app.router.add_get("/healthz", health)
    app.router.add_get("/readyz", ready)


def add_tracing(app: web.Application, tracer: Tracer | None) -> None:
    """With a tracer, every request but the probes is a SERVER span, the child of the
    request's W3C ``traceparent`` when it brings a valid one; the handler runs inside it,
    so the touchpoints it publishes carry its trace. Without one, nothing is added."""
    if tracer is None:
        return

    @web.middleware
    async def traced(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in PROBES:
            return await handler(request)
        resource = request.match_info.route.resource
        route = request.path if resource is None else resource.canonical
        with tracer.start_as_current_span(
            f"{request.method} {route}",
            context=extract_http(request.headers),
            kind=SpanKind.SERVER,
            attributes={
                "http.request.method": request.method,
                "http.route": route,
                "url.path": request.path,
            },
        ) as span:
            try:
                response = await handler(request)
            except web.HTTPException as exc:
                _answered(span, exc.status)
                raise
            _answered(span, response.status)
            return response

    app.middlewares.append(traced)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _answered(span: Span, status: int) -> None:
    span.set_attribute("http.response.status_code", status)
    if status >= 500:
        span.set_status(StatusCode.ERROR)
