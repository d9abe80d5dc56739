"""Publishing validated touchpoints to Kafka, all of a request or none of it."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Protocol

from aiokafka import AIOKafkaProducer

from schemas.codec import encode_touchpoint, encode_touchpoint_batch
from schemas.models import TouchpointEvent
from schemas.partitioning import customer_partition

ENVELOPE_MAX_EVENTS = 500
"""At most this many touchpoints share one Kafka record."""


class TouchpointSink(Protocol):
    """Where connectors put validated touchpoints."""

    async def publish(self, events: Sequence[TouchpointEvent]) -> None: ...


def envelopes(
    events: Sequence[TouchpointEvent], partitions: int, max_events: int = ENVELOPE_MAX_EVENTS
) -> list[tuple[int, bytes | None, bytes]]:
    """Group events into records: (partition, key, value), customer order preserved.

    One event becomes a plain TouchpointEvent record keyed by its customer, as
    any external producer would write it. Several events of one partition
    share TouchpointBatch records, so the worker pays Kafka's per-record cost
    once per envelope rather than once per event.
    """
    if len(events) == 1:
        event = events[0]
        key = event.customer_id.encode()
        return [(customer_partition(event.customer_id, partitions), key, encode_touchpoint(event))]
    by_partition: dict[int, list[TouchpointEvent]] = defaultdict(list)
    for event in events:
        by_partition[customer_partition(event.customer_id, partitions)].append(event)
    records: list[tuple[int, bytes | None, bytes]] = []
    for partition, group in sorted(by_partition.items()):
        for start in range(0, len(group), max_events):
            chunk = group[start : start + max_events]
            records.append((partition, None, encode_touchpoint_batch(chunk)))
    return records


class KafkaTouchpointSink:
    """Publishes each call's events in one Kafka transaction: all land, or none do."""

    def __init__(self, bootstrap_servers: str, topic: str, partitions: int, client_id: str) -> None:
        self._topic = topic
        self._partitions = partitions
        self._producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap_servers,
            client_id=client_id,
            transactional_id=f"{client_id}-{topic}",
            enable_idempotence=True,
            acks="all",
            linger_ms=5,
        )

    async def start(self) -> None:
        await self._producer.start()

    async def stop(self) -> None:
        await self._producer.stop()

    async def publish(self, events: Sequence[TouchpointEvent]) -> None:
        if not events:
            return
        records = envelopes(events, self._partitions)
        async with self._producer.transaction():
            for partition, key, value in records:
                await self._producer.send(self._topic, value, key=key, partition=partition)


class MemoryTouchpointSink:
    """In-memory twin of :class:`KafkaTouchpointSink` for tests."""

    def __init__(self) -> None:
        self.published: list[list[TouchpointEvent]] = []

    async def publish(self, events: Sequence[TouchpointEvent]) -> None:
        self.published.append(list(events))
