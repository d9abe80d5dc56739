"""Decode and encode cost per record of each framing, no broker and no registry server:

    .venv/bin/python deploy/registry/bench_framing.py [--records 200000] [--rounds 5]

Rows: single-object records with no registry configured (the default path), the same
records once a registry is configured, and Confluent-framed records (ids resolved once,
from an in-memory registry). Best of ``--rounds`` interleaved rounds, ns per record.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from datetime import UTC, datetime

from schemas.codec import (
    AvroSchema,
    decode_touchpoints_lenient,
    encode_touchpoint,
    packaged_schema,
    use_registry,
    use_single_object,
)
from schemas.models import Channel, Direction, TouchpointEvent

EVENT = TouchpointEvent(
    event_id="evt-1",
    customer_id="cust-42",
    occurred_at=datetime(2024, 5, 1, 9, 30, tzinfo=UTC),
    received_at=datetime(2024, 5, 1, 9, 30, 1, tzinfo=UTC),
    channel=Channel.CHAT,
    kind="message_sent",
    direction=Direction.OUTBOUND,
    rep_id="rep-7",
    source="chat-http/0.1.0",
    attributes={"words": 3},
)
IDS = {"touchpoint_event": 1, "touchpoint_batch": 2}


class MemoryIds:
    def __init__(self) -> None:
        self.schemas = {number: packaged_schema(stem) for stem, number in IDS.items()}

    def schema_of(self, schema_id: int) -> AvroSchema:
        return self.schemas[schema_id]


def per_record(work: Callable[[], object], records: int) -> float:
    start = time.perf_counter()
    for _ in range(records):
        work()
    return (time.perf_counter() - start) / records * 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    use_single_object()
    single = encode_touchpoint(EVENT)
    ids = MemoryIds()
    use_registry(ids, IDS)
    confluent = encode_touchpoint(EVENT)
    assert confluent[:1] == b"\x00" and single[:2] == b"\xc3\x01"
    rows: dict[str, list[float]] = {}

    def measure(name: str, work: Callable[[], object]) -> None:
        rows.setdefault(name, []).append(per_record(work, args.records))

    for _ in range(args.rounds):
        use_single_object()
        measure("decode single-object, no registry", lambda: decode_touchpoints_lenient(single))
        measure("encode single-object, no registry", lambda: encode_touchpoint(EVENT))
        use_registry(ids, IDS)
        measure("decode single-object, registry on", lambda: decode_touchpoints_lenient(single))
        measure("decode Confluent, registry on", lambda: decode_touchpoints_lenient(confluent))
        measure("encode Confluent, registry on", lambda: encode_touchpoint(EVENT))
    use_single_object()
    for name, samples in rows.items():
        print(f"{name:36} {min(samples):8.0f} ns/record (best of {len(samples)})")


if __name__ == "__main__":
    main()
