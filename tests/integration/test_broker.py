"""The real Kafka broker works for what Warroom needs: plain round trips and transactions.

Run against a throw-away broker with:

    python deploy/kafka/broker.py run -- pytest -q tests/integration/test_broker.py
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from faust.types import TP

from streams.patches.transactions import after_last_records

pytestmark = pytest.mark.integration

TIMEOUT_MS = 20_000


@pytest.fixture
def bootstrap(bootstrap_servers: str) -> str:
    return bootstrap_servers


@pytest.fixture
async def topic(bootstrap: str, request: pytest.FixtureRequest) -> AsyncIterator[str]:
    name = f"it-{request.node.name}-{uuid.uuid4().hex[:8]}".replace("[", "-").replace("]", "")
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, num_partitions=1, replication_factor=1)])
        yield name
        await admin.delete_topics([name])
    finally:
        await admin.close()


async def consume(
    bootstrap: str, topic: str, expected: int, isolation_level: str = "read_uncommitted"
) -> list[ConsumerRecord[bytes, bytes]]:
    """Read from the start of `topic` until `expected` records arrived or the log end is hit."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"it-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
        isolation_level=isolation_level,
        enable_auto_commit=False,
    )
    await consumer.start()
    records: list[ConsumerRecord[bytes, bytes]] = []
    try:
        while len(records) < expected:
            batch = await consumer.getmany(timeout_ms=TIMEOUT_MS)
            if not batch:
                break
            for partition_records in batch.values():
                records.extend(partition_records)
    finally:
        await consumer.stop()
    return records


async def test_produce_consume_round_trip(bootstrap: str, topic: str) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        sent = [(f"key-{i}".encode(), f"value-{i}".encode()) for i in range(5)]
        for key, value in sent:
            await producer.send_and_wait(topic, value, key=key)
    finally:
        await producer.stop()

    records = await consume(bootstrap, topic, expected=len(sent))

    assert [(r.key, r.value) for r in records] == sent
    assert [r.offset for r in records] == list(range(len(sent)))


async def test_read_committed_sees_only_committed_transaction(bootstrap: str, topic: str) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, transactional_id=f"it-txn-{uuid.uuid4().hex[:8]}"
    )
    await producer.start()
    try:
        async with producer.transaction():
            await producer.send_and_wait(topic, b"committed")
        await producer.begin_transaction()
        await producer.send_and_wait(topic, b"aborted")
        await producer.abort_transaction()
        async with producer.transaction():  # a last commit past the abort marker
            await producer.send_and_wait(topic, b"after-abort")
    finally:
        await producer.stop()

    committed = await consume(bootstrap, topic, expected=2, isolation_level="read_committed")
    everything = await consume(bootstrap, topic, expected=3)

    assert [r.value for r in committed] == [b"committed", b"after-abort"]
    assert [r.value for r in everything] == [b"committed", b"aborted", b"after-abort"]


async def test_changelog_tail_probe_finds_the_last_readable_record(bootstrap: str) -> None:
    """Recovery's highwater is one past the last committed record, not the last stable
    offset, which also counts transaction markers and aborted records."""
    topic = f"it-tail-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, transactional_id=f"it-txn-{uuid.uuid4().hex[:8]}"
    )
    await producer.start()
    try:
        async with producer.transaction():
            for value in (b"a", b"b"):
                await producer.send_and_wait(topic, value, partition=0)
        async with producer.transaction():
            await producer.send_and_wait(topic, b"c", partition=0)
        await producer.begin_transaction()
        for value in (b"x", b"y", b"z"):
            await producer.send_and_wait(topic, value, partition=0)
            await producer.send_and_wait(topic, value, partition=1)
        await producer.abort_transaction()
    finally:
        await producer.stop()
    partitions = [TP(topic, 0), TP(topic, 1), TP(topic, 2)]
    probe = AIOKafkaConsumer(bootstrap_servers=bootstrap, isolation_level="read_committed")
    await probe.start()
    try:
        ends = {
            TP(tp.topic, tp.partition): end
            for tp, end in (await probe.end_offsets(partitions)).items()
        }
    finally:
        await probe.stop()
    # a, b, marker, c, marker, x y z (aborted), marker: the last stable offset is 9.
    assert ends == {TP(topic, 0): 9, TP(topic, 1): 4, TP(topic, 2): 0}

    found = await after_last_records(bootstrap, ends)

    assert found == {TP(topic, 0): 4, TP(topic, 1): 0, TP(topic, 2): 0}
