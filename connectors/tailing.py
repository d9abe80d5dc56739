"""Following a line-oriented file as it grows, resumable from a stored position.

A :class:`FileFollower` reads complete records (a record ends at a newline; a CSV record
may span lines inside quotes), hands each batch to a handler that publishes it, and only
then stores the position: the byte offset just after the last record handled, with the
file's device and inode. The position is written atomically (temporary file, fsync,
rename), so after a crash it is either the old or the new one. A restart resumes at the
stored offset: no record is skipped; a batch the handler had published but whose
position was not stored yet is handed over again, with the same event ids, which the
worker drops as repeats.

A last line without its newline is not read while the file may still grow. Rotation is
seen when the path names another inode: the old file is read to its end first (also
after a restart, when the old inode is still in the same directory under another name,
as ``logrotate`` leaves it), then the new file from its start. A file shorter than the
stored offset, or whose first bytes are no longer those the position was taken on
(``copytruncate`` and then written on past the offset), is read again from its start.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import BinaryIO

import orjson
from pydantic import ValidationError

from schemas.models import TouchpointEvent

from .publisher import TouchpointSink, UnpublishableTouchpoints
from .rejects import DeadLetterSink, dead_letter

log = logging.getLogger(__name__)

MAX_BATCH_BYTES = 1024 * 1024
"""At most this much of a file is held in memory at once."""
FINGERPRINT_BYTES = 1024
"""The position remembers a hash of the file's first bytes (up to this many), so a file
truncated and written again past the position (``copytruncate``), or a new file that
got the old one's inode, is read from its start rather than from the middle."""
MAX_CSV_RECORD_LINES = 50
"""A quoted CSV field may span lines, but a quote left open for this many lines is taken
as a broken line of its own, so one stray quote cannot swallow the lines after it."""


@dataclass(frozen=True, slots=True)
class RawRecord:
    first_line: int
    """1-based number of the record's first line in its file."""
    data: bytes
    """The record without its final line ending."""
    problem: str | None = None
    """Why the record cannot be read at all (too large, unterminated quote)."""


@dataclass(frozen=True, slots=True)
class Position:
    device: int
    inode: int
    offset: int
    """Bytes of the file already handled; always just after a line ending (or 0)."""
    line: int
    """Lines of the file already handled."""
    fingerprint: str = ""
    """SHA-256 of the file's first ``min(offset, FINGERPRINT_BYTES)`` bytes."""


