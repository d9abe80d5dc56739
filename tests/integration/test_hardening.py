"""A bad day on the real broker: oversized state, quiet customers, and what the worker
does about them without stopping."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime, timedelta

import aiohttp
import orjson
from aiokafka import AIOKafkaProducer

from connectors.publisher import envelopes
from schemas.codec import decode_intervention
from schemas.models import Channel, Direction, TouchpointEvent
from streams.rules_push import push_bundle
from streams.settings import Settings
from streams.topics import ensure_topics

from .harness import WorkerProcess, produce_raw, read_topic, touchpoint_record

WINDOWS = 8
SPENDING = "bundle: spending\nversion: 1\nrules:\n" + "".join(
    f"""  - id: spend.window-{n}
    when:
      sum:
        of: {{kind: purchase}}
        field: attributes.amount
        within: 365d
        at_least: 1000000000
    then: {{kind: task, title: "Big spender {n}", due_in: 1d}}
"""
    for n in range(WINDOWS)
)


def purchases(customer: str, count: int, start: datetime) -> list[TouchpointEvent]:
    return [
        TouchpointEvent(
            event_id=f"{customer}-purchase-{n:05d}-" + random.randbytes(50).hex(),
            customer_id=customer,
            occurred_at=start + timedelta(seconds=n),
            received_at=start + timedelta(seconds=n),
            channel=Channel.POS,
            kind="purchase",
            direction=Direction.INBOUND,
            source="test/1",
            attributes={"amount": 1.0},
        )
        for n in range(count)
    ]


async def metrics_text(settings: Settings) -> str:
    url = f"http://127.0.0.1:{settings.web_port}/metrics"
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return await response.text()


async def test_a_state_above_the_brokers_record_limit_is_trimmed_and_the_worker_goes_on(
    settings: Settings, worker: WorkerProcess
) -> None:
    # Eight windows of 1,000 entries with long random event ids: about 1.3 MB of state
    # as JSON for one customer. The changelog value is compressed (streams.state_codec:
    # the eight windows repeat each other, the random ids do not compress much), so the
    # budget is set below what the compressed state takes (about 60 KB).
    budget = settings.model_copy(update={"state_max_bytes": 16_384})
    worker.settings = budget
    settings = budget
    await ensure_topics(settings)
    await push_bundle(settings, SPENDING, "spending.yaml")
    worker.start()
    assert worker._process is not None
    pid = worker._process.pid
    start = datetime.now(UTC) - timedelta(hours=2)
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers)
    await producer.start()
    try:
        for partition, key, value in envelopes(
            purchases("whale", 1000, start), settings.partitions
        ):
            await producer.send_and_wait(
                settings.topic("touchpoints"), value, key=key, partition=partition
            )
    finally:
        await producer.stop()
    # A probe after it: three unanswered outbound messages fire the built-in rule.
    now = datetime.now(UTC) - timedelta(seconds=5)
    await produce_raw(
        settings,
        [
            touchpoint_record(
                "whale",
                f"whale-out-{n}",
                "message_sent",
                now + timedelta(seconds=n),
                channel=Channel.CHAT,
                direction="outbound",
                rep_id="rep-1",
            )
            for n in range(3)
        ],
    )
    [probe] = await read_topic(
        settings, "interventions", lambda f: len(f) >= 1, decode_intervention, worker
    )
    assert probe.customer_id == "whale"
    metrics = await metrics_text(settings)
    assert 'warroom_state_trimmed_total{what="window_entries"}' in metrics
    worker.assert_alive()
    assert worker._process is not None and worker._process.pid == pid
    log = worker.log.read_text(errors="replace")
    assert "Traceback" not in log and "MessageSizeTooLarge" not in log


async def test_customers_silent_past_the_ttl_are_removed_with_a_tombstone_and_audited(
    settings: Settings, worker: WorkerProcess
) -> None:
    aging = settings.model_copy(update={"customer_ttl_days": 1.0, "expiry_check_seconds": 1.0})
    worker.settings = aging
    await ensure_topics(aging)
    worker.start()
    old = datetime.now(UTC) - timedelta(days=2)
    fresh = datetime.now(UTC) - timedelta(seconds=5)
    await produce_raw(
        aging,
        [
            touchpoint_record(
                "sleepy",
                "sleepy-1",
                "email_received",
                old,
                channel=Channel.EMAIL,
                direction="inbound",
                rep_id=None,
            ),
            touchpoint_record(
                "lively",
                "lively-1",
                "email_received",
                fresh,
                channel=Channel.EMAIL,
                direction="inbound",
                rep_id=None,
            ),
        ],
    )
    audit = await read_topic(
        aging,
        "audit",
        lambda f: any(r.get("event") == "customer_expired" for r in f),
        orjson.loads,
        worker,
    )
    expired = [r for r in audit if r.get("event") == "customer_expired"]
    assert [r["customer_id"] for r in expired] == ["sleepy"]
    changelog = f"{aging.app_id}-customer-state-changelog"
    await asyncio.sleep(2)
    found = await read_all_raw(aging, changelog)
    assert found.get(b"sleepy", b"missing") is None  # the latest record is a tombstone
    assert found.get(b"lively") is not None
    assert "warroom_customers_expired_total 1.0" in await metrics_text(aging)


async def read_all_raw(settings: Settings, topic: str) -> dict[bytes, bytes | None]:
    """The latest value per key of a topic that is not in the registry (a changelog)."""
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=settings.bootstrap_servers,
        isolation_level="read_committed",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    latest: dict[bytes, bytes | None] = {}
    try:
        partitions = consumer.assignment()
        while not partitions:
            await asyncio.sleep(0.1)
            partitions = consumer.assignment()
        ends = await consumer.end_offsets(list(partitions))
        while [tp for tp, end in ends.items() if await consumer.position(tp) < end]:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for record in records:
                    if record.key is not None:
                        latest[record.key] = record.value
    finally:
        await consumer.stop()
    return latest
