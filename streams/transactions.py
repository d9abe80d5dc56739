"""Exactly-once: a batch's output and its offsets commit in one transaction.

Faust keeps one transactional producer per assigned source partition and
commits that partition's offsets in that producer's transaction; the worker
writes a batch's output through the same producers (:mod:`streams.writer`).

Faust's stock commit has two gaps closed here: it commits without draining its
own send buffer, and it fails (and hangs the shutdown) when a producer is
between transactions, as happens when a worker stops right after an assignment.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Mapping
from typing import Any

import faust
from aiokafka.errors import ProducerFenced
from faust.transport.consumer import TransactionManager
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread
from faust.types import TP


class ExactlyOnceTransactions(TransactionManager):
    """Faust's transaction manager with a commit that drains and tolerates idle producers."""

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


def install_exactly_once_commit(app: faust.App) -> None:
    """Make ``app`` use :class:`ExactlyOnceTransactions`; call before it starts."""
    app.transport.TransactionManager = ExactlyOnceTransactions  # type: ignore[misc]


class BatchCommitLock:
    """Keeps offset commits and batch writes apart.

    The agent holds the lock while it writes a batch's output; the consumer takes
    it before working out which offsets to commit. A commit therefore covers
    either none or all of a batch: its output and the acks of its records.
    """

    def __init__(self) -> None:
        self.lock = asyncio.Lock()


def install_commit_lock(app: faust.App, commit_lock: BatchCommitLock) -> None:
    """Give ``app`` a consumer that takes ``commit_lock`` around every commit and that asks
    the broker for changelog highwaters (see :class:`_BrokerHighwaters`)."""
    base: Any = app.transport.Consumer

    async def _commit_tps(self: Any, tps: Any, start_new_transaction: bool) -> bool:
        async with commit_lock.lock:
            committed: bool = await base._commit_tps(self, tps, start_new_transaction)
            return committed

    def _new_consumer_thread(self: Any) -> Any:
        return _BrokerHighwaters(self, loop=self.loop, beacon=self.beacon)

    app.transport.Consumer = type(  # type: ignore[misc]
        "WarroomConsumer",
        (base,),
        {"_commit_tps": _commit_tps, "_new_consumer_thread": _new_consumer_thread},
    )


class _BrokerHighwaters(AIOKafkaConsumerThread):
    """Changelog highwaters from the broker, also under exactly-once.

    With transactions Faust takes a partition's highwater from the last fetch
    response (its last stable offset), which does not exist yet for a partition
    just assigned in a rebalance: recovery then sees an empty changelog and the
    customers of that partition start from blank state. A ListOffsets request
    (read_committed, so it returns the last stable offset too) does not depend on
    an earlier fetch (tests/integration/test_rebalance.py).
    """

    async def _highwaters(self, partitions: list[TP]) -> Mapping[TP, int]:
        consumer: Any = self._ensure_consumer()
        offsets: Mapping[TP, int] = await consumer.end_offsets(partitions)
        return offsets
