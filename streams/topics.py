"""Creating Warroom's topics with the right partition count before anything runs."""

from __future__ import annotations

import asyncio
import contextlib

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, TopicAlreadyExistsError

from schemas.topics import ALL_TOPICS, CUSTOMER_TOPICS, Partitioning

from .kafka_security import client_options, raise_if_refused
from .settings import Settings


class TopicMismatch(RuntimeError):
    """A topic exists with a partition count that breaks co-partitioning."""


async def ensure_topics(settings: Settings, wait_seconds: float = 60.0) -> list[str]:
    """Create missing topics; refuse existing ones with the wrong partition count."""
    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.bootstrap_servers, **client_options(settings)
    )
    await _start(admin, settings, wait_seconds)
    try:
        wanted = {
            settings.topic(t.name): NewTopic(
                settings.topic(t.name),
                settings.partitions if t.partitioning is Partitioning.CUSTOMER else 1,
                settings.replication_factor,
                topic_configs=dict(t.configs),
            )
            for t in ALL_TOPICS
        }
        existing = set(await admin.list_topics())
        missing = [n for n in wanted if n not in existing]
        if missing:
            with contextlib.suppress(TopicAlreadyExistsError):  # a concurrent creator won
                await admin.create_topics([wanted[n] for n in missing])
        customer = {settings.topic(t.name) for t in CUSTOMER_TOPICS}
        await _check_partitions(admin, settings, sorted(customer & existing))
        return missing
    finally:
        await admin.close()


async def _start(admin: AIOKafkaAdminClient, settings: Settings, wait_seconds: float) -> None:
    deadline = asyncio.get_running_loop().time() + wait_seconds
    while True:
        try:
            await admin.start()
            return
        except KafkaConnectionError:
            await raise_if_refused(settings)  # wrong credentials: retrying will not help
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.5)


async def _check_partitions(
    admin: AIOKafkaAdminClient, settings: Settings, names: list[str]
) -> None:
    if not names:
        return
    for description in await admin.describe_topics(names):
        found = len(description["partitions"])
        if found != settings.partitions:
            raise TopicMismatch(
                f"topic {description['topic']!r} has {found} partitions, expected "
                f"{settings.partitions} (WARROOM_PARTITIONS); customer topics must be "
                "co-partitioned"
            )
