"""Following the compacted ``rules`` topic: every worker applies every bundle version.

Each worker reads the whole topic with its own consumer (no group), from the
beginning, so a restarted worker gets the latest version of every bundle back
before long, and a new version reaches all workers within about a second. What
happens to each offered version is written to the ``audit`` topic as JSON.

Compaction keeps only the last record of each bundle on ``rules``, and that record
may be one the workers refused (an older version, a broken text). So what a worker
accepts is kept on a second compacted topic, ``rules-accepted``, which only the
workers write: key the bundle name, value the accepted text as it was published (or
a tombstone once the bundle was deleted), headers ``rules-offset`` (the record's offset
on ``rules``) and ``version``. Every worker writes the same record for the same
decision, so the writes are idempotent. A starting worker loads ``rules-accepted``
first, then reads ``rules`` and offers only what came after the kept record of each
bundle (see :class:`engine.rulebook.BundleLedger`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from prometheus_client import Counter

from engine.builtin import BUILTIN_BUNDLE
from engine.errors import WarroomError
from engine.rulebook import BundleLedger, Kept, RuleBook, Verdict
from schemas.topics import RULES, RULES_ACCEPTED, TIMERS

from .audit_chain import BUNDLE_CHAIN, BundleDecisions
from .kafka_security import client_options
from .settings import Settings
from .timers import encode_tick

WAKE = "\x00warroom.bundle-decisions"
"""The customer id of the tick that wakes partition 0's owner for bundle decisions: no
customer has it (it has a control character), so the tick changes no state."""

log = logging.getLogger(__name__)


class MissingTopics(WarroomError):
    """The rules topics do not exist yet: run ``warroom topics`` (or start a worker)."""


OFFSET_HEADER = "rules-offset"
VERSION_HEADER = "version"
MAX_KEY_BYTES = 256
"""A rules key longer than this cannot be a bundle name (at most 128 characters): the
record is refused without being echoed into the audit record or the log."""
METADATA_RETRIES = 50
"""Times (0.2 s apart) the rules topics are looked for before they count as missing."""
MAX_PROBLEMS = 50
MAX_TEXT = 1_000
"""Audit records keep at most MAX_PROBLEMS problems of MAX_TEXT characters each, so one
hostile record can never make an audit record the broker refuses."""


def _cut(text: str) -> str:
    return text if len(text) <= MAX_TEXT else text[:MAX_TEXT] + f"… ({len(text)} characters)"


def audit_key(key: bytes | None) -> bytes | None:
    return None if key is None else key[:MAX_KEY_BYTES]


def audit_record(
    verdict: Verdict, offset: int, now: datetime, deleted: bool = False
) -> dict[str, Any]:
    if not verdict.accepted:
        event = "bundle_rejected"
    else:
        event = "bundle_deleted" if deleted else "bundle_activated"
    problems = [_cut(p) for p in verdict.problems[:MAX_PROBLEMS]]
    if len(verdict.problems) > MAX_PROBLEMS:
        problems.append(f"… and {len(verdict.problems) - MAX_PROBLEMS} more problems")
    return {
        "event": event,
        "bundle": _cut(verdict.bundle),
        "version": verdict.version,
        "rules_offset": offset,
        "problems": problems,
        "decided_at": now.isoformat(),
    }


async def follow_rules(
    settings: Settings,
    rulebook: RuleBook,
    outcomes: Counter | None,
    ready: asyncio.Event,
    decisions: BundleDecisions | None,
) -> None:
    """Apply bundles from the rules topic to ``rulebook`` until cancelled; ``ready`` is
    set once what was accepted before and everything on the rules topic are applied.

    Each decision goes to ``decisions``, for the owner of partition 0 to write into audit
    chain 0 (streams.audit_chain); a timer tick on partition 0 makes sure that owner has
    a batch to write it in. Without ``decisions`` (the compliance gate) nothing is
    written: the rule book follows the same decisions the workers make."""
    rules = TopicPartition(settings.topic(RULES), 0)
    consumer = _consumer(settings)
    producer = None
    if decisions is not None:
        producer = AIOKafkaProducer(
            bootstrap_servers=settings.bootstrap_servers, acks="all", **client_options(settings)
        )
        await producer.start()
    await consumer.start()
    try:
        ledger = BundleLedger(rulebook)
        end = await _restore(settings, consumer, ledger)
        consumer.assign([rules])
        await consumer.seek_to_beginning(rules)
        if end == 0:
            ready.set()
        while True:
            batches = await consumer.getmany(timeout_ms=500)
            for record in batches.get(rules, []):
                verdict = _offer(ledger, record.key, record.value, record.offset)
                if verdict is None:
                    continue  # decided before the record kept on rules-accepted
                deleted = record.value is None
                outcome = "deleted" if deleted else "activated"
                if outcomes is not None:
                    outcomes.labels(outcome if verdict.accepted else "rejected").inc()
                if producer is None or decisions is None:
                    continue
                if verdict.accepted:
                    await _keep(settings, producer, record, verdict)
                entry = audit_record(verdict, record.offset, datetime.now(UTC), deleted)
                decisions.add(record.offset, entry)
                await producer.send_and_wait(
                    settings.topic(TIMERS), encode_tick(WAKE, 0), partition=BUNDLE_CHAIN
                )
            if not ready.is_set() and await consumer.position(rules) >= end:
                ready.set()
    finally:
        await consumer.stop()
        if producer is not None:
            await producer.stop()


async def running_rulebook(settings: Settings) -> RuleBook:
    """The bundles every worker runs once it has read both topics as they are now:
    the same restore and replay a starting worker does, writing nothing."""
    rulebook = RuleBook(BUILTIN_BUNDLE)
    ledger = BundleLedger(rulebook)
    consumer = _consumer(settings)
    await consumer.start()
    try:
        end = await _restore(settings, consumer, ledger, quiet=True)
        rules = TopicPartition(settings.topic(RULES), 0)
        async for record in _read_whole(consumer, rules, end):
            _offer(ledger, record.key, record.value, record.offset, quiet=True)
    finally:
        await consumer.stop()
    return rulebook


def _consumer(settings: Settings) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers,
        **client_options(settings),
        group_id=None,
        enable_auto_commit=False,
        isolation_level="read_committed",
    )


async def _restore(
    settings: Settings, consumer: AIOKafkaConsumer, ledger: BundleLedger, quiet: bool = False
) -> int:
    """Load what ``rules-accepted`` kept into ``ledger``; returns the end offset of
    ``rules`` read right after, which every kept record's offset is below."""
    accepted = TopicPartition(settings.topic(RULES_ACCEPTED), 0)
    rules = TopicPartition(settings.topic(RULES), 0)
    missing = {accepted.topic, rules.topic} - set(await consumer.topics())
    for _ in range(METADATA_RETRIES):  # topics created a moment ago may not be known yet
        if not missing:
            break
        await asyncio.sleep(0.2)
        missing -= set(await consumer.topics())
    if missing:
        raise MissingTopics(
            f"expected the topics {', '.join(sorted(missing))}, found none of that name; "
            "create them with `warroom topics` (a worker creates them when it starts)"
        )
    kept: list[Kept] = []
    end = (await consumer.end_offsets([accepted]))[accepted]
    async for record in _read_whole(consumer, accepted, end):
        entry = _kept(record)
        if entry is not None:
            kept.append(entry)
    rules_end: int = (await consumer.end_offsets([rules]))[rules]
    for verdict in ledger.restore(kept, rules_end):
        if quiet:
            continue
        if verdict.accepted and verdict.version is not None:
            log.warning(
                "rule bundle %s v%s is running (kept on rules-accepted)",
                verdict.bundle,
                verdict.version,
            )
        elif not verdict.accepted:
            log.error(
                "rule bundle %s kept on rules-accepted is refused now; its records on "
                "rules are offered again:\n%s",
                verdict.bundle,
                "\n".join(verdict.problems),
            )
    return rules_end


