"""OpenTelemetry tracing from a connector request to the interventions it causes.

Off by default. ``WARROOM_TRACING`` turns it on with one exporter:

- ``console``: each finished span as JSON on standard output;
- ``otlp``: OTLP over HTTP (protobuf), configured by the standard ``OTEL_EXPORTER_OTLP_*``
  variables (endpoint default ``http://localhost:4318``), exported in batches;
- ``file:PATH``: each finished span as one JSON line appended to ``PATH``.

The trace context crosses Kafka as W3C Trace Context: ``traceparent`` (and
``tracestate`` when there is one) in the record headers. A connector writes the
context of its publish span on every record of a publish call; envelopes never mix
publish calls (connectors.publisher), so one record header speaks for every touchpoint
in the record.

With tracing off no tracer exists: callers hold ``None`` and take their untraced path.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
TRACE_HEADERS = (TRACEPARENT, TRACESTATE)
INSTRUMENTATION = "warroom"

Exporter = Literal["off", "console", "otlp", "file"]
Headers = list[tuple[str, bytes]]
"""Kafka record headers: (name, value) pairs."""

_PROPAGATOR = TraceContextTextMapPropagator()


class TracingSettingsError(ValueError):
    """A ``WARROOM_TRACING`` value that names no exporter."""


@dataclass(frozen=True, slots=True)
class TracingSettings:
    """Which exporter finished spans go to, and the service they are named after."""

    exporter: Exporter = "off"
    path: Path | None = None
    """The JSON lines file of ``file:PATH``."""
    service_name: str = "warroom"

    @classmethod
    def parse(cls, spec: str, service_name: str) -> TracingSettings:
        """From a ``WARROOM_TRACING`` value: off, console, otlp or file:PATH."""
        value = spec.strip()
        if value == "off":
            return cls("off", None, service_name)
        if value == "console":
            return cls("console", None, service_name)
        if value == "otlp":
            return cls("otlp", None, service_name)
        if value.startswith("file:") and value[len("file:") :].strip():
            return cls("file", Path(value[len("file:") :].strip()), service_name)
        raise TracingSettingsError(
            f"tracing: expected off, console, otlp or file:PATH, found {spec!r}"
        )

    @property
    def on(self) -> bool:
        return self.exporter != "off"


TRACING_OFF = TracingSettings()

_tracers: dict[TracingSettings, trace.Tracer] = {}
_tracers_lock = threading.Lock()


def tracer_for(settings: TracingSettings) -> trace.Tracer | None:
    """The process's tracer for ``settings`` (one provider and exporter per settings,
    shared by everyone who asks), or ``None`` when tracing is off."""
    if not settings.on:
        return None
    with _tracers_lock:
        tracer = _tracers.get(settings)
        if tracer is None:
            tracer = _tracers[settings] = _start(settings)
        return tracer


def _start(settings: TracingSettings) -> trace.Tracer:
    # shutdown_on_exit: the batch exporter sends what it holds when the process exits
    provider = TracerProvider(
        resource=Resource.create({SERVICE_NAME: settings.service_name}), shutdown_on_exit=True
    )
    exporter = _exporter(settings)
    if settings.exporter == "otlp":
        provider.add_span_processor(BatchSpanProcessor(exporter))
    else:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider.get_tracer(INSTRUMENTATION)


def _exporter(settings: TracingSettings) -> SpanExporter:
    if settings.exporter == "otlp":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter()
    if settings.exporter == "file":
        assert settings.path is not None
        try:
            settings.path.parent.mkdir(parents=True, exist_ok=True)
            out = settings.path.open("a", encoding="utf-8")
        except OSError as exc:
            raise TracingSettingsError(
                f"tracing: expected a file spans can be appended to, found {exc}"
            ) from exc
        return JsonLinesSpanExporter(out)
    return JsonLinesSpanExporter(sys.stdout)


class JsonLinesSpanExporter(SpanExporter):
    """Writes each finished span as one JSON line (see :func:`span_record`) and flushes."""

    def __init__(self, out: IO[str]) -> None:
        self._out = out
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        lines = "".join(json.dumps(span_record(s), separators=(",", ":")) + "\n" for s in spans)
        with self._lock:
            self._out.write(lines)
            self._out.flush()
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        with self._lock:
            if self._out is not sys.stdout and not self._out.closed:
                self._out.close()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True


def span_record(span: ReadableSpan) -> dict[str, object]:
    """A finished span as JSON: ids in the W3C hex form (as in ``traceparent``)."""
    context = span.get_span_context()
    parent = span.parent
    return {
        "name": span.name,
        "kind": span.kind.name,
        "service": span.resource.attributes.get(SERVICE_NAME),
        "trace_id": f"{context.trace_id:032x}" if context else None,
        "span_id": f"{context.span_id:016x}" if context else None,
        "parent_span_id": None if parent is None else f"{parent.span_id:016x}",
        "start_ns": span.start_time,
        "end_ns": span.end_time,
        "status": span.status.status_code.name,
        "attributes": dict(span.attributes or {}),
        "pid": os.getpid(),
    }


def extract_http(headers: Mapping[str, str]) -> Context | None:
    """The trace context of an HTTP request's ``traceparent``/``tracestate``, if valid."""
    if TRACEPARENT not in headers:
        return None
    return _valid(_PROPAGATOR.extract(headers))


def extract_kafka(headers: Sequence[tuple[str, bytes]]) -> Context | None:
    """The trace context a Kafka record's headers carry, if they carry a valid one."""
    carrier = {
        name: value.decode("ascii", "replace")
        for name, value in headers
        if name in TRACE_HEADERS and value is not None
    }
    if TRACEPARENT not in carrier:
        return None
    return _valid(_PROPAGATOR.extract(carrier))


def trace_headers(headers: Sequence[tuple[str, bytes]]) -> Headers:
    """The ``traceparent`` and ``tracestate`` headers among ``headers``, as they are."""
    return [(name, value) for name, value in headers if name in TRACE_HEADERS]


def inject_kafka(context: Context | None = None) -> Headers:
    """Kafka headers that carry ``context`` (default: the current one)."""
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier, context)
    return [(name, value.encode("ascii")) for name, value in carrier.items()]


def _valid(context: Context) -> Context | None:
    if trace.get_current_span(context).get_span_context().is_valid:
        return context
    return None
