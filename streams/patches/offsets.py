"""Which offset a commit may take: past every hole, never past a delivered record.

**The holes.** A read_committed consumer is never handed a transaction's commit or abort
marker, nor the records of an aborted transaction, yet each takes an offset. A producer
writing one record per transaction (a chat connector replica with a lone request) leaves
a one-offset hole after every record. Faust (faust-streaming 0.15) records holes as
"gaps" in its drain loop and counts them as acknowledged when it works out a commit
(``Consumer._drain_messages``, ``_add_gap``, ``_new_offset``), with three faults:

- the gap it adds when a record arrives runs up to *and including* that record
  (``_add_gap(tp, r_offset + 1, offset)`` with an interval end of ``offset + 1``), so a
  record delivered but not yet handled counts as done as soon as a later record is
  acknowledged: a commit could pass it, and a crash would lose it;
- no gap is added after a record at offset 0 (``r_offset`` is tested for truth), nor
  for a marker at the offset a partition was seeked to;
- ``_new_offset`` takes only the first run of consecutive offsets per commit, and the
  offsets a gap shares with acknowledged records break that run into pieces: with a
  marker after every record each commit moved about one record per partition (about
  6 records/s per worker in bench/transaction_drain.py, against hundreds without
  transactions). It also lets a commit pass the record at the committed offset when
  the one after it is acknowledged (``min(acked) - committed_offset > 1``).

**The repair.** The consumer's ``getmany`` (:mod:`streams.patches.flow`) tells
:class:`Holes` of every record the drain loop will take and of every seek; a hole is the
run of offsets between the offset after the last record read and the next record read,
so it holds only offsets the partition never delivered. Faust's ``_add_gap`` is turned
into a no-op, and :func:`new_offset` replaces ``_new_offset``: from the committed offset
(or the first offset read after a seek to the beginning) it walks over acknowledged
offsets and holes and stops at the first offset that is neither, which is the offset
committed (the next to read). Everything below it is dropped from the bookkeeping.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from faust.types import TP


class Holes:
    """Per partition, the offset after the last record read, and where a read from the
    beginning started; holes themselves go into Faust's ``Consumer._gap``."""

    def __init__(self) -> None:
        self.generation = -1
        self.next: dict[TP, int] = {}
        """The offset after the last record read (or the position seeked to)."""
        self.first: dict[TP, int] = {}
        """Where reading started after the last seek to the committed offsets: the
        position seeked to, or the first offset read after a seek to the beginning.
        Faust counts a partition committed at 0 as not committed; nothing below this
        can be a record still waiting for its acknowledgement."""

    def seeked(
        self, consumer: Any, positions: Mapping[TP, int | None], to_committed: bool = False
    ) -> None:
        """Partitions were seeked: the next record read continues from ``position``
        (None: from the beginning, wherever the log starts). A seek ``to_committed``
        (Faust's, to the committed offsets) starts the partition's reading afresh;
        another (a re-read) only lowers where it started."""
        self._follow(consumer)
        for tp, position in positions.items():
            if position is None:
                self.next.pop(tp, None)
                self.first.pop(tp, None)
                continue
            self.next[tp] = position
            first = self.first.get(tp)
            if to_committed or (first is not None and position < first):
                self.first[tp] = position

    def reading_at(self, consumer: Any, tp: TP) -> int | None:
        """The offset the partition's reading has reached (the next to read), if known."""
        self._follow(consumer)
        return self.next.get(tp)

    def read(self, consumer: Any, tp: TP, offset: int) -> None:
        """The drain loop takes the record at ``offset`` (or skips it as delivered
        before): the offsets between the last one read and it were never delivered."""
        self._follow(consumer)
        expected = self.next.get(tp)
        if expected is None:
            self.first.setdefault(tp, offset)
        elif offset > expected and consumer.app.topics.acks_enabled_for(tp.topic):
            committed: int | None = consumer._committed_offset[tp]
            start = expected if committed is None else max(expected, committed)
            if start < offset:
                consumer._gap[tp].addi(start, offset)
        self.next[tp] = offset + 1

    def _follow(self, consumer: Any) -> None:
        generation = consumer.app.consumer_generation_id
        if generation != self.generation:
            # A new assignment: Faust seeks every partition before reading on.
            self.generation = generation
            self.next.clear()
            self.first.clear()


def holes_of(consumer: Any) -> Holes:
    holes: Holes | None = consumer.__dict__.get("_warroom_holes")
    if holes is None:
        holes = consumer._warroom_holes = Holes()
    return holes


def new_offset(consumer: Any, tp: TP) -> int | None:
    """The offset to commit for ``tp`` (the next to read), or None when nothing new is
    done; forgets the acknowledgements and holes below it."""
    acked: list[int] = consumer._acked[tp]
    if not acked:
        return None
    holes = consumer._gap[tp]
    committed: int | None = consumer._committed_offset[tp]
    done = set(acked)
    if committed is not None:
        position = committed
    else:
        first = holes_of(consumer).first.get(tp)
        lowest = min(done)
        position = first if first is not None and first <= lowest else lowest
    start = position
    while True:
        if position in done:
            position += 1
            continue
        covering = holes.at(position)
        if not covering:
            break
        position = max(interval.end for interval in covering)
    acked[:] = [offset for offset in acked if offset >= position]
    consumer._acked_index[tp].difference_update(o for o in done if o < position)
    holes.chop(0, position)
    if position == start:
        return None
    return position
