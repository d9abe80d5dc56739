"""The chat connector: validation, mapping to touchpoints, HTTP errors, envelopes."""

from __future__ import annotations

import ast
import asyncio
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from aiokafka.errors import KafkaTimeoutError, ProducerFenced

from connectors.chat import (
    MAX_BODY_BYTES,
    ChatMessage,
    InvalidChatInput,
    create_http_app,
    parse_jsonl,
)
from connectors.publisher import (
    KafkaTouchpointSink,
    MemoryTouchpointSink,
    PublishUnavailable,
    Readiness,
    UnpublishableTouchpoints,
    envelopes,
)
from connectors.settings import IntakeSettings
from schemas.codec import decode_touchpoints
from schemas.models import Direction, TouchpointEvent
from schemas.partitioning import customer_partition

RECEIVED = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)


def message(n: int = 1, **changes: object) -> dict[str, object]:
    body: dict[str, object] = {
        "message_id": f"m{n}",
        "customer_id": "acme",
        "sent_at": "2026-11-22T09:59:00+01:00",
        "sender": "rep",
        "rep_id": "rep-ana",
        "text": "你好, any questions?",
    }
    body.update(changes)
    return body


@pytest.fixture
async def client() -> AsyncIterator[
    tuple[TestClient[web.Request, web.Application], MemoryTouchpointSink]
]:
    sink = MemoryTouchpointSink()
    async with TestClient(TestServer(create_http_app(sink, clock=lambda: RECEIVED))) as test:
        yield test, sink


def test_a_rep_message_becomes_an_outbound_touchpoint() -> None:
    event = ChatMessage.model_validate(message()).to_touchpoint(RECEIVED)
    assert event.event_id == "chat:m1"
    assert event.kind == "message_sent"
    assert event.direction is Direction.OUTBOUND
    assert event.occurred_at == datetime(2026, 11, 22, 8, 59, tzinfo=UTC)
    assert event.received_at == RECEIVED
    assert event.source.startswith("chat-http/")


def test_a_customer_message_becomes_an_inbound_touchpoint() -> None:
    event = ChatMessage.model_validate(message(sender="customer")).to_touchpoint(RECEIVED)
    assert (event.kind, event.direction) == ("message_received", Direction.INBOUND)


async def test_posting_one_message_publishes_one_touchpoint(client) -> None:
    test, sink = client
    response = await test.post("/v1/messages", json=message())
    assert response.status == 202
    assert await response.json() == {"accepted": 1, "event_ids": ["chat:m1"]}
    assert [[e.event_id for e in batch] for batch in sink.published] == [["chat:m1"]]


async def test_an_invalid_message_is_refused_with_the_field_named_and_nothing_published(
    client,
) -> None:
    test, sink = client
    body = [message(1), message(2, sent_at="2026-11-22T09:59:00"), message(3, sender="bot")]
    response = await test.post("/v1/messages", json=body)
    assert response.status == 422
    problems = (await response.json())["problems"]
    assert [(p["index"], p["field"]) for p in problems] == [(1, "sent_at"), (2, "sender")]
    assert "timezone" in problems[0]["message"]
    assert sink.published == []


async def test_unknown_fields_are_refused(client) -> None:
    test, sink = client
    response = await test.post("/v1/messages", json=message(cutomer="typo"))
    assert response.status == 422
    assert (await response.json())["problems"][0]["field"] == "cutomer"
    assert sink.published == []


async def test_a_body_that_is_not_json_is_a_400(client) -> None:
    test, sink = client
    response = await test.post("/v1/messages", data=b"customer=acme")
    assert response.status == 400
    assert "expected JSON" in (await response.json())["error"]
    assert sink.published == []


class FailingSink(MemoryTouchpointSink):
    def __init__(self, error: Exception, ready: Readiness | None = None) -> None:
        super().__init__()
        self.error = error
        self.ready = ready or Readiness(ready=True, reason="test")

    async def publish(self, events: Sequence[TouchpointEvent]) -> None:
        raise self.error

    def readiness(self) -> Readiness:
        return self.ready


async def test_a_transient_kafka_failure_is_a_503_with_retry_after() -> None:
    sink = FailingSink(PublishUnavailable("not published: broker unreachable; retry", 2.0))
    async with TestClient(TestServer(create_http_app(sink))) as test:
        response = await test.post("/v1/messages", json=message())
        assert response.status == 503
        assert response.headers["Retry-After"] == "2"
        assert "retry" in (await response.json())["error"]


async def test_a_bug_while_publishing_is_a_500_not_a_retry() -> None:
    async with TestClient(TestServer(create_http_app(FailingSink(KeyError("oops"))))) as test:
        response = await test.post("/v1/messages", json=message())
        assert response.status == 500
        assert "Retry-After" not in response.headers


