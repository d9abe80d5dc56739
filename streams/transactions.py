"""Exactly-once: what a batch produces commits in its source partition's transaction.

Faust keeps one transactional producer per assigned source partition and
commits that partition's offsets in that producer's transaction. Its stock
manager names the transaction after the *destination* topic's partition group,
which exists only for topics the worker also consumes (its changelogs); a send
to a pure output topic such as ``interventions`` finds no group. Warroom's
output topics are co-partitioned with ``touchpoints`` and every send names the
partition of the touchpoint that caused it, so the transaction is that of
``touchpoints`` at the same partition.

The stock manager also commits without draining Faust's own send buffer, where
table changelog writes wait; a commit here drains it first, so the state
written for a batch is never behind the offsets committed for it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Awaitable, Mapping
from typing import Any

import faust
from aiokafka.errors import ProducerFenced
from faust.transport.consumer import TransactionManager
from faust.types import TP


class CopartitionedTransactions(TransactionManager):
    """Sends to co-partitioned output topics join the source partition's transaction."""

    output_sources: Mapping[str, str] = {}
    """Output topic -> the consumed topic whose transactions it joins."""

    async def send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        partition: int | None,
        timestamp: float | None,
        headers: Any,
        *,
        transactional_id: str | None = None,
    ) -> Awaitable[Any]:
        source = self.output_sources.get(topic)
        if source is None:
            return await super().send(
                topic,
                key,
                value,
                partition,
                timestamp,
                headers,
                transactional_id=transactional_id,
            )
        if partition is None:
            raise ValueError(
                f"a send to {topic!r} under exactly-once must name the partition of the "
                f"{source!r} record that caused it; found no partition"
            )
        group = self.app.assignor.group_for_topic(source)
        return await self.producer.send(
            topic,
            key,
            value,
            partition,
            timestamp,
            headers,
            transactional_id=f"{self.app.conf.id}-{group}-{partition}",
        )

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


def install_copartitioned_transactions(app: faust.App, output_sources: Mapping[str, str]) -> None:
    """Make ``app`` use :class:`CopartitionedTransactions`; call before it starts."""
    manager = type(
        "WarroomTransactions",
        (CopartitionedTransactions,),
        {"output_sources": dict(output_sources)},
    )
    app.transport.TransactionManager = manager  # type: ignore[misc]
