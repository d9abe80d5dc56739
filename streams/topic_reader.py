"""Reading a one-partition topic whole, as it is now (models, score leaders)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from .kafka_security import client_options
from .settings import Settings


async def records_to_end(settings: Settings, topic: str) -> AsyncIterator[Any]:
    """Every record of partition 0 of ``topic`` (a full name), from its beginning to the
    end offset it had when the reading started; no consumer group."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers,
        enable_auto_commit=False,
        **client_options(settings),
    )
    await consumer.start()
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        end = (await consumer.end_offsets([tp]))[tp]
        while await consumer.position(tp) < end:
            for message in (await consumer.getmany(tp, timeout_ms=500)).get(tp, []):
                yield message
    finally:
        await consumer.stop()
