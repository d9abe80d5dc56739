"""Signed JSON webhooks: ``POST /v1/webhooks/{source}``, the body mapped by the source's
mapping (connectors/mapping.py) into touchpoints.

The sender signs every request with the source's shared secret::

    X-Warroom-Timestamp: 1764460800                 (Unix time, seconds)
    X-Warroom-Signature: sha256=<hex HMAC-SHA256(secret, "<timestamp>." + raw body)>

Answers: 202 published (``accepted``, ``skipped`` by the mapping's filter,
``event_ids``); 200 a request already accepted (same signature within the freshness
window: nothing is published again); 400 not JSON; 401 signature or timestamp wrong
(the body is not read further); 404 no such source; 413 body too large; 422 a record
does not map (each problem names the record and field, what was expected and found);
503 with Retry-After when Kafka did not take it now. A request is published whole or
not at all.

Event ids come from the mapping's template over the source's own fields, so a retried
webhook makes the same touchpoints, which the worker drops as repeats.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from pydantic import SecretStr

from .http import accepted, add_probes, dumps, parse_json, problem_response, read_body, unavailable
from .mapping import Mapping, RecordRejected, describe
from .problems import unencodable
from .publisher import PublishUnavailable, TouchpointSink, UnpublishableTouchpoints

log = logging.getLogger(__name__)

TIMESTAMP_HEADER = "X-Warroom-Timestamp"
SIGNATURE_HEADER = "X-Warroom-Signature"
FRESHNESS_SECONDS = 300
"""A request signed more than this long before or after now is refused."""
MAX_BODY_BYTES = 1024 * 1024
SECRET_MIN_CHARS = 16
RECENT_MAX = 100_000
"""Signatures of accepted requests kept to answer replays (bounded; oldest go first)."""

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


class BadSignature(Exception):
    """A request whose signature or timestamp does not hold; the message says why."""


@dataclass(frozen=True, slots=True)
class WebhookSource:
    """One sender: its name in the URL, its shared secret and its mapping."""

    name: str
    secret: SecretStr
    mapping: Mapping

    def __post_init__(self) -> None:
        if len(self.secret.get_secret_value()) < SECRET_MIN_CHARS:
            raise ValueError(
                f"webhook source {self.name!r}: expected a secret of at least "
                f"{SECRET_MIN_CHARS} characters, found a shorter one"
            )


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """The ``X-Warroom-Signature`` value for a request."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return f"sha256={digest.hexdigest()}"


def verify(
    secret: str,
    timestamp: str | None,
    signed: str | None,
    body: bytes,
    now: float,
    window: float = FRESHNESS_SECONDS,
) -> None:
    """Raise BadSignature unless ``signed`` is the body's signature made within ``window``
    seconds of ``now`` (Unix seconds)."""
    if not timestamp:
        raise BadSignature(f"expected a {TIMESTAMP_HEADER} header (Unix seconds), found none")
    if not re.fullmatch(r"[0-9]{1,12}", timestamp):
        raise BadSignature(f"expected {TIMESTAMP_HEADER} as Unix seconds, found other text")
    skew = abs(now - int(timestamp))
    if skew > window:
        raise BadSignature(
            f"expected {TIMESTAMP_HEADER} within {window:g} s of now, found one {skew:.0f} s away"
        )
    if not signed or not signed.startswith("sha256=") or len(signed) != 71:
        raise BadSignature(f"expected {SIGNATURE_HEADER}: sha256=<64 hex digits>, found other")
    if not hmac.compare_digest(signed.encode(), signature(secret, timestamp, body).encode()):
        raise BadSignature(
            f"expected {SIGNATURE_HEADER} to be the HMAC-SHA256 of the timestamp and body "
            "with this source's secret, found another"
        )


class _Recent:
    """Signatures of requests accepted within the freshness window, at most RECENT_MAX."""

    def __init__(self, window: float, limit: int = RECENT_MAX) -> None:
        self._window = window
        self._limit = limit
        self._seen: OrderedDict[str, tuple[float, list[str]]] = OrderedDict()

    def get(self, key: str, now: float) -> list[str] | None:
        self._expire(now)
        found = self._seen.get(key)
        return None if found is None else found[1]

    def add(self, key: str, now: float, event_ids: list[str]) -> None:
        self._seen[key] = (now, event_ids)
        self._seen.move_to_end(key)
        while len(self._seen) > self._limit:
            self._seen.popitem(last=False)

    def _expire(self, now: float) -> None:
        while self._seen:
            at, _ = next(iter(self._seen.values()))
            if now - at <= 2 * self._window:
                return
            self._seen.popitem(last=False)


def create_webhook_app(
    sources: Sequence[WebhookSource],
    sink: TouchpointSink,
    clock: Clock = utc_now,
    window: float = FRESHNESS_SECONDS,
) -> web.Application:
    """``POST /v1/webhooks/{source}`` for each configured source; ``GET /healthz`` and
    ``GET /readyz`` as the chat connector has them."""
    by_name = {source.name: source for source in sources}
    recent = _Recent(window)
    counts = {"accepted": 0, "refused": 0}

    async def post(request: web.Request) -> web.Response:
        name = request.match_info["source"]
        source = by_name.get(name)
        if source is None:
            message = f"expected one of the configured sources ({', '.join(sorted(by_name))})"
            return _error(404, [{"field": "(source)", "message": message, "found": name[:64]}])
        body = await read_body(request, MAX_BODY_BYTES, _error)
        if isinstance(body, web.Response):
            return body
        now = clock()
        signed = request.headers.get(SIGNATURE_HEADER)
        try:
            verify(
                source.secret.get_secret_value(),
                request.headers.get(TIMESTAMP_HEADER),
                signed,
                body,
                now.timestamp(),
                window,
            )
        except BadSignature as bad:
            counts["refused"] += 1
            log.warning("webhook %s: refused: %s", name, bad)
            return _error(401, [{"field": "(signature)", "message": str(bad)}])
        assert signed is not None
        replayed = recent.get(f"{name} {signed}", time.monotonic())
        if replayed is not None:
            return web.json_response(
                {"accepted": 0, "duplicate": True, "event_ids": replayed}, dumps=dumps
            )
        payload = parse_json(body, _error)
        if isinstance(payload, web.Response):
            return payload
        try:
            mapped = source.mapping.map_body(payload, now)
        except RecordRejected as rejected:
            log.info(
                "webhook %s: %d problem(s): %s",
                name,
                len(rejected.problems),
                "; ".join(describe(p) for p in rejected.problems[:5]),
            )
            return _error(422, rejected.problems)
        try:
            await sink.publish(mapped.events)
        except UnpublishableTouchpoints as exc:
            event_ids = [event.event_id for event in mapped.events]
            return _error(422, unencodable(event_ids, exc.problems, "(record)"))
        except PublishUnavailable as exc:
            return unavailable(_error, exc)
        event_ids = [e.event_id for e in mapped.events]
        recent.add(f"{name} {signed}", time.monotonic(), event_ids)
        counts["accepted"] += len(event_ids)
        return accepted(event_ids, skipped=mapped.skipped)

    app = web.Application(client_max_size=MAX_BODY_BYTES)
    app.router.add_post("/v1/webhooks/{source}", post)
    add_probes(app, sink.readiness, counts=lambda: counts)
    return app


def _error(status: int, problems: list[dict[str, Any]]) -> web.Response:
    return problem_response(status, problems, "; ".join(describe(p) for p in problems))
