"""The pre-send compliance gate over HTTP: ``warroom gate serve``.

A chat plug-in or CRM posts a draft to ``POST /v1/drafts`` and gets the verdict in the
same response. The gate judges with the policies of the bundles the workers run: it
follows the rules topics the way a worker does (streams.rules_feed), writing nothing, so
a new policy version applies here within about a second and a refused one never does;
then it
appends the verdict to ``message-drafts`` and answers once the broker has it. The worker
owning the customer's partition records it on ``compliance-verdicts`` and in the audit
chain, once per draft id, in its exactly-once transaction: the rep is told exactly what
is recorded, and a retried request is recorded once.

``POST /v1/drafts/{draft_id}/reviews`` takes a manager's confirmation, override or
rejection the same way. With ``WARROOM_GATE_TOKEN`` set, both need
``Authorization: Bearer <token>``. The gate holds no state: run as many as needed.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import socket
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp import web
from aiokafka import AIOKafkaProducer
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from pydantic import ValidationError

from engine.builtin import BUILTIN_BUNDLE
from engine.compliance import mask_pii
from engine.rulebook import RuleBook
from schemas.codec import compliance_verdict_codec, draft_review_codec
from schemas.models import ComplianceVerdict, DraftReview, MessageDraft
from schemas.partitioning import customer_partition
from schemas.topics import MESSAGE_DRAFTS

from .kafka_security import client_options
from .metrics import LATENCY_BUCKETS
from .rules_feed import follow_rules
from .settings import Settings
from .verdicts import decide

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 256 * 1024
VERDICT_HEADER = "X-Warroom-Verdict"
Clock = Callable[[], datetime]


class Gate:
    """The gate's parts: the policies it judges with and where verdicts go."""

    def __init__(
        self,
        rulebook: RuleBook,
        publish: Callable[[int, bytes, bytes], Awaitable[None]],
        partitions: int,
        name: str,
        token: str | None = None,
        clock: Clock = lambda: datetime.now(UTC),
    ) -> None:
        self.rulebook = rulebook
        self.publish = publish
        self.partitions = partitions
        self.name = name
        self.token = token
        self.clock = clock
        self.ready = False
        self.registry = CollectorRegistry(auto_describe=True)
        self.decision_seconds = Histogram(
            "warroom_gate_decision_seconds",
            "From a draft's arrival to its answer: judging it and recording the verdict on "
            "Kafka, by verdict (or error).",
            ["verdict"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )

    def verdict(self, draft: MessageDraft) -> ComplianceVerdict:
        return decide(self.rulebook.policies, draft, self.clock(), f"gate:{self.name}")

    async def record(self, customer_id: str, value: bytes) -> None:
        partition = customer_partition(customer_id, self.partitions)
        await self.publish(partition, customer_id.encode(), value)


def create_gate_app(gate: Gate) -> web.Application:
    app = web.Application(client_max_size=MAX_BODY_BYTES)

    async def drafts(request: web.Request) -> web.Response:
        started = time.perf_counter()
        response = await judge_draft(request)
        outcome = response.headers.get(VERDICT_HEADER, "error")
        gate.decision_seconds.labels(outcome).observe(time.perf_counter() - started)
        return response

    async def judge_draft(request: web.Request) -> web.Response:
        refused = _refused(request, gate.token)
        if refused is not None:
            return refused
        body = await _json(request)
        if isinstance(body, web.Response):
            return body
        if isinstance(body, dict):
            body.setdefault("created_at", gate.clock().isoformat())
        try:
            draft = MessageDraft.model_validate(body)
        except ValidationError as exc:
            return _problems(exc)
        verdict = gate.verdict(draft)
        try:
            await gate.record(draft.customer_id, compliance_verdict_codec().encode(verdict))
        except Exception as exc:  # the broker did not take it: the client retries
            log.warning("gate: verdict for a draft not recorded: %s", type(exc).__name__)
            return _error(503, "the verdict could not be recorded; retry the same draft")
        return web.Response(
            body=orjson.dumps(verdict.model_dump(mode="json")),
            content_type="application/json",
            headers={VERDICT_HEADER: verdict.verdict.value},
        )

    async def reviews(request: web.Request) -> web.Response:
        refused = _refused(request, gate.token)
        if refused is not None:
            return refused
        body = await _json(request)
        if isinstance(body, web.Response):
            return body
        if isinstance(body, dict):
            body["draft_id"] = request.match_info["draft_id"]
            body.setdefault("reviewed_at", gate.clock().isoformat())
            if isinstance(body.get("note"), str):
                body["note"] = mask_pii(body["note"])
        try:
            review = DraftReview.model_validate(body)
        except ValidationError as exc:
            return _problems(exc)
        try:
            await gate.record(review.customer_id, draft_review_codec().encode(review))
        except Exception as exc:
            log.warning("gate: review not recorded: %s", type(exc).__name__)
            return _error(503, "the review could not be recorded; retry the same review")
        return web.json_response({"recorded": review.review_id}, status=202)

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(gate.registry),
            content_type=CONTENT_TYPE_LATEST.split(";")[0],
        )

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(request: web.Request) -> web.Response:
        if not gate.ready:
            return _error(503, "policies not loaded yet")
        return web.json_response(
            {"status": "ready", "policies": [p.policy_id for p in gate.rulebook.policies]}
        )

    app.router.add_post("/v1/drafts", drafts)
    app.router.add_post("/v1/drafts/{draft_id}/reviews", reviews)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/readyz", readyz)
    return app


