"""Email connector, pure part: RFC 5322 messages (bytes) -> touchpoints, or a reason.

No file, network or Kafka I/O here: :mod:`connectors.email_service` reads ``.eml`` and
mbox files and :mod:`connectors.imap` reads IMAP mailboxes; both hand raw messages to
:func:`convert`, which returns the touchpoints and the rejected messages with their
reason.

What a message becomes (``docs/connectors.md`` has the full contract):

- ``event_id`` is ``email:<sha256(Message-ID)[:32]>`` (angle brackets and surrounding
  white space removed), so the same message read from a file, an mbox or IMAP, once or
  many times, always has the same id; a message without a Message-ID gets
  ``email:raw-<sha256(raw bytes)[:32]>``. An outbound message to several customers
  makes one touchpoint per customer; the first keeps the plain id, the others get
  ``-<sha256(customer id)[:8]>`` appended.
- From an address at one of the company's domains (or a subdomain): ``email_sent``,
  outbound, rep = the sender, one touchpoint per customer among the To/Cc recipients.
  Otherwise: ``email_received``, inbound, contact = the sender, customer from the
  sender, rep = the first company recipient (none when the company was only Bcc'd).
- Text: the subject, a blank line and the body (text/plain preferred, HTML stripped to
  text otherwise), at most ``body_max_chars``; quoted earlier messages are cut.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import hashlib
import re
from collections import Counter, OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import Message
from email.parser import BytesParser
from email.policy import compat32
from email.utils import getaddresses, parsedate_to_datetime
from enum import StrEnum
from html.parser import HTMLParser
from typing import Any, BinaryIO

import re2
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator

from schemas.models import AttributeValue, Channel, Direction, TouchpointEvent

SOURCE = "email/0.1.0"

MAX_CUSTOMERS_PER_MESSAGE = 20
"""An outbound message to more customers than this makes touchpoints for the first 20."""
MAX_PATTERN_CHARS = 500
MAX_PATTERNS = 20
THREAD_ID_MAX = 200
ATTACHMENT_NAMES_MAX = 1000
RAW_HEAD_BYTES = 65_536
"""How much of a message too large to parse is kept for its dead letter."""
_PREFIX_MAX_ROUNDS = 20

# ---------------------------------------------------------------------------- settings


class CustomerBy(StrEnum):
    DOMAIN = "domain"
    """The counterpart's domain (``acme.com``) names the customer; addresses at a
    personal mail domain (``personal_domains``) name their own customer."""
    ADDRESS = "address"
    """The counterpart's full address (``li.lei@acme.com``) names the customer."""


DEFAULT_PERSONAL_DOMAINS = (
    "gmail.com",
    "googlemail.com",
    "outlook.com",
    "hotmail.com",
    "live.com",
    "yahoo.com",
    "icloud.com",
    "me.com",
    "aol.com",
    "proton.me",
    "protonmail.com",
    "qq.com",
    "foxmail.com",
    "163.com",
    "126.com",
    "yeah.net",
    "sina.com",
    "sina.cn",
    "sohu.com",
    "aliyun.com",
    "139.com",
)

DEFAULT_TICKET_PATTERNS = (
    r"\[#(\d{3,12})\]",
    r"(?i)\bticket\s*(?:no\.?|number|#)?\s*[:：]?\s*#?(\d{3,12})\b",
    r"(?:工单|工單)(?:号|號|编号)?\s*[:：#]?\s*(\d{3,12})",
)
DEFAULT_QUOTE_PATTERNS = (r"\b(Q-\d{4}-\d{3,6})\b",)


