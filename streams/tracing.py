"""The worker's spans, when tracing is on (connectors.tracing says how to turn it on).

A touchpoint record whose headers carry a W3C ``traceparent`` (a connector wrote it)
is processed inside a CONSUMER span, the child of the connector's publish span. Every
intervention the record causes is a PRODUCER span, the child of that one, and the
intervention's record carries that span's ``traceparent``; a CRM that continues the
trace hangs its work under the intervention. The record's dead letters keep the
``traceparent`` and ``tracestate`` it came with.

One span per record, not per touchpoint: a connector writes one context for a whole
record (connectors.publisher), so every touchpoint of the record shares it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from opentelemetry import trace
from opentelemetry.trace import SpanKind, StatusCode, Tracer

from connectors.tracing import extract_kafka, inject_kafka, trace_headers, tracer_for
from engine.state import CustomerState
from schemas.topics import INTERVENTIONS

from .settings import Settings

if TYPE_CHECKING:
    from .pipeline import BatchResult, Pipeline, RawRecord

ROLE = "worker"


class WorkerTracing:
    """Processes records through a pipeline inside spans, and keeps the trace context
    headers of what they cause in the result."""

    def __init__(self, tracer: Tracer, interventions_topic: str) -> None:
        self._tracer = tracer
        self._interventions_topic = interventions_topic

    def process(
        self,
        pipeline: Pipeline,
        record: RawRecord,
        headers: Sequence[tuple[str, bytes]] | Mapping[str, bytes],
        load: Callable[[str], CustomerState | None],
        now: datetime,
        result: BatchResult,
    ) -> None:
        """``pipeline.process`` of one record, inside a span when ``headers`` carry a
        valid trace context (plainly otherwise)."""
        if isinstance(headers, Mapping):
            headers = list(headers.items())
        parent = extract_kafka(headers)
        if parent is None:
            pipeline.process((record,), load, now, into=result)
            return
        emitted = len(result.interventions)
        rejected = len(result.dead_letters)
        span = self._tracer.start_span(
            "process touchpoints",
            context=parent,
            kind=SpanKind.CONSUMER,
            attributes={
                "messaging.system": "kafka",
                "messaging.operation.type": "process",
                "messaging.destination.name": record.topic,
                "messaging.destination.partition.id": str(record.partition),
                "messaging.kafka.offset": record.offset,
            },
        )
        try:
            pipeline.process((record,), load, now, into=result)
        except BaseException as exc:
            span.record_exception(exc)
            span.set_status(StatusCode.ERROR)
            span.end()
            raise
        caused = result.interventions[emitted:]
        span.set_attribute("warroom.interventions", len(caused))
        if len(result.dead_letters) > rejected:
            span.set_attribute("warroom.dead_letters", len(result.dead_letters) - rejected)
            where = (record.topic, record.partition, record.offset)
            result.dead_letter_headers[where] = trace_headers(headers)
        inside = trace.set_span_in_context(span)
        for _, command in caused:
            child = self._tracer.start_span(
                "send interventions",
                context=inside,
                kind=SpanKind.PRODUCER,
                attributes={
                    "messaging.system": "kafka",
                    "messaging.operation.type": "send",
                    "messaging.destination.name": self._interventions_topic,
                    "warroom.intervention_id": command.intervention_id,
                    "warroom.rule_id": command.rule_id,
                    "warroom.rule_version": command.rule_version,
                },
            )
            result.trace_headers[command.intervention_id] = inject_kafka(
                trace.set_span_in_context(child)
            )
            child.end()
        span.end()


def carried(
    headers: Sequence[tuple[str, bytes]] | Mapping[str, bytes] | None,
) -> list[tuple[str, bytes]] | None:
    """The trace context among a consumed record's headers, for the record it becomes
    (an intervention admitted from rep-candidates); None when there is none."""
    if not headers:
        return None
    items = list(headers.items()) if isinstance(headers, Mapping) else headers
    return trace_headers(items) or None


def worker_tracing(settings: Settings) -> WorkerTracing | None:
    """The worker's tracing as ``settings`` ask for it; None when it is off."""
    tracer = tracer_for(settings.tracing_settings(ROLE))
    return None if tracer is None else WorkerTracing(tracer, settings.topic(INTERVENTIONS))
