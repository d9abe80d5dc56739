"""Email connector, I/O part: ``.eml`` and mbox files -> touchpoints on Kafka.

Messages are read and published in batches of at most ``batch_size``: a batch is
converted, its touchpoints published in one transaction and its rejected messages sent
as dead letters before the next batch is read, so memory stays bounded whatever the
file size, and a stop (Ctrl-C) after a batch leaves nothing half sent. Re-reading a file
publishes the same event ids again, which the worker drops as repeats.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import logging
import os
import signal
import sys
import tempfile
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from pydantic import ValidationError

from .email import (
    Converted,
    CustomerBy,
    EmailSettings,
    RawEmail,
    Reason,
    Rejection,
    ThreadMemory,
    convert,
    looks_like_mbox,
    split_mbox,
)
from .publisher import (
    KafkaTouchpointSink,
    PublishUnavailable,
    TouchpointSink,
    UnpublishableTouchpoints,
)
from .rejects import DeadLetterSink, KafkaDeadLetterSink, dead_letter
from .settings import IntakeSettings

if TYPE_CHECKING:
    from .imap import ImapSettings

log = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 200
PASSWORD_ENV = "WARROOM_IMAP_PASSWORD"
Clock = Callable[[], datetime]


class StateFileError(ValueError):
    """A state or thread-memory file that cannot be read back; says which and why."""


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


def load_threads(path: Path, threads: ThreadMemory) -> int:
    """Fill ``threads`` from a file :func:`save_threads` wrote (none: nothing); returns
    how many entries were read. A damaged line is refused naming the line."""
    if not path.exists():
        return 0
    count = 0
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            try:
                message_id, thread_id, sent_at = json.loads(line)
                when = datetime.fromisoformat(sent_at)
                if when.tzinfo is None:
                    raise ValueError("a date without a zone")
            except (ValueError, TypeError) as exc:
                raise StateFileError(
                    f"{path}:{number}: expected [message id, thread id, ISO date with zone], "
                    f"found: {exc}"
                ) from None
            threads.remember(str(message_id), str(thread_id), when)
            count += 1
    return count


def save_threads(path: Path, threads: ThreadMemory) -> None:
    """Write the thread memory (one JSON array per line), replacing the file atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            for message_id, thread_id, sent_at in threads.entries():
                out.write(json.dumps([message_id, thread_id, sent_at.isoformat()]) + "\n")
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


async def publish_files(
    paths: Sequence[Path], publisher: EmailPublisher, batch_size: int = DEFAULT_BATCH_SIZE
) -> Counter[str]:
    """Read every file and publish its messages; returns the counts by outcome."""
    for path in paths:
        for batch in batches(read_file(path, publisher.settings), batch_size):
            await publisher.publish(batch)
    return publisher.counts


# ---------------------------------------------------------------------------- command line

Outputs = Callable[[argparse.Namespace], tuple[IntakeSettings, str]]
"""Where touchpoints go (intake settings) and the full name of the dead-letter topic."""


def add_email_commands(email: argparse.ArgumentParser, outputs: Outputs) -> None:
    """``warroom email read FILE...`` and ``warroom email imap``."""
    actions = email.add_subparsers(metavar="ACTION", required=True)
    read = actions.add_parser("read", help="publish the messages of .eml and mbox files")
    read.add_argument("files", type=Path, nargs="+")
    read.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    imap = actions.add_parser(
        "imap",
        help="publish new mail of IMAP mailboxes (password from WARROOM_IMAP_PASSWORD)",
    )
    imap.add_argument("--host", required=True)
    imap.add_argument("--port", type=int, default=None, help="default 993, or 143 without tls")
    imap.add_argument("--user", required=True)
    imap.add_argument("--security", choices=["tls", "starttls", "plain"], default="tls")
    imap.add_argument("--mailbox", action="append", help="repeatable; default INBOX")
    imap.add_argument("--state", type=Path, default=Path(".cache/email-imap-state.json"))
    imap.add_argument("--fetch-batch", type=int, default=100)
    imap.add_argument(
        "--follow", action="store_true", help="keep polling until stopped (SIGINT/SIGTERM)"
    )
    imap.add_argument("--poll-seconds", type=float, default=60.0)
    for command in (read, imap):
        command.add_argument("--config", type=Path, help="YAML file of email settings")
        command.add_argument(
            "--threads",
            type=Path,
            default=None,
            help="keep the thread memory (for reply latency) in this file between runs "
            "(imap default: the state file's name + .threads.jsonl)",
        )
        command.add_argument(
            "--company-domain", action="append", help="repeatable; overrides the config"
        )
        command.add_argument("--customer-by", choices=[c.value for c in CustomerBy])
        command.add_argument("--instance-id", default=None)
        command.set_defaults(run=functools.partial(_run, outputs=outputs))
    read.set_defaults(email_action="read")
    imap.set_defaults(email_action="imap")