class EmailSettings(BaseModel):
    """How messages map to touchpoints. Built once (from a YAML file and command-line
    options) and handed to :func:`convert`; patterns are compiled (RE2, linear time)
    when it is built, never when a message arrives."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    company_domains: tuple[str, ...] = Field(("warroom-demo.com",), min_length=1)
    """Mail from these domains (and their subdomains) is outbound, mail to them inbound."""
    customer_by: CustomerBy = CustomerBy.DOMAIN
    personal_domains: tuple[str, ...] = DEFAULT_PERSONAL_DOMAINS
    customer_ids: dict[str, str] = Field(default_factory=dict)
    """Explicit customer ids by address or domain (lower case), looked up address first,
    then domain, before ``customer_by`` applies: e.g. ``{acme.com: cust-0042}``."""
    reply_prefixes: tuple[str, ...] = ("re", "aw", "sv", "antw", "回复", "答复", "回覆", "答覆")
    forward_prefixes: tuple[str, ...] = ("fwd", "fw", "wg", "tr", "转发", "轉寄", "轉發")
    ignored_subject_tags: tuple[str, ...] = ("external", "ext", "外部邮件", "外部郵件")
    """Leading ``[TAG]`` markers (case-insensitive) removed from the normalised subject."""
    ticket_patterns: tuple[str, ...] = DEFAULT_TICKET_PATTERNS
    """RE2 patterns tried in order on the subject; the first capture group (or the whole
    match) is the ticket number."""
    quote_patterns: tuple[str, ...] = DEFAULT_QUOTE_PATTERNS
    body_max_chars: int = Field(4000, ge=0, le=18_000)
    max_message_bytes: int = Field(25 * 1024 * 1024, ge=1024)
    """A larger message is rejected as ``too_large`` (the raw bytes are not parsed)."""
    thread_memory: int = Field(100_000, ge=1, le=10_000_000)
    """How many message ids (with their date and thread) are remembered for threads and
    reply latency; the least recently seen are forgotten first."""
    max_bad_byte_ratio: float = Field(0.01, ge=0, le=1)
    """Share of undecodable bytes in a part above which the message is rejected as
    ``bad_charset``; at or below it, those bytes become U+FFFD."""
    industry: str | None = Field(None, min_length=1, max_length=64)

    _tickets: tuple[Any, ...] = PrivateAttr(default=())
    _quotes: tuple[Any, ...] = PrivateAttr(default=())
    _prefix: Any = PrivateAttr(default=None)
    _tag: Any = PrivateAttr(default=None)

    @field_validator("company_domains", "personal_domains")
    @classmethod
    def _domains(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        cleaned = tuple(d.strip().lower().lstrip("@").rstrip(".") for d in value)
        for domain in cleaned:
            if not domain or "@" in domain or " " in domain or "." not in domain:
                raise ValueError(f"expected a mail domain such as acme.com, found {domain!r}")
        return cleaned

    @field_validator("customer_ids")
    @classmethod
    def _ids(cls, value: dict[str, str]) -> dict[str, str]:
        cleaned = {k.strip().lower(): v for k, v in value.items()}
        for key, customer in cleaned.items():
            if not key or not 1 <= len(customer) <= 128:
                raise ValueError(
                    f"expected an address or domain mapped to a customer id of 1 to 128 "
                    f"characters, found {key!r}: {customer!r}"
                )
        return cleaned

    @field_validator("reply_prefixes", "forward_prefixes", "ignored_subject_tags")
    @classmethod
    def _words(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for word in value:
            if not word.strip() or len(word) > 40:
                raise ValueError(f"expected words of 1 to 40 characters, found {word!r}")
        return tuple(w.strip() for w in value)

    @field_validator("ticket_patterns", "quote_patterns")
    @classmethod
    def _patterns(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if len(value) > MAX_PATTERNS:
            raise ValueError(f"expected at most {MAX_PATTERNS} patterns, found {len(value)}")
        for pattern in value:
            if len(pattern) > MAX_PATTERN_CHARS:
                raise ValueError(
                    f"expected a pattern of at most {MAX_PATTERN_CHARS} characters, "
                    f"found {len(pattern)}"
                )
            compiled = _compile(pattern)
            if compiled.groups > 1:
                raise ValueError(
                    f"expected at most one capture group (the number), found "
                    f"{compiled.groups} in {pattern!r}"
                )
        return value

    def model_post_init(self, context: Any, /) -> None:
        self._tickets = tuple(_compile(p) for p in self.ticket_patterns)
        self._quotes = tuple(_compile(p) for p in self.quote_patterns)
        words = sorted((*self.reply_prefixes, *self.forward_prefixes), key=len, reverse=True)
        alternatives = "|".join(re.escape(w) for w in words)
        self._prefix = re.compile(
            rf"^\s*({alternatives})\s*(?:\[\d+\]|\(\d+\)|\^\d+)?\s*[:：]\s*",
            re.IGNORECASE,
        )
        self._tag = re.compile(r"^\s*[\[【]([^\]】]{1,40})[\]】]\s*")


def _compile(pattern: str) -> Any:
    try:
        return re2.compile(pattern)
    except re2.error as exc:
        raise ValueError(
            f"expected an RE2 pattern (no backreferences or lookaround), found {pattern!r}: {exc}"
        ) from None


# ---------------------------------------------------------------------------- subjects


@dataclass(frozen=True, slots=True)
class Subject:
    normalised: str
    is_reply: bool
    """The outermost prefix says reply (Re:, 回复:, ...)."""
    is_forward: bool
    """The outermost prefix says forward (Fwd:, 转发:, ...)."""
    ticket: str | None
    quote: str | None


def parse_subject(subject: str, settings: EmailSettings) -> Subject:
    """Strip nested reply/forward prefixes and ignored tags; find ticket and quote."""
    rest = " ".join(subject.split())
    outermost: str | None = None
    replies = {w.casefold() for w in settings.reply_prefixes}
    ignored = {t.casefold() for t in settings.ignored_subject_tags}
    for _ in range(_PREFIX_MAX_ROUNDS):
        found = settings._prefix.match(rest)
        if found is not None:
            if outermost is None:
                outermost = "reply" if found.group(1).casefold() in replies else "forward"
            rest = rest[found.end() :]
            continue
        tag = settings._tag.match(rest)
        if tag is not None and tag.group(1).strip().casefold() in ignored:
            rest = rest[tag.end() :]
            continue
        break
    return Subject(
        normalised=rest.strip(),
        is_reply=outermost == "reply",
        is_forward=outermost == "forward",
        ticket=_first_match(settings._tickets, subject),
        quote=_first_match(settings._quotes, subject),
    )


def _first_match(patterns: Sequence[Any], text: str) -> str | None:
    for pattern in patterns:
        found = pattern.search(text)
        if found is not None:
            value: str = found.group(1) if pattern.groups else found.group(0)
            return value
    return None


# ---------------------------------------------------------------------------- charsets

_ALIASES = {
    # Mail labelled with a Chinese charset is read with its superset: GB2312 and GBK
    # labels routinely carry GBK/GB18030 characters, Big5 labels carry HKSCS ones.
    "gb2312": "gb18030",
    "gbk": "gb18030",
    "x-gbk": "gb18030",
    "cp936": "gb18030",
    "euc-cn": "gb18030",
    "x-euc-cn": "gb18030",
    "hz-gb-2312": "hz",
    "big5": "big5hkscs",
    "x-big5": "big5hkscs",
    "cn-big5": "big5hkscs",
    "cp950": "big5hkscs",
    "iso-8859-1": "cp1252",
    "latin1": "cp1252",
    "latin-1": "cp1252",
    "us-ascii": "ascii",
    "ansi_x3.4-1968": "ascii",
    "ks_c_5601-1987": "cp949",
    "euc-kr": "cp949",
    "shift_jis": "cp932",
    "x-sjis": "cp932",
    "utf8": "utf-8",
    "unknown-8bit": "",
    "x-unknown": "",
    "unknown": "",
    "default": "",
}
_FALLBACKS = ("utf-8", "gb18030", "big5hkscs")
"""Tried in order when the declared charset is missing, unknown or wrong."""


class BadCharset(ValueError):
    """Bytes that no charset of the fallback order decodes within the allowed ratio."""


@dataclass(slots=True)
class Decoded:
    text: str
    note: str | None = None
    """``<declared>-><used>`` when the declared charset was not the one that worked."""


def _codec(label: str | None) -> str | None:
    """A text codec name for a charset label; None when absent or unknown."""
    if not label:
        return None
    name = label.strip().strip('"').lower()
    name = name.split("*", 1)[0]  # RFC 2231 language suffix
    name = _ALIASES.get(name, name)
    if not name:
        return None
    try:
        info = codecs.lookup(name)
    except LookupError:
        return None
    if not getattr(info, "_is_text_encoding", True):  # e.g. zlib, base64, rot13
        return None
    return info.name


def decode_bytes(
    data: bytes, declared: str | None, max_bad_ratio: float, hint: str | None = None
) -> Decoded:
    """Decode text bytes by the documented order, the first that fits wins.

    1. Valid UTF-8 (and not plain ASCII) is UTF-8 whatever the label says: the commonest
       mislabel, and legacy CJK text is almost never valid UTF-8.
    2. The declared charset, read as its superset (GB2312/GBK as GB18030, Big5 as
       Big5-HKSCS); an incomplete character at the very end (a cut message) is dropped.
    3. UTF-8 with at most ``max_bad_ratio`` of the bytes undecodable (they become U+FFFD).
    4. The declared charset with at most that share of bad bytes.
    5. When no known charset is declared, or it failed: ``hint`` (the body's charset, for
       raw 8-bit headers), GB18030, then Big5-HKSCS, strictly.
    6. Nothing fits: :class:`BadCharset`.
    """
    if data.isascii():
        return Decoded(data.decode("ascii"))
    codec = _codec(declared)
    label = (declared or "none").strip().lower()
    tried = ["utf-8"]
    decoded = _strict(data, "utf-8")
    if decoded is not None and not decoded[1]:
        plain = codec == "utf-8" or (declared is None and hint is None)
        return Decoded(decoded[0], None if plain else f"{label}->utf-8")
    if codec is not None and codec != "utf-8":
        tried.append(codec)
        decoded = _strict(data, codec)
        if decoded is not None:
            return Decoded(decoded[0], f"{label}{decoded[1]}" if decoded[1] else None)
    if codec == "utf-8":
        decoded = _strict(data, "utf-8")
        if decoded is not None:
            return Decoded(decoded[0], f"{label}{decoded[1]}")
    lenient = _lenient(data, "utf-8", max_bad_ratio)
    if lenient is not None:
        arrow = "" if codec == "utf-8" else "->utf-8"
        return Decoded(lenient[0], f"{label}{arrow}{lenient[1]}")
    if codec is not None and codec != "utf-8":
        lenient = _lenient(data, codec, max_bad_ratio)
        if lenient is not None:
            return Decoded(lenient[0], f"{label}{lenient[1]}")
    for name in (_codec(hint), *_FALLBACKS):
        if name is None or name in tried:
            continue
        tried.append(name)
        decoded = _strict(data, name, allow_cut=False)
        if decoded is not None:
            return Decoded(decoded[0], f"{label}->{name}")
    first = codec or "utf-8"
    raise BadCharset(
        f"expected text in charset {label}, found bytes that none of {', '.join(tried)} "
        f"decodes: {_bad_bytes(data, first)} of {len(data)} bytes undecodable as {first}"
    )


_CUT_REASONS = ("unexpected end of data", "incomplete multibyte sequence")


def _strict(data: bytes, codec: str, allow_cut: bool = True) -> tuple[str, str] | None:
    """(text, note) when ``codec`` decodes every byte, or (``allow_cut``) all but an
    incomplete character at the very end (the note says so); else None."""
    try:
        return data.decode(codec), ""
    except UnicodeDecodeError as exc:
        if not allow_cut or exc.reason not in _CUT_REASONS or exc.start < len(data) - 3:
            return None
        if codec != "utf-8" and not 0x81 <= data[exc.start] <= 0xFE:
            return None  # not a lead byte: CJK codecs call any last byte "incomplete"
        try:
            head = data[: exc.start].decode(codec)
        except UnicodeDecodeError:
            return None
        return head, f", {len(data) - exc.start} trailing byte(s) of a cut character dropped"
    except LookupError:
        return None


def _bad_bytes(data: bytes, codec: str) -> int:
    return data.decode(codec, errors="replace").count("\ufffd") - data.decode(
        codec, errors="ignore"
    ).count("\ufffd")


def _lenient(data: bytes, codec: str, max_bad_ratio: float) -> tuple[str, str] | None:
    bad = _bad_bytes(data, codec)
    if bad > max_bad_ratio * len(data):
        return None
    return data.decode(codec, errors="replace"), f" with {bad} replaced byte(s)"


_ENCODED_WORD = re.compile(r"=\?([^?\s]+)\?([bBqQ])\?([^?\s]*)\?=")
_BETWEEN_WORDS = re.compile(r"^[ \t\r\n]*$")


def decode_header_value(raw: str, max_bad_ratio: float, hint: str | None = None) -> Decoded:
    """An unfolded header: raw 8-bit bytes decoded (see :func:`decode_bytes`), then RFC
    2047 encoded words; adjacent words of one charset are joined before decoding (a
    multi-byte character may be split between them)."""
    notes: list[str] = []
    text = " ".join(re.sub(r"\r?\n(?=[ \t])", "", raw).splitlines())
    if not text.isascii():
        decoded = decode_bytes(
            text.encode("utf-8", "surrogateescape"), None, max_bad_ratio, hint=hint
        )
        text = decoded.text
        if decoded.note:
            notes.append(decoded.note)
    if "=?" not in text:
        return Decoded(text.strip(), notes[0] if notes else None)
    pieces: list[str] = []
    pending: tuple[str, bytearray] | None = None
    end = 0

    def flush() -> None:
        nonlocal pending
        if pending is not None:
            decoded = decode_bytes(bytes(pending[1]), pending[0], max_bad_ratio)
            pieces.append(decoded.text)
            if decoded.note:
                notes.append(decoded.note)
            pending = None

    for word in _ENCODED_WORD.finditer(text):
        between = text[end : word.start()]
        if pending is None or not _BETWEEN_WORDS.match(between):
            flush()
            pieces.append(between)
        charset, encoding, payload = word.group(1).lower(), word.group(2).upper(), word.group(3)
        data = _b_decode(payload) if encoding == "B" else _q_decode(payload)
        if pending is not None and pending[0] == charset:
            pending[1].extend(data)
        else:
            flush()
            pending = (charset, bytearray(data))
        end = word.end()
    flush()
    pieces.append(text[end:])
    return Decoded("".join(pieces).strip(), notes[0] if notes else None)


def _b_decode(payload: str) -> bytes:
    cleaned = payload.strip()
    try:
        return base64.b64decode(cleaned + "=" * (-len(cleaned) % 4))
    except (binascii.Error, ValueError):
        return payload.encode("ascii", "replace")


def _q_decode(payload: str) -> bytes:
    import quopri

    return quopri.decodestring(payload.replace("_", " ").encode("ascii", "replace"), header=False)


# ---------------------------------------------------------------------------- messages


class Reason(StrEnum):
    """Why a message became a dead letter instead of a touchpoint."""

    TOO_LARGE = "too_large"
    NOT_EMAIL = "not_email"
    MISSING_SENDER = "missing_sender"
    BAD_DATE = "bad_date"
    BAD_CHARSET = "bad_charset"
    UNPUBLISHABLE = "unpublishable"


class RejectedEmail(ValueError):
    """A message that cannot become touchpoints: ``reason`` (a code) and ``detail`` (what
    was expected and what was found, naming the header or MIME part; no addresses,
    subjects or body text)."""

    def __init__(self, reason: Reason, detail: str) -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}")


@dataclass(frozen=True, slots=True)
class Attachment:
    name: str
    mime_type: str


@dataclass(frozen=True, slots=True)
class ParsedEmail:
    message_id: str
    """Without angle brackets; ``raw-<sha256>`` when the message has none."""
    has_message_id: bool
    in_reply_to: str | None
    references: tuple[str, ...]
    sent_at: datetime
    sender: str
    """Lower case address."""
    recipients: tuple[str, ...]
    """To and Cc addresses, lower case, in header order, without repeats."""
    subject: str
    body: str
    attachments: tuple[Attachment, ...]
    charset_notes: tuple[str, ...] = ()
    date_fallback: bool = False
    """The Date header was missing or unreadable; the source's own date stands in."""


