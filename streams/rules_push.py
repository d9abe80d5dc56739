"""Publishing a rule bundle to the ``rules`` topic, after checking it."""

from __future__ import annotations

from aiokafka import AIOKafkaProducer

from engine.bundle import load_bundle
from schemas.topics import RULES

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
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, acks="all")
    await producer.start()
    try:
        sent = await producer.send_and_wait(
            settings.topic(RULES), value, key=name.encode(), partition=0
        )
    finally:
        await producer.stop()
    return f"{sent.topic}@{sent.offset}"


async def push_bundle(settings: Settings, text: str, source: str) -> tuple[str, int, str]:
    """Compile ``text`` (raising InvalidBundle), then publish it; returns name, version, where."""
    bundle = load_bundle(text, source)
    where = await publish_bundle_text(settings, bundle.name, text)
    return bundle.name, bundle.version, where
