"""Exactly-once: a batch's output and its offsets commit in one transaction.

Faust keeps one transactional producer per assigned source partition and
commits that partition's offsets in that producer's transaction; the worker
writes a batch's output through the same producers (:mod:`streams.writer`).

Faust's stock commit has two gaps closed here: it commits without draining its
own send buffer, and it fails (and hangs the shutdown) when a producer is
between transactions, as happens when a worker stops right after an assignment.

A producer kept through a rebalance keeps its open transaction, while the recovery of
the kept partition puts back the states its changelog committed. Output written into
that transaction after the partition's last commit (a slice processed after the commit
made at the revocation) would commit later, with its offsets, beside states that no
longer include it: the customer's state would lose those touchpoints. So at the
assignment, under the commit lock, such a transaction is aborted, the partition's
acknowledgements are dropped, its states are recovered from the changelog again and
its records are read again from the committed offsets: state and offsets move together
(:meth:`ExactlyOnceTransactions.on_rebalance`, tests/streams/test_kept_transactions.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import faust
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError, ProducerFenced
from faust.transport.consumer import TransactionManager
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread, credentials_to_aiokafka_auth
from faust.types import TP

from .offsets import new_offset

log = logging.getLogger(__name__)


class ExactlyOnceTransactions(TransactionManager):
    """Faust's transaction manager with a commit that drains and tolerates idle producers,
    and an assignment that rolls back a kept partition's uncommitted output."""

    commit_lock: BatchCommitLock | None = None
    """Set by :func:`install_exactly_once_commit`: which partitions hold uncommitted output."""
    source_topic: str | None = None
    """The topic whose transactional producers the worker writes its output with."""

    async def commit(self, offsets: Mapping[TP, int], start_new_transaction: bool = True) -> bool:
        """Commit each partition's offsets in its producer's transaction.

        Unlike the stock manager this drains Faust's send buffer first, and it
        tolerates a producer that is between transactions (it happens when a
        worker stops right after an assignment): offsets then commit in a
        transaction of their own instead of failing the shutdown.
        """
        await self.producer.flush()
        group_id = self.app.conf.id
        by_transaction: dict[str, dict[TP, int]] = defaultdict(dict)
        for tp, offset in offsets.items():
            group = self.app.assignor.group_for_topic(tp.topic)
            by_transaction[f"{group_id}-{group}-{tp.partition}"][tp] = offset
        producer: Any = self.producer
        for transactional_id, tp_offsets in by_transaction.items():
            async with producer._trn_locks[transactional_id]:
                transaction = producer._transaction_producers.get(transactional_id)
                if transaction is None:
                    self.log.warning("no producer for transaction %s", transactional_id)
                    continue
                try:
                    if not transaction._txn_manager.is_in_transaction():
                        await transaction.begin_transaction()
                    await transaction.send_offsets_to_transaction(tp_offsets, group_id)
                    await transaction.commit_transaction()
                    if start_new_transaction:
                        await transaction.begin_transaction()
                except ProducerFenced as fenced:
                    # Another worker owns this partition now; it will redo our work.
                    self.log.warning("fenced on %s: %r", transactional_id, fenced)
                    await self.app.crash(fenced)
                    return False
        return True

    async def on_rebalance(
        self, assigned: set[TP], revoked: set[TP], newly_assigned: set[TP]
    ) -> None:
        """Roll back what kept partitions wrote since their last commit, then Faust's
        step (stop the revoked partitions' producers, start the assigned ones')."""
        commit_lock = self.commit_lock
        if commit_lock is not None:
            async with commit_lock.lock:
                await self._roll_back_kept(commit_lock, assigned - newly_assigned)
        await super().on_rebalance(assigned, revoked, newly_assigned)

    async def _roll_back_kept(self, commit_lock: BatchCommitLock, kept: set[TP]) -> None:
        """Abort the open transaction of every kept source partition that holds output
        written since its last commit; drop that partition's acknowledgements, so no
        commit covers records whose output is gone; and have its tables recovered from
        the changelog again. Records after the committed offsets are read again when the
        recovery ends (Faust seeks every source partition to its committed offset)."""
        source = self.source_topic
        if source is None:
            return
        group = self.app.assignor.group_for_topic(source)
        in_group = {
            tp
            for tp in kept
            if not self.app.assignor.is_standby(tp)
            and self._group_of(tp.topic) == group
            and tp.topic not in self.app.tables.changelog_topics
        }
        kept_partitions = {tp.partition for tp in in_group}
        # Partitions that left: their producer stops, and the next owner's producer
        # aborts the transaction when it starts.
        commit_lock.uncommitted &= kept_partitions
        dirty = frozenset(commit_lock.uncommitted)
        if not dirty:
            return
        producer: Any = self.producer
        consumer: Any = self.consumer
        for partition in sorted(dirty):
            transactional_id = f"{self.app.conf.id}-{group}-{partition}"
            lock = producer._trn_locks.setdefault(transactional_id, asyncio.Lock())
            async with lock:
                transaction = producer._transaction_producers.get(transactional_id)
                if transaction is not None and transaction._txn_manager.is_in_transaction():
                    await transaction.abort_transaction()
                    await transaction.begin_transaction()
            for tp in in_group:
                if tp.partition == partition:
                    consumer._acked.pop(tp, None)
                    consumer._acked_index.pop(tp, None)
                    consumer._gap.pop(tp, None)
            log.warning(
                "partition %d of %s, kept through the rebalance, held output written after "
                "its last commit: its transaction is aborted, its state is recovered from "
                "the changelog and its records after the committed offset are read again",
                partition,
                source,
            )
        commit_lock.rolled_back(dirty)

    def _group_of(self, topic: str) -> int | None:
        assignor: Any = self.app.assignor
        groups: Mapping[str, int] = assignor._topic_groups
        return groups.get(topic)

    async def _start_transactions(self, tids: Iterable[str]) -> None:
        """Begin a transaction for each newly started producer; a producer kept through
        the rebalance is already in one (begun by the commit made when the partitions
        were revoked, so it holds nothing) and Faust's begin would fail on it."""
        producer: Any = self.producer
        for transactional_id in tids:
            kept = producer._transaction_producers.get(transactional_id)
            if kept is not None and kept._txn_manager.is_in_transaction():
                continue
            await producer.maybe_begin_transaction(transactional_id)