_MESSAGE_ID = re.compile(r"<([^<>\s]{1,998})>")
_SIGNATURES = {
    "application/pkcs7-signature",
    "application/x-pkcs7-signature",
    "application/pgp-signature",
}


def parse_email(
    raw: bytes, settings: EmailSettings, fallback_date: datetime | None = None
) -> ParsedEmail:
    """One RFC 5322 message -> its parts, or :class:`RejectedEmail`.

    The Date header gives ``sent_at``; without a readable one, ``fallback_date`` (the
    mbox separator line's date or the IMAP INTERNALDATE) does, else the message is
    rejected. A date without a zone (``-0000``) is taken as UTC."""
    if len(raw) > settings.max_message_bytes:
        raise RejectedEmail(
            Reason.TOO_LARGE,
            f"expected at most {settings.max_message_bytes} bytes, found {len(raw)}",
        )
    message = BytesParser(policy=compat32).parsebytes(raw)
    headers = _raw_headers(message)
    if not headers:
        raise RejectedEmail(
            Reason.NOT_EMAIL, "expected RFC 5322 header lines (Name: value), found none"
        )
    ratio = settings.max_bad_byte_ratio
    notes: list[str] = []

    def header(name: str) -> str:
        value = headers.get(name)
        if value is None:
            return ""
        try:
            hint = None if value.isascii() else _body_charset(message)  # only for raw 8-bit
            decoded = decode_header_value(value, ratio, hint=hint)
        except BadCharset as exc:
            raise RejectedEmail(Reason.BAD_CHARSET, f"header {name.title()}: {exc}") from None
        if decoded.note:
            notes.append(f"{name}: {decoded.note}")
        return decoded.text

    # Addresses come from the raw header: a decoded display name may contain "@", "," or "<"
    senders = _addresses(headers.get("from", ""))
    if not senders:
        senders = _addresses(headers.get("sender", ""))
    if not senders:
        found = "no From header" if "from" not in headers else "no address in it"
        raise RejectedEmail(Reason.MISSING_SENDER, f"From: expected a mail address, found {found}")
    recipients: list[str] = []
    for name in ("to", "cc"):
        for address in _addresses(headers.get(name, "")):
            if address not in recipients:
                recipients.append(address)
    sent_at, date_fallback = _date(headers.get("date"), fallback_date)
    own = _ids(headers.get("message-id", ""))
    message_id = own[0] if own else f"raw-{hashlib.sha256(raw).hexdigest()[:32]}"
    replied = _ids(headers.get("in-reply-to", ""))
    subject = header("subject")
    try:
        body, attachments = _content(message, settings, notes)
    except BadCharset as exc:
        raise RejectedEmail(Reason.BAD_CHARSET, str(exc)) from None
    return ParsedEmail(
        message_id=message_id,
        has_message_id=bool(own),
        in_reply_to=replied[0] if replied else None,
        references=tuple(_ids(headers.get("references", ""))),
        sent_at=sent_at,
        sender=senders[0],
        recipients=tuple(recipients),
        subject=subject,
        body=body,
        attachments=tuple(attachments),
        charset_notes=tuple(notes),
        date_fallback=date_fallback,
    )


