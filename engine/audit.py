"""The audit trail as hash chains: a record that was edited, deleted, moved or slipped in
is found and named.

One chain per partition of the ``audit`` topic: chain ``n`` lives in partition ``n``,
and the worker that owns customer partition ``n`` is the only writer of chain ``n``. It
keeps the chain head (``seq`` and ``hash`` of the last record) in a table written in the
same Kafka transaction as the records, so the chain stays linear across restarts and
rebalances.

A record is the canonical JSON (orjson, keys sorted) of the decision's fields plus
``chain``, ``seq`` (1, 2, ...), ``prev`` (the previous record's hash, or the chain's
genesis hash for seq 1), ``at`` (UTC, microseconds) and ``hash``: the SHA-256 of the
canonical JSON of everything but ``hash``.

:func:`verify` (or :class:`AuditVerifier`, one record at a time) walks the chains and
names the first broken record of each. Records without a ``chain`` key (written before
chains existed) are counted as unchained when they come before a chain's first record;
after it, any record that is not the chain's next is a break. The last records of a
chain can be deleted without a trace unless the head the worker stored is given.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import orjson

from .errors import EngineError

CHAIN_FORMAT = "warroom-audit-chain/1"
"""Names the record layout and hashing; part of every genesis hash."""
RESERVED_KEYS = frozenset({"chain", "seq", "prev", "at", "hash"})
"""Keys :func:`append` writes itself; an entry may not bring them."""
_HASH_LENGTH = 64
_HEX = frozenset("0123456789abcdef")
_SHOWN = 12
"""Hex digits of a hash shown to people."""


class InvalidAuditEntry(EngineError, ValueError):
    """An entry cannot be appended to an audit chain as given; the message says what was
    expected and what was found."""


@dataclass(frozen=True, slots=True)
class ChainHead:
    """The last record of a chain: its ``seq`` (0 for an empty chain) and hex ``hash``."""

    seq: int
    hash: str


def genesis(chain: int) -> ChainHead:
    """The head of the empty chain ``chain``: seq 0 and a hash naming the chain."""
    _check_chain(chain)
    seed = f"{CHAIN_FORMAT}\x00genesis\x00chain {chain}".encode()
    return ChainHead(0, hashlib.sha256(seed).hexdigest())


def canonical(value: Mapping[str, Any]) -> bytes:
    """The canonical JSON of an audit record: orjson, keys sorted."""
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def append(
    head: ChainHead, chain: int, entry: Mapping[str, Any], at: datetime
) -> tuple[bytes, ChainHead]:
    """The record that follows ``head`` on ``chain`` for the decision ``entry`` made at
    ``at``, and the chain's new head.

    ``entry`` is JSON-able data with an ``event`` string (and, for a customer's
    decision, ``customer_id``); the keys in :data:`RESERVED_KEYS` are refused."""
    _check_chain(chain)
    if isinstance(head.seq, bool) or not isinstance(head.seq, int) or head.seq < 0:
        raise InvalidAuditEntry(f"expected a head seq of 0 or more, found {head.seq!r}")
    if at.tzinfo is None or at.utcoffset() is None:
        raise InvalidAuditEntry(f"expected a time with a time zone for 'at', found {at!r}")
    event = entry.get("event")
    if "event" not in entry:
        raise InvalidAuditEntry(f"expected an 'event' in the audit entry, found {sorted(entry)}")
    if not isinstance(event, str) or not event:
        raise InvalidAuditEntry(f"expected 'event' to be a non-empty string, found {event!r}")
    odd = [key for key in entry if not isinstance(key, str)]
    if odd:
        raise InvalidAuditEntry(f"audit entry {event!r}: expected string keys, found {odd[0]!r}")
    taken = sorted(RESERVED_KEYS.intersection(entry))
    if taken:
        raise InvalidAuditEntry(
            f"audit entry {event!r}: expected none of the reserved keys "
            f"{sorted(RESERVED_KEYS)}, found {', '.join(repr(k) for k in taken)}"
        )
    content = dict(entry)
    content.update(
        chain=chain,
        seq=head.seq + 1,
        prev=head.hash,
        at=at.astimezone(UTC).isoformat(timespec="microseconds"),
    )
    try:
        text = canonical(content)
    except orjson.JSONEncodeError as exc:
        raise InvalidAuditEntry(
            f"audit entry {event!r}: expected JSON-able values, found {exc}"
        ) from exc
    digest = hashlib.sha256(text).hexdigest()
    content["hash"] = digest
    return canonical(content), ChainHead(head.seq + 1, digest)


def _check_chain(chain: int) -> None:
    if isinstance(chain, bool) or not isinstance(chain, int) or chain < 0:
        raise InvalidAuditEntry(f"expected a chain number of 0 or more, found {chain!r}")


class BreakKind(StrEnum):
    """What is wrong at the first broken record of a chain."""

    EDITED = "edited"
    """The record's content changed (its hash no longer matches, or it was recomputed
    and the next record still links to the original)."""
    DELETED = "deleted"
    """Records are missing: the seq jumps."""
    REORDERED = "reordered"
    """The record expected here comes later in the partition."""
    INSERTED = "inserted"
    """The record is not the chain's next: it repeats a seq, goes back, does not link,
    or has no chain at all."""
    FOREIGN = "foreign"
    """The record belongs to another chain."""
    UNDECODABLE = "undecodable"
    """The value is not a JSON object."""
    MALFORMED = "malformed"
    """A chain record with a field missing or of the wrong type."""
    TRUNCATED = "truncated"
    """The chain ends before the head the worker stored: its last records were deleted."""
    REWRITTEN = "rewritten"
    """The record at the stored head's seq has another hash: the chain was rewritten."""


