"""What tracing costs the worker per touchpoint record, no broker needed:

    .venv/bin/python bench/tracing_overhead.py [--records 4000] [--per-record 1] [--rounds 5]

The same touchpoint records (``--records`` of ``--per-record`` outbound emails each,
over 500 customers, so the built-in rule raises interventions now and then) go through
the worker's pipeline as ``streams.batches`` hands them over, three ways:

- **off**: tracing off (``Pipeline.tracing`` is None), records with a ``traceparent``
  header: the header is never read;
- **on, no context**: tracing on, records without headers;
- **on, traced**: tracing on, every record with a ``traceparent``: a CONSUMER span per
  record and a PRODUCER span per intervention, exported to a discarding exporter
  through the SDK's SimpleSpanProcessor (as ``file:`` and ``console`` do, minus the
  write).

The ways alternate (``--rounds``) so the machine's load falls on all alike; each round
starts from no stored state. Printed: the median over rounds of µs per record and per
touchpoint of each, and what tracing adds.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from connectors.publisher import envelopes
from engine.builtin import BUILTIN_BUNDLE
from engine.rulebook import RuleBook
from engine.state import CustomerState
from engine.timestamps import TimestampPolicy
from schemas.models import Channel, Direction, TouchpointEvent
from streams.pipeline import BatchResult, Pipeline, RawRecord
from streams.tracing import WorkerTracing

PARTITIONS = 4
NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
TRACEPARENT = [("traceparent", b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")]


class Discard(SpanExporter):
    def __init__(self) -> None:
        self.spans = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.spans += len(spans)
        return SpanExportResult.SUCCESS


def records(count: int, per_record: int) -> list[RawRecord]:
    out: list[RawRecord] = []
    n = 0
    for offset in range(count):
        customer = f"c{offset % 500}"
        events = []
        for _ in range(per_record):
            at = NOW - timedelta(hours=2) + timedelta(milliseconds=n)
            events.append(
                TouchpointEvent(
                    event_id=f"e{n}",
                    customer_id=customer,
                    occurred_at=at,
                    received_at=at,
                    channel=Channel.EMAIL,
                    kind="email_sent",
                    direction=Direction.OUTBOUND,
                    rep_id="rep-1",
                    source="bench/1",
                )
            )
            n += 1
        [(partition, key, value)] = envelopes(events, PARTITIONS)
        out.append(RawRecord("touchpoints", partition, offset, key, value))
    return out


def run(
    pipeline: Pipeline, batch: list[RawRecord], headers: list[tuple[str, bytes]]
) -> tuple[float, int]:
    """Seconds to process ``batch`` the way streams.batches dispatches; interventions."""
    tracing = pipeline.tracing
    result = BatchResult()
    stored: dict[str, CustomerState] = {}
    load = stored.get
    started = time.perf_counter()
    for record in batch:
        if tracing is not None and headers:
            tracing.process(pipeline, record, headers, load, NOW, result)
        else:
            pipeline.process((record,), load, NOW, into=result)
    return time.perf_counter() - started, len(result.interventions)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=4000)
    parser.add_argument("--per-record", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    batch = records(args.records, args.per_record)
    exporter = Discard()
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    base = Pipeline(RuleBook(BUILTIN_BUNDLE), TimestampPolicy(), PARTITIONS)
    traced = Pipeline(
        RuleBook(BUILTIN_BUNDLE),
        TimestampPolicy(),
        PARTITIONS,
        tracing=WorkerTracing(provider.get_tracer("bench"), "interventions"),
    )
    ways = {
        "off": (base, TRACEPARENT),
        "on, no context": (traced, []),
        "on, traced": (traced, TRACEPARENT),
    }
    timings: dict[str, list[float]] = {name: [] for name in ways}
    emitted: dict[str, int] = {}
    run(base, batch, [])  # warm up
    for _ in range(args.rounds):
        for name, (pipeline, headers) in ways.items():
            seconds, emitted[name] = run(pipeline, batch, headers)
            timings[name].append(seconds)
    touchpoints = args.records * args.per_record
    print(
        f"{args.records} records of {args.per_record} touchpoint(s), "
        f"{args.rounds} rounds, median per round"
    )
    off = statistics.median(timings["off"])
    for name, runs in timings.items():
        median = statistics.median(runs)
        print(
            f"  {name:15} {median * 1e6 / args.records:8.1f} µs/record "
            f"{median * 1e6 / touchpoints:8.1f} µs/touchpoint "
            f"({median / off:4.2f}x off) interventions {emitted[name]}"
        )
    print(f"  spans exported: {exporter.spans}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
