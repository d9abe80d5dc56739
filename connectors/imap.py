"""Email connector, IMAP part: new messages of IMAP mailboxes -> touchpoints on Kafka.

imaplib blocks, so every IMAP call runs in a worker thread (``asyncio.to_thread``),
never on the event loop. Mailboxes are selected read-only and bodies fetched with
``BODY.PEEK[]``: reading never marks mail as seen.

Where reading resumes is kept per mailbox in a small JSON state file: the mailbox's
UIDVALIDITY and the last UID whose batch was published. It is written (atomically)
only after a batch's touchpoints and dead letters are published, so a restart never
skips a message; a crash between publishing and writing re-reads at most that batch,
whose event ids the worker drops as repeats. When the server reports another
UIDVALIDITY (the mailbox was recreated, its UIDs mean other messages now), the mailbox
is read again from the start, for the same reason without duplicates downstream.
"""

from __future__ import annotations

import asyncio
import contextlib
import imaplib
import json
import logging
import os
import re
import ssl
import tempfile
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from .email import RAW_HEAD_BYTES, RawEmail
from .email_service import EmailPublisher, Positioned, StateFileError
from .publisher import PublishUnavailable

log = logging.getLogger(__name__)

STATE_VERSION = 1
MAX_BACKOFF_SECONDS = 300.0


@dataclass(frozen=True, slots=True)
class ImapSettings:
    host: str
    username: str
    password: str = field(repr=False)
    port: int = 993
    security: str = "tls"
    """``tls`` (IMAPS, port 993), ``starttls`` or ``plain`` (only for a local server)."""
    mailboxes: tuple[str, ...] = ("INBOX",)
    state_file: Path = Path(".cache/email-imap-state.json")
    fetch_batch: int = 100
    """Messages fetched, converted and published together (bounds memory)."""
    timeout_seconds: float = 60.0
    poll_seconds: float = 60.0

    def __post_init__(self) -> None:
        if self.security not in ("tls", "starttls", "plain"):
            raise ValueError(f"security: expected tls, starttls or plain, found {self.security!r}")
        if not 1 <= self.fetch_batch <= 10_000:
            raise ValueError(f"fetch_batch: expected 1 to 10000, found {self.fetch_batch}")
        if not self.mailboxes:
            raise ValueError("mailboxes: expected at least one mailbox name, found none")

    def key(self, mailbox: str) -> str:
        """Names a mailbox in the state file."""
        return f"{self.username}@{self.host}:{self.port}/{mailbox}"

    def source(self, mailbox: str) -> str:
        """Names a mailbox in dead letters."""
        return f"imap:{self.host}/{mailbox}"


# ---------------------------------------------------------------------------- state


@dataclass(slots=True)
class Cursor:
    uidvalidity: int
    last_uid: int


class ImapState:
    """The last published UID per mailbox, with the mailbox's UIDVALIDITY."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.cursors: dict[str, Cursor] = {}

    @classmethod
    def load(cls, path: Path) -> ImapState:
        state = cls(path)
        if not path.exists():
            return state
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if data.get("version") != STATE_VERSION:
                raise ValueError(
                    f"version: expected {STATE_VERSION}, found {data.get('version')!r}"
                )
            for key, value in data["mailboxes"].items():
                state.cursors[key] = Cursor(int(value["uidvalidity"]), int(value["last_uid"]))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise StateFileError(
                f"{path}: expected an IMAP state file "
                '({"version": 1, "mailboxes": {KEY: {"uidvalidity": N, "last_uid": N}}}), '
                f"found: {exc}"
            ) from None
        return state

    def save(self) -> None:
        """Replace the file atomically (write, fsync, rename)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        body = {
            "version": STATE_VERSION,
            "mailboxes": {
                key: {"uidvalidity": c.uidvalidity, "last_uid": c.last_uid}
                for key, c in sorted(self.cursors.items())
            },
        }
        handle, temporary = tempfile.mkstemp(dir=self.path.parent, prefix=self.path.name + ".")
        try:
            with os.fdopen(handle, "w", encoding="utf-8") as out:
                json.dump(body, out, indent=1)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temporary, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise


# ---------------------------------------------------------------------------- client


