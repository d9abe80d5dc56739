"""Tracing at the connector: settings, the span file, the request span and the
``traceparent`` on the published records."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from pydantic import ValidationError

from connectors.chat import create_http_app
from connectors.http import add_tracing
from connectors.publisher import KafkaTouchpointSink
from connectors.settings import IntakeSettings
from connectors.tracing import (
    TRACING_OFF,
    TracingSettings,
    TracingSettingsError,
    extract_kafka,
    inject_kafka,
    tracer_for,
)
from schemas.codec import decode_touchpoints
from streams.settings import Settings

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"

Sent = tuple[str, int | None, bytes | None, bytes, list[tuple[str, bytes]] | None]


class RecordingProducer:
    """A transactional producer that keeps what it was sent, headers included."""

    def __init__(self, transactional_id: str, commit_gate: asyncio.Event) -> None:
        self.sent: list[Sent] = []
        self.transactions: list[list[Sent]] = []
        self._open: list[Sent] = []
        self._commit_gate = commit_gate

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    async def begin_transaction(self) -> None:
        self._open = []

    async def send(
        self,
        topic: str,
        value: bytes,
        key: bytes | None = None,
        partition: int | None = None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> asyncio.Future[None]:
        record = (topic, partition, key, value, headers)
        self.sent.append(record)
        self._open.append(record)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done

    async def commit_transaction(self) -> None:
        await self._commit_gate.wait()
        self.transactions.append(self._open)

    async def abort_transaction(self) -> None:
        self._open = []


class Intake:
    def __init__(
        self, client: TestClient[Any, Any], sink: KafkaTouchpointSink, producer: RecordingProducer
    ) -> None:
        self.client = client
        self.sink = sink
        self.producer = producer


def intake_settings(tracing: TracingSettings) -> IntakeSettings:
    return IntakeSettings("127.0.0.1:9", "touchpoints", 4, "test-chat", tracing=tracing)


async def started(
    tracing: TracingSettings, commit_gate: asyncio.Event | None = None
) -> tuple[KafkaTouchpointSink, RecordingProducer]:
    gate = commit_gate or asyncio.Event()
    if commit_gate is None:
        gate.set()
    producer: RecordingProducer | None = None

    def factory(transactional_id: str) -> RecordingProducer:
        nonlocal producer
        producer = RecordingProducer(transactional_id, gate)
        return producer

    sink = KafkaTouchpointSink(intake_settings(tracing), factory)
    await sink.start()
    assert producer is not None
    return sink, producer


@asynccontextmanager
async def serve(
    tracing: TracingSettings, commit_gate: asyncio.Event | None = None
) -> AsyncIterator[Intake]:
    sink, producer = await started(tracing, commit_gate)
    app = create_http_app(sink)
    add_tracing(app, sink.tracer)
    try:
        async with TestClient(TestServer(app)) as client:
            yield Intake(client, sink, producer)
    finally:
        await sink.stop()


@pytest.fixture
async def untraced() -> AsyncIterator[Intake]:
    async with serve(TRACING_OFF) as intake:
        yield intake


def span_file(tmp_path: Path) -> TracingSettings:
    return TracingSettings("file", tmp_path / "spans.jsonl", "warroom-chat-http")


@pytest.fixture
async def traced(tmp_path: Path) -> AsyncIterator[Intake]:
    async with serve(span_file(tmp_path)) as intake:
        yield intake


def spans(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def chat(n: int, customer: str = "acme") -> dict[str, object]:
    return {
        "message_id": f"m-{n}",
        "customer_id": customer,
        "sent_at": "2026-11-22T09:59:00Z",
        "sender": "rep",
        "rep_id": "rep-ana",
        "text": "hello",
    }


async def until(condition: Callable[[], bool]) -> None:
    for _ in range(500):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("timed out waiting")


def by_kind(found: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    kinds = {span["kind"]: span for span in found}
    assert len(kinds) == len(found), found
    return kinds


def header(headers: list[tuple[str, bytes]] | None, name: str) -> str | None:
    found = [v.decode() for k, v in headers or () if k == name]
    return found[0] if found else None


@pytest.mark.parametrize(
    ("spec", "exporter", "path"),
    [
        ("off", "off", None),
        ("console", "console", None),
        ("otlp", "otlp", None),
        ("file:/tmp/spans.jsonl", "file", Path("/tmp/spans.jsonl")),
    ],
)
def test_tracing_settings_name_an_exporter(spec: str, exporter: str, path: Path | None) -> None:
    parsed = TracingSettings.parse(spec, "svc")
    assert (parsed.exporter, parsed.path, parsed.service_name) == (exporter, path, "svc")
    assert parsed.on is (exporter != "off")


@pytest.mark.parametrize("spec", ["jaeger", "file:", "file: ", "ON", ""])
def test_a_tracing_value_that_names_no_exporter_says_what_was_expected(spec: str) -> None:
    with pytest.raises(TracingSettingsError) as refused:
        TracingSettings.parse(spec, "svc")
    assert str(refused.value) == (
        f"tracing: expected off, console, otlp or file:PATH, found {spec!r}"
    )


def test_worker_settings_refuse_an_unknown_exporter_and_default_to_off() -> None:
    with pytest.raises(ValidationError, match="expected off, console, otlp or file:PATH"):
        Settings(tracing="zipkin")
    assert Settings().tracing_settings("worker") == TracingSettings("off", None, "warroom-worker")
    named = Settings(tracing="otlp", tracing_service_name="crm-eu")
    assert named.tracing_settings("chat-http").service_name == "crm-eu"


def test_tracing_off_has_no_tracer() -> None:
    assert tracer_for(TRACING_OFF) is None


def test_a_kafka_context_round_trips_and_a_malformed_one_is_ignored() -> None:
    headers = [("traceparent", TRACEPARENT.encode()), ("tracestate", b"vendor=1")]
    context = extract_kafka(headers)
    assert context is not None
    assert dict(inject_kafka(context)) == {
        "traceparent": TRACEPARENT.encode(),
        "tracestate": b"vendor=1",
    }
    assert extract_kafka([("traceparent", b"00-not-a-trace-01")]) is None
    assert extract_kafka([("traceparent", f"00-{'0' * 32}-{PARENT_ID}-01".encode())]) is None
    assert extract_kafka([("other", b"x")]) is None


async def test_with_tracing_off_no_header_is_added_even_when_the_request_has_one(
    untraced: Intake,
) -> None:
    response = await untraced.client.post(
        "/v1/messages", json=[chat(1), chat(2, "globex")], headers={"traceparent": TRACEPARENT}
    )
    assert response.status == 202, await response.text()
    assert len(untraced.producer.sent) == 2
    assert [headers for *_, headers in untraced.producer.sent] == [None, None]


async def test_a_request_is_a_server_span_whose_publish_span_each_record_names(
    traced: Intake, tmp_path: Path
) -> None:
    response = await traced.client.post(
        "/v1/messages",
        json=[chat(1), chat(2, "globex"), chat(3)],
        headers={"traceparent": TRACEPARENT, "tracestate": "vendor=1"},
    )
    assert response.status == 202, await response.text()
    found = by_kind(spans(tmp_path / "spans.jsonl"))
    request, publish = found["SERVER"], found["PRODUCER"]
    assert (request["kind"], request["name"]) == ("SERVER", "POST /v1/messages")
    assert (request["trace_id"], request["parent_span_id"]) == (TRACE_ID, PARENT_ID)
    assert request["attributes"]["http.response.status_code"] == 202
    assert request["service"] == "warroom-chat-http"
    assert publish["kind"] == "PRODUCER"
    assert (publish["trace_id"], publish["parent_span_id"]) == (TRACE_ID, request["span_id"])
    assert publish["attributes"]["warroom.touchpoints"] == 3
    records = traced.producer.sent
    assert len(records) == 2  # acme's two events share an envelope, globex's is alone
    for *_, headers in records:
        assert header(headers, "traceparent") == f"00-{TRACE_ID}-{publish['span_id']}-01"
        assert header(headers, "tracestate") == "vendor=1"


async def test_a_request_without_a_traceparent_starts_a_trace(
    traced: Intake, tmp_path: Path
) -> None:
    response = await traced.client.post("/v1/messages", json=chat(1))
    assert response.status == 202
    found = by_kind(spans(tmp_path / "spans.jsonl"))
    request, publish = found["SERVER"], found["PRODUCER"]
    assert request["parent_span_id"] is None
    assert publish["trace_id"] == request["trace_id"]
    [(*_, headers)] = traced.producer.sent
    traceparent = header(headers, "traceparent") or ""
    assert traceparent.startswith(f"00-{request['trace_id']}-{publish['span_id']}-")


async def test_probes_and_refused_requests(traced: Intake, tmp_path: Path) -> None:
    assert (await traced.client.get("/healthz")).status == 200
    assert (await traced.client.get("/readyz")).status == 200
    refused = await traced.client.post(
        "/v1/messages", json={"customer_id": "acme"}, headers={"traceparent": TRACEPARENT}
    )
    assert refused.status == 422
    [request] = spans(tmp_path / "spans.jsonl")  # probes are not traced
    assert request["attributes"]["http.response.status_code"] == 422
    assert request["status"] == "UNSET"
    assert traced.producer.sent == []


async def test_requests_that_share_a_transaction_keep_their_own_trace(tmp_path: Path) -> None:
    gate = asyncio.Event()  # hold the first commit so the next requests queue behind it
    other_trace = "0af7651916cd43dd8448eb211c80319c"
    async with serve(span_file(tmp_path), gate) as intake:
        post = intake.client.post
        first = asyncio.ensure_future(post("/v1/messages", json=chat(0, "initech")))
        await until(lambda: bool(intake.producer.sent))
        rest = [
            asyncio.ensure_future(
                post("/v1/messages", json=[chat(n), chat(n + 10)], headers={"traceparent": tp})
            )
            for n, tp in (
                (1, TRACEPARENT),
                (2, f"00-{other_trace}-{PARENT_ID}-01"),
            )
        ]
        await until(lambda: len(intake.sink._queue) == 2)  # both wait for the next commit
        gate.set()
        assert [r.status for r in await asyncio.gather(first, *rest)] == [202, 202, 202]
        assert [len(t) for t in intake.producer.transactions] == [1, 2]
        shared = intake.producer.transactions[1]
        traces = {
            tuple(e.event_id for e in decode_touchpoints(value)): header(headers, "traceparent")
            for _, _, _, value, headers in shared
        }
        assert {ids: (tp or "").split("-")[1] for ids, tp in traces.items()} == {
            ("chat:m-1", "chat:m-11"): TRACE_ID,
            ("chat:m-2", "chat:m-12"): other_trace,
        }


def test_otlp_exports_over_http_to_the_standard_endpoint_setting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    from connectors.tracing import _exporter

    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector.example:4318")
    exporter = _exporter(TracingSettings.parse("otlp", "svc"))
    assert isinstance(exporter, OTLPSpanExporter)
    assert exporter._endpoint == "http://collector.example:4318/v1/traces"
    exporter.shutdown()


def test_a_span_file_that_cannot_be_written_is_refused_at_start(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    with pytest.raises(TracingSettingsError, match="expected a file spans can be appended to"):
        tracer_for(TracingSettings.parse(f"file:{blocker}/spans.jsonl", "svc"))


def test_a_span_file_in_a_new_directory_is_created(tmp_path: Path) -> None:
    path = tmp_path / "traces" / "today" / "spans.jsonl"
    tracer = tracer_for(TracingSettings.parse(f"file:{path}", "svc"))
    assert tracer is not None
    with tracer.start_as_current_span("one"):
        pass
    [span] = spans(path)
    assert (span["name"], span["service"], span["parent_span_id"]) == ("one", "svc", None)