def install_exactly_once_commit(
    app: faust.App,
    transaction_timeout_seconds: float,
    commit_lock: BatchCommitLock | None = None,
    source_topic: str | None = None,
) -> None:
    """Make ``app`` use :class:`ExactlyOnceTransactions`, and give its transactional
    producers an explicit transaction timeout; call before it starts. With
    ``commit_lock`` and ``source_topic`` (the topic whose producers the worker writes
    its output with), an assignment rolls back what a kept partition wrote since its
    last commit.

    aiokafka's default (60 s) is what the broker aborts an open transaction after; the
    worker's transactions last about a commit interval and one slice of processing, and
    the explicit setting keeps that margin a decision instead of a library default.
    """
    app.transport.TransactionManager = type(  # type: ignore[misc]
        "WarroomTransactions",
        (ExactlyOnceTransactions,),
        {"commit_lock": commit_lock, "source_topic": source_topic},
    )
    base: Any = app.transport.Producer
    timeout_ms = int(transaction_timeout_seconds * 1000)

    def _settings_extra(self: Any) -> Any:
        extra = dict(base._settings_extra(self))
        if self.app.in_transaction:
            extra["transaction_timeout_ms"] = timeout_ms
        return extra

    app.transport.Producer = type(  # type: ignore[misc]
        "WarroomProducer", (base,), {"_settings_extra": _settings_extra, "warroom_patch": True}
    )


def is_exactly_once_installed(app: faust.App) -> bool:
    transport: Any = app.transport
    manager = transport.TransactionManager
    return issubclass(manager, ExactlyOnceTransactions) and getattr(
        transport.Producer, "warroom_patch", False
    )