def _raw_headers(message: Message) -> dict[str, str]:
    """First value of each header, as raw text (8-bit bytes kept as surrogates)."""
    found: dict[str, str] = {}
    for name, value in message.raw_items():
        key = name.strip().lower()
        if key not in found and isinstance(value, str):
            found[key] = value.encode("ascii", "surrogateescape").decode("utf-8", "surrogateescape")
    return found


def _body_charset(message: Message) -> str | None:
    for part in message.walk():
        charset = part.get_content_charset()
        if charset:
            return charset
    return None


def _addresses(value: str) -> list[str]:
    found: list[str] = []
    for _, address in getaddresses([" ".join(value.split())]):
        address = address.strip().lower()
        if "@" in address and 3 <= len(address) <= 128 and " " not in address:
            found.append(address)
    return found


def _ids(value: str) -> list[str]:
    unfolded = " ".join(value.split())
    found = _MESSAGE_ID.findall(unfolded)
    if not found and unfolded and " " not in unfolded and "@" in unfolded:
        found = [unfolded.strip("<>")]  # a bare id without brackets, as some clients write
    return found


def _date(value: str | None, fallback: datetime | None) -> tuple[datetime, bool]:
    if value is not None:
        text = " ".join(value.split())
        try:
            parsed = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            parsed = None
        if parsed is not None:
            aware = parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed
            return aware.astimezone(UTC), False
        if fallback is None:
            raise RejectedEmail(
                Reason.BAD_DATE,
                f"Date: expected an RFC 5322 date such as 'Tue, 1 Jul 2025 10:00:00 +0800', "
                f"found {text[:60]!r}",
            )
    if fallback is None:
        raise RejectedEmail(Reason.BAD_DATE, "Date: expected an RFC 5322 date, found no header")
    return fallback.astimezone(UTC), True


