"""``warroom audit verify`` and ``warroom audit export``: the audit topic's hash chains
walked from the beginning to the end they had when the command started.

Chain ``n`` is partition ``n`` of the ``audit`` topic (see engine.audit). The heads the
worker stores with every transaction are read from :func:`heads_topic`; given to the
verification, they reveal records deleted from the end of a chain.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO, Any, TextIO

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaConnectionError, KafkaError
from pydantic import ValidationError

from engine import AuditVerifier, ChainHead, VerifyReport
from engine.errors import WarroomError
from schemas.topics import AUDIT

from .kafka_security import client_options
from .settings import Settings

INTACT, BROKEN, UNUSABLE = 0, 1, 2
"""Exit codes: every chain intact; a chain broken; the check could not be made."""

HEADS_TABLE = "audit-heads"
"""The worker's table of chain heads; its changelog is :func:`heads_topic`."""


class AuditUnreadable(WarroomError):
    """The audit topic or the heads topic cannot be read as asked; nothing was verified."""


def heads_topic(settings: Settings) -> str:
    """The changelog topic of the worker's chain-head table: key the chain (partition)
    number as UTF-8 text, value orjson ``{"seq": n, "hash": "..."}``."""
    return f"{settings.app_id}-{HEADS_TABLE}-changelog"


def _consumer(settings: Settings) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers,
        **client_options(settings),
        group_id=None,
        enable_auto_commit=False,
        isolation_level="read_committed",
    )


async def _partitions(settings: Settings, topic: str) -> list[TopicPartition] | None:
    """Every partition of ``topic``, or None when there is no such topic. Asks the
    cluster (a consumer knows only the topics it has metadata for) and waits a little
    for the leaders of a topic created a moment ago."""
    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.bootstrap_servers, **client_options(settings)
    )
    try:
        await admin.start()
        # Listing every topic never creates one; describing a missing one might.
        if topic not in await admin.list_topics():
            return None
        for _ in range(_LEADER_WAITS):
            (found,) = await admin.describe_topics([topic])
            partitions = found["partitions"]
            if (
                found["error_code"] == 0
                and partitions
                and all(p["leader"] >= 0 for p in partitions)
            ):
                return sorted(TopicPartition(topic, p["partition"]) for p in partitions)
            await asyncio.sleep(0.25)
        raise AuditUnreadable(
            f"topic {topic}: expected every partition to have a leader, found error code "
            f"{found['error_code']} and partitions {partitions}"
        )
    finally:
        await admin.close()


_LEADER_WAITS = 40


async def _read_to_end(
    consumer: AIOKafkaConsumer, partitions: list[TopicPartition]
) -> AsyncIterator[tuple[int, int, bytes | None, bytes | None]]:
    """(partition, offset, key, value) of every committed record of ``partitions`` below
    the end offsets they had when called, in offset order per partition."""
    ends: dict[TopicPartition, int] = await consumer.end_offsets(partitions)
    consumer.assign(partitions)
    await consumer.seek_to_beginning(*partitions)
    reading = [tp for tp in partitions if ends[tp] > 0]
    while reading:
        batches = await consumer.getmany(*reading, timeout_ms=500)
        for tp, records in batches.items():
            for record in records:
                if record.offset < ends[tp]:
                    yield tp.partition, record.offset, record.key, record.value
        reading = [tp for tp in reading if await consumer.position(tp) < ends[tp]]


async def read_heads(settings: Settings, topic: str | None = None) -> dict[int, ChainHead] | None:
    """The latest stored head of each chain, from ``topic`` (default :func:`heads_topic`);
    None when that topic does not exist."""
    name = topic or heads_topic(settings)
    consumer = _consumer(settings)
    try:
        await consumer.start()
        partitions = await _partitions(settings, name)
        if partitions is None:
            return None
        heads: dict[int, ChainHead] = {}
        async for partition, offset, key, value in _read_to_end(consumer, partitions):
            chain = _head_key(name, partition, offset, key)
            if value is None:
                heads.pop(chain, None)
            else:
                heads[chain] = _head_value(name, partition, offset, value)
        return heads
    finally:
        await consumer.stop()


