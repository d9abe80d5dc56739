"""Writing a batch's output straight into Kafka record batches.

Faust's table and topic sends cost ~100 µs per record (each crosses Faust's
send buffer and several tasks). The worker instead encodes everything a batch
produces (state changelog records, interventions, dead letters) and appends it
to one aiokafka record batch per topic partition: a few µs per record.

Under exactly-once the batches go to the transactional producer of the source
partition, the same one Faust commits that partition's offsets with, so output
and offsets commit together. A lock shared with the consumer's commit keeps a
commit from running while a batch is half written (see :class:`BatchCommitLock`).
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import faust

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class OutRecord:
    topic: str
    partition: int
    key: bytes | None
    value: bytes | None
    source_partition: int | None = None
    """Partition of the consumed record that caused this one (its transaction);
    ``None`` when it is the same as ``partition``."""
    headers: list[tuple[str, bytes]] | None = None
    """Kafka record headers (the trace context, when tracing is on)."""


class BatchWriter:
    """Appends records to the right producer without Faust's per-record send path."""

    def __init__(
        self,
        app: faust.App,
        source_topic: str,
        exactly_once: bool,
        max_record_bytes: int,
        on_delivered: Callable[[Any], None] | None = None,
        on_written: Callable[[Iterable[int]], None] | None = None,
    ) -> None:
        """``on_delivered`` gets the RecordMetadata (topic, partition, base offset) of every
        record batch the broker acknowledged (streams.patches.rocks keeps changelog offsets);
        ``on_written``, before anything is sent, the source partitions whose transactions
        a write adds to (streams.patches.transactions rolls back a kept partition whose
        transaction holds output its offsets do not cover)."""
        self._app = app
        self._on_delivered = on_delivered
        self._on_written = on_written
        self._max_record_bytes = max_record_bytes
        self._source_topic = source_topic
        self._exactly_once = exactly_once
        self._failure: BaseException | None = None
        self._crash: asyncio.Future[None] | None = None

    async def write(self, records: Iterable[OutRecord]) -> int:
        """Queue ``records`` for sending; returns how many record batches were queued."""
        if self._failure is not None:
            raise RuntimeError(f"an earlier write failed: {self._failure!r}") from self._failure
        grouped: dict[tuple[int, str, int], list[OutRecord]] = defaultdict(list)
        for record in records:
            source = (
                record.partition if record.source_partition is None else record.source_partition
            )
            grouped[(source, record.topic, record.partition)].append(record)
        if self._on_written is not None and grouped:
            self._on_written({source for source, _, _ in grouped})
        queued = 0
        for (source, topic, partition), items in grouped.items():
            producer = await self._producer_for(source)
            batch = producer.create_batch()
            for item in items:
                size = len(item.key or b"") + len(item.value or b"")
                if size > self._max_record_bytes:
                    # The pipeline bounds every record it makes; this is a bug, and aiokafka
                    # would put the record alone in a batch that the broker then refuses.
                    raise ValueError(
                        f"a record of {size} bytes for {topic!r} exceeds the "
                        f"{self._max_record_bytes} bytes allowed (WARROOM_MAX_RECORD_BYTES)"
                    )
                headers = item.headers
                if (
                    batch.append(key=item.key, value=item.value, timestamp=None, headers=headers)
                    is None
                ):
                    self._watch(await producer.send_batch(batch, topic, partition=partition))
                    queued += 1
                    batch = producer.create_batch()
                    batch.append(key=item.key, value=item.value, timestamp=None, headers=headers)
            self._watch(await producer.send_batch(batch, topic, partition=partition))
            queued += 1
        return queued

    async def _producer_for(self, partition: int) -> Any:
        faust_producer: Any = self._app.producer
        if not self._exactly_once:
            await faust_producer.maybe_start()
            return faust_producer._ensure_producer()
        group = self._app.assignor.group_for_topic(self._source_topic)
        transactional_id = f"{self._app.conf.id}-{group}-{partition}"
        producer = faust_producer._transaction_producers.get(transactional_id)
        if producer is None:
            raise RuntimeError(
                f"no transactional producer {transactional_id!r}: partition {partition} of "
                f"{self._source_topic!r} is not assigned to this worker"
            )
        return producer

    def _watch(self, delivery: asyncio.Future[Any]) -> None:
        delivery.add_done_callback(self._delivered)

    def _delivered(self, delivery: asyncio.Future[Any]) -> None:
        if delivery.cancelled():
            return
        failure = delivery.exception()
        if failure is None and self._on_delivered is not None:
            self._on_delivered(delivery.result())
        if failure is not None and self._failure is None:
            # Without exactly-once the offsets may already be committed: stop
            # the worker rather than carry on with output missing.
            self._failure = failure
            log.error("producing a batch failed: %r", failure)
            self._crash = asyncio.ensure_future(self._app.crash(failure))
