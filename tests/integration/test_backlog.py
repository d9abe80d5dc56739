"""A backlog under a slow bundle on the real broker: the worker works through it in
transactions far shorter than the transaction timeout, and every intervention comes
out exactly once.

With one transaction per take_events batch (``WARROOM_BACKLOG_UNSLICED=1``) the same
backlog fences the worker: the first, small batch's output waits uncommitted while the
second, long batch is processed (a commit picks the partitions with acknowledged offsets
before it waits for the lock, so none picks the first batch's until the second is done),
the broker aborts that transaction after the timeout, and the worker stops with
ProducerFenced."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import time
from collections import defaultdict
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime

import pytest

from connectors.publisher import envelopes
from schemas.models import InterventionCommand, TouchpointEvent
from schemas.partitioning import customer_partition
from streams.pipeline import RawRecord
from streams.rules_push import push_bundle
from streams.settings import Settings
from streams.topics import ensure_topics
from tests.chaos.workload import compare, emitted_interventions, oracle_pipeline, wait_for

from .harness import (
    WorkerProcess,
    backlog_events,
    group_progress,
    histogram_summary,
    produce_records,
    read_to_end,
    slow_bundle,
    worker_metrics,
    worker_pid,
)

SINGLES = 36
"""Plain records at the head of each partition's backlog."""
ENVELOPE_EVENTS = 100
"""Touchpoints per envelope. A slice ends between records, so it can run over its time
budget by one envelope's processing: about 0.2 s on a quiet machine."""
RULES = 1_000
TOUCHPOINTS = 36_000
CUSTOMERS = 400
TRANSACTION_TIMEOUT_SECONDS = 10.0
"""The shortest the settings allow; the backlog takes two to four times as long to
process on a 2-core machine with this bundle (about 1.7 ms per touchpoint)."""
OLD_BEHAVIOUR = {"slice_max_events": 10_000_000, "slice_max_seconds": 100_000.0}
"""Settings that make a slice the whole take_events batch: one transaction per batch,
as before batches were sliced. ``WARROOM_BACKLOG_UNSLICED=1`` runs the test with them,
to see it fail."""
UNSLICED_ENV = "WARROOM_BACKLOG_UNSLICED"


def backlog_records(
    events: Sequence[TouchpointEvent], partitions: int
) -> list[tuple[int, bytes | None, bytes]]:
    """Each partition's share of ``events``: its first :data:`SINGLES` touchpoints as plain
    records (as a connector without envelopes writes them), the rest in envelopes.

    With ``batch_max_records`` at ``partitions * SINGLES`` the worker's first take_events
    batch is the plain records (Faust takes fetched partitions in turn) and the second is
    the envelopes, nearly all of the :data:`TOUCHPOINTS`: a batch that takes longer than
    the transaction timeout, right after a batch whose output is still uncommitted."""
    by_partition: dict[int, list[TouchpointEvent]] = defaultdict(list)
    for event in events:
        by_partition[customer_partition(event.customer_id, partitions)].append(event)
    records: list[tuple[int, bytes | None, bytes]] = []
    for partition in sorted(by_partition):
        share = by_partition[partition]
        for event in share[:SINGLES]:
            records.extend(envelopes([event], partitions))
        records.extend(envelopes(share[SINGLES:], partitions, max_events=ENVELOPE_EVENTS))
    return records


def expected_interventions(
    settings: Settings, bundle: str, records: Sequence[RawRecord]
) -> tuple[int, list[InterventionCommand]]:
    """Touchpoints processed and interventions decided by the pure pipeline, configured as
    the worker configures its own, over ``records`` in offset order per partition."""
    result = oracle_pipeline(settings, [bundle]).process(records, lambda _: None, datetime.now(UTC))
    return result.processed, [command for _, command in result.interventions]


@pytest.mark.long  # half a minute of backlog: `make chaos` runs it, with the suite
async def test_a_backlog_under_a_slow_bundle_commits_in_short_transactions_exactly_once(
    settings: Settings, worker: WorkerProcess
) -> None:
    update: dict[str, object] = {
        "transaction_timeout_seconds": TRANSACTION_TIMEOUT_SECONDS,
        "batch_max_records": settings.partitions * SINGLES,
    }
    if os.environ.get(UNSLICED_ENV):
        update.update(OLD_BEHAVIOUR)
    short = settings.model_copy(update=update)
    worker.settings = short
    await ensure_topics(short)
    bundle = slow_bundle(RULES)
    await push_bundle(short, bundle, "slow.yaml")
    # The backlog is on the topic before the worker starts.
    events = backlog_events(TOUCHPOINTS, CUSTOMERS, seed=5, tag="bk")
    produced = backlog_records(events, short.partitions)
    await produce_records(short, [(p, k, v) for p, k, v in produced])
    by_partition = await read_to_end(short, "touchpoints")
    records = [
        RawRecord(r.topic, r.partition, r.offset, r.key, r.value)
        for tp in sorted(by_partition, key=lambda tp: tp.partition)
        for r in by_partition[tp]
    ]
    assert len(records) == len(produced)
    # The oracle runs in a process of its own while the worker works.
    loop = asyncio.get_running_loop()
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        expected = loop.run_in_executor(pool, expected_interventions, short, bundle, records)
        started = time.monotonic()
        worker.start()
        pid = worker_pid(worker)
        first_commit: list[float] = []
        async with group_progress(short) as progress:

            async def all_committed() -> bool:
                done, total = await progress()
                if done and not first_commit:
                    first_commit.append(time.monotonic())
                return done == total == len(records)

            await wait_for(all_committed, "the whole backlog to be committed", 240, [worker])
        finished = time.monotonic()
        slices, busy, longest = histogram_summary(
            await worker_metrics(short), "warroom_batch_duration_seconds"
        )
        processed, wanted = await expected
    emitted = await emitted_interventions(short)
    verdict = compare(wanted, emitted)
    processing = finished - (first_commit[0] if first_commit else started)
    print(
        f"backlog: {len(events)} touchpoints in {len(records)} records, {RULES} rules, "
        f"{verdict.expected} interventions expected, {verdict.emitted} emitted; "
        f"{finished - started:.1f} s from worker start, {processing:.1f} s from first commit, "
        f"{len(events) / (finished - started):,.0f} touchpoints/s overall; "
        f"{slices} slices, {busy:.1f} s in them, the longest at most {longest} s"
    )
    assert busy > 1.5 * TRANSACTION_TIMEOUT_SECONDS, (
        f"the backlog took only {busy:.1f} s of processing, not clearly longer than the "
        f"{TRANSACTION_TIMEOUT_SECONDS} s transaction timeout: raise TOUCHPOINTS"
    )
    assert longest < TRANSACTION_TIMEOUT_SECONDS, (
        f"a slice took more than {TRANSACTION_TIMEOUT_SECONDS} s (at most {longest} s)"
    )
    assert processed == len(events), "the oracle did not see every touchpoint"
    assert verdict.expected > 0, "the bundle fired nothing: the comparison would prove nothing"
    assert verdict.exact, f"{verdict.problems()}\n{worker.tail_log()}"
    worker.assert_alive()
    assert worker_pid(worker) == pid, "the worker restarted"
    log = worker.log.read_text(errors="replace")
    for sign in ("ProducerFenced", "InvalidProducerEpoch", "Traceback"):
        assert sign not in log, f"{sign} in the worker's log:\n{worker.tail_log()}"
