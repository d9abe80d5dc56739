"""Table state in RocksDB (rocksdict) that never runs ahead of what Kafka committed.

With ``WARROOM_STORE=rocksdb://`` each table keeps its values in Faust's RocksDB store
(``faust.stores.rocksdb``, rocksdict driver): one database per changelog partition under
the worker's data directory, holding each key's changelog value (the record's bytes)
and the changelog offset the database has reached (Faust's ``offset_key``). When a
partition is assigned, Faust's recovery reads that offset (``persisted_offset``) and
replays the changelog only from there, instead of rebuilding every customer in memory.

Exactly-once is the hard part: state written to disk before its Kafka transaction
commits would outlive the transaction if the worker crashed and the transaction were
aborted. Kafka Streams wipes local state after an unclean shutdown for that reason;
here, as in Quix Streams, nothing reaches RocksDB before Kafka committed it:

- ``put`` and ``delete`` go to an in-memory *overlay* per partition, which ``get``
  reads first; the overlay holds only what the open transaction (one slice or a few)
  changed;
- the batch writer reports the base offset of every changelog record batch the broker
  acknowledged (:meth:`RocksStores.delivered`);
- after a commit succeeds (the consumer's commit, under the commit lock, see
  streams.patches.transactions), each committed partition's overlay is written in one
  atomic RocksDB write batch, with the changelog offset it reaches;
- the overlay of a partition lives as long as its transaction: through a rebalance
  that gives the partition back to this worker (its producer and open transaction are
  kept), not past one that takes it away (the overlay is dropped, the transaction is
  aborted or fenced), nor past an assignment that aborts the kept transaction because it
  held output written after the partition's last commit (streams.patches.transactions).

kill -9 at each point, under exactly-once:

- while a slice is processed or before the commit: the transaction is aborted, its
  changelog records are never read (recovery reads committed records only), the
  database holds the last committed state and its offset; after the restart the
  touchpoints are read again from the committed offsets and processed on that state;
- after the Kafka commit, before the write batch: the database lags behind the
  changelog, its offset too; recovery replays the committed records from that offset;
- during the write batch: RocksDB applies a write batch atomically (write-ahead log),
  so the database has all of it, with its offset, or none of it;
- after the write batch: recovery replays at most the last record batch again.

The recorded offset is the base offset of the partition's last acknowledged record
batch, never past a record the database holds; the records after it in that batch are
replayed on top of values that already include them, which changes nothing (each
record is a whole value or a tombstone). A database is therefore never ahead of the
committed changelog, at most behind it, and a replay from its offset to the end of
the changelog always ends at the committed state.

Under at-least-once the overlay is written after the offsets commit; changelog
batches not yet acknowledged then are written to disk but not counted in the offset,
so the replay covers them.

Faust's store is used through two names (checked at start-up): ``_db_for_partition``
(a partition's database, opened on first use, as Faust's own recovery does) and
``offset_key`` (where it keeps the changelog offset a database reached).
"""

from __future__ import annotations

import logging
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar, cast

import faust
from faust.serializers.codecs import Codec
from faust.types import TP

from .tables import TableStore
from .transactions import BatchCommitLock

V = TypeVar("V")
log = logging.getLogger(__name__)

SCAN_CHUNK = 1_000
"""``owned`` reads a partition's database this many entries at a time."""
CACHE_ENTRIES = 4_096
"""Decoded committed values kept for repeated reads of the same customers."""
ROCKSDB_OPTIONS: Mapping[str, Any] = {
    "driver": "rocksdict",
    "write_buffer_size": 16 * 1024 * 1024,
    "max_write_buffer_number": 3,
    "block_cache_size": 64 * 1024 * 1024,
}
"""Per-partition database options (Faust's defaults: 64 MiB write buffers, 2 GiB cache)."""


