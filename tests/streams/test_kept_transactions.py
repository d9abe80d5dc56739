"""A partition kept through a rebalance keeps no output its offsets do not cover.

Under exactly-once each source partition's output goes into its producer's open
transaction, and the transaction commits with that partition's offsets. A producer kept
through a rebalance keeps its transaction, while the recovery of the kept partition puts
back the committed states. Output written after the last commit before the assignment
(a slice processed after the commit at the revocation) would then commit later beside
states that no longer include it: the customer's state loses those touchpoints. At the
assignment such a transaction is aborted, the partition's acknowledgements are dropped,
its state is put back to what its changelog committed, and its records are read again.

Faust and Kafka are replaced here by the worker's own objects with a stand-in for the
transactional producers, so the order of the steps is forced.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from faust.types import TP

from engine.state import CustomerState
from schemas.partitioning import customer_partition
from streams.app import create_app
from streams.parts import Warroom
from streams.settings import Settings
from streams.writer import OutRecord

SOURCE = "kt.touchpoints"
GROUP = 0
KEPT_DIRTY = 1
KEPT_CLEAN = 2


class FakeBatch:
    def append(self, key: bytes | None, value: bytes | None, **_: object) -> object:
        return object()


class FakeTransactionState:
    def __init__(self) -> None:
        self.open = True

    def is_in_transaction(self) -> bool:
        return self.open


class FakeTransactionalProducer:
    """What the worker uses of aiokafka's transactional producer."""

    def __init__(self) -> None:
        self._txn_manager = FakeTransactionState()
        self.sent: list[tuple[str, int]] = []
        self.steps: list[str] = []

    def create_batch(self) -> FakeBatch:
        return FakeBatch()

    async def send_batch(self, batch: FakeBatch, topic: str, *, partition: int) -> Any:
        self.sent.append((topic, partition))
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done

    async def abort_transaction(self) -> None:
        assert self._txn_manager.open, "abort outside a transaction"
        self.steps.append("abort")
        self._txn_manager.open = False

    async def begin_transaction(self) -> None:
        assert not self._txn_manager.open, "begin inside a transaction"
        self.steps.append("begin")
        self._txn_manager.open = True


def app_of(warroom: Warroom) -> Any:
    return warroom.app


def tid(warroom: Warroom, partition: int) -> str:
    return f"{warroom.app.conf.id}-{GROUP}-{partition}"


@pytest.fixture
def warroom(tmp_path: Path) -> Warroom:
    settings = Settings(
        app_id="kept-transactions",
        data_dir=tmp_path / "w",
        web_port=16067,
        topic_prefix="kt.",
        partitions=4,
    )
    made = create_app(settings)
    assert made.settings.topic("touchpoints") == SOURCE
    app: Any = made.app
    # One co-partitioned group, as Faust's assignor makes it: the source topics and
    # the tables' changelogs.
    app.assignor._topic_groups = {SOURCE: GROUP, made.states.changelog: GROUP}
    app.producer._transaction_producers = {
        tid(made, p): FakeTransactionalProducer() for p in (KEPT_DIRTY, KEPT_CLEAN)
    }
    return made


def customer_on(warroom: Warroom, partition: int) -> str:
    partitions = warroom.settings.partitions
    return next(
        c
        for c in (f"acct-{n}" for n in range(1000))
        if customer_partition(c, partitions) == partition
    )


def changelog_tp(warroom: Warroom, partition: int) -> TP:
    return TP(warroom.states.changelog, partition)


async def process_slice(warroom: Warroom, partition: int, customer: str, offsets: range) -> None:
    """What a slice does under the commit lock: its states in the store, its output
    written into the partition's transaction, its records acknowledged."""
    consumer: Any = warroom.app.consumer
    tp = TP(SOURCE, partition)
    async with warroom.commit_lock.lock:
        warroom.states.put(customer, partition, CustomerState(customer_id=customer))
        changelog = warroom.states.changelog
        await warroom.writer.write([OutRecord(changelog, partition, customer.encode(), b"{}")])
        for offset in offsets:
            consumer._acked[tp].append(offset)
            consumer._acked_index[tp].add(offset)


async def assign(warroom: Warroom, kept: set[int]) -> None:
    """Faust's assignment step for the transactions: every partition in ``kept`` stays."""
    consumer: Any = warroom.app.consumer
    assigned = {TP(SOURCE, p) for p in kept} | {changelog_tp(warroom, p) for p in kept}
    recovery: Any = app_of(warroom).tables.recovery
    for tp in assigned:
        if tp.topic == warroom.states.changelog:
            recovery.active_offsets[tp] = 41  # read up to here by an earlier recovery
    await consumer.transactions.on_rebalance(assigned, set(), set())