def load_settings(
    path: Path | None, company_domains: Sequence[str] | None = None, customer_by: str | None = None
) -> EmailSettings:
    """Email settings from a YAML mapping (fields of :class:`EmailSettings`) and overrides;
    raises ValueError naming the file and each field that is wrong."""
    values: dict[str, Any] = {}
    if path is not None:
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ValueError(f"{path}: expected a readable settings file, found: {exc}") from None
        except yaml.YAMLError as exc:
            raise ValueError(f"{path}: expected YAML, found: {exc}") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ValueError(
                f"{path}: expected a mapping of settings, found {type(loaded).__name__}"
            )
        values.update(loaded or {})
    if company_domains:
        values["company_domains"] = tuple(company_domains)
    if customer_by:
        values["customer_by"] = customer_by
    try:
        return EmailSettings.model_validate(values)
    except ValidationError as exc:
        where = str(path) if path is not None else "email settings"
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(settings)'}: {e['msg']}"
            for e in exc.errors(include_url=False)
        )
        raise ValueError(f"{where}: {problems}") from None


def _run(args: argparse.Namespace, outputs: Outputs) -> int:
    try:
        settings = load_settings(args.config, args.company_domain, args.customer_by)
        imap = _imap_settings(args) if args.email_action == "imap" else None
        unreadable = [p for p in getattr(args, "files", []) if not os.access(p, os.R_OK)]
        if unreadable:
            names = ", ".join(str(p) for p in unreadable)
            raise ValueError(f"expected readable .eml or mbox files, found none at {names}")
    except ValueError as exc:
        print(f"warroom email: {exc}", file=sys.stderr)
        return 2
    intake, dlq_topic = outputs(args)
    try:
        counts = asyncio.run(_publish(args, settings, imap, intake, dlq_topic))
    except StateFileError as exc:  # refused before anything was read
        print(f"warroom email: {exc}", file=sys.stderr)
        return 2
    except PublishUnavailable as exc:
        print(f"warroom email: stopped, Kafka did not take a batch: {exc}", file=sys.stderr)
        return 3
    summary = ", ".join(f"{key} {value}" for key, value in sorted(counts.items()))
    print(f"email: {summary or 'nothing new'}")
    return 0


def _imap_settings(args: argparse.Namespace) -> ImapSettings:
    from .imap import ImapSettings

    password = os.environ.get(PASSWORD_ENV)
    if not password:
        raise ValueError(f"{PASSWORD_ENV}: expected the IMAP password, found it unset")
    port = args.port or (993 if args.security == "tls" else 143)
    return ImapSettings(
        host=args.host,
        port=port,
        username=args.user,
        password=password,
        security=args.security,
        mailboxes=tuple(args.mailbox or ("INBOX",)),
        state_file=args.state,
        fetch_batch=args.fetch_batch,
        poll_seconds=args.poll_seconds,
    )


async def _publish(
    args: argparse.Namespace,
    settings: EmailSettings,
    imap: ImapSettings | None,
    intake: IntakeSettings,
    dlq_topic: str,
) -> Counter[str]:
    from .imap import ImaplibMailbox, ImapState, follow, read_new

    sink = KafkaTouchpointSink(intake)
    letters = KafkaDeadLetterSink(intake.bootstrap_servers, dlq_topic, intake.security)
    publisher = EmailPublisher(settings, sink, letters)
    threads_file: Path | None = args.threads
    if threads_file is None and imap is not None:
        threads_file = imap.state_file.with_name(imap.state_file.name + ".threads.jsonl")
    if threads_file is not None:
        load_threads(threads_file, publisher.threads)
    state = None if imap is None else ImapState.load(imap.state_file)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    await sink.start()
    try:
        await letters.start()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)  # the batch in hand is finished first
        try:
            if imap is None or state is None:
                for path in args.files:
                    for batch in batches(read_file(path, settings), args.batch_size):
                        await publisher.publish(batch)
                        if stop.is_set():
                            return publisher.counts
                return publisher.counts
            connect = functools.partial(ImaplibMailbox, imap)
            if args.follow:
                return await follow(imap, connect, publisher, state, stop)
            return await read_new(imap, connect, publisher, state, stop)
        finally:
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(signum)
            if threads_file is not None:
                save_threads(threads_file, publisher.threads)
    finally:
        await letters.stop()
        await sink.stop()
