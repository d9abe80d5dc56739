"""CRM sink: webhook retries against a real local HTTP server, delivery bookkeeping,
feedback in the worker's format, the callback endpoint."""

from __future__ import annotations

import asyncio
import random
import socket
import tracemalloc
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord

from connectors.crm_sink import (
    Backoff,
    CrmSink,
    CrmSinkSettings,
    CrmWebhook,
    Delivered,
    Feedback,
    MemoryFeedbackSink,
    Outcome,
    RecentlySent,
    Refused,
    Sent,
    Unreachable,
    create_callback_app,
    retry_after_seconds,
)
from connectors.rejects import MemoryDeadLetterSink
from schemas.codec import encode_intervention
from schemas.models import Explanation, InterventionCommand, InterventionKind, Match
from streams.analytics import Analytics

NOW = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)
TOPIC = "interventions"


def command(n: int, customer: str = "acme") -> InterventionCommand:
    return InterventionCommand(
        intervention_id=f"iv-{n}",
        customer_id=customer,
        rep_id="rep-ana",
        rule_id="deal.late-stage-silent-14d",
        rule_version=3,
        kind=InterventionKind.ALERT,
        title=f"Deal with {customer} has gone quiet",
        body="Book a next step this week.",
        due_at=NOW + timedelta(days=1),
        explanation=Explanation(
            matched=[Match(condition="absence", observed="14 days")],
            triggering_event_ids=["crm:abc"],
        ),
        created_at=NOW,
    )


# --------------------------------------------------------------------------- webhook


@dataclass
class Crm:
    """A CRM webhook answering each intervention id with the next of its scripted
    answers (then 200), and recording every request."""

    script: list[tuple[int, dict[str, str], bytes]] = field(default_factory=list)
    requests: list[tuple[str, dict[str, Any], dict[str, str]]] = field(default_factory=list)
    answered: dict[str, int] = field(default_factory=dict)

    def app(self) -> web.Application:
        async def webhook(request: web.Request) -> web.Response:
            key = request.headers.get("Idempotency-Key", "")
            self.requests.append((key, await request.json(), dict(request.headers)))
            turn = self.answered.get(key, 0)
            self.answered[key] = turn + 1
            if turn < len(self.script):
                status, headers, body = self.script[turn]
                return web.Response(status=status, headers=headers, body=body)
            return web.json_response({"status": "accepted"})

        app = web.Application()
        app.router.add_post("/hooks/interventions", webhook)
        return app


@pytest.fixture
async def crm() -> AsyncIterator[tuple[Crm, str]]:
    fake = Crm()
    server = TestServer(fake.app(), host="127.0.0.1")
    await server.start_server()
    try:
        yield fake, str(server.make_url("/hooks/interventions"))
    finally:
        await server.close()


def webhook(
    session: aiohttp.ClientSession, url: str, slept: list[float], **options: Any
) -> CrmWebhook:
    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    return CrmWebhook(session, url, sleep=sleep, rng=random.Random(7), clock=lambda: NOW, **options)


async def test_429_then_500_then_200_is_delivered_with_one_idempotency_key(
    crm: tuple[Crm, str],
) -> None:
    fake, url = crm
    fake.script = [(429, {"Retry-After": "7"}, b"slow down"), (500, {}, b"oops")]
    slept: list[float] = []
    async with aiohttp.ClientSession() as session:
        outcome = await webhook(session, url, slept, token="crm-secret").post(command(1))
    assert outcome == Delivered("accepted", 200, 3)
    assert [key for key, _, _ in fake.requests] == ["iv-1", "iv-1", "iv-1"]
    assert slept[0] >= 7.0  # Retry-After is waited at least
    assert 0.0 <= slept[1] <= 1.0  # second attempt: full jitter within base * 2
    _, body, headers = fake.requests[0]
    assert body["intervention_id"] == "iv-1" and body["customer_id"] == "acme"
    assert body["created_at"] == "2026-12-02T09:00:00Z"
    assert headers["Authorization"] == "Bearer crm-secret"
    assert headers["Content-Type"] == "application/json"