def _content(
    message: Message, settings: EmailSettings, notes: list[str]
) -> tuple[str, list[Attachment]]:
    plain: Message | None = None
    rich: Message | None = None
    attachments: list[Attachment] = []
    for part, in_related in _leaves(message, False):
        mime = part.get_content_type()
        disposition = (part.get_content_disposition() or "").lower()
        name = _filename(part, settings.max_bad_byte_ratio)
        if mime in _SIGNATURES:
            continue
        if mime == "message/rfc822":
            attachments.append(Attachment(name or "forwarded message", mime))
            continue
        if disposition != "attachment" and name is None:
            if mime == "text/plain" and plain is None:
                plain = part
                continue
            if mime == "text/html" and rich is None:
                rich = part
                continue
            if mime.startswith("text/") or (in_related and part.get("content-id")):
                continue  # further alternatives; images embedded in the HTML
        if disposition == "inline" and in_related and part.get("content-id"):
            continue
        attachments.append(Attachment(name or "(unnamed)", mime))
    chosen = plain if plain is not None else rich
    if chosen is None:
        return "", attachments
    data, cut = _payload(chosen)
    if cut:
        notes.append(f"body: incomplete base64, {cut} character(s) dropped")
    try:
        decoded = decode_bytes(data, chosen.get_content_charset(), settings.max_bad_byte_ratio)
    except BadCharset as exc:
        raise BadCharset(f"body part {chosen.get_content_type()}: {exc}") from None
    if decoded.note:
        notes.append(f"body: {decoded.note}")
    text = decoded.text if chosen is plain else html_to_text(decoded.text)
    return _without_quotes(text), attachments