class RocksTableStore(TableStore[V]):
    """:class:`TableStore` over Faust's RocksDB store: reads see the open transaction's
    overlay first, then the committed values on disk; writes reach the disk only through
    :meth:`write_committed`."""

    def __init__(
        self,
        table: faust.Table[str, Any],
        default_partition: Callable[[str], int],
        codec: Codec,
        cache_entries: int = CACHE_ENTRIES,
    ) -> None:
        super().__init__(table, default_partition)
        self._codec = codec
        self._pending: defaultdict[int, dict[str, V | None]] = defaultdict(dict)
        """partition -> key -> value, or None for a deletion, not yet committed."""
        self._cache: OrderedDict[str, V] = OrderedDict()
        self._cache_entries = cache_entries
        self._delivered: dict[int, int] = {}
        """changelog partition -> base offset of its last acknowledged record batch."""

    @property
    def _offset_key(self) -> bytes:
        key: bytes = self._store.offset_key
        return key

    def _db(self, partition: int) -> Any:
        return self._store._db_for_partition(partition)

    def get(self, key: str) -> V | None:
        partition = self._default_partition(key)
        pending = self._pending.get(partition)
        if pending is not None and key in pending:
            return pending[key]
        cached = self._cache.get(key)
        if cached is not None:
            self._cache.move_to_end(key)
            return cached
        raw = self._db(partition).get(key.encode())
        if raw is None:
            return None
        value = cast(V, self._codec.loads(raw))
        self._remember(key, value)
        return value

    def put(self, key: str, partition: int, value: V) -> None:
        self._pending[partition][key] = value

    def delete(self, key: str) -> None:
        self._pending[self._default_partition(key)][key] = None

    def owned(self, partitions: frozenset[int]) -> Iterator[tuple[str, int, V]]:
        """(key, partition, value) of every key on one of ``partitions``: the overlay's,
        then the database's, read :data:`SCAN_CHUNK` entries at a time, so neither the
        whole partition nor an open iterator is held while the caller works."""
        for partition in sorted(partitions):
            pending = dict(self._pending.get(partition, {}))
            for key, value in pending.items():
                if value is not None:
                    yield key, partition, value
            for raw_key, raw in self._scan(partition):
                key = raw_key.decode()
                if key not in pending:
                    yield key, partition, cast(V, self._codec.loads(raw))

    def _scan(self, partition: int) -> Iterator[tuple[bytes, bytes]]:
        after: bytes | None = None
        offset_key = self._offset_key
        while True:
            chunk = _read_chunk(self._db(partition), after, SCAN_CHUNK)
            for raw_key, raw in chunk:
                if raw_key != offset_key:
                    yield raw_key, raw
            if len(chunk) < SCAN_CHUNK:
                return
            after = chunk[-1][0]

    def delivered(self, partition: int, base_offset: int) -> None:
        """The broker acknowledged a changelog record batch starting at ``base_offset``."""
        if base_offset > self._delivered.get(partition, -1):
            self._delivered[partition] = base_offset

    def write_committed(self, partitions: frozenset[int]) -> int:
        """Write the overlay of ``partitions``, whose transactions have committed, to disk:
        one write batch per partition with the changelog offset it reaches. Returns how
        many values were written or deleted."""
        import rocksdict

        written = 0
        for partition in partitions:
            pending = self._pending.pop(partition, None)
            if not pending:
                continue
            batch = rocksdict.WriteBatch(raw_mode=True)
            dumps = self._codec.dumps
            for key, value in pending.items():
                if value is None:
                    batch.delete(key.encode())
                    self._cache.pop(key, None)
                else:
                    batch.put(key.encode(), dumps(value))
                    self._remember(key, value)
            offset = self._delivered.get(partition)
            if offset is not None:
                batch.put(self._offset_key, str(offset).encode())
            self._db(partition).write(batch)
            written += len(pending)
        return written

    def revoked(self) -> None:
        """A rebalance began: forget every cached committed value (recovery writes to
        disk past the cache, and a partition may come back changed by another worker).
        The overlay stays until the new assignment is known: a producer kept through
        the rebalance keeps its open transaction."""
        self._cache.clear()

    def assigned(self, partitions: frozenset[int]) -> None:
        """The worker now owns ``partitions``: drop the uncommitted values and the
        acknowledged offsets of every other partition, whose producer (and open
        transaction) is gone."""
        for partition in set(self._pending) | set(self._delivered):
            if partition in partitions:
                continue
            dropped = self._pending.pop(partition, None)
            if dropped:
                log.info(
                    "dropped %d uncommitted values of %s partition %d",
                    len(dropped),
                    self.changelog,
                    partition,
                )
            self._delivered.pop(partition, None)

    def roll_back(self, partitions: frozenset[int]) -> None:
        """The open transactions of ``partitions`` were aborted: drop their uncommitted
        values and acknowledged offsets (the disk holds only committed values, and
        recovery replays the changelog from the offset the disk reached)."""
        for partition in partitions:
            dropped = self._pending.pop(partition, None)
            self._delivered.pop(partition, None)
            if dropped:
                log.info(
                    "dropped %d aborted values of %s partition %d",
                    len(dropped),
                    self.changelog,
                    partition,
                )
        self._cache.clear()

    def pending(self, partition: int) -> int:
        """How many values of ``partition`` wait for their commit."""
        return len(self._pending.get(partition, {}))

    def _remember(self, key: str, value: V) -> None:
        cache = self._cache
        cache[key] = value
        cache.move_to_end(key)
        if len(cache) > self._cache_entries:
            cache.popitem(last=False)


