"""The chat connector: validation, mapping to touchpoints, HTTP errors, envelopes."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime

import pytest
from aiohttp.test_utils import TestClient, TestServer

from connectors.chat import ChatMessage, InvalidChatInput, create_http_app, parse_jsonl
from connectors.publisher import MemoryTouchpointSink, envelopes
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
async def client() -> AsyncIterator[tuple[TestClient[object, object], MemoryTouchpointSink]]:
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


async def test_posting_one_message_publishes_one_touchpoint(client) -> None:  # type: ignore[no-untyped-def]
    test, sink = client
    response = await test.post("/v1/messages", json=message())
    assert response.status == 202
    assert await response.json() == {"accepted": 1, "event_ids": ["chat:m1"]}
    assert [[e.event_id for e in batch] for batch in sink.published] == [["chat:m1"]]


async def test_an_invalid_message_is_refused_with_the_field_named_and_nothing_published(  # type: ignore[no-untyped-def]
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


async def test_unknown_fields_are_refused(client) -> None:  # type: ignore[no-untyped-def]
    test, sink = client
    response = await test.post("/v1/messages", json=message(cutomer="typo"))
    assert response.status == 422
    assert (await response.json())["problems"][0]["field"] == "cutomer"
    assert sink.published == []


async def test_a_body_that_is_not_json_is_a_400(client) -> None:  # type: ignore[no-untyped-def]
    test, sink = client
    response = await test.post("/v1/messages", data=b"customer=acme")
    assert response.status == 400
    assert "expected JSON" in (await response.json())["error"]
    assert sink.published == []


async def test_a_failed_publish_is_a_503_and_says_retry() -> None:
    class BrokenSink:
        async def publish(self, events: Sequence[TouchpointEvent]) -> None:
            raise ConnectionError("broker unreachable")

    async with TestClient(TestServer(create_http_app(BrokenSink()))) as test:
        response = await test.post("/v1/messages", json=message())
        assert response.status == 503
        assert "retry" in (await response.json())["error"]


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
