"""The RocksDB store on the real broker: a crash mid-stream loses and repeats nothing, a
graceful restart resumes from the local store instead of replaying the changelog, and
partitions that move between workers keep their customers' counts."""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from schemas.codec import decode_intervention
from schemas.models import Channel, InterventionCommand
from schemas.partitioning import customer_partition
from streams.rules_push import push_bundle
from streams.settings import Settings
from streams.topics import ensure_topics

from .conftest import free_port
from .harness import (
    WorkerProcess,
    produce_raw,
    read_all,
    touchpoint_record,
    wait_until_committed,
)

BUNDLE = """\
bundle: counts
version: 1
rules:
  - id: counts.fifth
    when:
      count: {of: {kind: email_sent}, within: 30d, at_least: 5}
    then:
      kind: task
      assignee: owner
      due_in: 1h
      title: "{customer_id}: fifth touchpoint"
  - id: counts.tenth
    when:
      count: {of: {kind: email_sent}, within: 30d, at_least: 10}
    then:
      kind: task
      assignee: owner
      due_in: 1h
      title: "{customer_id}: tenth touchpoint"
"""
"""Each rule fires once per customer, at the touchpoint its count reaches, and lists
the touchpoints it counted: a count that restarted, skipped or counted a touchpoint
twice shows as a missing, repeated or differently triggered intervention."""
START = datetime.now(UTC) - timedelta(hours=2)


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"store": "rocksdb://", "session_timeout_seconds": 6.0})


@pytest.fixture
def second_worker(settings: Settings, tmp_path: Path) -> Iterator[WorkerProcess]:
    other = settings.model_copy(update={"web_port": free_port(), "data_dir": tmp_path / "worker-b"})
    process = WorkerProcess(other, tmp_path / "worker-b.log")
    try:
        yield process
    finally:
        process.stop()


def customer_on(partition: int, tag: str) -> str:
    for n in range(10_000):
        name = f"{tag}-{n}"
        if customer_partition(name, 4) == partition:
            return name
    raise AssertionError(f"no customer name found for partition {partition}")


def touchpoints(customers: list[str], n: int) -> list[tuple[bytes, bytes]]:
    """Each customer's ``n``-th touchpoint (event id ``<customer>-<n>``)."""
    return [
        touchpoint_record(
            customer,
            f"{customer}-{n}",
            "email_sent",
            START + timedelta(minutes=n),
            channel=Channel.EMAIL,
            direction="outbound",
            rep_id="rep-ida",
        )
        for customer in customers
    ]


def assert_counted_once(found: list[InterventionCommand], customers: list[str], up_to: int) -> None:
    """Every customer got each rule its count reached, once, at the right touchpoint."""
    expected = {
        (c, rule, ",".join(f"{c}-{k}" for k in range(1, n + 1)))
        for c in customers
        for rule, n in (("counts.fifth", 5), ("counts.tenth", 10))
        if n <= up_to
    }
    seen = Counter(
        (c.customer_id, c.rule_id, ",".join(c.explanation.triggering_event_ids))
        for c in found
        if c.rule_id.startswith("counts.")
    )
    repeated = {key: times for key, times in seen.items() if times > 1}
    assert not repeated, f"interventions repeated: {repeated}"
    missing, unexpected = sorted(expected - set(seen)), sorted(set(seen) - expected)
    assert not missing and not unexpected, f"missing {missing[:5]}, unexpected {unexpected[:5]}"


async def committed(settings: Settings, worker: WorkerProcess) -> None:
    """wait_until_committed, also while the broker has not elected the group's
    coordinator yet (right after the group's first join)."""
    for _ in range(20):
        try:
            await wait_until_committed(settings, worker)
            return
        except KafkaError as exc:
            if not exc.retriable:
                raise
            await asyncio.sleep(0.5)
    await wait_until_committed(settings, worker)


async def wait_for_interventions(
    settings: Settings, worker: WorkerProcess, count: int, within: float = 90.0
) -> list[InterventionCommand]:
    deadline = asyncio.get_running_loop().time() + within
    while True:
        found = await read_all(settings, "interventions", decode_intervention)
        counted = [c for c in found if c.rule_id.startswith("counts.")]
        if len(counted) >= count or asyncio.get_running_loop().time() > deadline:
            return counted
        worker.assert_alive()
        await asyncio.sleep(0.5)


@pytest.mark.long  # `make chaos`, with the other RocksDB tests; memory is the default store
async def test_a_kill_mid_stream_loses_and_repeats_nothing(
    settings: Settings, worker: WorkerProcess
) -> None:
    # Long transactions: at the kill, a few seconds of processed touchpoints are
    # uncommitted, and their state must not survive in RocksDB.
    settings = settings.model_copy(update={"commit_interval_seconds": 3.0})
    worker.settings = settings
    customers = [f"kill-{n:02d}" for n in range(30)]
    await ensure_topics(settings)
    await push_bundle(settings, BUNDLE, "counts.yaml")
    worker.start()
    for n in range(1, 4):
        await produce_raw(settings, touchpoints(customers, n))
    await committed(settings, worker)
    await produce_raw(settings, touchpoints(customers, 4))
    await produce_raw(settings, touchpoints(customers, 5))  # fifth: fires
    await produce_raw(settings, touchpoints(customers, 6))
    await asyncio.sleep(1.0)  # processed, not yet committed
    worker.kill()
    worker.start()
    for n in range(7, 11):  # tenth: fires
        await produce_raw(settings, touchpoints(customers, n))
    found = await wait_for_interventions(settings, worker, 2 * len(customers))
    await committed(settings, worker)
    assert_counted_once(
        await read_all(settings, "interventions", decode_intervention), customers, 10
    )
    assert len(found) >= 2 * len(customers)