async def test_a_4xx_is_not_tried_again(crm: tuple[Crm, str]) -> None:
    fake, url = crm
    fake.script = [(422, {}, b'{"error": "unknown rep rep-ana"}')]
    slept: list[float] = []
    async with aiohttp.ClientSession() as session:
        outcome = await webhook(session, url, slept).post(command(1))
    assert isinstance(outcome, Refused)
    assert outcome.http_status == 422 and outcome.attempts == 1
    assert outcome.detail.startswith("expected a 2xx answer from the CRM, found 422")
    assert "unknown rep rep-ana" in outcome.detail
    assert len(fake.requests) == 1 and slept == []


async def test_a_redirect_is_refused_not_followed(crm: tuple[Crm, str]) -> None:
    fake, url = crm
    fake.script = [(301, {"Location": "http://elsewhere.example/"}, b"")]
    async with aiohttp.ClientSession() as session:
        outcome = await webhook(session, url, []).post(command(1))
    assert isinstance(outcome, Refused) and outcome.http_status == 301


@pytest.mark.parametrize("code", [408, 409, 502, 503])
async def test_answers_worth_another_try(crm: tuple[Crm, str], code: int) -> None:
    fake, url = crm
    fake.script = [(code, {}, b"")]
    async with aiohttp.ClientSession() as session:
        outcome = await webhook(session, url, []).post(command(1))
    assert outcome == Delivered("accepted", 200, 2)


async def test_the_status_the_crm_answers_is_the_feedback(crm: tuple[Crm, str]) -> None:
    fake, url = crm
    fake.script = [(201, {}, b'{"status": "done"}')]
    async with aiohttp.ClientSession() as session:
        hook = webhook(session, url, [])
        assert await hook.post(command(1)) == Delivered("done", 201, 1)
        fake.script = [(204, {}, b"")]
        assert await hook.post(command(2)) == Delivered("accepted", 204, 1)


async def test_a_huge_answer_is_not_read_whole() -> None:
    async def endless(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(status=200)
        await response.prepare(request)
        chunk = b'{"status": "done", "padding": "' + b"x" * 65_536
        for _ in range(320):  # 20 MiB
            try:
                await response.write(chunk)
            except ConnectionError:  # the sink stopped reading: fine
                break
        return response

    app = web.Application()
    app.router.add_post("/", endless)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    tracemalloc.start()
    try:
        async with aiohttp.ClientSession() as session:
            outcome = await webhook(session, str(server.make_url("/")), []).post(command(1))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        await server.close()
    assert outcome == Delivered("accepted", 200, 1)  # not JSON once cut: counts as accepted
    assert peak < 4 * 1024 * 1024, f"{peak} bytes held to read the answer"


async def test_no_answer_at_all_gives_up_after_max_attempts() -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    slept: list[float] = []
    async with aiohttp.ClientSession() as session:
        hook = webhook(session, f"http://127.0.0.1:{port}/", slept, max_attempts=3)
        outcome = await hook.post(command(1))
    assert isinstance(outcome, Unreachable)
    assert outcome.attempts == 3 and len(slept) == 2
    assert outcome.detail.startswith("expected a 2xx answer within 3 attempts, found: no answer")
    assert hook.retries == {"connection": 2}


def test_retry_after_in_seconds_or_as_an_http_date() -> None:
    assert retry_after_seconds("120", NOW) == 120.0
    assert retry_after_seconds(format_datetime(NOW + timedelta(seconds=30), usegmt=True), NOW) == 30
    assert retry_after_seconds(format_datetime(NOW - timedelta(hours=1), usegmt=True), NOW) == 0
    assert retry_after_seconds("soon", NOW) is None
    assert retry_after_seconds(None, NOW) is None


def test_backoff_is_full_jitter_under_a_doubling_ceiling() -> None:
    backoff = Backoff(base=0.5, maximum=8.0, retry_after_max=60.0)
    rng = random.Random(1)
    for attempt in range(1, 12):
        ceiling = min(8.0, 0.5 * 2 ** (attempt - 1))
        delays = [backoff.delay(attempt, None, rng) for _ in range(200)]
        assert all(0 <= d <= ceiling for d in delays)
        assert max(delays) > ceiling / 2  # spread over the range, not pinned to it
    assert backoff.delay(1, 30.0, rng) == 30.0
    assert backoff.delay(1, 3600.0, rng) == 60.0


# --------------------------------------------------------------------------- the sink


def record(offset: int, value: bytes, partition: int = 0) -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord(
        topic=TOPIC,
        partition=partition,
        offset=offset,
        timestamp=0,
        timestamp_type=0,
        key=b"acme",
        value=value,
        checksum=None,
        serialized_key_size=4,
        serialized_value_size=len(value),
        headers=(),
    )


class Consumer:
    def __init__(self) -> None:
        self.commits: list[dict[TopicPartition, int]] = []

    async def getmany(
        self, *partitions: TopicPartition, timeout_ms: int = 0, max_records: int | None = None
    ) -> dict[TopicPartition, list[Any]]:
        await asyncio.sleep(0)
        return {}

    async def commit(self, offsets: dict[TopicPartition, int] | None = None) -> None:
        assert offsets is not None
        self.commits.append(offsets)


class ScriptedPoster:
    """Answers each intervention with ``answer(id)``; waits for ``gate`` before answering."""

    def __init__(self, answer: Callable[[str], Outcome] | None = None) -> None:
        self.answer = answer or (lambda _: Delivered("accepted", 200, 1))
        self.posted: list[str] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.started = asyncio.Event()
        self.in_flight = 0
        self.most_in_flight = 0

    async def post(self, command: InterventionCommand) -> Outcome:
        self.posted.append(command.intervention_id)
        self.started.set()
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await self.gate.wait()
        finally:
            self.in_flight -= 1
        return self.answer(command.intervention_id)


def sink(
    poster: ScriptedPoster, sent: RecentlySent | None = None, **options: Any
) -> tuple[CrmSink, Consumer, MemoryFeedbackSink, MemoryDeadLetterSink]:
    consumer, feedback, letters = Consumer(), MemoryFeedbackSink(), MemoryDeadLetterSink()
    crm_sink = CrmSink(
        consumer, poster, feedback, letters, sent or RecentlySent(100), clock=lambda: NOW, **options
    )
    return crm_sink, consumer, feedback, letters


def poll(*values: bytes) -> dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]:
    return {TopicPartition(TOPIC, 0): [record(10 + n, v) for n, v in enumerate(values)]}