def _head_key(topic: str, partition: int, offset: int, key: bytes | None) -> int:
    text = (key or b"").decode("utf-8", errors="replace")
    if not text.isascii() or not text.isdigit():
        raise AuditUnreadable(
            f"{topic}[{partition}]@{offset}: key: expected a chain number, found {key!r}"
        )
    return int(text)


def _head_value(topic: str, partition: int, offset: int, value: bytes) -> ChainHead:
    try:
        loaded = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise AuditUnreadable(
            f"{topic}[{partition}]@{offset}: value: expected JSON, found {exc}"
        ) from exc
    seq = loaded.get("seq") if isinstance(loaded, dict) else None
    digest = loaded.get("hash") if isinstance(loaded, dict) else None
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0 or not isinstance(digest, str):
        raise AuditUnreadable(
            f"{topic}[{partition}]@{offset}: value: expected "
            f'{{"seq": a count, "hash": a hex string}}, found {value[:200]!r}'
        )
    return ChainHead(seq, digest)


@dataclass(frozen=True, slots=True)
class _Found:
    """A customer's audit record and where it sorts: (at, chain, seq)."""

    at: datetime
    chain: int
    seq: int
    value: bytes


_NO_TIME = datetime.max.replace(tzinfo=UTC)


def _found(partition: int, value: bytes, record: dict[str, Any]) -> _Found:
    try:
        at = datetime.fromisoformat(str(record.get("at")))
    except ValueError:
        at = _NO_TIME  # an unreadable time sorts last
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    chain, seq = record.get("chain"), record.get("seq")
    return _Found(
        at=at,
        chain=chain if isinstance(chain, int) else partition,
        seq=seq if isinstance(seq, int) else 0,
        value=value if b"\n" not in value else orjson.dumps(record),
    )


@dataclass(frozen=True, slots=True)
class AuditCheck:
    """How ``verify`` and ``export`` check the chains."""

    use_heads: bool = False
    """Check against the heads the worker stored (reveals a deleted tail)."""
    heads_topic: str | None = None
    """Where the heads are; default :func:`heads_topic`."""
    trimmed_ok: bool = False
    """Accept partitions whose oldest records are gone (retention): verify each from
    its first record kept. Without it such a chain is broken at its first record."""


async def _walk(
    settings: Settings,
    check: AuditCheck,
    heads: dict[int, ChainHead] | None,
    err: TextIO,
    customer_id: str | None = None,
) -> tuple[VerifyReport, list[_Found]]:
    """Verify every chain of the audit topic; with ``customer_id``, also collect that
    customer's records."""
    topic = settings.topic(AUDIT)
    consumer = _consumer(settings)
    try:
        await consumer.start()
        partitions = await _partitions(settings, topic)
        if partitions is None:
            raise AuditUnreadable(
                f"expected the audit topic {topic}, found no topic of that name; check "
                "--bootstrap and --topic-prefix (`warroom topics` creates it)"
            )
        starts: dict[TopicPartition, int] = await consumer.beginning_offsets(partitions)
        trimmed = {tp.partition: start for tp, start in starts.items() if start > 0}
        for partition, start in sorted(trimmed.items()):
            accepted = (
                "verifying from the first record kept"
                if check.trimmed_ok
                else ("--trimmed-ok verifies from the first record kept")
            )
            print(
                f"{topic} partition {partition} starts at offset {start}: the records "
                f"before it were removed (retention or deletion); {accepted}",
                file=err,
            )
        verifier = AuditVerifier(
            heads, [tp.partition for tp in partitions], trimmed if check.trimmed_ok else None
        )
        found: list[_Found] = []
        async for partition, offset, _, value in _read_to_end(consumer, partitions):
            verifier.feed(partition, offset, value)
            if customer_id is None or value is None:
                continue
            try:
                record = orjson.loads(value)
            except orjson.JSONDecodeError:
                continue  # the verification names it
            if isinstance(record, dict) and record.get("customer_id") == customer_id:
                found.append(_found(partition, value, record))
        return verifier.report(), found
    finally:
        await consumer.stop()


