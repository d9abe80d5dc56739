"""Malformed records mixed into valid traffic: each lands in the DLQ with a reason,
every valid touchpoint is processed, and the worker never restarts."""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from schemas.codec import (
    decode_dead_letter,
    encode_touchpoint,
    encode_touchpoint_batch,
    touchpoint_event_codec,
)
from schemas.models import TouchpointEvent
from schemas.partitioning import customer_partition
from streams.settings import Settings
from streams.topics import ensure_topics
from tests.integration.harness import group_progress, read_all, worker_pid

from .conftest import ChaosWorker
from .workload import (
    Record,
    Scale,
    compare,
    emitted_interventions,
    encode_mixed,
    generate_events,
    oracle,
    produce_paced,
    short_tail,
    tracebacks,
    wait_for,
)

HUGE_TEXT = 1_000_000
"""Characters in a huge field: the record is just under the broker's default
message.max.bytes (1,048,588), so the dead letter carrying it is over."""

REASONS = {
    "random_bytes": "undecodable",
    "truncated_avro": "undecodable",
    "wrong_fingerprint": "unknown_schema",
    "huge_field": "invalid_event",
    "timestamp_before_2000": "bad_timestamp",
    "timestamp_in_future": "bad_timestamp",
    "null_value": "undecodable",
    "tombstone": "undecodable",
    "wrong_partition": "wrong_partition",
    "bad_event_in_envelope": "bad_timestamp",
}
"""Each kind of malformed record and its DLQ reason. A huge field may instead be
reported as ``too_large`` (the record cannot be carried whole in a dead letter)."""


def malformed(kind: str, event: TouchpointEvent, partitions: int, rng: random.Random) -> Record:
    """One malformed record made from a valid ``event`` (of a customer of its own)."""
    key = event.customer_id.encode()
    home = customer_partition(event.customer_id, partitions)
    good = encode_touchpoint(event)
    if kind == "random_bytes":
        body = os.urandom(rng.randrange(1, 300))
        return home, key, bytes([rng.randrange(0, 0xC3)]) + body
    if kind == "truncated_avro":
        return home, key, good[: rng.randrange(1, len(good))]
    if kind == "wrong_fingerprint":
        return home, key, good[:2] + os.urandom(8) + good[10:]
    if kind == "huge_field":
        text = "x" * (HUGE_TEXT - len(good))
        return home, key, touchpoint_event_codec().encode({**event.__dict__, "text": text})
    if kind == "timestamp_before_2000":
        at = datetime(1999, 12, 31, tzinfo=UTC)
        return home, key, encode_touchpoint(event.model_copy(update={"occurred_at": at}))
    if kind == "timestamp_in_future":
        at = datetime.now(UTC) + timedelta(days=2)
        moved = event.model_copy(update={"occurred_at": at, "received_at": at})
        return home, key, encode_touchpoint(moved)
    if kind == "null_value":
        return home, b"", None  # aiokafka refuses a record with neither key nor value
    if kind == "tombstone":
        return home, key, None
    if kind == "wrong_partition":
        return (home + 1 + rng.randrange(partitions - 1)) % partitions, key, good
    if kind == "bad_event_in_envelope":
        late = event.model_copy(
            update={
                "event_id": event.event_id + "-x",
                "occurred_at": datetime(1990, 1, 1, tzinfo=UTC),
            }
        )
        return home, None, encode_touchpoint_batch([event, late])
    raise ValueError(f"unknown kind of malformed record {kind!r}")


async def test_malformed_records_go_to_the_dlq_and_the_worker_keeps_running(
    settings: Settings,
    workers: Callable[[int], list[ChaosWorker]],
    scale: Scale,
    seed: int,
    figures: dict[str, object],
) -> None:
    started = time.monotonic()
    rng = random.Random(seed)
    valid = generate_events(scale.malformed_valid_touchpoints, 500, seed, "v")
    records = encode_mixed(valid, settings.partitions, rng)
    others = [k for k in REASONS if k != "huge_field"]
    kinds = ["huge_field"] * scale.huge_records + [
        others[n % len(others)] for n in range(scale.malformed - scale.huge_records)
    ]
    # Malformed records name customers of their own, at the time of a valid neighbour.
    planted: Counter[str] = Counter(kinds)
    for number, kind in enumerate(kinds):
        position = rng.randrange(len(records) + 1)
        near = valid[min(len(valid) - 1, position * len(valid) // max(1, len(records)))]
        bad = near.model_copy(
            update={"event_id": f"bad-e{number}", "customer_id": f"bad-{number:05d}"}
        )
        records.insert(position, malformed(kind, bad, settings.partitions, rng))
    figures.update(
        seed=seed, valid_touchpoints=len(valid), malformed=len(kinds), records=len(records)
    )
    await ensure_topics(settings)
    [worker] = workers(1)
    worker.start()
    await asyncio.sleep(1)
    pid = worker_pid(worker)
    pace = scale.touchpoints_per_second * 2
    await produce_paced(settings, records, (len(valid) + len(kinds)) / len(records), pace)
    async with group_progress(settings) as progress:

        async def all_committed() -> bool:
            done, total = await progress()
            return done == total == len(records)

        await wait_for(all_committed, "every record to be committed", 120, [worker])

    expected = await oracle(settings)
    letters = await read_all(settings, "dlq", decode_dead_letter)
    by_reason = Counter(letter.reason for letter in letters)
    verdict = compare([c for _, c in expected.interventions], await emitted_interventions(settings))
    figures.update(
        dlq_by_reason=dict(sorted(by_reason.items())),
        processed_by_oracle=expected.processed,
        **verdict.figures(),
        worker_pid_unchanged=worker_pid(worker) == pid,
        tracebacks=len(tracebacks(worker)),
        wall_seconds=round(time.monotonic() - started, 1),
    )
    print("planted:", dict(planted))

    # The test's own generator: the oracle rejects exactly what was planted, as planned.
    assert expected.processed == len(valid) + planted["bad_event_in_envelope"]
    oracle_letters = {(p, d.offset, d.reason) for p, d in expected.dead_letters}
    assert len(oracle_letters) == len(kinds)
    planned: Counter[str] = Counter()
    for kind, count in planted.items():
        planned[REASONS[kind]] += count
    assert Counter(r for _, _, r in oracle_letters) == planned
    huge = {
        (p, d.offset)
        for p, d in expected.dead_letters
        if (d.raw_length or len(d.raw_value)) >= HUGE_TEXT // 2  # raw_value may be cut
    }
    assert len(huge) == planted["huge_field"]

    assert worker_pid(worker) == pid, f"the worker restarted or died:\n{short_tail(worker)}"
    assert not tracebacks(worker), f"tracebacks in the worker log:\n{short_tail(worker)}"
    found = Counter((letter.partition, letter.offset) for letter in letters)
    missing = {(p, o, r) for p, o, r in oracle_letters if (p, o) not in found}
    assert not missing, (
        f"{len(missing)} malformed records not in the DLQ, e.g. {sorted(missing)[:5]}"
    )
    assert all(n == 1 for n in found.values()), "a malformed record is in the DLQ twice"
    wrong = [
        (letter.partition, letter.offset, letter.reason)
        for letter in letters
        if (letter.partition, letter.offset, letter.reason) not in oracle_letters
        and not (letter.reason == "too_large" and (letter.partition, letter.offset) in huge)
    ]
    assert not wrong, f"DLQ records with an unexpected position or reason: {wrong[:5]}"
    assert verdict.exact, verdict.problems()
