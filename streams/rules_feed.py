"""Following the compacted ``rules`` topic: every worker applies every bundle version.

Each worker reads the whole topic with its own consumer (no group), from the
beginning, so a restarted worker gets the latest version of every bundle back
before long, and a new version reaches all workers within about a second. What
happens to each offered version is written to the ``audit`` topic as JSON.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from prometheus_client import Counter

from engine.rulebook import RuleBook, Verdict
from schemas.topics import AUDIT, RULES

from .settings import Settings

log = logging.getLogger(__name__)


def audit_record(
    verdict: Verdict, offset: int, now: datetime, deleted: bool = False
) -> dict[str, Any]:
    if not verdict.accepted:
        event = "bundle_rejected"
    else:
        event = "bundle_deleted" if deleted else "bundle_activated"
    return {
        "event": event,
        "bundle": verdict.bundle,
        "version": verdict.version,
        "rules_offset": offset,
        "problems": list(verdict.problems),
        "at": now.isoformat(),
    }


async def follow_rules(
    settings: Settings, rulebook: RuleBook, outcomes: Counter, ready: asyncio.Event
) -> None:
    """Apply bundles from the rules topic to ``rulebook`` until cancelled."""
    topic = TopicPartition(settings.topic(RULES), 0)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers,
        group_id=None,
        enable_auto_commit=False,
        isolation_level="read_committed",
    )
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, acks="all")
    await consumer.start()
    await producer.start()
    try:
        consumer.assign([topic])
        await consumer.seek_to_beginning(topic)
        end = (await consumer.end_offsets([topic]))[topic]
        if end == 0:
            ready.set()
        while True:
            batches = await consumer.getmany(timeout_ms=500)
            for record in batches.get(topic, []):
                verdict = _offer(rulebook, record.key, record.value, record.offset)
                deleted = record.value is None
                outcome = "deleted" if deleted else "activated"
                outcomes.labels(outcome if verdict.accepted else "rejected").inc()
                entry = audit_record(verdict, record.offset, datetime.now(UTC), deleted)
                await producer.send_and_wait(
                    settings.topic(AUDIT), orjson.dumps(entry), key=record.key
                )
            if not ready.is_set() and await consumer.position(topic) >= end:
                ready.set()
    finally:
        await consumer.stop()
        await producer.stop()


def _offer(rulebook: RuleBook, key: bytes | None, value: bytes | None, offset: int) -> Verdict:
    name = key.decode(errors="replace") if key else None
    source = f"rules@{offset}" + (f" ({name})" if name else "")
    if value is None:
        if name is None:
            return Verdict("(unnamed)", False, None, ("a deletion needs the bundle name as key",))
        verdict = rulebook.withdraw(name)
        if verdict.accepted:
            log.warning("rule bundle %s deleted: its rules and journeys stopped", name)
        else:
            log.error("deletion of rule bundle %s refused: %s", name, "; ".join(verdict.problems))
        return verdict
    try:
        text = value.decode()
    except UnicodeDecodeError as exc:
        return Verdict(name or "(unnamed)", False, None, (f"expected UTF-8 YAML: {exc}",))
    verdict = rulebook.offer(text, source, expected_name=name)
    if verdict.accepted:
        log.warning("rule bundle %s v%s is running", verdict.bundle, verdict.version)
    else:
        log.error(
            "rule bundle %s refused, the previous version keeps running:\n%s",
            verdict.bundle,
            "\n".join(verdict.problems),
        )
    return verdict