@dataclass(frozen=True, slots=True)
class Fetched:
    uid: int
    data: bytes
    internal_date: datetime | None
    size: int
    complete: bool = True


class MailboxClient(Protocol):
    """The blocking IMAP operations the reader needs (a fake in tests)."""

    def select(self, mailbox: str) -> int:
        """Select read-only; return the UIDVALIDITY."""
        ...

    def uids_after(self, last_uid: int) -> list[int]: ...

    def fetch(self, uids: Sequence[int], max_bytes: int) -> list[Fetched]:
        """Messages by UID; one over ``max_bytes`` comes as its first bytes only."""
        ...

    def close(self) -> None: ...


def encode_mailbox_name(name: str) -> str:
    """A mailbox name in IMAP's modified UTF-7 (RFC 3501 5.1.3), quoted."""
    out: list[str] = []
    pending: list[str] = []

    def flush() -> None:
        if pending:
            import base64

            utf16 = "".join(pending).encode("utf-16-be")
            out.append("&" + base64.b64encode(utf16).decode().rstrip("=").replace("/", ",") + "-")
            pending.clear()

    for char in name:
        if 0x20 <= ord(char) <= 0x7E:
            flush()
            out.append("&-" if char == "&" else char)
        else:
            pending.append(char)
    flush()
    encoded = "".join(out)
    return '"' + encoded.replace("\\", "\\\\").replace('"', '\\"') + '"'


_FETCH_META = re.compile(rb"UID (\d+)|RFC822\.SIZE (\d+)|INTERNALDATE \"([^\"]+)\"")


def _meta(line: bytes) -> tuple[int | None, int | None, datetime | None]:
    uid = size = None
    when: datetime | None = None
    for found in _FETCH_META.finditer(line):
        if found.group(1):
            uid = int(found.group(1))
        elif found.group(2):
            size = int(found.group(2))
        elif found.group(3):
            with contextlib.suppress(ValueError):
                text = found.group(3).decode("ascii").strip()
                when = datetime.strptime(text, "%d-%b-%Y %H:%M:%S %z").astimezone(UTC)
    return uid, size, when


class ImaplibMailbox:
    """:class:`MailboxClient` over the standard library's imaplib."""

    def __init__(self, settings: ImapSettings) -> None:
        timeout = settings.timeout_seconds
        client: imaplib.IMAP4
        if settings.security == "tls":
            client = imaplib.IMAP4_SSL(
                settings.host, settings.port, ssl_context=ssl.create_default_context(),
                timeout=timeout,
            )  # fmt: skip
        else:
            client = imaplib.IMAP4(settings.host, settings.port, timeout=timeout)
            if settings.security == "starttls":
                client.starttls(ssl.create_default_context())
        self._client = client
        self._check("LOGIN", client.login(settings.username, settings.password))

    def _check(self, what: str, answer: tuple[str, Any]) -> Any:
        status, data = answer
        if status != "OK":
            raise imaplib.IMAP4.error(f"{what}: expected OK, found {status} {data!r}")
        return data

    def select(self, mailbox: str) -> int:
        self._check("SELECT", self._client.select(encode_mailbox_name(mailbox), readonly=True))
        _, values = self._client.response("UIDVALIDITY")
        if not values or values[0] is None:
            raise imaplib.IMAP4.error(f"SELECT {mailbox}: expected a UIDVALIDITY, found none")
        return int(values[0])

    def uids_after(self, last_uid: int) -> list[int]:
        data = self._check("UID SEARCH", self._client.uid("SEARCH", f"UID {last_uid + 1}:*"))
        found = b" ".join(d for d in data if isinstance(d, bytes)).split()
        # "n:*" always matches the last message, even when its UID is below n
        return sorted(u for u in (int(x) for x in found) if u > last_uid)

    def fetch(self, uids: Sequence[int], max_bytes: int) -> list[Fetched]:
        if not uids:
            return []
        listing = ",".join(str(u) for u in uids)
        data = self._check(
            "UID FETCH", self._client.uid("FETCH", listing, "(UID RFC822.SIZE INTERNALDATE)")
        )
        sizes: dict[int, tuple[int, datetime | None]] = {}
        for line in data:
            if isinstance(line, bytes):
                uid, size, when = _meta(line)
                if uid is not None:
                    sizes[uid] = (size or 0, when)
        whole = [u for u in uids if u in sizes and sizes[u][0] <= max_bytes]
        heads = [u for u in uids if u in sizes and sizes[u][0] > max_bytes]
        found: list[Fetched] = []
        for group, part in ((whole, "BODY.PEEK[]"), (heads, f"BODY.PEEK[]<0.{RAW_HEAD_BYTES}>")):
            if not group:
                continue
            listing = ",".join(str(u) for u in group)
            answer = self._check("UID FETCH", self._client.uid("FETCH", listing, f"(UID {part})"))
            for item in answer:
                if isinstance(item, tuple) and len(item) == 2:
                    uid, _, _ = _meta(item[0])
                    if uid is None or uid not in sizes:
                        continue
                    size, when = sizes[uid]
                    found.append(Fetched(uid, item[1], when, size, complete=part == "BODY.PEEK[]"))
        return sorted(found, key=lambda f: f.uid)

    def close(self) -> None:
        with contextlib.suppress(imaplib.IMAP4.error, OSError):
            self._client.logout()


