"""The whole flow on the real broker: chat endpoint -> worker -> interventions / dlq."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from io import BytesIO
from pathlib import Path
from typing import Any

import aiohttp
import fastavro
import pytest
from aiohttp.test_utils import TestServer
from fastavro.schema import fingerprint, to_parsing_canonical_form

from connectors.chat import create_http_app
from connectors.publisher import KafkaTouchpointSink
from connectors.settings import IntakeSettings
from schemas.codec import decode_dead_letter, encode_touchpoint
from schemas.models import Channel, Direction, TouchpointEvent
from streams.settings import Settings
from streams.topics import ensure_topics

from .harness import (
    REPO,
    WorkerProcess,
    produce_raw,
    read_all,
    read_topic,
    wait_until_committed,
)

INTERVENTION_AVSC = REPO / "schemas" / "avro" / "intervention_command.avsc"


def decode_with_shipped_avsc(value: bytes, avsc: Path = INTERVENTION_AVSC) -> dict[str, Any]:
    """What a CRM written in any language does: check the header, read with the .avsc."""
    schema = fastavro.parse_schema(json.loads(avsc.read_text()))
    expected = bytes.fromhex(fingerprint(to_parsing_canonical_form(schema), "CRC-64-AVRO"))
    assert value[:2] == b"\xc3\x01", f"expected single-object marker C3 01, found {value[:2]!r}"
    assert int.from_bytes(value[2:10], "little") == int.from_bytes(expected, "little")
    record: dict[str, Any] = fastavro.schemaless_reader(BytesIO(value[10:]), schema, None)
    return record


@pytest.fixture
async def chat_url(settings: Settings) -> AsyncIterator[str]:
    await ensure_topics(settings)
    sink = KafkaTouchpointSink(
        IntakeSettings(
            settings.bootstrap_servers,
            settings.topic("touchpoints"),
            settings.partitions,
            "it-chat",
        )
    )
    await sink.start()
    server = TestServer(create_http_app(sink), host="127.0.0.1")
    await server.start_server()
    try:
        yield str(server.make_url("/v1/messages"))
    finally:
        await server.close()
        await sink.stop()


def chat(n: int, customer: str, sender: str, minutes_ago: int = 30) -> dict[str, Any]:
    return {
        "message_id": f"{customer}-{n}",
        "customer_id": customer,
        "sent_at": (datetime.now(UTC) - timedelta(minutes=minutes_ago - n)).isoformat(),
        "sender": sender,
        "rep_id": "rep-ana",
        "text": f"message {n}",
    }


async def post(url: str, body: Any) -> None:
    async with aiohttp.ClientSession() as session, session.post(url, json=body) as response:
        assert response.status == 202, await response.text()


def for_customer(customer: str) -> Any:
    return lambda found: any(r["customer_id"] == customer for r in found)


async def test_chat_messages_raise_exactly_one_intervention_and_a_crash_does_not_repeat_it(
    settings: Settings, worker: WorkerProcess, chat_url: str
) -> None:
    worker.start()
    # acme never answers three messages; globex replies after the first.
    await post(chat_url, [chat(1, "acme", "rep"), chat(2, "globex", "rep")])
    await post(chat_url, chat(3, "globex", "customer"))
    await post(chat_url, [chat(4, "acme", "rep"), chat(5, "globex", "rep")])
    await post(chat_url, [chat(6, "acme", "rep"), chat(7, "globex", "rep")])
    # initech gets two unanswered messages before the crash and one after.
    await post(chat_url, [chat(8, "initech", "rep"), chat(9, "initech", "rep")])

    found = await read_topic(
        settings, "interventions", for_customer("acme"), decode_with_shipped_avsc, worker
    )
    [command] = found
    assert command["rule_id"] == "builtin.unanswered-outbound"
    assert command["kind"] == "task"
    assert command["rep_id"] == "rep-ana"
    assert command["explanation"]["triggering_event_ids"] == [
        "chat:acme-1",
        "chat:acme-4",
        "chat:acme-6",
    ]

    # Crash the worker and start it again. It must carry on from committed
    # state: initech's third message completes a streak begun before the
    # crash, and acme's intervention is not raised again.
    await wait_until_committed(settings, worker)
    worker.kill()
    worker.start()
    await post(chat_url, [chat(10, "initech", "rep"), chat(11, "acme", "rep")])
    await read_topic(
        settings, "interventions", for_customer("initech"), decode_with_shipped_avsc, worker
    )
    everything = await read_all(settings, "interventions", decode_with_shipped_avsc)
    assert sorted(r["customer_id"] for r in everything) == ["acme", "initech"]
    initech = next(r for r in everything if r["customer_id"] == "initech")
    assert initech["explanation"]["triggering_event_ids"] == [
        "chat:initech-8",
        "chat:initech-9",
        "chat:initech-10",
    ]
    assert len({r["intervention_id"] for r in everything}) == 2


def event(n: int, customer: str, **changes: Any) -> TouchpointEvent:
    now = datetime.now(UTC)
    fields: dict[str, Any] = {
        "event_id": f"raw-{customer}-{n}",
        "customer_id": customer,
        "occurred_at": now - timedelta(minutes=10 - n),
        "received_at": now,
        "channel": Channel.EMAIL,
        "kind": "email_sent",
        "direction": Direction.OUTBOUND,
        "rep_id": "rep-bo",
        "source": "it/1",
    }
    fields.update(changes)
    return TouchpointEvent(**fields)


async def test_malformed_records_go_to_the_dlq_and_the_worker_keeps_going(
    settings: Settings, worker: WorkerProcess
) -> None:
    await ensure_topics(settings)
    garbage = b'{"customer_id": "hooli", "kind": "email_sent"}'
    future = event(0, "hooli", occurred_at=datetime.now(UTC) + timedelta(days=2))
    future_bytes = encode_touchpoint(future)
    await produce_raw(
        settings,
        [(b"hooli", garbage), (b"hooli", future_bytes)]
        + [(b"hooli", encode_touchpoint(event(n, "hooli"))) for n in (1, 2, 3)],
    )
    worker.start()

    found = await read_topic(
        settings, "interventions", for_customer("hooli"), decode_with_shipped_avsc, worker
    )
    assert [r["explanation"]["triggering_event_ids"] for r in found] == [
        ["raw-hooli-1", "raw-hooli-2", "raw-hooli-3"]
    ]
    letters = await read_topic(settings, "dlq", lambda f: len(f) >= 2, decode_dead_letter, worker)
    by_reason = {letter.reason: letter for letter in letters}
    assert set(by_reason) == {"undecodable", "bad_timestamp"}
    undecodable = by_reason["undecodable"]
    assert undecodable.raw_value == garbage
    assert undecodable.raw_key == b"hooli"
    assert undecodable.source_topic == settings.topic("touchpoints")
    assert "C3 01" in undecodable.detail
    late = by_reason["bad_timestamp"]
    assert late.raw_value == future_bytes
    assert "in the future" in late.detail
    assert late.offset == undecodable.offset + 1
    assert late.partition == undecodable.partition

    # The worker's Prometheus endpoint counts what happened (bounded labels only).
    url = f"http://127.0.0.1:{settings.web_port}/metrics"
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        assert response.status == 200
        metrics = await response.text()
    assert 'warroom_dead_letters_total{reason="undecodable"} 1.0' in metrics
    assert 'warroom_dead_letters_total{reason="bad_timestamp"} 1.0' in metrics
    assert 'warroom_touchpoints_total{outcome="processed"} 3.0' in metrics
    assert (
        'warroom_interventions_total{kind="task",rule_id="builtin.unanswered-outbound"} 1.0'
        in metrics
    )
    assert "warroom_processing_latency_seconds_bucket" in metrics
    assert "hooli" not in metrics