async def test_a_poll_is_posted_fed_back_dead_lettered_then_committed() -> None:
    poster = ScriptedPoster(
        lambda key: (
            Refused(422, "expected a 2xx answer, found 422", 1)
            if key == "iv-3"
            else Delivered("accepted", 200, 1)
        )
    )
    crm_sink, consumer, feedback, letters = sink(poster)
    batch = poll(*(encode_intervention(command(n)) for n in (1, 2, 3)), b"\xc3\x01garbage")
    assert await crm_sink.handle(batch)
    assert sorted(poster.posted) == ["iv-1", "iv-2", "iv-3"]
    assert sorted(f.intervention_id for f in feedback.sent) == ["iv-1", "iv-2"]
    assert sorted((d.offset, d.reason) for d in letters.letters) == [
        (12, "crm_refused"),
        (13, "undecodable"),
    ]
    assert consumer.commits == [{TopicPartition(TOPIC, 0): 14}]
    assert crm_sink.stats.delivered == {"accepted": 2}


async def test_feedback_is_what_the_workers_feedback_counter_reads() -> None:
    crm_sink, _, feedback, _ = sink(ScriptedPoster(lambda _: Delivered("done", 200, 1)))
    await crm_sink.handle(poll(encode_intervention(command(1))))
    [written] = feedback.sent
    analytics = Analytics(worker="test")
    analytics.record_feedback(written.to_json())
    assert analytics.invalid_feedback == 0
    assert analytics.rules["deal.late-stage-silent-14d"].feedback == {"done": 1}
    assert orjson.loads(written.to_json())["customer_id"] == "acme"


async def test_the_commit_waits_for_every_answer() -> None:
    poster = ScriptedPoster()
    poster.gate.clear()
    crm_sink, consumer, _, _ = sink(poster)
    handling = asyncio.create_task(crm_sink.handle(poll(encode_intervention(command(1)))))
    for _ in range(20):
        await asyncio.sleep(0)
    assert poster.posted == ["iv-1"] and consumer.commits == []
    poster.gate.set()
    assert await handling
    assert consumer.commits == [{TopicPartition(TOPIC, 0): 11}]


