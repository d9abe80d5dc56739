"""The worker's side of the audit trail: one hash chain per partition, in the batch's
transaction.

Every decision a slice makes for a customer (a verdict, a review, a consent change, an
intervention decided or suppressed, a document view, an expiry) is appended to the
chain of the customer's partition: the record goes to the same partition of the
``audit`` topic and holds the hash of the chain's previous record (engine.audit). The
chain's head (seq and hash) is kept in the ``audit-heads`` table, whose changelog record
is written in the same transaction as the audit records and the consumed offsets. So
the one worker that owns a partition is the only writer of its chain, a crash rolls
back records and head together, and the next owner continues from the committed head:
chains stay linear with any number of workers.

Bundle decisions (activated, rejected, deleted) are the same on every worker, so only
the owner of partition 0 writes them, into chain 0; its head also remembers the offset
on the ``rules`` topic of the last bundle decision written, so each is written once
across restarts and rebalances (see :class:`BundleDecisions`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from faust.serializers.codecs import Codec

from engine.audit import ChainHead, append, genesis

from .patches.tables import TableStore
from .writer import OutRecord

BUNDLE_CHAIN = 0
"""The chain that holds bundle decisions."""
PENDING_MAX = 10_000
"""Bundle decisions waiting for the owner of partition 0 (any more and the oldest go:
they were written by an earlier owner or never will be by this worker)."""


@dataclass(frozen=True, slots=True)
class StoredHead:
    head: ChainHead
    rules_offset: int = -1
    """Offset on the rules topic of the last bundle decision in this chain (chain 0)."""


class StoredHeadCodec(Codec):
    """StoredHead <-> ``{"seq": n, "hash": "...", "rules_offset": n}`` (orjson)."""

    def _dumps(self, obj: Any) -> bytes:
        if not isinstance(obj, StoredHead):
            raise TypeError(f"expected StoredHead, found {type(obj).__name__}")
        return orjson.dumps(
            {"seq": obj.head.seq, "hash": obj.head.hash, "rules_offset": obj.rules_offset}
        )

    def _loads(self, s: bytes) -> Any:
        data = orjson.loads(s)
        return StoredHead(ChainHead(int(data["seq"]), str(data["hash"])), data["rules_offset"])


class BundleDecisions:
    """Bundle decisions of this worker's rule feed, until the owner of partition 0
    writes them into chain 0."""

    def __init__(self) -> None:
        self._pending: list[tuple[int, dict[str, Any]]] = []

    def add(self, rules_offset: int, entry: dict[str, Any]) -> None:
        self._pending.append((rules_offset, entry))
        del self._pending[:-PENDING_MAX]

    def after(self, rules_offset: int) -> list[tuple[int, dict[str, Any]]]:
        """Decisions for records after ``rules_offset``, oldest first; the rest are
        forgotten (already in the chain)."""
        self._pending = [(o, e) for o, e in self._pending if o > rules_offset]
        return list(self._pending)


def chain_records(
    heads: TableStore[StoredHead],
    topic: str,
    entries: Iterable[tuple[int, dict[str, Any]]],
    at: datetime,
    bundle_decisions: BundleDecisions | None = None,
    codec: StoredHeadCodec | None = None,
) -> list[OutRecord]:
    """The audit records of ``entries`` (partition, entry), each linked to its chain's
    head, and the heads' changelog records; ``heads`` is updated. With
    ``bundle_decisions``, chain 0 (``BUNDLE_CHAIN``, whose partition the caller owns
    and has entries for) first gets the bundle decisions not yet in it."""
    codec = codec or StoredHeadCodec()
    current: dict[int, StoredHead] = {}
    out: list[OutRecord] = []

    def head_of(partition: int) -> StoredHead:
        stored = current.get(partition) or heads.get(str(partition))
        return stored if stored is not None else StoredHead(genesis(partition))

    def add(partition: int, entry: dict[str, Any], rules_offset: int | None = None) -> None:
        stored = head_of(partition)
        value, head = append(stored.head, partition, entry, at)
        offset = stored.rules_offset if rules_offset is None else rules_offset
        current[partition] = StoredHead(head, offset)
        customer = entry.get("customer_id")
        key = customer.encode() if isinstance(customer, str) else None
        out.append(OutRecord(topic, partition, key, value))

    if bundle_decisions is not None:
        for offset, entry in bundle_decisions.after(head_of(BUNDLE_CHAIN).rules_offset):
            add(BUNDLE_CHAIN, entry, offset)
    for partition, entry in entries:
        add(partition, entry)
    for partition, stored in current.items():
        heads.put(str(partition), partition, stored)
        out.append(
            OutRecord(heads.changelog, partition, str(partition).encode(), codec.dumps(stored))
        )
    return out
