"""Publishing a rule bundle to the ``rules`` topic, after checking it."""

from __future__ import annotations

from aiokafka import AIOKafkaProducer

from engine.bundle import InvalidBundle, load_bundle
from schemas.topics import RULES

from .kafka_security import client_options
from .rules_feed import running_rulebook
from .settings import Settings


async def publish_bundle_text(settings: Settings, name: str, text: str) -> str:
    """Write bundle YAML as it is (no checks) under key ``name``; returns topic@offset."""
    return await _publish(settings, name, text.encode())


async def delete_bundle(settings: Settings, name: str) -> str:
    """Publish a deletion (a tombstone under key ``name``); returns topic@offset."""
    if not name.strip():
        raise ValueError("expected a bundle name, found an empty one")
    return await _publish(settings, name, None)


async def _publish(settings: Settings, name: str, value: bytes | None) -> str:
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.bootstrap_servers, acks="all", **client_options(settings)
    )
    await producer.start()
    try:
        sent = await producer.send_and_wait(
            settings.topic(RULES), value, key=name.encode(), partition=0
        )
    finally:
        await producer.stop()
    return f"{sent.topic}@{sent.offset}"


async def push_bundle(settings: Settings, text: str, source: str) -> tuple[str, int, str]:
    """Compile ``text``, check the workers would accept it, then publish it; returns name,
    version and where.

    Raises InvalidBundle, publishing nothing, if the text does not compile or the
    running bundles refuse it: a version not above the running one of that name, or
    rule or journey ids another bundle uses. The running bundles are what a starting
    worker would run: those kept on ``rules-accepted`` and the records after them on
    ``rules``.
    """
    bundle = load_bundle(text, source)
    problems = (await running_rulebook(settings)).refusals(bundle, text)
    if problems:
        raise InvalidBundle(problems)
    where = await publish_bundle_text(settings, bundle.name, text)
    return bundle.name, bundle.version, where
