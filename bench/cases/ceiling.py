"""The ceiling: a plain aiokafka consumer reading the touchpoints and decoding each with
fastavro, nothing else (no state, no rules, no output, no commits)."""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition

from bench.cases.plain_avro import PlainDecoder
from bench.cases.worker_result import Clock


async def consume(config: dict[str, Any]) -> None:
    clock = Clock(config)
    decode = PlainDecoder()
    topic = f"{config['topic_prefix']}touchpoints"
    consumer = AIOKafkaConsumer(
        bootstrap_servers=config["bootstrap"],
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=4 * 1024 * 1024,
        fetch_max_bytes=16 * 1024 * 1024,
    )
    await consumer.start()
    try:
        consumer.assign([TopicPartition(topic, p) for p in range(int(config["partitions"]))])
        decoded = 0
        while not clock.done:
            batches = await consumer.getmany(timeout_ms=500, max_records=10_000)
            for records in batches.values():
                clock.begin()
                for record in records:
                    if record.value is None:
                        raise ValueError(
                            f"expected a touchpoint at {topic}[{record.partition}]@"
                            f"{record.offset}, found a null value"
                        )
                    decode(record.value)
                    decoded += 1
                if clock.add(len(records)):
                    break
    finally:
        await consumer.stop()


def main(config: dict[str, Any]) -> int:
    asyncio.run(consume(config))
    return 0