@dataclass(frozen=True, slots=True)
class ChainBreak:
    """The first broken record of a chain: where (``offset`` None when the chain ends
    too early), its ``seq`` (None when it has none), what (``kind``) and why."""

    chain: int
    offset: int | None
    seq: int | None
    kind: BreakKind
    reason: str

    def __str__(self) -> str:
        where = "the end" if self.offset is None else f"offset {self.offset}"
        seq = "" if self.seq is None else f" (seq {self.seq})"
        return f"BROKEN at {where}{seq}: {self.reason}"


@dataclass(frozen=True, slots=True)
class ChainResult:
    """One chain's verification: ``records`` read after its first chain record,
    ``unchained`` records before it, the last ``head`` found intact, and the first
    break if any."""

    chain: int
    records: int
    unchained: int
    head: ChainHead
    first_break: ChainBreak | None
    stored_head: ChainHead | None = None
    first_seq: int | None = None
    """Seq of the chain's first record read (1 unless the partition was trimmed)."""
    trimmed: int | None = None
    """The partition's first offset when it was declared trimmed (older ones are gone)."""

    @property
    def ok(self) -> bool:
        return self.first_break is None

    def __str__(self) -> str:
        if self.first_break is not None:
            intact = (
                f"; {_count(self.head.seq, 'intact record')} before it" if self.head.seq else ""
            )
            return f"chain {self.chain}: {self.first_break}{intact}"
        gone = "" if self.trimmed is None else f" (offsets below {self.trimmed} are gone)"
        text = f"chain {self.chain}: {_count(self.records, 'record')}"
        if self.first_seq is None or self.trimmed is None:
            text += f"{gone}, intact"
        else:
            text += f", intact from seq {self.first_seq}{gone}"
        if self.head.seq:
            text += f", head seq {self.head.seq} hash {_short(self.head.hash)}"
        stored = self.stored_head
        if stored is not None:
            unseen = stored.seq > 0 and (self.first_seq is None or stored.seq < self.first_seq)
            if unseen:
                text += f", the stored head seq {stored.seq} cannot be checked"
            else:
                text += f", passes the stored head seq {stored.seq}"
                if self.head.seq > stored.seq:
                    text += f" and goes {_count(self.head.seq - stored.seq, 'record')} past it"
        if self.unchained:
            text += f", {_count(self.unchained, 'unchained record')} before it"
        return text


