"""A trace from a chat request to the intervention it caused, on the real broker: the
chat connector and the worker run as processes with ``WARROOM_TRACING=file:...`` and
the test reads the spans they exported."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiokafka import ConsumerRecord

from schemas.codec import decode_intervention
from streams.settings import Settings
from streams.topics import ensure_topics

from .conftest import free_port
from .harness import ChatProcess, WorkerProcess, committed_reader

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"


@pytest.fixture
def traced(settings: Settings, tmp_path: Path) -> Settings:
    return settings.model_copy(update={"tracing": f"file:{tmp_path / 'worker-spans.jsonl'}"})


@pytest.fixture
def chat_connector(settings: Settings, tmp_path: Path) -> Iterator[ChatProcess]:
    spans = tmp_path / "chat-spans.jsonl"
    connector = ChatProcess(
        settings.model_copy(update={"tracing": f"file:{spans}"}), tmp_path / "chat.log", free_port()
    )
    connector.start()
    try:
        yield connector
    finally:
        connector.stop()


def spans(path: Path) -> dict[str, dict[str, Any]]:
    """Exported spans by span id."""
    found = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    return {span["span_id"]: span for span in found}


def header(record: ConsumerRecord[Any, Any], name: str) -> str | None:
    found = [value.decode() for key, value in record.headers if key == name]
    return found[0] if found else None


async def interventions_for(
    settings: Settings, customer: str, worker: WorkerProcess, within: float = 60.0
) -> list[ConsumerRecord[Any, Any]]:
    async with committed_reader(settings, "interventions") as (consumer, _):
        deadline = time.monotonic() + within
        while True:
            worker.assert_alive()
            batches = await consumer.getmany(timeout_ms=500)
            found = [
                r
                for records in batches.values()
                for r in records
                if decode_intervention(r.value).customer_id == customer
            ]
            if found:
                return found
            if time.monotonic() > deadline:
                raise AssertionError(f"no intervention for {customer}\n{worker.tail_log()}")


async def test_a_trace_links_a_chat_request_to_the_intervention_it_caused(
    traced: Settings, chat_connector: ChatProcess, tmp_path: Path
) -> None:
    await ensure_topics(traced)
    worker = WorkerProcess(traced, tmp_path / "worker.log")
    worker.start()
    try:
        await chat_connector.wait_ready()
        now = datetime.now(UTC)
        # three messages from the rep, none answered: the built-in rule raises a task
        body = [
            {
                "message_id": f"acme-{n}",
                "customer_id": "acme",
                "sent_at": (now - timedelta(minutes=10 - n)).isoformat(),
                "sender": "rep",
                "rep_id": "rep-ana",
                "text": f"message {n}",
            }
            for n in (1, 2, 3)
        ]
        caller = f"00-{TRACE_ID}-{CALLER_SPAN}-01"
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                f"{chat_connector.url}/v1/messages", json=body, headers={"traceparent": caller}
            ) as response,
        ):
            assert response.status == 202, await response.text()
        [record] = await interventions_for(traced, "acme", worker)
    finally:
        worker.stop()

    traceparent = header(record, "traceparent")
    assert traceparent is not None, record.headers
    version, trace_id, intervention_span, _flags = traceparent.split("-")
    assert (version, trace_id) == ("00", TRACE_ID)

    worker_spans = spans(tmp_path / "worker-spans.jsonl")
    chat_spans = spans(tmp_path / "chat-spans.jsonl")
    command = decode_intervention(record.value)
    # intervention <- worker span <- connector's publish span <- request span <- caller
    send = worker_spans[intervention_span]
    assert (send["name"], send["kind"]) == ("send interventions", "PRODUCER")
    assert send["attributes"]["warroom.intervention_id"] == command.intervention_id
    process = worker_spans[send["parent_span_id"]]
    assert (process["name"], process["kind"]) == ("process touchpoints", "CONSUMER")
    assert process["service"] == "warroom-worker"
    publish = chat_spans[process["parent_span_id"]]
    assert (publish["name"], publish["kind"]) == ("send touchpoints", "PRODUCER")
    request = chat_spans[publish["parent_span_id"]]
    assert (request["name"], request["kind"]) == ("POST /v1/messages", "SERVER")
    assert request["service"] == "warroom-chat-http"
    assert request["parent_span_id"] == CALLER_SPAN
    chain = (send, process, publish, request)
    assert {span["trace_id"] for span in chain} == {TRACE_ID}
    assert request["start_ns"] <= publish["start_ns"] <= process["start_ns"] <= send["start_ns"]
