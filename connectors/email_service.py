"""Email connector, I/O part: ``.eml`` and mbox files -> touchpoints on Kafka.

Messages are read and published in batches of at most ``batch_size``: a batch is
converted, its touchpoints published in one transaction and its rejected messages sent
as dead letters before the next batch is read, so memory stays bounded whatever the
file size, and a stop (Ctrl-C) after a batch leaves nothing half sent. Re-reading a file
publishes the same event ids again, which the worker drops as repeats.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from .email import (
    Converted,
    EmailSettings,
    RawEmail,
    Reason,
    Rejection,
    ThreadMemory,
    convert,
    looks_like_mbox,
    split_mbox,
)
from .publisher import TouchpointSink, UnpublishableTouchpoints
from .rejects import DeadLetterSink, dead_letter

log = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 200
Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class Positioned:
    """A message with the dead-letter source it came from."""

    source: str
    """``file:<name>`` or ``imap:<host>/<mailbox>``."""
    item: RawEmail
    where: str
    """Human position for details: ``message 3 at byte 812``."""


def read_file(path: Path, settings: EmailSettings) -> Iterator[Positioned]:
    """The messages of one file: an mbox (it starts with a ``From`` separator line) or a
    single RFC 5322 message (``.eml``)."""
    source = f"file:{path.name}"
    with path.open("rb") as stream:
        head = stream.read(1024)
        stream.seek(0)
        if looks_like_mbox(head):
            for found in split_mbox(stream, settings.max_message_bytes):
                item = RawEmail(
                    found.number,
                    found.data,
                    found.separator_date,
                    size=None if found.complete else found.size,
                )
                yield Positioned(source, item, f"message {found.number} at byte {found.offset}")
            return
        data = stream.read(settings.max_message_bytes + 1)
        if len(data) > settings.max_message_bytes:
            size = path.stat().st_size
            yield Positioned(source, RawEmail(1, data[:65_536], size=size), "message 1")
            return
        yield Positioned(source, RawEmail(1, data), "message 1")


def batches(messages: Iterable[Positioned], size: int) -> Iterator[list[Positioned]]:
    batch: list[Positioned] = []
    for message in messages:
        batch.append(message)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


class EmailPublisher:
    """Converts batches of messages and publishes them: touchpoints to the sink in one
    transaction per batch, rejected messages to the dead-letter sink. Keeps the thread
    memory across batches and counts outcomes in :attr:`counts`."""

    def __init__(
        self,
        settings: EmailSettings,
        sink: TouchpointSink,
        dead_letters: DeadLetterSink,
        clock: Clock = utc_now,
    ) -> None:
        self.settings = settings
        self.sink = sink
        self.dead_letters = dead_letters
        self.clock = clock
        self.threads = ThreadMemory(settings.thread_memory)
        self.counts: Counter[str] = Counter()

    async def publish(self, batch: Sequence[Positioned]) -> None:
        """Publish one batch; raises :class:`~connectors.publisher.PublishUnavailable`
        when Kafka did not take it (nothing of the batch's touchpoints landed)."""
        now = self.clock()
        converted = convert([p.item for p in batch], self.settings, self.threads, now)
        by_position = {p.item.position: p for p in batch}
        unpublishable = await self._publish_events(converted)
        for rejection in [*converted.rejections, *unpublishable]:
            origin = by_position[rejection.position]
            detail = f"{origin.where}: {rejection.detail}"
            raw = rejection.data or origin.item.data
            reason = rejection.reason.value
            letter = dead_letter(origin.source, rejection.position, reason, detail, raw, now)
            await self.dead_letters.send(letter)
            self.counts[rejection.reason.value] += 1
            log.info("email %s %s rejected: %s", origin.source, origin.where, rejection.reason)
        self.counts["internal"] += converted.internal
        self.counts["read"] += len(batch)

    async def _publish_events(self, converted: Converted) -> list[Rejection]:
        events = converted.events
        refused: list[Rejection] = []
        while events:
            try:
                await self.sink.publish(events)
            except UnpublishableTouchpoints as exc:
                bad = {p["event_id"]: p["message"] for p in exc.problems}
                positions = {converted.positions[e] for e in bad if e in converted.positions}
                if not positions:
                    raise
                events = [e for e in events if converted.positions[e.event_id] not in positions]
                found = "; ".join(bad.values())
                detail = f"expected a touchpoint Kafka takes, found: {found}"
                refused.extend(
                    Rejection(position, Reason.UNPUBLISHABLE, detail, b"")
                    for position in sorted(positions)
                )
                continue
            self.counts["touchpoints"] += len(events)
            break
        return refused


async def publish_files(
    paths: Sequence[Path], publisher: EmailPublisher, batch_size: int = DEFAULT_BATCH_SIZE
) -> Counter[str]:
    """Read every file and publish its messages; returns the counts by outcome."""
    for path in paths:
        for batch in batches(read_file(path, publisher.settings), batch_size):
            await publisher.publish(batch)
    return publisher.counts