async def test_a_message_that_does_not_convert_is_a_422_naming_message_and_field(
    client,
) -> None:
    test, sink = client
    long_key = "k" * 65
    body = [message(1), message(2, attributes={long_key: 1})]
    response = await test.post("/v1/messages", json=body)
    assert response.status == 422
    [problem] = (await response.json())["problems"]
    assert problem["index"] == 1
    assert problem["field"].startswith(f"attributes.{long_key}")
    assert "does not convert" in problem["message"] and "64" in problem["message"]
    assert sink.published == []


async def test_a_message_that_does_not_encode_is_a_422_naming_the_message() -> None:
    sink = FailingSink(UnpublishableTouchpoints([{"event_id": "chat:m2", "message": "too big"}]))
    async with TestClient(TestServer(create_http_app(sink))) as test:
        response = await test.post("/v1/messages", json=[message(1), message(2)])
        assert response.status == 422
        [problem] = (await response.json())["problems"]
        assert (problem["index"], problem["field"]) == (1, "(message)")
        assert "too big" in problem["message"]


async def test_a_body_over_the_limit_is_a_413_in_json(client) -> None:
    test, sink = client
    response = await test.post("/v1/messages", data=b"[" + b" " * MAX_BODY_BYTES + b"]")
    assert response.status == 413
    assert (await response.json())["problems"][0]["field"] == "(body)"
    assert sink.published == []


async def test_liveness_is_ok_while_readiness_reports_the_sink() -> None:
    not_ready = Readiness(ready=False, reason="ProducerFenced()", recoveries=0)
    async with TestClient(
        TestServer(create_http_app(FailingSink(ValueError(), not_ready)))
    ) as test:
        live = await test.get("/healthz")
        assert (live.status, (await live.json())["status"]) == (200, "ok")
        ready = await test.get("/readyz")
        assert ready.status == 503
        assert (await ready.json())["reason"] == "ProducerFenced()"


async def test_readiness_is_200_when_the_sink_can_publish(client) -> None:
    test, _ = client
    response = await test.get("/readyz")
    assert (response.status, (await response.json())["status"]) == (200, "ready")


def test_jsonl_reports_every_bad_line_by_number() -> None:
    lines = [
        '{"message_id":"a","customer_id":"c","sent_at":"2026-11-22T09:00:00Z","sender":"rep"}',
        "",
        '{"message_id":"b","customer_id":"c","sent_at":"yesterday","sender":"rep"}',
        "not json",
    ]
    with pytest.raises(InvalidChatInput) as caught:
        parse_jsonl(lines)
    assert [(p["line"], p["field"]) for p in caught.value.problems] == [
        (3, "sent_at"),
        (4, "(message)"),
    ]


def test_envelopes_keep_each_customer_on_its_partition_and_in_order() -> None:
    events = [
        ChatMessage.model_validate(message(n, customer_id=f"c{n % 7}")).to_touchpoint(RECEIVED)
        for n in range(1200)
    ]
    records = envelopes(events, partitions=4, max_events=100)
    seen: list[TouchpointEvent] = []
    for partition, key, value in records:
        assert key is None
        batch = decode_touchpoints(value)
        assert 1 <= len(batch) <= 100
        assert {customer_partition(e.customer_id, 4) for e in batch} == {partition}
        seen.extend(batch)
    for customer in {e.customer_id for e in events}:
        assert [e for e in seen if e.customer_id == customer] == [
            e for e in events if e.customer_id == customer
        ]


def test_a_single_event_is_a_plain_keyed_record() -> None:
    event = ChatMessage.model_validate(message()).to_touchpoint(RECEIVED)
    [(partition, key, value)] = envelopes([event], partitions=4)
    assert key == b"acme"
    assert partition == customer_partition("acme", 4)
    assert decode_touchpoints(value) == [event]


class FakeProducer:
    """A transactional producer that keeps committed records and fails on request."""

    def __init__(self, transactional_id: str, log: FakeKafka) -> None:
        self.transactional_id = transactional_id
        self.kafka = log
        self.open: list[tuple[str, int | None, bytes | None, bytes]] | None = None
        self.fenced = False
        """Another producer took the transactional id; noticed at the next commit."""
        self.fatal = False
        self.stopped = False

    async def start(self) -> None:
        self.kafka.started.append(self.transactional_id)

    async def stop(self) -> None:
        self.stopped = True

    async def begin_transaction(self) -> None:
        assert self.open is None, "one transaction at a time"
        if self.fatal:
            raise AssertionError("Invalid state transition FATAL_ERROR -> IN_TRANSACTION")
        self.open = []

    async def send(
        self, topic: str, value: bytes, key: bytes | None = None, partition: int | None = None
    ) -> asyncio.Future[None]:
        assert self.open is not None, "send outside a transaction"
        await self.kafka.send_gate.wait()
        self.open.append((topic, partition, key, value))
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done

    async def commit_transaction(self) -> None:
        self.kafka.commit_started.set()
        await self.kafka.commit_gate.wait()
        if self.fenced:
            self.fatal = True
            raise ProducerFenced()
        if self.kafka.fail_next_commits:
            self.kafka.fail_next_commits -= 1
            raise KafkaTimeoutError()
        assert self.open is not None
        self.kafka.transactions.append(self.open)
        self.open = None

    async def abort_transaction(self) -> None:
        if self.fatal:
            raise AssertionError("Invalid state transition FATAL_ERROR -> ABORTING_TRANSACTION")
        self.open = None


