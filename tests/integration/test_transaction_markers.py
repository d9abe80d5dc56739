"""A backlog written one record per transaction is committed as fast as it is processed.

Each transaction leaves a commit marker after its record, so the worker reads a
one-offset hole after every touchpoint. The group's committed offsets (what consumer
lag and KEDA see, and where a crashed worker starts again) must still reach the end of
the backlog promptly: before the markers counted as done, each commit moved about one
record per partition, about 6 records/s for the worker (bench/transaction_drain.py).
"""

from __future__ import annotations

from pathlib import Path

from aiokafka import AIOKafkaProducer

from schemas.codec import encode_touchpoint
from streams.settings import Settings
from streams.topics import ensure_topics
from tests.chaos.workload import generate_events

from .harness import WorkerProcess, wait_until_committed

RECORDS = 240
WITHIN_SECONDS = 30.0
"""Generous: a liveness bound, not a benchmark. The worker commits the whole backlog in
a few seconds; at one record per partition per commit it took about 40."""


async def test_records_written_one_per_transaction_are_all_committed(
    settings: Settings, tmp_path: Path
) -> None:
    await ensure_topics(settings)
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.bootstrap_servers,
        transactional_id=f"{settings.app_id}-chat-replica",
    )
    await producer.start()
    try:
        for event in generate_events(RECORDS, RECORDS // 10, 7, "m"):
            async with producer.transaction():
                await producer.send(
                    settings.topic("touchpoints"),
                    encode_touchpoint(event),
                    key=event.customer_id.encode(),
                )
    finally:
        await producer.stop()

    worker = WorkerProcess(settings, tmp_path / "worker.log")
    worker.start()
    try:
        await wait_until_committed(settings, worker, within=WITHIN_SECONDS)
    finally:
        worker.stop()