_NOT_BASE64 = re.compile(rb"[^A-Za-z0-9+/]")


def _payload(part: Message) -> tuple[bytes, int]:
    """A part's decoded bytes, and how many base64 characters of an incomplete last
    group were dropped (the standard library returns a truncated base64 body as the
    base64 text itself)."""
    encoding = str(part.get("content-transfer-encoding", "")).strip().lower()
    if encoding == "base64":
        raw = part.get_payload(decode=False)
        if isinstance(raw, str):
            cleaned = _NOT_BASE64.sub(b"", raw.encode("ascii", "ignore"))
            cut = 1 if len(cleaned) % 4 == 1 else 0  # one lone character carries no byte
            kept = cleaned[: len(cleaned) - cut]
            return base64.b64decode(kept + b"=" * (-len(kept) % 4)), cut
    payload = part.get_payload(decode=True)
    return (payload if isinstance(payload, bytes) else b""), 0


def _leaves(part: Message, in_related: bool) -> Iterator[tuple[Message, bool]]:
    """Leaf parts in order; a message/rfc822 part is a leaf (not walked into)."""
    if part.is_multipart() and part.get_content_type() != "message/rfc822":
        related = in_related or part.get_content_type() == "multipart/related"
        children = part.get_payload()
        if isinstance(children, list):
            for child in children:
                if isinstance(child, Message):
                    yield from _leaves(child, related)
        return
    yield part, in_related


def _filename(part: Message, ratio: float) -> str | None:
    name = part.get_filename()  # RFC 2231 parameters are decoded here
    if name is None:
        param = part.get_param("name", header="content-type")
        name = param[2] if isinstance(param, tuple) else param
    if not isinstance(name, str) or not name.strip():
        return None
    try:
        return decode_header_value(name, ratio).text[:200]  # RFC 2047 in a parameter
    except BadCharset:
        return "(undecodable name)"


_QUOTE_HEAD = re.compile(
    r"^(?:-{2,}\s*(?:Original Message|原始邮件|原始郵件)\s*-{2,}"
    r"|On .{1,200} wrote:"
    r"|在 .{1,200}(?:写道|寫道)[:：]"
    r"|From: .+ Sent: .+)\s*$",
    re.IGNORECASE,
)


def _without_quotes(text: str) -> str:
    """The new part of a message: lines quoted with ``>`` dropped, and everything from a
    quote header (``On ... wrote:``, ``-----Original Message-----``, ``在 ... 写道``) on."""
    kept: list[str] = []
    for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        stripped = line.strip()
        if _QUOTE_HEAD.match(stripped):
            break
        if stripped.startswith(">"):
            continue
        kept.append(line.rstrip())
    return "\n".join(_squeeze(kept)).strip()


def _squeeze(lines: list[str]) -> Iterator[str]:
    blank = False
    for line in lines:
        if not line.strip():
            if not blank:
                yield ""
            blank = True
            continue
        blank = False
        yield line