class BatchCommitLock:
    """Keeps offset commits and batch writes apart.

    The agent holds the lock while it writes a batch's output; the consumer takes
    it before working out which offsets to commit. A commit therefore covers
    either none or all of a batch: its output and the acks of its records.
    """

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.after_commit: list[Callable[[frozenset[int]], None]] = []
        """Called, still under the lock, with the partition numbers of the committed
        source partitions after each successful commit (with exactly-once: after their
        transactions committed); streams.patches.rocks writes committed state to disk."""
        self.after_rollback: list[Callable[[frozenset[int]], None]] = []
        """Called, under the lock, with the partition numbers of kept source partitions
        whose uncommitted output an assignment aborted: their tables must drop what
        they hold beyond the committed changelog and be recovered again."""
        self.uncommitted: set[int] = set()
        """Source partitions whose open transaction holds output written since their
        last commit (streams.writer reports every write)."""

    def wrote(self, partitions: Iterable[int]) -> None:
        self.uncommitted.update(partitions)

    def committed(self, tps: Iterable[TP]) -> None:
        partitions = frozenset(tp.partition for tp in tps)
        self.uncommitted.difference_update(partitions)
        for listener in self.after_commit:
            listener(partitions)

    def rolled_back(self, partitions: frozenset[int]) -> None:
        self.uncommitted.difference_update(partitions)
        for listener in self.after_rollback:
            listener(partitions)


def install_commit_lock(app: faust.App, commit_lock: BatchCommitLock) -> None:
    """Give ``app`` a consumer that takes ``commit_lock`` around every commit, never
    counts a record its streams skipped as acknowledged, asks the broker for changelog
    highwaters and seeks every partition on assignment (see
    :class:`_WarroomConsumerThread`)."""
    base: Any = app.transport.Consumer

    async def _commit_locked(self: Any, tps: Any, start_new_transaction: bool) -> bool:
        tps = list(tps)
        before = {tp: self._committed_offset.get(tp) for tp in tps}
        committed: bool = await base._commit_tps(self, tps, start_new_transaction)
        if committed:
            # The partitions whose offsets this commit took (their committed offset
            # moved); with exactly-once, exactly the partitions whose transactions it
            # committed. Working them out beforehand with Faust's own filter would take
            # the acks away from the commit: it removes what it returns.
            took = [tp for tp in tps if self._committed_offset.get(tp) != before[tp]]
            commit_lock.committed(took)
        return committed

    async def _commit_tps(self: Any, tps: Any, start_new_transaction: bool) -> bool:
        async with commit_lock.lock:
            return await _commit_locked(self, tps, start_new_transaction)

    async def on_partitions_revoked(self: Any, revoked: Any) -> None:
        # Faust forgets every revoked partition's acks as its first step, and under
        # the eager protocol every partition is revoked, kept ones too: their output
        # would stay in the open transaction with no offsets for it, and the records
        # be processed again after the rebalance; the next commit would then commit
        # both copies. So commit what the slices acked so far, first. The lock keeps
        # slices out from this commit until Faust has forgotten the acks (no await
        # in between); what slices ack after that, Faust's wait for the streams
        # commits before the rebalance goes on.
        async with commit_lock.lock:
            await _commit_locked(self, self._filter_tps_with_pending_acks(), True)
            revoking = base.on_partitions_revoked(self, revoked)
        await revoking

    def ack(self: Any, message: Any) -> bool:
        # Faust's stream acknowledges a record it skips without handing it over: one
        # taken while flow control is stopped for a rebalance, or one of an earlier
        # generation (Stream.__aiter__). Nothing processed it; counted, its offset could
        # be committed after the rebalance with nothing in the state for it, and the
        # customer's state would lose that touchpoint. A record a stream hands over is
        # tracked first, so an untracked one is left out of the commit; the seek to the
        # committed offsets that ends every rebalance reads it again.
        if not message.tracked:
            message.acked = True
            return False
        acked: bool = base.ack(self, message)
        return acked

    def _new_consumer_thread(self: Any) -> Any:
        return _WarroomConsumerThread(self, loop=self.loop, beacon=self.beacon)

    def _new_offset(self: Any, tp: TP) -> int | None:
        # Past acknowledged records and holes only (streams.patches.offsets).
        return new_offset(self, tp)

    async def _add_gap(self: Any, tp: TP, offset_from: int, offset_to: int) -> None:
        # Faust's gap ends at the record just read, delivered but not yet handled; the
        # consumer's getmany records the holes instead (streams.patches.offsets).
        return None

    app.transport.Consumer = type(  # type: ignore[misc]
        "WarroomConsumer",
        (base,),
        {
            "_commit_tps": _commit_tps,
            "on_partitions_revoked": on_partitions_revoked,
            "ack": ack,
            "_new_consumer_thread": _new_consumer_thread,
            "_new_offset": _new_offset,
            "_add_gap": _add_gap,
            "warroom_patch": True,
        },
    )