@dataclass(frozen=True, slots=True)
class VerifyReport:
    """Every chain's result, by chain number; ``ok`` when none is broken."""

    chains: Mapping[int, ChainResult] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(result.ok for result in self.chains.values())

    def __str__(self) -> str:
        lines = [str(self.chains[chain]) for chain in sorted(self.chains)]
        broken = sum(not result.ok for result in self.chains.values())
        if broken:
            lines.append(
                f"audit trail BROKEN: {broken} of {_count(len(self.chains), 'chain')} broken"
            )
        else:
            records = sum(result.records for result in self.chains.values())
            chains = _count(len(self.chains), "chain")
            lines.append(f"audit trail intact: {_count(records, 'record')} in {chains}")
        return "\n".join(lines)


def _count(number: int, noun: str) -> str:
    return f"{number:,} {noun}" + ("" if number == 1 else "s")


def _short(digest: str) -> str:
    return digest[:_SHOWN] + "…"


def _records(count: int, first: int, last: int) -> str:
    if count == 1:
        return f"1 record (seq {first})"
    return f"{count} records (seq {first} to {last})"


@dataclass(frozen=True, slots=True)
class _Record:
    offset: int
    chain: int
    seq: int
    prev: str
    hash: str
    content_hash: str
    """The hash of the record's content as found (equal to ``hash`` when unedited)."""


class _Pending(StrEnum):
    LINK = "link"
    """Right seq, wrong prev: the previous record was edited, or this one inserted."""
    GAP = "gap"
    """Seq jumps: records deleted, unless the missing one comes later (reordered)."""
    REPEAT = "repeat"
    """Same seq and prev as the previous record: one of the two was inserted."""


@dataclass(slots=True)
class _Chain:
    chain: int
    stored: ChainHead | None
    head: ChainHead
    head_prev: str = ""
    head_offset: int | None = None
    trimmed: int | None = None
    first_seq: int | None = None
    records: int = 0
    unchained: int = 0
    last_offset: int | None = None
    broken: ChainBreak | None = None
    pending: _Pending | None = None
    suspect: _Record | None = None
    """The record a pending break is about."""

    def fail(self, offset: int | None, seq: int | None, kind: BreakKind, reason: str) -> None:
        self.broken = ChainBreak(self.chain, offset, seq, kind, reason)
        self.pending = None
        self.suspect = None

    def disown_head(self) -> None:
        """The head record itself is the broken one: the chain is intact up to the one
        before it."""
        self.head = ChainHead(self.head.seq - 1, self.head_prev)

    def previous(self) -> str:
        if self.head_offset is None:
            return "the chain's genesis"
        return f"seq {self.head.seq} at offset {self.head_offset}"


class AuditVerifier:
    """Verifies audit chains one record at a time, in offset order per partition, so a
    whole topic can be checked in constant memory; :meth:`report` ends the walk.

    ``heads`` are the chain heads the worker stored (they reveal deleted last records);
    ``chains`` are chain numbers to report even if none of their records is fed;
    ``trimmed`` maps a chain to its partition's first offset when retention removed the
    older records: that chain is verified from its first chain record on, which is
    taken as it links."""

    def __init__(
        self,
        heads: Mapping[int, ChainHead] | None = None,
        chains: Iterable[int] = (),
        trimmed: Mapping[int, int] | None = None,
    ) -> None:
        self._heads = dict(heads or {})
        self._trimmed = dict(trimmed or {})
        self._chains: dict[int, _Chain] = {}
        for chain in (*chains, *self._heads, *self._trimmed):
            self._chain(chain)

    def _chain(self, partition: int) -> _Chain:
        found = self._chains.get(partition)
        if found is None:
            found = _Chain(
                partition,
                self._heads.get(partition),
                genesis(partition),
                trimmed=self._trimmed.get(partition),
            )
            self._chains[partition] = found
        return found

    def feed(self, partition: int, offset: int, value: bytes | None) -> None:
        """Check the record at ``offset`` of ``partition`` (chain ``partition``)."""
        chain = self._chain(partition)
        if chain.last_offset is not None and offset <= chain.last_offset:
            raise ValueError(
                f"partition {partition}: expected offsets above {chain.last_offset} in "
                f"offset order, found {offset}"
            )
        chain.last_offset = offset
        if chain.broken is not None:
            chain.records += 1
            return
        decoded = _decode(value)
        unchained = isinstance(decoded, dict) and "chain" not in decoded
        if unchained and chain.head_offset is None and chain.pending is None:
            chain.unchained += 1  # written before the chain began
            return
        chain.records += 1
        record = _parse(decoded, offset)
        if chain.pending is not None:
            _resolve(chain, record)  # settles the pending judgement, or (a gap) waits on
            return
        if isinstance(record, str):
            _fail_unreadable(chain, offset, decoded, record)
            return
        _check(chain, record)

    def report(self) -> VerifyReport:
        """Every chain's result; ends pending judgements and checks the stored heads."""
        results: dict[int, ChainResult] = {}
        for number in sorted(self._chains):
            chain = self._chains[number]
            if chain.pending is not None:
                _resolve(chain, None)
            if chain.broken is None and chain.stored is not None:
                _check_stored(chain, chain.stored)
            results[number] = ChainResult(
                chain=number,
                records=chain.records,
                unchained=chain.unchained,
                head=chain.head,
                first_break=chain.broken,
                stored_head=chain.stored,
                first_seq=chain.first_seq,
                trimmed=chain.trimmed,
            )
        return VerifyReport(results)


