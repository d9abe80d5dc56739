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

from bench.cases.full_workload import Customers, touchpoints  # noqa: E402
from schemas.codec import (  # noqa: E402
    decode_touchpoint,
    decode_touchpoints_lenient,
    encode_touchpoint,
    encode_touchpoint_batch,
    touchpoint_batch_codec,
    touchpoint_event_codec,
)
from schemas.models import TouchpointBatch, TouchpointEvent  # noqa: E402

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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--envelope", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=20261122)
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
    for shape in shapes:
        avro, validating, fast = (best[(shape, w)] for w in ("avro", "validating", "fast"))
        print(
            f"  {shape:9s} avro {avro:5.2f}  validating {validating:5.2f}  fast {fast:5.2f}"
            f"  fast/validating {fast / validating:.2f}x"
            f"  beyond avro: validating {validating - avro:4.2f}, fast {fast - avro:4.2f}"
        )
    print("fast and validating decoding give the same events")
    return 0


if __name__ == "__main__":
    sys.exit(main())