class FakeKafka:
    def __init__(self) -> None:
        self.producers: list[FakeProducer] = []
        self.started: list[str] = []
        self.transactions: list[list[tuple[str, int | None, bytes | None, bytes]]] = []
        self.fail_next_commits = 0
        self.commit_gate = asyncio.Event()
        """Commits wait for it; set unless a test holds a transaction open."""
        self.commit_gate.set()
        self.commit_started = asyncio.Event()
        self.send_gate = asyncio.Event()
        """Sends wait for it (a broker that does not answer, when cleared)."""
        self.send_gate.set()

    def producer(self, transactional_id: str) -> FakeProducer:
        self.producers.append(FakeProducer(transactional_id, self))
        return self.producers[-1]

    def event_ids(self) -> list[str]:
        return [
            e.event_id
            for transaction in self.transactions
            for (_, _, _, value) in transaction
            for e in decode_touchpoints(value)
        ]


def intake(**changes: Any) -> IntakeSettings:
    values: dict[str, Any] = {
        "bootstrap_servers": "unused:9092",
        "topic": "touchpoints",
        "partitions": 4,
        "instance_id": "chat-test",
        "recovery_backoff_seconds": 0.01,
    }
    values.update(changes)
    return IntakeSettings(**values)


def touchpoints(first: int, count: int) -> list[TouchpointEvent]:
    return [
        ChatMessage.model_validate(message(n, customer_id=f"c{n}")).to_touchpoint(RECEIVED)
        for n in range(first, first + count)
    ]


async def started_sink(kafka: FakeKafka, **changes: Any) -> KafkaTouchpointSink:
    sink = KafkaTouchpointSink(intake(**changes), kafka.producer)
    await sink.start()
    return sink


async def test_concurrent_requests_share_transactions_and_each_lands_once() -> None:
    kafka = FakeKafka()
    sink = await started_sink(kafka)
    requests = [touchpoints(10 * n, 1 + n % 3) for n in range(40)]
    kafka.commit_gate.clear()
    first = [asyncio.create_task(sink.publish(events)) for events in requests[:25]]
    await kafka.commit_started.wait()
    later = [asyncio.create_task(sink.publish(events)) for events in requests[25:]]
    await asyncio.sleep(0.01)
    assert not any(task.done() for task in first + later)
    kafka.commit_gate.set()
    await asyncio.gather(*first, *later)
    await sink.stop()
    ids = [[e.event_id for e in events] for events in requests]
    assert sorted(kafka.event_ids()) == sorted(i for request in ids for i in request)
    assert len(kafka.transactions) == sink.transactions == 2
    for transaction, wave in zip(kafka.transactions, (ids[:25], ids[25:]), strict=True):
        landed = [e.event_id for (_, _, _, value) in transaction for e in decode_touchpoints(value)]
        assert sorted(landed) == sorted(i for request in wave for i in request)


async def test_a_transaction_never_holds_more_than_the_configured_events() -> None:
    kafka = FakeKafka()
    sink = await started_sink(kafka, max_events_per_transaction=5)
    await asyncio.gather(*(sink.publish(touchpoints(10 * n, 2)) for n in range(20)))
    await sink.stop()
    assert all(len(t) <= 5 for t in kafka.transactions)
    assert len(kafka.event_ids()) == 40


async def test_a_failed_transaction_fails_every_request_in_it_and_the_producer_is_kept() -> None:
    kafka = FakeKafka()
    sink = await started_sink(kafka)
    kafka.fail_next_commits = 1
    results = await asyncio.gather(
        *(sink.publish(touchpoints(10 * n, 2)) for n in range(5)), return_exceptions=True
    )
    failed = [r for r in results if isinstance(r, PublishUnavailable)]
    assert failed and all(r is None or isinstance(r, PublishUnavailable) for r in results)
    landed = set(kafka.event_ids())
    for n, result in enumerate(results):
        ids = {e.event_id for e in touchpoints(10 * n, 2)}
        assert (ids <= landed) if result is None else not (ids & landed)
    assert sink.readiness().ready and len(kafka.producers) == 1
    await sink.stop()