# ---------------------------------------------------------------------------- reading


Connect = Callable[[], MailboxClient]


async def read_new(
    settings: ImapSettings,
    connect: Connect,
    publisher: EmailPublisher,
    state: ImapState,
    stop: asyncio.Event | None = None,
) -> Counter[str]:
    """Publish every message after each mailbox's last published UID, batch by batch,
    saving the state after each batch. Returns the publisher's counts."""
    client = await asyncio.to_thread(connect)
    try:
        for mailbox in settings.mailboxes:
            validity = await asyncio.to_thread(client.select, mailbox)
            key = settings.key(mailbox)
            cursor = state.cursors.get(key)
            if cursor is None or cursor.uidvalidity != validity:
                if cursor is not None:
                    log.warning(
                        "IMAP mailbox %s: UIDVALIDITY changed from %d to %d; reading it again "
                        "from the start (event ids keep the worker from counting repeats)",
                        settings.source(mailbox), cursor.uidvalidity, validity,
                    )  # fmt: skip
                    publisher.counts["uidvalidity_changed"] += 1
                cursor = Cursor(validity, 0)
            uids = await asyncio.to_thread(client.uids_after, cursor.last_uid)
            for start in range(0, len(uids), settings.fetch_batch):
                chunk = uids[start : start + settings.fetch_batch]
                limit = publisher.settings.max_message_bytes
                fetched = await asyncio.to_thread(client.fetch, chunk, limit)
                source = settings.source(mailbox)
                batch = [
                    Positioned(
                        source,
                        RawEmail(
                            f.uid, f.data, f.internal_date, size=None if f.complete else f.size
                        ),
                        f"uid {f.uid}",
                    )
                    for f in fetched
                ]
                await publisher.publish(batch)
                missing = len(chunk) - len(fetched)
                if missing:  # expunged between SEARCH and FETCH
                    publisher.counts["vanished"] += missing
                cursor = Cursor(validity, max(chunk))
                state.cursors[key] = cursor
                state.save()
                if stop is not None and stop.is_set():
                    return publisher.counts
            if key not in state.cursors or state.cursors[key].uidvalidity != validity:
                state.cursors[key] = cursor
                state.save()
    finally:
        await asyncio.to_thread(client.close)
    return publisher.counts


async def follow(
    settings: ImapSettings,
    connect: Connect,
    publisher: EmailPublisher,
    state: ImapState,
    stop: asyncio.Event,
) -> Counter[str]:
    """Poll every ``poll_seconds`` until ``stop`` is set; a failed poll (IMAP or network
    error, Kafka unavailable) is retried with backoff, from the last saved UID."""
    delay = settings.poll_seconds
    while not stop.is_set():
        try:
            await read_new(settings, connect, publisher, state, stop)
            delay = settings.poll_seconds
        except (imaplib.IMAP4.error, OSError, PublishUnavailable) as exc:
            publisher.counts["poll_failed"] += 1
            delay = min(2 * delay, max(MAX_BACKOFF_SECONDS, settings.poll_seconds))
            log.warning("IMAP poll of %s failed (%r); next in %.0f s", settings.host, exc, delay)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), delay)
    return publisher.counts