def _read_chunk(db: Any, after: bytes | None, size: int) -> list[tuple[bytes, bytes]]:
    """Up to ``size`` (key, value) pairs of ``db`` in key order, after the key ``after``."""
    iterator = db.iter()
    if after is None:
        iterator.seek_to_first()
    else:
        iterator.seek(after)
        if iterator.valid() and iterator.key() == after:
            iterator.next()
    chunk: list[tuple[bytes, bytes]] = []
    while iterator.valid() and len(chunk) < size:
        chunk.append((iterator.key(), iterator.value()))
        iterator.next()
    return chunk


class RocksStores:
    """The RocksDB-backed table stores of one worker, wired to its commits, its batch
    writer's acknowledgements and its rebalances."""

    def __init__(self, app: faust.App, commit_lock: BatchCommitLock) -> None:
        self._by_changelog: dict[str, RocksTableStore[Any]] = {}
        commit_lock.after_commit.append(self.committed)

        async def on_revoked(sender: Any, /, *args: Any, signal: Any, **_: Any) -> None:
            self.revoked()

        async def on_assigned(sender: Any, /, *args: Any, signal: Any, **_: Any) -> None:
            assigned: set[TP] = args[0]
            self.assigned(assigned)

        app.on_partitions_revoked.connect(on_revoked)
        app.on_partitions_assigned.connect(on_assigned)

    def table_store(
        self, table: faust.Table[str, Any], default_partition: Callable[[str], int], codec: Codec
    ) -> RocksTableStore[Any]:
        store: RocksTableStore[Any] = RocksTableStore(table, default_partition, codec)
        self._by_changelog[store.changelog] = store
        return store

    def delivered(self, metadata: Any) -> None:
        """A record batch the writer sent was acknowledged (aiokafka RecordMetadata)."""
        store = self._by_changelog.get(metadata.topic)
        if store is not None and metadata.offset is not None:
            store.delivered(metadata.partition, metadata.offset)

    def committed(self, partitions: frozenset[int]) -> None:
        for store in self._by_changelog.values():
            store.write_committed(partitions)

    def revoked(self) -> None:
        for store in self._by_changelog.values():
            store.revoked()

    def assigned(self, assigned: set[TP]) -> None:
        """Partition numbers of each table's changelog partitions now assigned: what the
        worker owns (other topics' partitions, such as the feedback agent's, are
        assigned independently)."""
        for changelog, store in self._by_changelog.items():
            store.assigned(frozenset(tp.partition for tp in assigned if tp.topic == changelog))