async def test_posts_under_way_are_bounded() -> None:
    poster = ScriptedPoster()
    poster.gate.clear()
    crm_sink, _, _, _ = sink(poster, max_in_flight=3)
    handling = asyncio.create_task(
        crm_sink.handle(poll(*(encode_intervention(command(n)) for n in range(10))))
    )
    for _ in range(20):
        await asyncio.sleep(0)
    assert poster.in_flight == 3
    poster.gate.set()
    await handling
    assert poster.most_in_flight == 3 and len(poster.posted) == 10


async def test_what_the_feedback_topic_says_was_delivered_is_not_posted_again() -> None:
    # A previous run posted iv-1 and wrote its feedback, then died before committing.
    before = MemoryFeedbackSink()
    first, _, _, _ = sink(ScriptedPoster())
    first._feedback = before
    await first.handle(poll(encode_intervention(command(1))))
    memory = RecentlySent(100)
    assert all(memory.learn(f.to_json()) for f in before.sent)
    poster = ScriptedPoster()
    crm_sink, consumer, feedback, _ = sink(poster, memory)
    assert await crm_sink.handle(poll(*(encode_intervention(command(n)) for n in (1, 2))))
    assert poster.posted == ["iv-2"]
    assert crm_sink.stats.already_sent == 1
    assert [f.intervention_id for f in feedback.sent] == ["iv-2"]
    assert consumer.commits == [{TopicPartition(TOPIC, 0): 12}]


async def test_the_same_command_twice_in_a_poll_is_posted_once() -> None:
    poster = ScriptedPoster()
    crm_sink, _, feedback, _ = sink(poster)
    value = encode_intervention(command(1))
    await crm_sink.handle(poll(value, value))
    assert poster.posted == ["iv-1"] and len(feedback.sent) == 1


async def test_stopping_abandons_an_unfinished_poll_without_committing() -> None:
    poster = ScriptedPoster()
    poster.gate.clear()  # the CRM never answers
    crm_sink, consumer, _, _ = sink(poster, shutdown_grace_seconds=0.05)
    served = [poll(encode_intervention(command(1)))]

    async def getmany(**_: Any) -> dict[TopicPartition, list[Any]]:
        return served.pop() if served else {}

    consumer.getmany = getmany  # type: ignore[method-assign,assignment]
    stop = asyncio.Event()
    running = asyncio.create_task(crm_sink.run(stop))
    await poster.started.wait()
    stop.set()
    await running
    assert consumer.commits == []


async def test_partitions_are_given_up_only_after_the_poll_in_hand_is_committed() -> None:
    poster = ScriptedPoster()
    poster.gate.clear()
    crm_sink, consumer, _, _ = sink(poster)
    served = [poll(encode_intervention(command(1)))]

    async def getmany(**_: Any) -> dict[TopicPartition, list[Any]]:
        await asyncio.sleep(0)
        return served.pop() if served else {}

    consumer.getmany = getmany  # type: ignore[method-assign,assignment]
    stop = asyncio.Event()
    running = asyncio.create_task(crm_sink.run(stop))
    await poster.started.wait()
    revoking = asyncio.create_task(crm_sink.settle())  # what a rebalance awaits
    for _ in range(20):
        await asyncio.sleep(0)
    assert not revoking.done() and consumer.commits == []
    poster.gate.set()
    await revoking
    assert consumer.commits == [{TopicPartition(TOPIC, 0): 11}]
    stop.set()
    await running


def test_the_recently_sent_memory_is_bounded() -> None:
    memory = RecentlySent(2)
    for n in range(3):
        memory.remember(f"iv-{n}", Sent("acme", "r", 1), "accepted")
    assert "iv-0" not in memory and "iv-1" in memory and "iv-2" in memory
    assert len(memory) == 2
    assert not memory.learn(b"not json") and not memory.learn(b'{"status": "done"}')


