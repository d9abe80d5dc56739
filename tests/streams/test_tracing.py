"""Tracing in the worker: a span per traced touchpoint record, a ``traceparent`` on the
interventions it causes and on its dead letters; nothing when tracing is off."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from connectors.publisher import envelopes
from schemas.partitioning import customer_partition
from streams.batches import _output
from streams.metrics import WorkerMetrics
from streams.pipeline import BatchResult, RawRecord
from streams.rep_caps import admit_candidates
from streams.settings import Settings
from streams.tracing import WorkerTracing, worker_tracing
from streams.writer import OutRecord

from .test_pipeline import NOW, PARTITIONS, TOPIC, nothing_stored, pipeline, touchpoint

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
HEADERS = [("traceparent", f"00-{TRACE_ID}-{PARENT_ID}-01".encode()), ("other", b"x")]
SETTINGS = Settings(partitions=PARTITIONS)
INTERVENTIONS = SETTINGS.topic("interventions")
DLQ = SETTINGS.topic("dlq")


def traced() -> tuple[WorkerTracing, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return WorkerTracing(provider.get_tracer("test"), INTERVENTIONS), exporter


def acme_record() -> RawRecord:
    """One envelope of three unanswered outbound emails: the built-in rule fires once."""
    [(partition, key, value)] = envelopes([touchpoint(n, "acme") for n in (1, 2, 3)], PARTITIONS)
    return RawRecord(TOPIC, partition, 41, key, value)


def written(result: BatchResult) -> list[OutRecord]:
    warroom: Any = SimpleNamespace(settings=SETTINGS, states=SimpleNamespace(changelog="states"))
    states = [
        (p, customer, b"state") for p, changed in result.states.items() for customer in changed
    ]
    return list(_output(warroom, result, states, direct=True))


def header(record: OutRecord, name: str) -> str | None:
    found = [v.decode() for k, v in record.headers or () if k == name]
    return found[0] if found else None


def test_tracing_is_off_unless_settings_turn_it_on() -> None:
    assert worker_tracing(Settings()) is None


def test_with_tracing_off_output_records_carry_no_headers() -> None:
    result = pipeline().process([acme_record()], nothing_stored, NOW)
    out = written(result)
    assert [r.topic for r in out if r.topic == INTERVENTIONS] == [INTERVENTIONS]
    assert all(r.headers is None for r in out)


def test_a_traced_record_is_a_span_and_its_intervention_carries_a_child_context() -> None:
    tracing, exporter = traced()
    result = BatchResult()
    tracing.process(pipeline(), acme_record(), HEADERS, nothing_stored, NOW, result)
    spans = {s.name: s for s in exporter.get_finished_spans()}
    assert sorted(spans) == ["process touchpoints", "send interventions"]
    process, send = spans["process touchpoints"], spans["send interventions"]
    assert process.context is not None and send.context is not None
    assert process.parent is not None and send.parent is not None
    assert f"{process.context.trace_id:032x}" == TRACE_ID
    assert f"{process.parent.span_id:016x}" == PARENT_ID
    assert send.parent.span_id == process.context.span_id
    assert send.context.trace_id == process.context.trace_id
    [(_, command)] = result.interventions
    assert send.attributes is not None
    assert send.attributes["warroom.intervention_id"] == command.intervention_id
    [intervention] = [r for r in written(result) if r.topic == INTERVENTIONS]
    assert header(intervention, "traceparent") == (f"00-{TRACE_ID}-{send.context.span_id:016x}-01")
    changelog = [r for r in written(result) if r.topic == "states"]
    assert changelog and all(r.headers is None for r in changelog)


def test_a_record_without_a_valid_context_is_processed_without_a_span() -> None:
    tracing, exporter = traced()
    result = BatchResult()
    record = acme_record()
    tracing.process(pipeline(), record, [("traceparent", b"garbage")], nothing_stored, NOW, result)
    assert exporter.get_finished_spans() == ()
    assert len(result.interventions) == 1
    assert all(r.headers is None for r in written(result))


def test_dead_letters_keep_the_trace_context_they_came_with() -> None:
    tracing, exporter = traced()
    result = BatchResult()
    partition = customer_partition("acme", PARTITIONS)
    junk = RawRecord(TOPIC, partition, 7, b"acme", b"\x00\x01junk")
    incoming = [*HEADERS, ("tracestate", b"vendor=1")]
    tracing.process(pipeline(), junk, incoming, nothing_stored, NOW, result)
    [letter] = [r for r in written(result) if r.topic == DLQ]
    assert letter.headers == [HEADERS[0], ("tracestate", b"vendor=1")]
    [span] = exporter.get_finished_spans()
    assert span.attributes is not None and span.attributes["warroom.dead_letters"] == 1


class Assignees:
    changelog = "assignee-sent"

    def __init__(self) -> None:
        self.kept: dict[str, Any] = {}

    def get(self, key: str) -> Any:
        return self.kept.get(key)

    def put(self, key: str, partition: int, value: Any) -> None:
        self.kept[key] = value


def test_an_intervention_admitted_under_a_rep_cap_keeps_its_trace_context() -> None:
    tracing, _ = traced()
    result = BatchResult()
    tracing.process(pipeline(), acme_record(), HEADERS, nothing_stored, NOW, result)
    warroom: Any = SimpleNamespace(
        settings=SETTINGS,
        states=SimpleNamespace(changelog="states"),
        pipeline=SimpleNamespace(rulebook=SimpleNamespace(per_rep_per_day=5)),
        assignees=Assignees(),
        metrics=WorkerMetrics.create(),
        analytics=SimpleNamespace(record=lambda *_: None),
    )
    [candidate] = [
        r for r in _output(warroom, result, [], direct=False) if r.topic.endswith("candidates")
    ]
    assert header(candidate, "traceparent") is not None
    event = SimpleNamespace(
        message=SimpleNamespace(
            value=candidate.value, partition=candidate.partition, headers=candidate.headers
        )
    )
    [admitted] = [r for r in admit_candidates(warroom, [event]) if r.topic == INTERVENTIONS]
    assert admitted.headers == candidate.headers