class _TextOf(HTMLParser):
    _BLOCKS = frozenset(
        {"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "table", "blockquote"}
    )
    _HIDDEN = frozenset({"script", "style", "head", "title"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._hidden = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self._HIDDEN:
            self._hidden += 1
        elif tag in self._BLOCKS:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self._HIDDEN:
            self._hidden = max(0, self._hidden - 1)
        elif tag in self._BLOCKS:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self._hidden:
            self.parts.append(data)


def html_to_text(markup: str) -> str:
    """Visible text of an HTML body: scripts, styles and the head dropped, blocks on
    their own lines, entities decoded, runs of spaces collapsed."""
    parser = _TextOf()
    parser.feed(markup)
    parser.close()
    text = "".join(parser.parts).replace("\xa0", " ")
    lines = [" ".join(line.split()) for line in text.split("\n")]
    return "\n".join(_squeeze(lines)).strip()


# ---------------------------------------------------------------------------- threads


@dataclass(slots=True)
class _Seen:
    thread_id: str
    sent_at: datetime


class ThreadMemory:
    """Message id -> (thread root, date) for the last ``capacity`` messages seen, least
    recently seen forgotten first: enough to find a reply's thread and latency."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._seen: OrderedDict[str, _Seen] = OrderedDict()

    def __len__(self) -> int:
        return len(self._seen)

    def thread_of(self, parsed: ParsedEmail) -> str:
        """The root message id: the first References entry (or the In-Reply-To parent)
        and, when that message was seen, its own root."""
        if parsed.references:
            start = parsed.references[0]
        elif parsed.in_reply_to is not None:
            start = parsed.in_reply_to
        else:
            return parsed.message_id
        seen = self._seen.get(start)
        return seen.thread_id if seen is not None else start

    def observe(self, parsed: ParsedEmail) -> None:
        self.remember(parsed.message_id, self.thread_of(parsed), parsed.sent_at)

    def entries(self) -> list[tuple[str, str, datetime]]:
        """(message id, thread root, date), least recently seen first."""
        return [(key, seen.thread_id, seen.sent_at) for key, seen in self._seen.items()]

    def remember(self, message_id: str, thread_id: str, sent_at: datetime) -> None:
        """Put back an entry of :meth:`entries` (as the most recently seen)."""
        self._seen[message_id] = _Seen(thread_id, sent_at)
        self._seen.move_to_end(message_id)
        while len(self._seen) > self.capacity:
            self._seen.popitem(last=False)

    def latency_of(self, parsed: ParsedEmail) -> float | None:
        """Seconds since the message this one replies to, when that one was seen and is
        not later (clocks of different senders disagree; a negative latency is dropped)."""
        parent = parsed.in_reply_to or (parsed.references[-1] if parsed.references else None)
        seen = self._seen.get(parent) if parent is not None else None
        if seen is None:
            return None
        seconds = (parsed.sent_at - seen.sent_at).total_seconds()
        return seconds if seconds >= 0 else None


# ---------------------------------------------------------------------------- touchpoints


def event_id_of(parsed: ParsedEmail) -> str:
    return f"email:{hashlib.sha256(parsed.message_id.encode('utf-8')).hexdigest()[:32]}"


def _is_company(address: str, settings: EmailSettings) -> bool:
    domain = address.rpartition("@")[2]
    return any(domain == d or domain.endswith("." + d) for d in settings.company_domains)


def customer_of(address: str, settings: EmailSettings) -> str:
    """The customer id an external address maps to (see :class:`CustomerBy`)."""
    domain = address.rpartition("@")[2]
    mapped = settings.customer_ids.get(address) or settings.customer_ids.get(domain)
    if mapped is not None:
        return mapped
    if settings.customer_by is CustomerBy.ADDRESS or domain in settings.personal_domains:
        return address
    return domain


def to_touchpoints(
    parsed: ParsedEmail, threads: ThreadMemory, settings: EmailSettings, received_at: datetime
) -> list[TouchpointEvent]:
    """The touchpoints of one message (none for mail between company addresses only)."""
    outbound = _is_company(parsed.sender, settings)
    rep: str | None
    if outbound:
        counterparts = [a for a in parsed.recipients if not _is_company(a, settings)]
        rep = parsed.sender
    else:
        counterparts = [parsed.sender]
        rep = next((a for a in parsed.recipients if _is_company(a, settings)), None)
    customers: dict[str, str] = {}
    for address in counterparts:
        customers.setdefault(customer_of(address, settings), address)
        if len(customers) == MAX_CUSTOMERS_PER_MESSAGE:
            break
    if not customers:
        return []
    subject = parse_subject(parsed.subject, settings)
    thread = threads.thread_of(parsed)
    if len(thread) > THREAD_ID_MAX:
        thread = f"sha256:{hashlib.sha256(thread.encode('utf-8')).hexdigest()[:32]}"
    attributes: dict[str, AttributeValue] = {
        "thread_id": thread,
        "subject_normalised": subject.normalised,
        "is_reply": subject.is_reply or (parsed.in_reply_to is not None and not subject.is_forward),
        "is_forward": subject.is_forward,
        "attachment_count": len(parsed.attachments),
        "attachment_types": ",".join(sorted({a.mime_type for a in parsed.attachments})),
    }
    if parsed.attachments:
        names = "; ".join(a.name for a in parsed.attachments)
        attributes["attachment_names"] = names[:ATTACHMENT_NAMES_MAX]
    if subject.ticket is not None:
        attributes["ticket"] = subject.ticket
    if subject.quote is not None:
        attributes["quote"] = subject.quote
    latency = threads.latency_of(parsed)
    if latency is not None:
        attributes["reply_latency_seconds"] = latency
    if parsed.date_fallback:
        attributes["date_fallback"] = True
    if parsed.charset_notes:
        attributes["charset_fallback"] = "; ".join(parsed.charset_notes)[:500]
    text = parsed.subject
    if parsed.body:
        text = f"{text}\n\n{parsed.body[: settings.body_max_chars]}"
    base = event_id_of(parsed)
    events = []
    for number, (customer, address) in enumerate(customers.items()):
        suffix = "" if number == 0 else f"-{hashlib.sha256(customer.encode()).hexdigest()[:8]}"
        events.append(
            TouchpointEvent(
                event_id=base + suffix,
                customer_id=customer,
                occurred_at=parsed.sent_at,
                received_at=received_at,
                channel=Channel.EMAIL,
                kind="email_sent" if outbound else "email_received",
                direction=Direction.OUTBOUND if outbound else Direction.INBOUND,
                rep_id=rep,
                contact_id=address,
                text=text[:20_000],
                attributes=attributes,
                source=SOURCE,
                industry=settings.industry,
            )
        )
    return events


# ---------------------------------------------------------------------------- batches


@dataclass(frozen=True, slots=True)
class RawEmail:
    """One message as a source read it, with where it came from."""

    position: int
    """1-based message number in a file, or the IMAP UID."""
    data: bytes
    fallback_date: datetime | None = None
    size: int | None = None
    """Set when ``data`` is only the head of a message this large (over the limit)."""


@dataclass(frozen=True, slots=True)
class Rejection:
    position: int
    reason: Reason
    detail: str
    data: bytes


@dataclass(slots=True)
class Converted:
    events: list[TouchpointEvent] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)
    internal: int = 0
    """Messages between company addresses only: not a customer touchpoint."""
    positions: dict[str, int] = field(default_factory=dict)
    """Event id -> the position of the message it came from."""


def convert(
    messages: Sequence[RawEmail],
    settings: EmailSettings,
    threads: ThreadMemory,
    received_at: datetime,
) -> Converted:
    """Parse a batch, remember every message's thread and date first (so a reply finds
    a parent in the same batch whatever the order), then build touchpoints."""
    result = Converted()
    parsed: list[tuple[RawEmail, ParsedEmail]] = []
    for item in messages:
        if item.size is not None:
            detail = f"expected at most {settings.max_message_bytes} bytes, found {item.size}"
            result.rejections.append(Rejection(item.position, Reason.TOO_LARGE, detail, item.data))
            continue
        try:
            parsed.append((item, parse_email(item.data, settings, item.fallback_date)))
        except RejectedEmail as exc:
            result.rejections.append(Rejection(item.position, exc.reason, exc.detail, item.data))
    for _, message in sorted(parsed, key=lambda pair: pair[1].sent_at):
        threads.observe(message)
    for item, message in parsed:
        events = to_touchpoints(message, threads, settings, received_at)
        if not events:
            result.internal += 1
        for event in events:
            result.positions[event.event_id] = item.position
        result.events.extend(events)
    return result


def tally(result: Converted) -> Counter[str]:
    counts: Counter[str] = Counter(r.reason.value for r in result.rejections)
    counts["touchpoints"] = len(result.events)
    counts["internal"] = result.internal
    return counts


# ---------------------------------------------------------------------------- mbox

_MBOX_FROM = re.compile(rb"^From \S+ .*\d{1,2}:\d{2}.*\d{4}")
_ESCAPED_FROM = re.compile(rb"^>+From ")


@dataclass(frozen=True, slots=True)
class MboxMessage:
    number: int
    """1-based message number in the file."""
    offset: int
    """Byte offset of its ``From`` line."""
    data: bytes
    """The message (``>From`` lines unescaped, mboxrd); only its first
    :data:`RAW_HEAD_BYTES` when it was too large."""
    size: int
    separator_date: datetime | None
    complete: bool = True
    """False when the message was larger than the limit and ``data`` is its head."""


def split_mbox(stream: BinaryIO, max_message_bytes: int) -> Iterator[MboxMessage]:
    """Messages of an mbox file (mboxo or mboxrd) one at a time, never more than one in
    memory. A message starts at a ``From <sender> <asctime date>`` line at the start of
    the file or after a blank line; ``>From`` lines lose one ``>``. A message over
    ``max_message_bytes`` is yielded with ``complete`` False, its head and true ``size``."""
    number = 0
    offset = 0
    start = 0
    lines: list[bytes] = []
    size = 0
    separator: datetime | None = None
    previous_blank = True
    started = False
    for line in stream:
        is_separator = previous_blank and _MBOX_FROM.match(line) is not None
        if is_separator:
            if started:
                yield _mbox_message(number, start, lines, size, separator, max_message_bytes)
            number += 1
            start, lines, size, started = offset, [], 0, True
            separator = _separator_date(line)
        elif started:
            size += len(line)
            if size <= max_message_bytes:
                lines.append(line[1:] if _ESCAPED_FROM.match(line) else line)
            elif lines and size - len(line) <= max_message_bytes:
                lines = [b"".join(lines)[:RAW_HEAD_BYTES]]  # the head, for the dead letter
        offset += len(line)
        previous_blank = not line.strip()
    if started:
        yield _mbox_message(number, start, lines, size, separator, max_message_bytes)


def _mbox_message(
    number: int,
    offset: int,
    lines: list[bytes],
    size: int,
    separator: datetime | None,
    max_bytes: int,
) -> MboxMessage:
    if size > max_bytes:
        return MboxMessage(number, offset, b"".join(lines), size, separator, complete=False)
    data = b"".join(lines)
    if data.endswith(b"\r\n\r\n"):
        data = data[:-2]  # the blank line before the next separator belongs to the mbox
    elif data.endswith(b"\n\n"):
        data = data[:-1]
    return MboxMessage(number, offset, data, size, separator)


_ZONE = re.compile(r"^[+-]\d{4}$")


def _separator_date(line: bytes) -> datetime | None:
    """The asctime date of a ``From`` line, UTC unless a numeric zone is written before
    the year (``Mon Jul 14 01:00:00 +0000 2025``, as Gmail exports it)."""
    parts = line.decode("ascii", "replace").split(None, 2)
    if len(parts) < 3:
        return None
    words = parts[2].split()
    zone = "+0000"
    if len(words) >= 6 and _ZONE.match(words[4]):
        zone = words.pop(4)
    try:
        stamp = " ".join(words[:5]) + " " + zone
        return datetime.strptime(stamp, "%a %b %d %H:%M:%S %Y %z").astimezone(UTC)
    except ValueError:
        return None


def looks_like_mbox(head: bytes) -> bool:
    """Whether a file starting with ``head`` is an mbox (starts with a separator line)."""
    return _MBOX_FROM.match(head.split(b"\n", 1)[0]) is not None
