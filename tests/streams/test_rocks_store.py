"""The RocksDB table store: nothing reaches disk before its commit, and what is on disk
carries the changelog offset Faust's recovery starts from."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from faust.types import TP

import streams.patches.rocks
from engine.state import CustomerState
from schemas.partitioning import customer_partition
from streams.app import create_app
from streams.parts import Warroom
from streams.patches.rocks import RocksTableStore
from streams.patches.tables import TableStore
from streams.settings import Settings

PARTITIONS = 4


def settings(tmp_path: Path, store: str = "rocksdb://") -> Settings:
    return Settings(
        app_id="rocks-store",
        data_dir=tmp_path / "w",
        web_port=16067,
        partitions=PARTITIONS,
        store=store,  # type: ignore[arg-type]
    )


@pytest.fixture
def warroom(tmp_path: Path) -> Iterator[Warroom]:
    built = create_app(settings(tmp_path))
    yield built
    _close(built)


def _close(warroom: Warroom) -> None:
    """Drop the store's databases the way Faust's Store.stop does (rocksdict closes a
    database when its last reference goes)."""
    for store in (warroom.states, warroom.assignees):
        store.table.data._dbs.clear()
    gc.collect()


def customer_on(partition: int, tag: str = "c") -> str:
    for n in range(10_000):
        name = f"{tag}-{n}"
        if customer_partition(name, PARTITIONS) == partition:
            return name
    raise AssertionError(f"no customer for partition {partition}")


def state(touchpoints: int) -> CustomerState:
    return CustomerState(customer_id="c", touchpoints=touchpoints)


def on_disk(store: TableStore[Any], key: str) -> bytes | None:
    raw: bytes | None = store.table.data._db_for_partition(customer_partition(key, PARTITIONS)).get(
        key.encode()
    )
    return raw


def commit(warroom: Warroom, *partitions: int) -> None:
    warroom.commit_lock.committed(TP("touchpoints", p) for p in partitions)


def test_rocksdb_setting_gives_rocks_stores_and_memory_stays_the_default(tmp_path: Path) -> None:
    memory = create_app(settings(tmp_path / "m", store="memory://"))
    assert type(memory.states) is TableStore
    rocks = create_app(settings(tmp_path / "r"))
    assert isinstance(rocks.states, RocksTableStore)
    assert isinstance(rocks.assignees, RocksTableStore)
    _close(rocks)


def test_a_put_is_read_back_but_reaches_disk_only_after_its_commit(warroom: Warroom) -> None:
    customer = customer_on(1)
    warroom.states.put(customer, 1, state(3))
    assert warroom.states.get(customer) == state(3)
    assert on_disk(warroom.states, customer) is None
    commit(warroom, 0, 2)  # other partitions' transactions
    assert on_disk(warroom.states, customer) is None
    commit(warroom, 1)
    assert on_disk(warroom.states, customer) == warroom.state_codec.dumps(state(3))
    assert warroom.states.get(customer) == state(3)


def test_partitions_assigned_elsewhere_lose_uncommitted_values_and_keep_committed_ones(
    warroom: Warroom,
) -> None:
    customer = customer_on(2)
    warroom.states.put(customer, 2, state(1))
    commit(warroom, 2)
    warroom.states.put(customer, 2, state(2))
    assert warroom.states.get(customer) == state(2)
    rocks = warroom.states
    assert isinstance(rocks, RocksTableStore)
    rocks.revoked()
    assert warroom.states.get(customer) == state(2)  # the assignment is not known yet
    rocks.assigned(frozenset({0, 1, 3}))
    assert warroom.states.get(customer) == state(1)
    commit(warroom, 2)  # nothing left to write
    assert on_disk(warroom.states, customer) == warroom.state_codec.dumps(state(1))


def test_a_delete_is_seen_at_once_and_removed_from_disk_at_its_commit(warroom: Warroom) -> None:
    customer = customer_on(0)
    warroom.states.put(customer, 0, state(5))
    commit(warroom, 0)
    warroom.states.delete(customer)
    assert warroom.states.get(customer) is None
    assert on_disk(warroom.states, customer) is not None
    commit(warroom, 0)
    assert on_disk(warroom.states, customer) is None
    assert warroom.states.get(customer) is None


def test_the_committed_write_carries_the_last_acknowledged_changelog_offset(
    warroom: Warroom,
) -> None:
    rocks = warroom.states
    assert isinstance(rocks, RocksTableStore)
    tp = TP(rocks.changelog, 3)
    customer = customer_on(3)
    rocks.put(customer, 3, state(1))
    commit(warroom, 3)
    assert warroom.states.table.persisted_offset(tp) is None  # nothing acknowledged yet
    rocks.delivered(3, 40)
    rocks.delivered(3, 17)  # acknowledgements may come out of order
    rocks.put(customer, 3, state(2))
    assert warroom.states.table.persisted_offset(tp) is None  # not committed yet
    commit(warroom, 3)
    assert warroom.states.table.persisted_offset(tp) == 40
    # An acknowledgement without a value to write moves nothing.
    rocks.delivered(3, 50)
    commit(warroom, 3)
    assert warroom.states.table.persisted_offset(tp) == 40


def test_acknowledgements_reach_the_store_of_their_changelog_only(warroom: Warroom) -> None:
    states, assignees = warroom.states, warroom.assignees
    assert isinstance(states, RocksTableStore) and isinstance(assignees, RocksTableStore)
    on_delivered = warroom.writer._on_delivered
    assert on_delivered is not None
    on_delivered(SimpleNamespace(topic=states.changelog, partition=1, offset=7))
    on_delivered(SimpleNamespace(topic="interventions", partition=1, offset=99))
    on_delivered(SimpleNamespace(topic=assignees.changelog, partition=1, offset=3))
    states.put(customer_on(1), 1, state(1))
    assignees.put("rep-1", 1, ((1, "i-1"),))
    commit(warroom, 1)
    assert states.table.persisted_offset(TP(states.changelog, 1)) == 7
    assert assignees.table.persisted_offset(TP(assignees.changelog, 1)) == 3


def test_owned_reads_disk_in_chunks_with_the_overlay_on_top(
    warroom: Warroom, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(streams.patches.rocks, "SCAN_CHUNK", 3)
    rocks = warroom.states
    assert isinstance(rocks, RocksTableStore)
    on_one = [customer_on(1, f"t{n}") for n in range(8)]
    for n, customer in enumerate(on_one):
        rocks.put(customer, 1, state(n))
    rocks.put(customer_on(2), 2, state(100))
    rocks.delivered(1, 12)
    commit(warroom, 1, 2)
    rocks.put(on_one[0], 1, state(50))  # uncommitted change
    rocks.delete(on_one[1])  # uncommitted deletion
    fresh = customer_on(1, "fresh")
    rocks.put(fresh, 1, state(9))
    found = {key: (p, s.touchpoints) for key, p, s in rocks.owned(frozenset({1}))}
    expected = {c: (1, n) for n, c in enumerate(on_one)}
    expected[on_one[0]] = (1, 50)
    del expected[on_one[1]]
    expected[fresh] = (1, 9)
    assert found == expected


def test_committed_state_survives_a_new_worker_on_the_same_data_dir(tmp_path: Path) -> None:
    first = create_app(settings(tmp_path))
    kept, lost = customer_on(0, "kept"), customer_on(0, "lost")
    first.states.put(kept, 0, state(4))
    first.states.delivered(0, 8)  # type: ignore[attr-defined]
    commit(first, 0)
    first.states.put(lost, 0, state(1))  # its transaction never commits
    _close(first)
    second = create_app(settings(tmp_path))
    assert second.states.get(kept) == state(4)
    assert second.states.get(lost) is None
    assert second.states.table.persisted_offset(TP(second.states.changelog, 0)) == 8
    _close(second)


def test_values_faust_recovery_writes_are_read_with_the_table_codec(warroom: Warroom) -> None:
    customer = customer_on(2)
    encoded = warroom.state_codec.dumps(state(7))
    event = SimpleNamespace(
        message=SimpleNamespace(
            tp=TP(warroom.states.changelog, 2),
            partition=2,
            offset=21,
            key=customer.encode(),
            value=encoded,
        )
    )
    warroom.states.table.data.apply_changelog_batch([event], None, None)
    assert warroom.states.get(customer) == state(7)
    assert warroom.states.table.persisted_offset(TP(warroom.states.changelog, 2)) == 21
    assert [(k, p) for k, p, _ in warroom.states.owned(frozenset({2}))] == [(customer, 2)]


async def test_state_reaches_disk_after_a_successful_commit_only(
    warroom: Warroom, monkeypatch: pytest.MonkeyPatch
) -> None:
    consumer = warroom.app.transport.Consumer
    classes = [c.__name__ for c in consumer.__mro__]
    faust_consumer = consumer.__mro__[classes.index("WarroomConsumer") + 1]  # what it wraps
    outcomes: list[bool | Exception] = [False, RuntimeError("broker went away"), True]

    async def commit(self: Any, tps: Any, start_new_transaction: bool) -> bool:
        outcome = outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        if outcome:  # as Faust does: the committed offsets move
            self._committed_offset.update(dict.fromkeys(tps, 1))
        return outcome

    monkeypatch.setattr(faust_consumer, "_commit_tps", commit)
    customer = customer_on(3)
    warroom.states.put(customer, 3, state(1))
    tps = [TP("touchpoints", 3), TP("timers", 3)]
    faust = SimpleNamespace(_committed_offset={})
    assert await consumer._commit_tps(faust, tps, True) is False
    assert on_disk(warroom.states, customer) is None
    with pytest.raises(RuntimeError, match="broker went away"):
        await consumer._commit_tps(faust, tps, True)
    assert on_disk(warroom.states, customer) is None
    assert await consumer._commit_tps(faust, tps, True) is True
    assert on_disk(warroom.states, customer) == warroom.state_codec.dumps(state(1))


async def test_only_partitions_whose_offsets_commit_reach_disk(
    warroom: Warroom, monkeypatch: pytest.MonkeyPatch
) -> None:
    consumer = warroom.app.transport.Consumer
    classes = [c.__name__ for c in consumer.__mro__]
    faust_consumer = consumer.__mro__[classes.index("WarroomConsumer") + 1]

    async def commit(self: Any, tps: Any, start_new_transaction: bool) -> bool:
        self._committed_offset.update({tp: 5 for tp in tps if tp.partition == 1})
        return True

    # Partition 3 has output in its open transaction but no offsets to commit (Faust
    # forgot its acks in a rebalance): its transaction does not commit now.
    monkeypatch.setattr(faust_consumer, "_commit_tps", commit)
    committed, open_ = customer_on(1), customer_on(3)
    warroom.states.put(committed, 1, state(1))
    warroom.states.put(open_, 3, state(2))
    faust = SimpleNamespace(_committed_offset={TP("touchpoints", 3): 2})
    assert await consumer._commit_tps(faust, [TP("touchpoints", 1), TP("touchpoints", 3)], True)
    assert on_disk(warroom.states, committed) is not None
    assert on_disk(warroom.states, open_) is None
    assert warroom.states.get(open_) == state(2)


async def test_a_rebalance_keeps_the_open_transaction_of_kept_partitions_only(
    warroom: Warroom,
) -> None:
    rocks = warroom.states
    assert isinstance(rocks, RocksTableStore)
    kept, lost = customer_on(1), customer_on(2)
    rocks.put(kept, 1, state(1))
    rocks.put(lost, 2, state(1))
    commit(warroom, 1, 2)
    rocks.put(kept, 1, state(2))  # in the open transaction of partition 1
    rocks.put(lost, 2, state(2))  # in the open transaction of partition 2
    app = warroom.app
    everything = {TP(rocks.changelog, p) for p in range(PARTITIONS)}
    # The eager protocol revokes every partition; partition 1 is assigned again, with
    # its producer and its open transaction, partition 2 goes to another worker.
    await app.on_partitions_revoked.send(everything | {TP("touchpoints", 1)})
    await app.on_partitions_assigned.send(
        {TP(rocks.changelog, 1), TP("touchpoints", 1), TP("intervention-feedback", 2)}
    )
    assert rocks.get(kept) == state(2)
    assert rocks.get(lost) == state(1)
    commit(warroom, 1, 2)
    assert on_disk(rocks, kept) == warroom.state_codec.dumps(state(2))
    assert on_disk(rocks, lost) == warroom.state_codec.dumps(state(1))
