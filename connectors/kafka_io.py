"""The Kafka clients the topic-reading connectors share: an acknowledged producer, a
read-committed group consumer, and starting and stopping them together."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, Protocol

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError

from .kafka_security import PLAINTEXT, KafkaSecurity
from .settings import IntakeSettings


class PollingConsumer(Protocol):
    """The part of :class:`aiokafka.AIOKafkaConsumer` a reader that commits each poll
    uses."""

    async def getmany(
        self, *partitions: TopicPartition, timeout_ms: int = 0, max_records: int | None = None
    ) -> dict[TopicPartition, list[Any]]: ...

    async def commit(self, offsets: dict[TopicPartition, int] | None = None) -> None: ...


class Client(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class AckedProducer:
    """A producer whose ``send_and_wait`` returns once every in-sync replica has the
    record (idempotent, ``acks=all``); subclasses say what they write and where."""

    def __init__(
        self, bootstrap_servers: str, topic: str, security: KafkaSecurity = PLAINTEXT
    ) -> None:
        self.topic = topic
        self._producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap_servers,
            acks="all",
            enable_idempotence=True,
            **security.client_options(),
        )

    async def start(self) -> None:
        await self._producer.start()

    async def stop(self) -> None:
        await self._producer.stop()


def read_committed_consumer(
    intake: IntakeSettings, *topics: str, group_id: str, from_beginning: bool
) -> AIOKafkaConsumer:
    """A group consumer of ``topics`` that sees committed records only and commits
    when told (a poll's offsets after its touchpoints are published)."""
    return AIOKafkaConsumer(
        *topics,
        bootstrap_servers=intake.bootstrap_servers,
        **intake.security.client_options(),
        group_id=group_id,
        client_id=intake.instance_id,
        enable_auto_commit=False,
        isolation_level="read_committed",
        auto_offset_reset="earliest" if from_beginning else "latest",
    )


@asynccontextmanager
async def started(*clients: Client) -> AsyncIterator[None]:
    """Start the clients in order; on leaving, stop them in the reverse order."""
    for client in clients:
        await client.start()
    try:
        yield
    finally:
        for client in reversed(clients):
            await client.stop()


async def commit_poll(
    consumer: PollingConsumer,
    batch: Mapping[TopicPartition, Sequence[Any]],
    records: str,
    log: logging.Logger,
) -> bool:
    """Commit the offsets after a handled poll; False when the group has moved its
    partitions meanwhile (logged as a warning: ``records``, such as "the commands", will
    be read again by their next owner)."""
    offsets = {tp: polled[-1].offset + 1 for tp, polled in batch.items() if polled}
    try:
        await consumer.commit(offsets)
    except (CommitFailedError, IllegalStateError) as exc:
        log.warning(
            "offsets not committed (%s); %s will be read again", type(exc).__name__, records
        )
        return False
    return True
