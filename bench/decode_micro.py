#!/usr/bin/env python3
"""The worker's cost of decoding a touchpoint, no broker: µs per event.

    .venv/bin/python bench/decode_micro.py [--events 50000] [--envelope 500] [--rounds 5]

The full workload's seeded touchpoints (bench/cases/full_workload.py) are encoded once as
envelopes (TouchpointBatch records of ``--envelope`` events) and once as one record per
event, then decoded, interleaved ``--rounds`` times, in three ways:

- ``avro``: fastavro only (``AvroCodec.decode``), the floor;
- ``validating``: fastavro, then ``model_validate`` per event, what the worker did
  before the fast path (``TouchpointBatch.model_validate`` for an envelope,
  ``decode_touchpoint`` for a single record);
- ``fast``: ``decode_touchpoints_lenient`` as the worker calls it (the fast path, which
  falls back to validation for a record it cannot vouch for).

``--pipeline`` adds the worker's ``streams.pipeline.Pipeline.process`` over the
envelopes (4 partitions, the built-in bundle, every customer new), once as it runs and
once with the fast path turned off (every record validated), with the same outcome.

Times are the process's CPU time (``time.process_time``), steadier than wall time on a
shared machine. The best round of each is printed; ``fast`` and ``validating`` must give
the same events, the script says so or fails. Compare ratios from one run.
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import schemas.codec as codec_module  # noqa: E402
from bench.cases.full_workload import Customers, touchpoints  # noqa: E402
from engine.builtin import BUILTIN_BUNDLE  # noqa: E402
from engine.rulebook import RuleBook  # noqa: E402
from engine.timestamps import TimestampPolicy  # noqa: E402
from schemas.codec import (  # noqa: E402
    decode_touchpoint,
    decode_touchpoints_lenient,
    encode_touchpoint,
    encode_touchpoint_batch,
    touchpoint_batch_codec,
    touchpoint_event_codec,
)
from schemas.models import TouchpointBatch, TouchpointEvent  # noqa: E402
from schemas.partitioning import customer_partition  # noqa: E402
from streams.pipeline import Pipeline, RawRecord  # noqa: E402

T0 = datetime(2026, 11, 1, tzinfo=UTC)


def _envelopes(data: list[bytes]) -> dict[str, Callable[[], Any]]:
    codec = touchpoint_batch_codec()

    def avro() -> Any:
        return [codec.decode(d) for d in data]

    def validating() -> Any:
        return [TouchpointBatch.model_validate(codec.decode(d)).events for d in data]

    def fast() -> Any:
        return [decode_touchpoints_lenient(d)[0] for d in data]

    return {"avro": avro, "validating": validating, "fast": fast}


def _singles(data: list[bytes]) -> dict[str, Callable[[], Any]]:
    codec = touchpoint_event_codec()

    def avro() -> Any:
        return [codec.decode(d) for d in data]

    def validating() -> Any:
        return [[decode_touchpoint(d)] for d in data]

    def fast() -> Any:
        return [decode_touchpoints_lenient(d)[0] for d in data]

    return {"avro": avro, "validating": validating, "fast": fast}


PARTITIONS = 4


def _pipeline(events: list[TouchpointEvent], step: int) -> dict[str, Callable[[], Any]]:
    by_partition: dict[int, list[TouchpointEvent]] = {}
    for event in events:
        by_partition.setdefault(customer_partition(event.customer_id, PARTITIONS), []).append(event)
    records = [
        RawRecord("touchpoints", partition, offset, None, encode_touchpoint_batch(chunk))
        for partition, mine in sorted(by_partition.items())
        for offset, chunk in enumerate(mine[i : i + step] for i in range(0, len(mine), step))
    ]
    pipeline = Pipeline(
        rulebook=RuleBook(BUILTIN_BUNDLE), timestamps=TimestampPolicy(), partitions=PARTITIONS
    )
    now = events[-1].occurred_at

    def process() -> Any:
        result = pipeline.process(records, lambda _: None, now)
        return (result.processed, result.states, [c for _, c in result.interventions])

    def validating() -> Any:
        fast = getattr(codec_module, "touchpoint_from_avro")  # noqa: B009
        setattr(codec_module, "touchpoint_from_avro", lambda _: None)  # noqa: B010
        try:
            return process()
        finally:
            setattr(codec_module, "touchpoint_from_avro", fast)  # noqa: B010

    return {"validating": validating, "fast": process}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--envelope", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=20261122)
    parser.add_argument("--pipeline", action="store_true", help="also Pipeline.process")
    args = parser.parse_args()

    customers = Customers(count=5000, skew=1.1, seed=args.seed)
    events: list[TouchpointEvent] = list(
        touchpoints(args.events, customers, args.seed, T0, timedelta(seconds=13))
    )
    step = args.envelope
    shapes = {
        "envelopes": _envelopes(
            [encode_touchpoint_batch(events[i : i + step]) for i in range(0, len(events), step)]
        ),
        "single": _singles([encode_touchpoint(e) for e in events]),
    }
    if args.pipeline:
        shapes["pipeline"] = _pipeline(events, step)
    for shape, ways in shapes.items():
        if ways["fast"]() != ways["validating"]():
            print(f"{shape}: fast and validating decoding differ", file=sys.stderr)
            return 1
    best: dict[tuple[str, str], float] = {}
    for _ in range(args.rounds):
        for shape, ways in shapes.items():
            for way, run in ways.items():
                gc.collect()
                started = time.process_time()
                run()
                per_event = (time.process_time() - started) / len(events) * 1e6
                key = (shape, way)
                best[key] = min(best.get(key, per_event), per_event)
    print(f"{len(events)} events, envelopes of {step}, best of {args.rounds} rounds (µs/event)")
    for shape, ways in shapes.items():
        validating, fast = best[(shape, "validating")], best[(shape, "fast")]
        line = f"  {shape:9s} validating {validating:5.2f}  fast {fast:5.2f}  "
        line += f"fast/validating {fast / validating:.2f}x"
        if "avro" in ways:
            avro = best[(shape, "avro")]
            line += (
                f"  avro {avro:5.2f}; beyond avro: validating {validating - avro:4.2f}, "
                f"fast {fast - avro:4.2f}"
            )
        print(line)
    print("fast and validating decoding give the same events")
    return 0


if __name__ == "__main__":
    sys.exit(main())