def _refused(request: web.Request, token: str | None) -> web.Response | None:
    if token is None:
        return None
    header = request.headers.get("Authorization")
    if header is None:
        return _error(401, "expected an Authorization: Bearer <token> header, found none")
    if not hmac.compare_digest(header.encode(), f"Bearer {token}".encode()):
        return _error(401, "the bearer token does not match WARROOM_GATE_TOKEN")
    return None


async def _json(request: web.Request) -> Any:
    try:
        return orjson.loads(await request.read())
    except orjson.JSONDecodeError as exc:
        return _error(400, f"expected a JSON object, found invalid JSON: {exc}")
    except web.HTTPRequestEntityTooLarge:
        return _error(413, f"expected a body of at most {MAX_BODY_BYTES:,} bytes")


def _problems(exc: ValidationError) -> web.Response:
    problems = [
        {
            "field": ".".join(str(p) for p in error["loc"]) or "(body)",
            "message": error["msg"],
        }
        for error in exc.errors(include_input=False, include_url=False)
    ]
    return web.Response(
        status=422,
        body=orjson.dumps({"error": "invalid request", "problems": problems}),
        content_type="application/json",
    )


def _error(status: int, reason: str) -> web.Response:
    return web.json_response({"error": reason}, status=status)


async def serve(settings: Settings, host: str, port: int, token: str | None) -> None:
    """Serve the gate until cancelled."""
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.bootstrap_servers,
        **client_options(settings),
        acks="all",
        enable_idempotence=True,
        linger_ms=0,
    )
    await producer.start()
    topic = settings.topic(MESSAGE_DRAFTS)

    async def publish(partition: int, key: bytes, value: bytes) -> None:
        await producer.send_and_wait(topic, value, key=key, partition=partition)

    gate = Gate(
        RuleBook(BUILTIN_BUNDLE),
        publish,
        settings.partitions,
        f"{socket.gethostname()}-{port}",
        token,
    )
    loaded = asyncio.Event()
    follower = asyncio.ensure_future(follow_rules(settings, gate.rulebook, None, loaded, None))
    runner = web.AppRunner(create_gate_app(gate), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    if token is None:
        log.warning("gate: WARROOM_GATE_TOKEN is not set; /v1/drafts answers anyone")
    print(f"compliance gate listening on http://{host}:{port}/v1/drafts", flush=True)
    started = time.monotonic()
    try:
        while not follower.done():
            await asyncio.sleep(0.2)
            gate.ready = loaded.is_set()
            if not gate.ready and time.monotonic() - started > 60:
                log.warning("gate: policies still loading after 60 s")
        follower.result()
    finally:
        follower.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await follower
        await runner.cleanup()
        await producer.stop()