async def _heads(settings: Settings, check: AuditCheck, err: TextIO) -> dict[int, ChainHead] | None:
    if not check.use_heads:
        return None
    heads = await read_heads(settings, check.heads_topic)
    if heads is None:
        print(
            f"no heads topic {check.heads_topic or heads_topic(settings)}: verifying "
            "without stored heads (records deleted from the end of a chain cannot be seen)",
            file=err,
        )
    return heads


def _problem(settings: Settings, error: Exception) -> str:
    if isinstance(error, KafkaConnectionError):
        return f"expected a Kafka broker at {settings.bootstrap_servers}, found none: {error}"
    return str(error)


async def verify_audit(
    settings: Settings,
    check: AuditCheck = AuditCheck(),
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
) -> int:
    """``warroom audit verify``: print each chain's result; the exit code."""
    try:
        heads = await _heads(settings, check, err)
        report, _ = await _walk(settings, check, heads, err)
    except (AuditUnreadable, KafkaError) as unreadable:
        print(f"warroom audit verify: {_problem(settings, unreadable)}", file=err)
        return UNUSABLE
    print(report, file=out)
    return INTACT if report.ok else BROKEN


async def export_customer(
    settings: Settings,
    customer_id: str,
    output: IO[bytes],
    check: AuditCheck = AuditCheck(),
    err: TextIO = sys.stderr,
) -> int:
    """``warroom audit export``: the customer's audit records from every chain as JSON
    lines in (at, chain, seq) order, each as stored; the verification on ``err``."""
    try:
        heads = await _heads(settings, check, err)
        report, found = await _walk(settings, check, heads, err, customer_id)
    except (AuditUnreadable, KafkaError) as unreadable:
        print(f"warroom audit export: {_problem(settings, unreadable)}", file=err)
        return UNUSABLE
    found.sort(key=lambda f: (f.at, f.chain, f.seq))
    output.writelines(f.value + b"\n" for f in found)
    output.flush()
    print(report, file=err)
    print(f"exported {len(found)} audit record(s) of customer {customer_id}", file=err)
    if not report.ok:
        print("the audit trail is broken: exported records may have been tampered with", file=err)
    return INTACT if report.ok else BROKEN


def _settings(args: argparse.Namespace) -> Settings | None:
    """Settings from WARROOM_* with the command line's --bootstrap, --topic-prefix and
    --app-id over them."""
    chosen = {
        "bootstrap_servers": args.bootstrap,
        "topic_prefix": args.topic_prefix,
        "app_id": args.app_id,
    }
    try:
        return Settings(**{name: value for name, value in chosen.items() if value is not None})
    except ValidationError as invalid:
        print(f"warroom audit: {invalid}", file=sys.stderr)
        return None


def _check(args: argparse.Namespace) -> AuditCheck:
    return AuditCheck(args.heads, args.heads_topic, args.trimmed_ok)


def run_verify(args: argparse.Namespace) -> int:
    settings = _settings(args)
    if settings is None:
        return UNUSABLE
    return asyncio.run(verify_audit(settings, _check(args)))


def run_export(args: argparse.Namespace) -> int:
    settings = _settings(args)
    if settings is None:
        return UNUSABLE
    check = _check(args)
    if args.output is None:
        return asyncio.run(export_customer(settings, args.customer, sys.stdout.buffer, check))
    with args.output.open("wb") as output:
        return asyncio.run(export_customer(settings, args.customer, output, check))