async def test_a_kept_partition_with_output_after_its_last_commit_is_rolled_back(
    warroom: Warroom,
) -> None:
    dirty_customer = customer_on(warroom, KEPT_DIRTY)
    clean_customer = customer_on(warroom, KEPT_CLEAN)
    # The clean partition's slice was committed at the revocation ...
    await process_slice(warroom, KEPT_CLEAN, clean_customer, range(10, 13))
    consumer: Any = warroom.app.consumer
    consumer._acked[TP(SOURCE, KEPT_CLEAN)].clear()
    consumer._acked_index[TP(SOURCE, KEPT_CLEAN)].clear()
    warroom.commit_lock.committed([TP(SOURCE, KEPT_CLEAN)])
    # ... the dirty one's came after that commit, before the assignment.
    await process_slice(warroom, KEPT_DIRTY, dirty_customer, range(20, 24))

    await assign(warroom, {KEPT_DIRTY, KEPT_CLEAN})

    producers: Any = app_of(warroom).producer._transaction_producers
    dirty = producers[tid(warroom, KEPT_DIRTY)]
    clean = producers[tid(warroom, KEPT_CLEAN)]
    assert dirty.steps == ["abort", "begin"], (
        f"expected the kept transaction holding uncommitted output to be aborted and a "
        f"new one begun; found {dirty.steps}"
    )
    assert clean.steps == [], f"expected the clean kept transaction untouched; found {clean.steps}"
    assert warroom.states.get(dirty_customer) is None, (
        f"expected {dirty_customer}'s uncommitted state dropped until recovery reads it back"
    )
    assert warroom.states.get(clean_customer) is not None
    assert not consumer._acked[TP(SOURCE, KEPT_DIRTY)], (
        "expected the acknowledgements of the aborted output dropped (its records are read "
        f"again); found {consumer._acked[TP(SOURCE, KEPT_DIRTY)]}"
    )
    recovery: Any = app_of(warroom).tables.recovery
    assert recovery.active_offsets.get(changelog_tp(warroom, KEPT_DIRTY)) is None, (
        "expected the rolled-back partition's changelog read again from its start"
    )
    assert recovery.active_offsets.get(changelog_tp(warroom, KEPT_CLEAN)) == 41


async def test_output_committed_before_the_assignment_is_kept(warroom: Warroom) -> None:
    customer = customer_on(warroom, KEPT_DIRTY)
    await process_slice(warroom, KEPT_DIRTY, customer, range(20, 24))
    warroom.commit_lock.committed([TP(SOURCE, KEPT_DIRTY)])

    await assign(warroom, {KEPT_DIRTY})

    producers: Any = app_of(warroom).producer._transaction_producers
    assert producers[tid(warroom, KEPT_DIRTY)].steps == []
    assert warroom.states.get(customer) is not None


def consumer_message(partition: int, offset: int, generation: int) -> Any:
    from faust.types.tuples import ConsumerMessage

    return ConsumerMessage(
        SOURCE,
        partition,
        offset,
        0.0,
        0,
        None,
        b"acct",
        b"touchpoint",
        None,
        generation_id=generation,
    )


def test_a_record_a_stream_skipped_is_not_acknowledged(warroom: Warroom) -> None:
    """Faust's stream skips a record it takes while flow control is stopped for a
    rebalance, or one of an earlier generation, and acknowledges it without handing it
    over (Stream.__aiter__). Counted, its offset would be committed after a rebalance
    with nothing in the state for it: the customer's state loses that touchpoint. It
    must stay out of the commit, so the seek to the committed offsets reads it again."""
    app = app_of(warroom)
    consumer: Any = app.consumer
    app.topics._acking_topics.add(SOURCE)
    tp = TP(SOURCE, KEPT_DIRTY)
    consumer._committed_offset[tp] = 30
    processed = consumer_message(KEPT_DIRTY, 30, app.consumer_generation_id)
    processed.tracked = True  # the stream handed it to the agent
    processed.incref()
    skipped = consumer_message(KEPT_DIRTY, 31, app.consumer_generation_id - 1)
    skipped.incref()  # delivered to the channel, never handed over: tracked stays False

    processed.ack(consumer)
    skipped.ack(consumer)

    assert list(consumer._acked[tp]) == [30], (
        f"expected only the processed record's offset 30 acknowledged; found "
        f"{list(consumer._acked[tp])}"
    )
    assert consumer._new_offset(tp) == 31, "expected a commit up to the processed record only"