class PositionStore:
    """The follower's position in a small JSON file, replaced atomically."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> Position | None:
        try:
            data = orjson.loads(self.path.read_bytes())
        except FileNotFoundError:
            return None
        except orjson.JSONDecodeError as exc:
            raise ValueError(
                f"{self.path}: expected a JSON position, found unreadable content ({exc})"
            ) from None
        try:
            return Position(
                int(data["device"]),
                int(data["inode"]),
                int(data["offset"]),
                int(data["line"]),
                str(data.get("fingerprint", "")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(
                f"{self.path}: expected device, inode, offset and line, found {data!r} ({exc!r})"
            ) from None

    def save(self, position: Position, path: Path) -> None:
        body = orjson.dumps(
            {
                "path": str(path),
                "device": position.device,
                "inode": position.inode,
                "offset": position.offset,
                "line": position.line,
                "fingerprint": position.fingerprint,
            }
        )
        temporary = self.path.with_name(self.path.name + ".tmp")
        with temporary.open("wb") as out:
            out.write(body)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, self.path)
        directory = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)


Splitter = Callable[[bytes, int, bool], tuple[list[RawRecord], int, int]]
"""(data, number of the line data starts at, final) -> (records, bytes used, lines used).
``final`` says the data will not grow: a last record without a newline is complete."""


def split_lines(data: bytes, first_line: int, final: bool) -> tuple[list[RawRecord], int, int]:
    """One record per line (JSON lines); blank lines are skipped."""
    records: list[RawRecord] = []
    used, lines = 0, 0
    while used < len(data):
        newline = data.find(b"\n", used)
        if newline < 0:
            if not final:
                break
            newline = len(data)
        line = data[used:newline].rstrip(b"\r")
        if line.strip():
            records.append(RawRecord(first_line + lines, line))
        lines += 1
        used = min(newline + 1, len(data))
    return records, used, lines


_QUOTE, _COMMA = ord('"'), ord(",")
_FIELD_START, _UNQUOTED, _QUOTED, _QUOTE_IN_QUOTED = range(4)


def _ends_quoted(data: bytes, start: int, stop: int, quoted: bool) -> bool:
    """Whether a CSV record is inside a quoted field at ``stop`` (a line end), given
    whether it was at ``start`` (a line start). As RFC 4180 and Python's csv read it: a
    quote opens a quoted field only at the start of a field; inside one, ``""`` is a
    quote; elsewhere (``55" TV``) a quote is a character."""
    if data.find(b'"', start, stop) < 0:
        return quoted
    state = _QUOTED if quoted else _FIELD_START
    for byte in data[start:stop]:
        if state == _QUOTED:
            if byte == _QUOTE:
                state = _QUOTE_IN_QUOTED
        elif state == _QUOTE_IN_QUOTED:
            state = _QUOTED if byte == _QUOTE else _FIELD_START if byte == _COMMA else _UNQUOTED
        elif byte == _COMMA:
            state = _FIELD_START
        elif state == _FIELD_START:
            state = _QUOTED if byte == _QUOTE else _UNQUOTED
    return state == _QUOTED


def split_csv(data: bytes, first_line: int, final: bool) -> tuple[list[RawRecord], int, int]:
    """CSV records (RFC 4180): a record ends at a newline outside a quoted field."""
    records: list[RawRecord] = []
    used, lines = 0, 0
    while used < len(data):
        end, quoted, spanned = used, False, 0
        record: RawRecord | None = None
        while True:
            newline = data.find(b"\n", end)
            if newline < 0:
                if not final:
                    break
                newline = len(data)
            quoted = _ends_quoted(data, end, newline, quoted)
            spanned += 1
            end = min(newline + 1, len(data))
            if not quoted:
                record = RawRecord(first_line + lines, data[used:newline].rstrip(b"\r"))
                break
            if spanned >= MAX_CSV_RECORD_LINES or (end >= len(data) and final):
                first_end = data.find(b"\n", used)
                first_end = len(data) if first_end < 0 else first_end
                message = (
                    f"expected a closing double quote within {MAX_CSV_RECORD_LINES} lines, "
                    "found none"
                )
                record = RawRecord(first_line + lines, data[used:first_end].rstrip(b"\r"), message)
                end, spanned = min(first_end + 1, len(data)), 1
                break
        if record is None:
            break
        if record.data.strip() or record.problem:
            records.append(record)
        lines += spanned
        used = end
    return records, used, lines


BatchHandler = Callable[[list[RawRecord], str], Awaitable[None]]
"""Publishes a batch of records of the named file; raising leaves the position as it was."""


@dataclass(frozen=True, slots=True)
class Rejection:
    reason: str
    """A snake_case reason code for the dead letter."""
    detail: str
    """What was expected and what was found, with nothing that identifies a person."""


Convert = Callable[[RawRecord, datetime], TouchpointEvent | Rejection | None]
"""A record -> its touchpoint, why it is rejected, or None when it is not a touchpoint
(e.g. a purchase without a member); ``datetime`` is when it was received."""


@dataclass(slots=True)
class Counts:
    published: int = 0
    skipped: int = 0
    rejected: int = 0
    event_ids: list[str] = field(default_factory=list)


async def read_to_end(followers: Iterable[tuple[FileFollower, TouchpointBatches]]) -> Counts:
    """Read each file whole once (its last line too), one after the other, publishing as
    it goes; the counts of all of them."""
    total = Counts()
    for follow, batches in followers:
        await follow.read_to_end()
        total.published += batches.counts.published
        total.skipped += batches.counts.skipped
        total.rejected += batches.counts.rejected
        total.event_ids.extend(batches.counts.event_ids)
    return total


class TouchpointBatches:
    """A :data:`BatchHandler` that converts records, publishes the touchpoints of a batch
    together, then sends a dead letter (file name and line) for each rejected record. A
    touchpoint the sink can never encode becomes a dead letter and the rest still go."""

    def __init__(
        self,
        convert: Convert,
        sink: TouchpointSink,
        dead_letters: DeadLetterSink,
        clock: Callable[[], datetime],
        keep_ids: bool = False,
    ) -> None:
        self._convert = convert
        self._sink = sink
        self._dead_letters = dead_letters
        self._clock = clock
        self._keep_ids = keep_ids
        self.counts = Counts()

    async def __call__(self, records: list[RawRecord], name: str) -> None:
        now = self._clock()
        events: list[tuple[TouchpointEvent, RawRecord]] = []
        rejected: list[tuple[RawRecord, Rejection]] = []
        skipped = 0
        for record in records:
            if record.problem is not None:
                rejected.append((record, Rejection("unreadable_record", record.problem)))
                continue
            try:
                result = self._convert(record, now)
            except ValidationError as exc:
                fields = "; ".join(
                    f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
                    for e in exc.errors(include_url=False)
                )  # the messages only: the values may identify a person
                result = Rejection("invalid_record", f"does not convert to a touchpoint: {fields}")
            if result is None:
                skipped += 1
            elif isinstance(result, Rejection):
                rejected.append((record, result))
            else:
                events.append((result, record))
        published = await self._publish(events, rejected)
        for record, why in rejected:
            await self._dead_letters.send(
                dead_letter(
                    f"file:{name}", record.first_line, why.reason, why.detail, record.data, now
                )
            )
        if rejected:
            log.warning("%s: %d line(s) to the dead letters", name, len(rejected))
        self.counts.published += len(published)
        self.counts.skipped += skipped
        self.counts.rejected += len(rejected)
        if self._keep_ids:
            self.counts.event_ids.extend(e.event_id for e in published)

    async def _publish(
        self,
        events: list[tuple[TouchpointEvent, RawRecord]],
        rejected: list[tuple[RawRecord, Rejection]],
    ) -> list[TouchpointEvent]:
        while True:
            batch = [event for event, _ in events]
            try:
                await self._sink.publish(batch)
                return batch
            except UnpublishableTouchpoints as exc:
                bad = {p["event_id"]: p["message"] for p in exc.problems}
                rejected.extend(
                    (record, Rejection("unpublishable", f"does not encode: {bad[e.event_id]}"))
                    for e, record in events
                    if e.event_id in bad
                )
                events = [(e, r) for e, r in events if e.event_id not in bad]


class FileFollower:
    """Follows one path, as :mod:`connectors.tailing` describes."""

    def __init__(
        self,
        path: Path,
        store: PositionStore | None,
        splitter: Splitter,
        handle: BatchHandler,
        *,
        header: bool = False,
        max_batch_bytes: int = MAX_BATCH_BYTES,
        poll_seconds: float = 0.5,
        retry_seconds: float = 1.0,
    ) -> None:
        self.path = path
        self._store = store
        self._split = splitter
        self._handle = handle
        self._header = header
        self._max_bytes = max_batch_bytes
        self._poll = poll_seconds
        self._retry = retry_seconds
        self._file: BinaryIO | None = None
        self._name = path.name
        self._position: Position | None = None
        self._draining = False
        """The open file is no longer at the path (rotated): read it to its end, then move on."""
        self.header_record: RawRecord | None = None
        self.records_handled = 0

    # -- opening

    def _open(self, path: Path) -> BinaryIO | None:
        try:
            return path.open("rb")
        except FileNotFoundError:
            return None

    def _start(self) -> bool:
        """Open the file to read and choose where to start; False when there is none yet."""
        stored = self._store.load() if self._store else None
        current = self._open(self.path)
        if current is None:
            return False
        stat = os.fstat(current.fileno())
        if stored is not None and (stat.st_dev, stat.st_ino) != (stored.device, stored.inode):
            rotated = self._find_inode(stored)
            if rotated is not None:
                old = self._open(rotated)
                if old is not None and os.fstat(old.fileno()).st_ino == stored.inode:
                    log.info("resuming %s, rotated away from %s", rotated.name, self.path.name)
                    current.close()
                    self._use(old, rotated.name, stored)
                    self._draining = True
                    return True
            log.warning(
                "%s is another file than the stored position's and the old one is gone: "
                "reading the new one from its start",
                self.path.name,
            )
            stored = None
        if stored is not None and stat.st_size < stored.offset:
            log.warning("%s is shorter than the stored position: truncated, read again", self._name)
            stored = None
        if stored is not None and _rewritten(current, stored):
            log.warning("%s does not begin as it did: rewritten, read from its start", self._name)
            stored = None
        self._use(current, self.path.name, stored or Position(stat.st_dev, stat.st_ino, 0, 0))
        return True

    def _find_inode(self, stored: Position) -> Path | None:
        with contextlib.suppress(OSError):
            for entry in os.scandir(self.path.parent):
                with contextlib.suppress(OSError):
                    stat = entry.stat(follow_symlinks=False)
                    if (stat.st_dev, stat.st_ino) == (stored.device, stored.inode):
                        return Path(entry.path)
        return None

    def _use(self, file: BinaryIO, name: str, position: Position) -> None:
        if self._file is not None:
            self._file.close()
        self._file, self._name, self._position = file, name, position
        self.header_record = None
        self._draining = False

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    # -- reading

    def _read(self, offset: int) -> bytes:
        assert self._file is not None
        return os.pread(self._file.fileno(), self._max_bytes, offset)

    def _load_header(self) -> bool:
        """The first record of the file (CSV column names); False until it is complete."""
        data = self._read(0)
        records, _, _ = self._split(data, 1, self._draining and len(data) < self._max_bytes)
        if not records:
            return False
        self.header_record = records[0]
        return True

    async def step(self, final: bool = False) -> bool:
        """Handle the next batch of complete records; True when something moved on.
        ``final``: the file will not grow, a last line without newline is complete."""
        if self._file is None and not self._start():
            return False
        assert self._position is not None and self._file is not None
        if _rewritten(self._file, self._position):  # copytruncate and written on past us
            log.warning("%s rewritten: reading it from its start", self._name)
            self._position = Position(self._position.device, self._position.inode, 0, 0)
            self.header_record = None
        if self._header and self.header_record is None and not self._load_header():
            return self._rotate_if_needed(final)
        position = self._position
        data = self._read(position.offset)
        at_end = len(data) < self._max_bytes  # else the file goes on past this batch
        ending = (final or self._draining) and at_end
        records, used, lines = self._split(data, position.line + 1, ending)
        if used == 0 and len(data) >= self._max_bytes:
            records, used, lines = self._oversized(data, position)
        if used == 0:
            return self._rotate_if_needed(final)
        if self._header and position.offset == 0 and records:
            records = records[1:]  # the header itself
        if records:
            await self._handle(records, self._name)
            self.records_handled += len(records)
        offset = position.offset + used
        self._position = Position(
            position.device,
            position.inode,
            offset,
            position.line + lines,
            position.fingerprint
            if position.offset >= FINGERPRINT_BYTES
            else _fingerprint(self._file, offset),
        )
        if self._store is not None:
            self._store.save(self._position, self.path)
        return True

    def _oversized(self, data: bytes, position: Position) -> tuple[list[RawRecord], int, int]:
        """A record longer than a batch: given up as one bad record once its end is seen."""
        assert self._file is not None
        offset = position.offset + len(data)
        while True:
            chunk = os.pread(self._file.fileno(), self._max_bytes, offset)
            newline = chunk.find(b"\n")
            if newline >= 0:
                used = offset + newline + 1 - position.offset
                message = f"expected a record of at most {self._max_bytes} bytes, found {used}"
                return [RawRecord(position.line + 1, data, message)], used, 1
            if not chunk:
                return [], 0, 0  # its end is not written yet
            offset += len(chunk)

    def _rotate_if_needed(self, final: bool) -> bool:
        """At the end of the open file: move to the file now at the path, if it is another
        one, or start again if the file was truncated."""
        assert self._file is not None and self._position is not None
        if final:
            return False
        try:
            stat = os.stat(self.path)
        except FileNotFoundError:
            self._draining = True  # moved away; a new one may appear
            return False
        position = self._position
        if (stat.st_dev, stat.st_ino) != (position.device, position.inode):
            if not self._draining:
                self._draining = True  # one more read takes a last line without newline
                return True
            log.info("%s rotated: reading the new file from its start", self.path.name)
            new = self._open(self.path)
            if new is None:
                return False
            fresh = os.fstat(new.fileno())
            self._use(new, self.path.name, Position(fresh.st_dev, fresh.st_ino, 0, 0))
            if self._store is not None:
                self._store.save(self._position, self.path)
            return True
        if stat.st_size < position.offset or _rewritten(self._file, position):
            log.warning("%s truncated or rewritten: reading it from its start", self.path.name)
            self._position = Position(position.device, position.inode, 0, 0)
            self.header_record = None
            return True
        return False

    async def run(self, stop: asyncio.Event) -> None:
        """Follow until ``stop`` is set; a handler failure is retried after a pause."""
        try:
            while not stop.is_set():
                try:
                    moved = await self.step()
                except (OSError, ValueError):
                    raise
                except Exception as exc:
                    log.warning("publishing from %s failed, retrying: %r", self._name, exc)
                    moved = False
                    await _sleep_or_stop(stop, self._retry)
                if not moved:
                    await _sleep_or_stop(stop, self._poll)
        finally:
            self.close()

    async def read_to_end(self) -> None:
        """Read what the file holds now, its last line too, then stop (one-off import)."""
        try:
            while await self.step(final=True):
                pass
        finally:
            self.close()


def _fingerprint(file: BinaryIO | None, offset: int) -> str:
    """SHA-256 of the first ``min(offset, FINGERPRINT_BYTES)`` bytes of ``file``."""
    length = min(offset, FINGERPRINT_BYTES)
    head = os.pread(file.fileno(), length, 0) if file is not None and length else b""
    return hashlib.sha256(head).hexdigest()


def _rewritten(file: BinaryIO, position: Position) -> bool:
    """The file no longer begins with the bytes the position was taken on (a position
    stored without a fingerprint is trusted)."""
    if position.offset == 0 or not position.fingerprint:
        return False
    return _fingerprint(file, position.offset) != position.fingerprint


async def _sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