def test_settings_refuse_what_cannot_work() -> None:
    base = dict(
        bootstrap_servers="k:9092",
        interventions_topic="interventions",
        feedback_topic="intervention-feedback",
        dlq_topic="dlq",
        partitions=4,
        group_id="crm-sink",
        webhook_url="https://crm.example/hooks",
    )
    CrmSinkSettings(**base)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="webhook_url: expected an http"):
        CrmSinkSettings(**{**base, "webhook_url": "crm.example"})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_in_flight: expected at least 1, found 0"):
        CrmSinkSettings(**base, max_in_flight=0)  # type: ignore[arg-type]
    secret = CrmSinkSettings(**base, webhook_token="s3cret-token")  # type: ignore[arg-type]
    assert "s3cret-token" not in repr(secret)


# --------------------------------------------------------------------------- callback


@pytest.fixture
async def callback() -> AsyncIterator[
    tuple[TestClient[web.Request, web.Application], MemoryFeedbackSink, RecentlySent]
]:
    feedback, memory = MemoryFeedbackSink(), RecentlySent(100)
    memory.remember("iv-1", Sent("acme", "deal.late-stage-silent-14d", 3), "accepted")
    app = create_callback_app(feedback, memory, token="cb-token", clock=lambda: NOW)
    async with TestClient(TestServer(app)) as client:
        yield client, feedback, memory


AUTH = {"Authorization": "Bearer cb-token"}


async def test_a_callback_for_a_sent_intervention_needs_only_its_id_and_status(
    callback: tuple[TestClient[web.Request, web.Application], MemoryFeedbackSink, RecentlySent],
) -> None:
    client, feedback, _ = callback
    response = await client.post(
        "/v1/crm/feedback", json={"intervention_id": "iv-1", "status": "done"}, headers=AUTH
    )
    assert response.status == 202, await response.text()
    assert await response.json() == {"written": 1, "repeated": 0}
    assert feedback.sent == [
        Feedback("iv-1", "acme", "deal.late-stage-silent-14d", 3, "done", NOW, "callback")
    ]
    again = await client.post(
        "/v1/crm/feedback", json=[{"intervention_id": "iv-1", "status": "done"}], headers=AUTH
    )
    assert await again.json() == {"written": 0, "repeated": 1}
    assert len(feedback.sent) == 1


async def test_a_callback_for_an_unknown_intervention_must_say_whose_it_is(
    callback: tuple[TestClient[web.Request, web.Application], MemoryFeedbackSink, RecentlySent],
) -> None:
    client, feedback, _ = callback
    unknown = {"intervention_id": "iv-9", "status": "dismissed"}
    response = await client.post("/v1/crm/feedback", json=unknown, headers=AUTH)
    assert response.status == 422
    [problem] = (await response.json())["problems"]
    assert problem["field"] == "customer_id"
    assert problem["message"].startswith("expected customer_id and rule_id for intervention iv-9")
    full = {**unknown, "customer_id": "globex", "rule_id": "r1", "at": "2026-12-01T10:00:00+08:00"}
    assert (await client.post("/v1/crm/feedback", json=full, headers=AUTH)).status == 202
    assert feedback.sent[-1].at == datetime(2026, 12, 1, 2, 0, tzinfo=UTC)


async def test_callback_refusals(
    callback: tuple[TestClient[web.Request, web.Application], MemoryFeedbackSink, RecentlySent],
) -> None:
    client, feedback, _ = callback
    report = {"intervention_id": "iv-1", "status": "done"}
    assert (await client.post("/v1/crm/feedback", json=report)).status == 401
    wrong = {"Authorization": "Bearer nope"}
    assert (await client.post("/v1/crm/feedback", json=report, headers=wrong)).status == 401
    broken = await client.post("/v1/crm/feedback", data=b"{", headers=AUTH)
    assert broken.status == 400
    bad = await client.post(
        "/v1/crm/feedback",
        json=[report, {"intervention_id": "iv-1", "status": "won"}],
        headers=AUTH,
    )
    assert bad.status == 422
    [problem] = (await bad.json())["problems"]
    assert (problem["index"], problem["field"]) == (1, "status")
    assert feedback.sent == []  # a request with an invalid report writes nothing