async def test_a_fenced_producer_makes_the_sink_unready_then_is_replaced_with_a_new_id() -> None:
    kafka = FakeKafka()
    sink = await started_sink(kafka, recovery_backoff_seconds=0.2)
    first = sink.readiness().transactional_id
    assert first is not None and first.startswith("chat-test-")
    kafka.producers[0].fenced = True
    with pytest.raises(PublishUnavailable, match="ProducerFenced"):
        await sink.publish(touchpoints(0, 1))
    state = sink.readiness()
    assert not state.ready and "ProducerFenced" in state.reason
    with pytest.raises(PublishUnavailable, match="not ready"):
        await sink.publish(touchpoints(1, 1))  # fails fast while the producer is replaced
    for _ in range(100):
        if sink.readiness().ready:
            break
        await asyncio.sleep(0.02)
    state = sink.readiness()
    assert state.ready and state.recoveries == 1 and "ProducerFenced" in (state.last_error or "")
    assert state.transactional_id not in (None, first) and kafka.producers[0].stopped
    await sink.publish(touchpoints(2, 1))
    await sink.stop()
    assert kafka.event_ids() == ["chat:m2"]


async def test_a_transaction_stuck_before_its_commit_is_a_503_and_never_commits_later() -> None:
    kafka = FakeKafka()
    sink = await started_sink(kafka, publish_timeout_seconds=0.05, recovery_backoff_seconds=0.05)
    kafka.send_gate.clear()
    with pytest.raises(PublishUnavailable, match=r"^not published: transaction did not end"):
        await sink.publish(touchpoints(0, 2))
    assert not sink.readiness().ready
    kafka.send_gate.set()  # the broker answers again
    for _ in range(100):
        if sink.readiness().ready:
            break
        await asyncio.sleep(0.01)
    await sink.publish(touchpoints(5, 1))
    await sink.stop()
    assert kafka.event_ids() == ["chat:m5"]


async def test_a_commit_without_an_answer_is_a_503_that_says_the_outcome_is_unknown() -> None:
    kafka = FakeKafka()
    sink = await started_sink(kafka, publish_timeout_seconds=0.05)
    kafka.commit_gate.clear()
    with pytest.raises(PublishUnavailable, match=r"^not known to be published"):
        await sink.publish(touchpoints(0, 1))
    assert "did not end within" in sink.readiness().reason
    kafka.commit_gate.set()
    await sink.stop()


def oversized(n: int) -> TouchpointEvent:
    """A touchpoint that encodes to about 1 MB, over Kafka's default record limit."""
    attributes = {f"a{i}": "x" * 1000 for i in range(1000)}
    return ChatMessage.model_validate(message(n, attributes=attributes)).to_touchpoint(RECEIVED)


async def test_a_touchpoint_too_large_for_kafka_is_refused_before_anything_is_sent() -> None:
    kafka = FakeKafka()
    sink = await started_sink(kafka)
    with pytest.raises(UnpublishableTouchpoints) as caught:
        await sink.publish([*touchpoints(0, 2), oversized(7)])
    await sink.stop()
    assert [p["event_id"] for p in caught.value.problems] == ["chat:m7"]
    assert "expected at most" in caught.value.problems[0]["message"]
    assert kafka.transactions == []


def test_envelopes_larger_than_the_limit_are_split_and_keep_order() -> None:
    events = [
        ChatMessage.model_validate(message(n, text="x" * 1000)).to_touchpoint(RECEIVED)
        for n in range(40)
    ]
    records = envelopes(events, partitions=4, max_bytes=5000)
    assert len(records) > 8 and all(len(value) <= 5000 for _, _, value in records)
    assert [e for _, _, value in records for e in decode_touchpoints(value)] == events


def test_one_touchpoint_over_the_limit_is_unpublishable() -> None:
    event = ChatMessage.model_validate(message(text="x" * 2000)).to_touchpoint(RECEIVED)
    with pytest.raises(UnpublishableTouchpoints, match="expected at most 1000 bytes"):
        envelopes([event, event], partitions=4, max_bytes=1000)


def test_every_producer_gets_its_own_transactional_id() -> None:
    settings = intake()
    ids = {settings.new_transactional_id() for _ in range(100)}
    assert len(ids) == 100 and all(i.startswith("chat-test-") for i in ids)


def test_connectors_import_nothing_from_streams() -> None:
    root = Path(__file__).resolve().parents[2]
    found = []
    for path in sorted((root / "connectors").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            found += [f"{path.name}: {n}" for n in names if n.split(".")[0] == "streams"]
    assert found == []