def verify(
    records: Iterable[tuple[int, int, bytes | None]],
    heads: Mapping[int, ChainHead] | None = None,
    *,
    chains: Iterable[int] = (),
    trimmed: Mapping[int, int] | None = None,
) -> VerifyReport:
    """Verify the audit chains in ``records``: (partition, offset, value) in offset order
    per partition, as read from the ``audit`` topic. ``heads`` are the chain heads the
    worker stored; ``chains`` are reported even when they have no records; ``trimmed``
    as for :class:`AuditVerifier`."""
    verifier = AuditVerifier(heads, chains, trimmed)
    for partition, offset, value in records:
        verifier.feed(partition, offset, value)
    return verifier.report()


def _decode(value: bytes | None) -> dict[str, Any] | str:
    """The record as a JSON object, or why it is not one."""
    if value is None:
        return "expected a JSON audit record, found no value (a tombstone)"
    try:
        loaded = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        return f"not JSON: {exc}"
    if not isinstance(loaded, dict):
        return f"expected a JSON object, found {type(loaded).__name__}"
    return loaded


_FIELDS: tuple[tuple[str, str], ...] = (
    ("chain", "a chain number of 0 or more"),
    ("seq", "a positive integer"),
    ("prev", "a hex SHA-256 hash"),
    ("hash", "a hex SHA-256 hash"),
    ("at", "an ISO 8601 time with a time zone"),
    ("event", "a non-empty string"),
)


def _field_ok(name: str, value: Any) -> bool:
    if name in ("chain", "seq"):
        low = 0 if name == "chain" else 1
        return isinstance(value, int) and not isinstance(value, bool) and value >= low
    if name in ("prev", "hash"):
        return isinstance(value, str) and len(value) == _HASH_LENGTH and _HEX.issuperset(value)
    if name == "at":
        try:
            return isinstance(value, str) and datetime.fromisoformat(value).tzinfo is not None
        except ValueError:
            return False
    return isinstance(value, str) and bool(value)


def _fail_unreadable(
    chain: _Chain, offset: int, decoded: dict[str, Any] | str, problem: str
) -> None:
    if isinstance(decoded, str):
        chain.fail(offset, None, BreakKind.UNDECODABLE, problem)
    elif "chain" not in decoded:
        chain.fail(
            offset,
            None,
            BreakKind.INSERTED,
            f"a record without a chain (event {decoded.get('event')!r}) after "
            f"{chain.previous()}: inserted",
        )
    else:
        seq = decoded.get("seq")
        known = seq if isinstance(seq, int) and not isinstance(seq, bool) else None
        chain.fail(offset, known, BreakKind.MALFORMED, problem)