async def _read_whole(
    consumer: AIOKafkaConsumer, partition: TopicPartition, end: int
) -> AsyncIterator[ConsumerRecord[Any, Any]]:
    """Every record of ``partition`` below offset ``end``."""
    consumer.assign([partition])
    await consumer.seek_to_beginning(partition)
    while await consumer.position(partition) < end:
        batches = await consumer.getmany(partition, timeout_ms=500)
        for record in batches.get(partition, []):
            if record.offset < end:
                yield record


def _kept(record: ConsumerRecord[Any, Any]) -> Kept | None:
    headers = dict(record.headers or ())
    try:
        name = (record.key or b"").decode()
        position = int(headers[OFFSET_HEADER])
        text = None if record.value is None else record.value.decode()
    except (KeyError, ValueError) as exc:  # UnicodeDecodeError is a ValueError
        log.error(
            "rules-accepted@%s ignored: expected a UTF-8 key and value and a %r header, "
            "found key %r, headers %r (%s)",
            record.offset,
            OFFSET_HEADER,
            record.key,
            sorted(headers),
            exc,
        )
        return None
    if not name:
        log.error("rules-accepted@%s ignored: expected the bundle name as key", record.offset)
        return None
    return Kept(name, position, text)


async def _keep(
    settings: Settings,
    producer: AIOKafkaProducer,
    record: ConsumerRecord[Any, Any],
    verdict: Verdict,
) -> None:
    """Write an accepted record (or deletion) to rules-accepted, as every worker does."""
    headers = [(OFFSET_HEADER, str(record.offset).encode())]
    if verdict.version is not None:
        headers.append((VERSION_HEADER, str(verdict.version).encode()))
    await producer.send_and_wait(
        settings.topic(RULES_ACCEPTED),
        record.value,
        key=record.key,
        partition=0,
        headers=headers,
    )


def _offer(
    ledger: BundleLedger,
    key: bytes | None,
    value: bytes | None,
    offset: int,
    quiet: bool = False,
) -> Verdict | None:
    name = key.decode(errors="replace") if key else None
    if name is None:
        # Compacted topics refuse records without a key; kept for other brokers.
        return Verdict("(unnamed)", False, None, ("expected the bundle name as key",))
    if key is not None and len(key) > MAX_KEY_BYTES:
        problem = f"expected a bundle name of at most 128 characters as key, found {len(key)} bytes"
        if not quiet:
            log.error("rules@%s refused: %s", offset, problem)
        return Verdict(name[:64] + "…", False, None, (problem,))
    source = f"rules@{offset} ({name})"
    text: str | None = None
    if value is not None:
        try:
            text = value.decode()
        except UnicodeDecodeError as exc:
            return Verdict(name, False, None, (f"expected UTF-8 YAML: {exc}",))
    verdict = ledger.decide(name, offset, text, source)
    if verdict is None or quiet:
        return verdict
    if text is None:
        if verdict.accepted:
            log.warning("rule bundle %s deleted: its rules and journeys stopped", name)
        else:
            log.error("deletion of rule bundle %s refused: %s", name, "; ".join(verdict.problems))
    elif verdict.accepted:
        log.warning("rule bundle %s v%s is running", verdict.bundle, verdict.version)
    else:
        log.error(
            "rule bundle %s refused, the previous version keeps running:\n%s",
            verdict.bundle,
            "\n".join(verdict.problems),
        )
    return verdict