def is_commit_lock_installed(app: faust.App) -> bool:
    return bool(getattr(app.transport.Consumer, "warroom_patch", False))


class _WarroomConsumerThread(AIOKafkaConsumerThread):
    """Faust's consumer thread with two repairs.

    **Every partition is seeked after an assignment.** Once the state is
    recovered Faust resumes the source partitions and then seeks each to its
    committed offset, which also forgets what it had read of them. aiokafka skips
    partitions without a committed offset (or with offset 0), so a record fetched
    from such a partition in between is neither processed nor fetched again: a
    partition that had never been committed could lose its first touchpoints on a
    restart or a rebalance (tests/integration/test_restart.py). Those partitions
    go back to their beginning here, which is what ``auto_offset_reset=earliest``
    promises anyway; records read twice are dropped by the engine as repeated
    event ids.

    **Changelog highwaters from the broker, also under exactly-once.**
    With transactions Faust takes a partition's highwater from the last fetch
    response (its last stable offset), which does not exist yet for a partition
    just assigned in a rebalance: recovery then sees an empty changelog and the
    customers of that partition start from blank state. A ListOffsets request
    (read_committed, so it returns the last stable offset too) does not depend on
    an earlier fetch (tests/integration/test_rebalance.py).

    Under exactly-once a changelog ends with a transaction marker, which takes an
    offset but is never delivered, so the last record Faust can read sits below
    the last stable offset. Faust then waits for two idle 5 s polls before it
    treats the gap as aborted records: every restart would cost 10 s. The
    highwater reported here is therefore one past the last *readable* record
    (:func:`after_last_records`).
    """

    def verify_event_path(self, now: float, tp: TP) -> None:
        """Faust's livelock check, skipping partitions aiokafka has not positioned yet.

        Right after a rebalance a partition is assigned before it has a fetch
        position, and Faust's check reads ``position``, which asserts: the worker
        crashed in its livelock detector (seen in tests/integration/test_rebalance_eos.py
        and the chaos scaling scenario). A partition without a position cannot be
        stuck yet; it is checked again on the detector's next round.
        """
        assignment: Any = self._ensure_consumer()._fetcher._subscriptions.subscription
        state = (
            None
            if assignment is None
            else assignment.assignment.state_value(TopicPartition(tp.topic, tp.partition))
        )
        if state is None or not state.has_valid_position:
            return None
        AIOKafkaConsumerThread.verify_event_path(self, now, tp)
        return None

    async def seek_to_committed(self) -> Mapping[TP, int]:
        # None for an uncommitted partition: Faust then forgets its read offset too.
        found: Mapping[TP, int] = await self.call_thread(self._seek_to_committed)
        return found

    async def _seek_to_committed(self) -> Mapping[TP, int | None]:
        consumer: Any = self._ensure_consumer()
        committed: Mapping[TP, int | None] = await consumer.seek_to_committed()
        changelogs = self.consumer.app.tables.changelog_topics
        uncommitted = [
            tp for tp, offset in committed.items() if not offset and tp.topic not in changelogs
        ]
        if uncommitted:
            await consumer.seek_to_beginning(*uncommitted)
        return committed

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.exact_tails: set[TP] = set()
        """Changelog partitions whose last highwater is one past their last readable
        record."""

    async def _highwaters(self, partitions: list[TP]) -> Mapping[TP, int]:
        tails = self.exact_tails
        tails.difference_update(partitions)
        consumer: Any = self._ensure_consumer()
        offsets: dict[TP, int] = dict(await consumer.end_offsets(partitions))
        if not self.consumer.in_transaction:
            return offsets
        servers = consumer._client._bootstrap_servers
        auth = credentials_to_aiokafka_auth(
            self.app.conf.broker_credentials, self.app.conf.ssl_context
        )
        try:
            found = await asyncio.wait_for(
                after_last_records(servers, offsets, **auth), TAIL_PROBE_TIMEOUT
            )
        except (TimeoutError, KafkaError) as exc:
            # Correct either way: Faust only waits its 10 s for the markers.
            log.warning("changelog tail probe failed, recovery may wait 10 s: %r", exc)
            return offsets
        tails.update(found)
        return {tp: found.get(tp, end) for tp, end in offsets.items()}

    async def position(self, tp: TP) -> int | None:
        """The consumer's position, except for a changelog partition whose highwater is
        exact: there it is the offset of the last record recovery applied.

        Faust asks only in ``detect_aborted_tx``: when its changelog reader has waited
        5 s for a record twice, it takes a partition whose position reached the
        highwater as read to the end, the rest being aborted records. Its count of
        waits is not reset when a new recovery starts, and the position it compares
        can be one from before recovery seeks the partition (a partition fetched
        right after the assignment, before Faust paused it and dropped what came,
        is at the end of the changelog): a recovery starting after a quiet spell
        could be declared complete before reading a record, and the customers of a
        partition that came back started from blank state
        (tests/integration/test_rebalance_eos.py). Below an exact highwater nothing
        is aborted, so there it must never conclude so.
        """
        if tp in self.exact_tails:
            app: Any = self.consumer.app
            applied: int | None = app.tables.recovery.active_offsets.get(tp)
            return -1 if applied is None else applied
        found: int | None = await super().position(tp)
        return found