async def changelog_offsets(settings: Settings, topic: str) -> dict[int, list[int]]:
    """Offsets of the committed records of a topic, by partition (what recovery reads)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers,
        isolation_level="read_committed",
        enable_auto_commit=False,
        group_id=None,
    )
    await consumer.start()
    try:
        await consumer._client.force_metadata_update()
        numbers = sorted(consumer.partitions_for_topic(topic) or ())
        assert numbers, f"no topic {topic!r}"
        partitions = [TopicPartition(topic, p) for p in numbers]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        found: dict[int, list[int]] = {p: [] for p in numbers}
        while [tp for tp, end in ends.items() if await consumer.position(tp) < end]:
            for tp, batch in (await consumer.getmany(timeout_ms=500)).items():
                found[tp.partition].extend(r.offset for r in batch)
        return found
    finally:
        await consumer.stop()


def start_offsets(log: Path, table: str) -> dict[int, int]:
    """Where Faust's recovery started reading ``table``'s changelog, by partition, at the
    worker's latest start (its "Reading Starts At - Active" log table)."""
    text = log.read_text(errors="replace")
    last = text.rfind("Reading Starts At - Active")
    assert last >= 0, "no recovery in the worker log"
    found: dict[int, int] = {}
    topic = ""
    for line in text[last:].splitlines()[1:]:
        if not line.startswith(("|", "│", "+", "├", "└")):
            break
        cells = [cell.strip() for cell in re.split(r"[|│]", line)[1:-1]]
        if len(cells) != 3 or not cells[1].isdigit():
            continue
        topic = topic if cells[0] == "〃" else cells[0]
        if topic.endswith(f"-{table}-changelog"):
            found[int(cells[1])] = int(cells[2])
    return found


@pytest.mark.long  # `make chaos`; make test keeps the kill mid-stream on the RocksDB store
async def test_a_graceful_restart_resumes_from_the_local_store(
    settings: Settings, worker: WorkerProcess
) -> None:
    customers = [f"calm-{n:03d}" for n in range(100)]
    # One more customer per partition, written last: the last changelog batch of each
    # partition holds one record, so a resumed recovery has (next to) nothing to read.
    last_ones = [customer_on(p, "last") for p in range(settings.partitions)]
    await ensure_topics(settings)
    await push_bundle(settings, BUNDLE, "counts.yaml")
    worker.start()
    for n in range(1, 5):
        await produce_raw(settings, touchpoints(customers, n))
    await committed(settings, worker)
    await produce_raw(settings, touchpoints(last_ones, 1))
    await committed(settings, worker)
    first = start_offsets(worker.log, "customer-state")
    assert sorted(first) == list(range(settings.partitions))
    assert all(offset == -1 for offset in first.values()), first
    worker.stop()

    changelog = await changelog_offsets(settings, f"{settings.app_id}-customer-state-changelog")
    records = sum(len(offsets) for offsets in changelog.values())
    assert records >= len(customers) + len(last_ones)
    worker.start()
    await produce_raw(settings, touchpoints(customers, 5))
    found = await wait_for_interventions(settings, worker, len(customers))
    assert_counted_once(found, customers, 5)
    resumed = start_offsets(worker.log, "customer-state")
    assert sorted(resumed) == list(range(settings.partitions))
    # Faust reads what follows the start offset; the memory store reads every record.
    read = sum(1 for p, offsets in changelog.items() for o in offsets if o > resumed[p])
    print(f"recovery read {read} of {records} changelog records, started at {resumed}")
    assert read == 0, (resumed, changelog)


@pytest.mark.long  # `make chaos`; rebalances are covered in make test on the memory store
async def test_partitions_moving_between_workers_keep_their_counts(
    settings: Settings, worker: WorkerProcess, second_worker: WorkerProcess
) -> None:
    customers = [f"move-{n:02d}" for n in range(40)]
    await ensure_topics(settings)
    await push_bundle(settings, BUNDLE, "counts.yaml")
    worker.start()
    for n in range(1, 3):
        await produce_raw(settings, touchpoints(customers, n))
    await committed(settings, worker)
    # Half the partitions move to a worker with an empty store; it replays them.
    second_worker.start()
    await asyncio.sleep(8)
    await produce_raw(settings, touchpoints(customers, 3))
    await produce_raw(settings, touchpoints(customers, 4))
    await committed(settings, second_worker)
    # They come back to the first worker, whose store is behind: it replays the rest.
    second_worker.stop()
    for n in range(5, 11):
        await produce_raw(settings, touchpoints(customers, n))
    found = await wait_for_interventions(settings, worker, 2 * len(customers))
    await committed(settings, worker)
    assert_counted_once(
        await read_all(settings, "interventions", decode_intervention), customers, 10
    )
    assert len(found) >= 2 * len(customers)