def _parse(decoded: dict[str, Any] | str, offset: int) -> _Record | str:
    """The chain fields of a decoded record, or what is wrong with it."""
    if isinstance(decoded, str):
        return decoded
    if "chain" not in decoded:
        return "a record without a chain"
    for name, expected in _FIELDS:
        if name not in decoded:
            return f"field {name!r}: expected {expected}, found nothing"
        if not _field_ok(name, decoded[name]):
            return f"field {name!r}: expected {expected}, found {decoded[name]!r}"
    content = {k: v for k, v in decoded.items() if k != "hash"}
    try:
        content_hash = hashlib.sha256(canonical(content)).hexdigest()
    except orjson.JSONEncodeError as exc:
        return f"cannot be hashed as canonical JSON: {exc}"
    return _Record(
        offset=offset,
        chain=decoded["chain"],
        seq=decoded["seq"],
        prev=decoded["prev"],
        hash=decoded["hash"],
        content_hash=content_hash,
    )


def _check(chain: _Chain, record: _Record) -> None:
    """Accept ``record`` as the chain's next, fail the chain, or hold a judgement until
    the next record."""
    if record.chain != chain.chain:
        chain.fail(
            record.offset,
            record.seq,
            BreakKind.FOREIGN,
            f"a record of chain {record.chain} in partition {chain.chain}: "
            f"copied from another chain",
        )
        return
    if record.content_hash != record.hash:
        chain.fail(
            record.offset,
            record.seq,
            BreakKind.EDITED,
            f"hash mismatch: the record was edited (its content hashes to "
            f"{_short(record.content_hash)}, it says {_short(record.hash)})",
        )
        return
    if chain.trimmed is not None and chain.head_offset is None:
        # The records before this one are gone: it anchors the chain as it links.
        chain.head = ChainHead(record.seq - 1, record.prev)
    head = chain.head
    expected = head.seq + 1
    if record.seq == expected and record.prev == head.hash:
        _accept(chain, record)
    elif record.seq == expected:
        chain.pending, chain.suspect = _Pending.LINK, record
    elif record.seq > expected and record.prev == head.hash:
        chain.fail(
            record.offset,
            record.seq,
            BreakKind.EDITED,
            f"seq jumps from {head.seq} to {record.seq} although the record links to "
            f"seq {head.seq} (offset {chain.head_offset}): its seq was edited and its "
            f"hash recomputed",
        )
    elif record.seq > expected:
        chain.pending, chain.suspect = _Pending.GAP, record
    elif record.hash == head.hash:
        chain.fail(
            record.offset,
            record.seq,
            BreakKind.INSERTED,
            f"an exact copy of the record at offset {chain.head_offset} (seq {head.seq}): inserted",
        )
    elif record.seq == head.seq and record.prev == chain.head_prev:
        chain.pending, chain.suspect = _Pending.REPEAT, record
    else:
        chain.fail(
            record.offset,
            record.seq,
            BreakKind.INSERTED,
            f"seq goes back from {head.seq} (offset {chain.head_offset}) to {record.seq}: "
            f"a copy of an earlier record was inserted",
        )


def _accept(chain: _Chain, record: _Record) -> None:
    if chain.first_seq is None:
        chain.first_seq = record.seq
    chain.head_prev = record.prev
    chain.head = ChainHead(record.seq, record.hash)
    chain.head_offset = record.offset
    stored = chain.stored
    if stored is not None and record.seq == stored.seq and record.hash != stored.hash:
        chain.disown_head()
        chain.fail(
            record.offset,
            record.seq,
            BreakKind.REWRITTEN,
            f"the stored head says seq {stored.seq} has hash {_short(stored.hash)}, this "
            f"record has {_short(record.hash)}: the chain was rewritten up to here",
        )


