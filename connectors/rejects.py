"""Dead letters from connectors: input a connector could not turn into touchpoints.

An HTTP connector answers a bad request with a 4xx and publishes nothing. A connector
that reads files or a Kafka topic has nobody to answer, so each record it cannot use
goes to the ``dlq`` topic with its source position, the reason and (the first bytes
of) the raw input, and the valid records around it go on. File positions are written
as ``source_topic = "file:<name>"`` and ``offset = <line or record number>`` (1-based);
records from a Kafka topic keep their topic, partition and offset.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any, Protocol

from schemas.codec import encode_dead_letter
from schemas.models import DeadLetter

from .kafka_io import AckedProducer

RAW_BYTES_KEPT = 65_536
"""A connector's dead letter keeps at most this many bytes of the raw input."""
DETAIL_MAX = 4_000
SOURCE_MAX = 249


def dead_letter(
    source: str,
    position: int,
    reason: str,
    detail: str,
    raw: bytes,
    failed_at: datetime,
    partition: int = 0,
    key: bytes | None = None,
) -> DeadLetter:
    """A dead letter for the record at ``position`` of ``source`` (``file:<name>`` or a
    topic name). ``reason`` is a short snake_case code, ``detail`` says what was expected
    and what was found; both must already have PII masked."""
    return DeadLetter(
        source_topic=source[:SOURCE_MAX],
        partition=partition,
        offset=max(0, position),
        reason=reason,
        detail=detail[:DETAIL_MAX],
        raw_key=None if key is None else key[:RAW_BYTES_KEPT],
        raw_value=raw[:RAW_BYTES_KEPT],
        failed_at=failed_at,
        raw_length=len(raw),
        raw_sha256=hashlib.sha256(raw).hexdigest(),
    )


def record_dead_letter(record: Any, reason: str, detail: str, failed_at: datetime) -> DeadLetter:
    """A dead letter for a record consumed from a Kafka topic (an aiokafka
    ``ConsumerRecord``): its topic, partition, offset, key and value."""
    return dead_letter(
        record.topic,
        record.offset,
        reason,
        detail,
        record.value or b"",
        failed_at,
        partition=record.partition,
        key=record.key,
    )


class DeadLetterSink(Protocol):
    async def send(self, letter: DeadLetter) -> None: ...


class KafkaDeadLetterSink(AckedProducer):
    """Writes dead letters to the ``dlq`` topic (idempotent producer, acks from all
    in-sync replicas): ``send`` returns once the broker has the record."""

    async def send(self, letter: DeadLetter) -> None:
        # the letter names its source partition; the source topic may have more than the dlq
        partitions = len(await self._producer.partitions_for(self.topic))
        await self._producer.send_and_wait(
            self.topic,
            encode_dead_letter(letter),
            key=letter.raw_key,
            partition=letter.partition % partitions,
        )


class MemoryDeadLetterSink:
    """Keeps dead letters in a list: for tests and dry runs."""

    def __init__(self) -> None:
        self.letters: list[DeadLetter] = []

    async def send(self, letter: DeadLetter) -> None:
        self.letters.append(letter)