TAIL_PROBE_TIMEOUT = 15.0
TAIL_WINDOWS = (8, 512)
"""How far before the last stable offset the probe looks for the last record; after
the last window it reads the partition from its start."""


async def after_last_records(
    servers: Any, ends: Mapping[TP, int], **client_options: Any
) -> dict[TP, int]:
    """For each partition, one past the offset of its last committed record below
    ``ends`` (a last stable offset), or 0 when there is none.

    Reads read_committed with a consumer of its own, so records of aborted
    transactions and transaction markers are skipped the way recovery skips them.
    """
    found: dict[TP, int] = {tp: 0 for tp, end in ends.items() if end <= 0}
    pending = {tp: end for tp, end in ends.items() if end > 0}
    if not pending:
        return found
    probe = AIOKafkaConsumer(
        bootstrap_servers=servers,
        group_id=None,
        enable_auto_commit=False,
        isolation_level="read_committed",
        **client_options,
    )
    await probe.start()
    try:
        for window in (*TAIL_WINDOWS, None):
            if not pending:
                break
            last = await _last_offsets(probe, pending, window)
            for tp, offset in last.items():
                found[tp] = offset + 1
                del pending[tp]
        found.update({tp: 0 for tp in pending})  # nothing committed at all
        return found
    finally:
        await _stop(probe)


async def _stop(probe: AIOKafkaConsumer) -> None:
    # aiokafka's stop awaits a helper task it has just cancelled and can re-raise that
    # CancelledError; it is ours to swallow only if nobody is cancelling this task.
    try:
        await probe.stop()
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            raise


async def _last_offsets(
    probe: AIOKafkaConsumer, ends: Mapping[TP, int], window: int | None
) -> dict[TP, int]:
    """Offset of the last record each partition delivers in ``[end - window, end)``."""
    partitions = [TopicPartition(tp.topic, tp.partition) for tp in ends]
    probe.assign(partitions)
    for tp, end in ends.items():
        probe.seek(
            TopicPartition(tp.topic, tp.partition), 0 if window is None else max(0, end - window)
        )
    last: dict[TP, int] = {}
    reading = dict(ends)
    while reading:
        for part, records in (await probe.getmany(timeout_ms=200)).items():
            for record in records:
                tp = TP(part.topic, part.partition)
                if tp in reading and record.offset < reading[tp]:
                    last[tp] = record.offset
        for tp, end in list(reading.items()):
            if await probe.position(TopicPartition(tp.topic, tp.partition)) >= end:
                del reading[tp]
    return last