def _resolve(chain: _Chain, following: _Record | str | None) -> None:
    """Settle the pending judgement with the chain's next record (``following``: a
    record that is not a usable chain record, or None at the end of the input)."""
    suspect = chain.suspect
    assert suspect is not None and chain.pending is not None
    usable = (
        following
        if isinstance(following, _Record)
        and following.chain == chain.chain
        and following.content_hash == following.hash
        else None
    )
    head = chain.head
    # At the end of the input the stored head stands in for the record that would follow.
    stored_is_suspect = following is None and chain.stored == ChainHead(suspect.seq, suspect.hash)
    continues_from_suspect = stored_is_suspect or (
        usable is not None and usable.seq == suspect.seq + 1 and usable.prev == suspect.hash
    )
    if chain.pending is _Pending.GAP:
        missing = head.seq + 1
        if usable is not None and usable.seq == missing and usable.prev == head.hash:
            chain.fail(
                suspect.offset,
                suspect.seq,
                BreakKind.REORDERED,
                f"seq {suspect.seq} comes where seq {missing} was expected; seq {missing} "
                f"is at offset {usable.offset}: records reordered",
            )
        elif following is None:
            count = suspect.seq - missing
            start = "at the start of the chain" if head.seq == 0 else f"after seq {head.seq}"
            where = "" if chain.head_offset is None else f" (offset {chain.head_offset})"
            chain.fail(
                suspect.offset,
                suspect.seq,
                BreakKind.DELETED,
                f"seq gap: expected seq {missing} {start}{where}, found seq {suspect.seq}: "
                f"{_records(count, missing, suspect.seq - 1)} deleted",
            )
        return  # a gap waits for the missing record until the end of the partition
    later = "the stored head is" if stored_is_suspect else "the next record links to"
    proof = (
        "the stored head is that record" if stored_is_suspect else "the record after it links to it"
    )
    if chain.pending is _Pending.LINK:
        if continues_from_suspect:
            if chain.head_offset is None:
                chain.fail(
                    suspect.offset,
                    suspect.seq,
                    BreakKind.EDITED,
                    f"does not link to the chain's genesis hash, yet {later} it: the "
                    "record was edited and its hash recomputed",
                )
            else:
                chain.disown_head()
                chain.fail(
                    chain.head_offset,
                    head.seq,
                    BreakKind.EDITED,
                    f"the record was edited and its hash recomputed: the next record, "
                    f"offset {suspect.offset} (seq {suspect.seq}), links to "
                    f"{_short(suspect.prev)}, not to this record's {_short(head.hash)}, "
                    f"and {proof}",
                )
        elif usable is not None and usable.seq == suspect.seq and usable.prev == head.hash:
            chain.fail(
                suspect.offset,
                suspect.seq,
                BreakKind.INSERTED,
                f"does not link to {chain.previous()}, and the next record, offset "
                f"{usable.offset}, does: inserted",
            )
        else:
            chain.fail(
                suspect.offset,
                suspect.seq,
                BreakKind.INSERTED,
                f"prev does not link: expected {_short(head.hash)} (the hash of "
                f"{chain.previous()}), found {_short(suspect.prev)}: the previous record "
                f"was edited or this one inserted",
            )
        return
    # _Pending.REPEAT: the suspect has the seq and prev of the head record.
    if continues_from_suspect:
        chain.disown_head()
        chain.fail(
            chain.head_offset,
            head.seq,
            BreakKind.INSERTED,
            f"another record, offset {suspect.offset}, has seq {head.seq} too and links to "
            f"the same record; the chain continues from offset {suspect.offset}: inserted",
        )
    else:
        chain.fail(
            suspect.offset,
            suspect.seq,
            BreakKind.INSERTED,
            f"seq {suspect.seq} repeats (offset {chain.head_offset} has it) and both link "
            f"to the same record: one of the two was inserted",
        )


def _check_stored(chain: _Chain, stored: ChainHead) -> None:
    if chain.head.seq >= stored.seq:
        return  # passed through the stored head (checked on the way), or the worker moved on
    if chain.trimmed is not None and chain.head_offset is None:
        return  # retention removed every record: nothing is left to hold against the head
    ends = (
        "the chain has no records"
        if chain.head_offset is None
        else f"the chain ends at seq {chain.head.seq} (offset {chain.head_offset})"
    )
    chain.fail(
        None,
        chain.head.seq + 1,
        BreakKind.TRUNCATED,
        f"{ends} but the stored head is seq {stored.seq} (hash {_short(stored.hash)}): "
        f"{_records(stored.seq - chain.head.seq, chain.head.seq + 1, stored.seq)} deleted "
        f"from the end",
    )
