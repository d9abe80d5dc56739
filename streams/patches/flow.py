"""Events that Faust's flow control drops are read again, once, by the drain loop.

**The loss.** At the end of a recovery Faust seeks the source partitions to their
committed offsets and only then resumes flow control, which empties every stream
buffer to discard what was read before the seek. Records fetched *after* the seek
and still buffered at that moment are emptied with the rest, and their partitions'
read positions are already past them, so nothing reads them again: on a loaded
worker a restart or a rebalance could lose touchpoints
(tests/integration/test_restart.py restarts under CPU load to catch it).

**How records reach a stream** (faust-streaming 0.15, mode-streaming 0.7):

1. ``Consumer._drain_messages`` (the fetcher task, on the worker's event loop) loops
   over ``Consumer.getmany``, which asks the consumer thread for one batch
   (aiokafka's fetcher, in the thread's own event loop, via ``call_thread``) and
   yields its records one at a time.
2. For each record it awaits the conductor's ``on_message`` (raced against
   ``suspend_flow``), and only *then* sets ``_read_offset[tp]`` to the record's
   offset. Records below ``_read_offset`` are dropped as already read.
3. ``on_message`` waits for flow control, decodes, and puts the event on each
   subscribing channel's buffer. A full buffer is not waited for in place: the put
   becomes a task (``Channel.put`` -> ``FlowControlQueue.put`` -> ``asyncio.Queue.put``),
   blocked on a putter future in the queue's ``_putters``; ``on_message`` waits for
   it, and the drain loop waits for ``on_message``.
4. ``FlowControlEvent.resume()`` clears every stream buffer. ``ThrowableQueue.clear``
   drops the buffered events *and cancels the blocked putters*: a put blocked on a
   full buffer does not complete, its event is dropped too, ``on_message`` returns
   normally and the drain loop marks the record read. A putter that a ``get`` woke
   just before the resume is no longer in ``_putters``; its put completes after the
   clear, into the emptied buffer.

**What went wrong with a seek inside ``resume``** (the previous form of this patch,
which seeked each partition back to its earliest buffered event right there):

- the record in flight at that moment was forgotten: when its put was blocked it was
  cancelled, and unless its partition had buffered events nothing read it again;
- after the seek the drain loop went on: it set ``_read_offset`` to the in-flight
  record's offset and handed over the rest of the batch fetched *before* the seek,
  moving ``_read_offset`` further; the re-read records then arrived below it and
  were dropped as already read. The buffered events were lost after all, and the
  record at ``_read_offset`` was delivered twice;
- aiokafka's ``seek`` ran on the worker's loop while its fetcher runs in the
  consumer thread.

Which of the two really happens: a put still blocked when the buffers are emptied
never completes after the seek (it is cancelled), so its record is lost, not
duplicated; a put that completes after the seek is one a ``get`` had just woken, or
one still on its way to the buffer (decoding, waiting for the producer's buffer to
ebb). In every ordering the previous code lost records (the buffered events, through
``_read_offset``; the cancelled put, when its partition had nothing buffered), and
the duplicate was only the record at ``_read_offset``. The forced orderings in
tests/streams/test_flow_reread.py show both on the previous code: a blocked put, a
put woken just before the resume, a blocked put whose partition had nothing buffered.

**The fix: the drain loop performs the re-read itself.** ``resume`` now only *records*
what it drops: per partition the buffered offsets, plus the in-flight record when a
managed buffer has a blocked putter (the drain loop is the only producer into stream
buffers and has at most one record in flight, so that putter is its put, and
``clear`` is about to cancel it). The consumer's ``getmany`` applies the request the
next time the drain loop asks it for a record or a batch, which is a point where:

- no callback is in flight and the drain loop has already written ``_read_offset``
  for the last record, so the re-read position set now is not overwritten;
- the seek runs in the consumer thread (``call_thread``), between two fetches, as
  aiokafka requires; aiokafka discards what it had fetched for the old position;
- records of the current batch for a partition just seeked were fetched before the
  seek and are skipped: the re-read starts at or below each of them.

The re-read starts at the lowest dropped offset, or lower where the partition's reading
has not got that far since the last seek (a record read before Faust's seek to the
committed offsets can sit in a buffer above the committed offset); up to the highest of the dropped
offsets and the in-flight record's (delivered where it was when its put was not
cancelled) only the dropped offsets are handed over again, and Faust's
``_read_offset`` follows each one passed over, and so does the record of holes
(:mod:`streams.patches.offsets`): a record passed over was delivered, never a hole (a
hole counts as done and would let a commit pass a record the agent has not handled).
This ``getmany`` also reports every record the drain loop takes, and every seek, to
that record of holes. So within
a generation every record reaches its stream exactly once: dropped ones through the
re-read, the others where they were. Events an agent had already taken are not
touched. Faust's own seek to committed offsets (``perform_seek``) reads again
everything not committed, so it supersedes every re-read requested before it; a
resume after it (at the end of every recovery) requests afresh what it drops.
Requests of an earlier generation, and partitions no longer assigned, are discarded.

**The record in flight whose put the resume does not cancel** (a put a ``get`` woke
just before it, or a record still decoding or waiting for the producer's buffer) lands
in the emptied buffer after the resume. Delivered there, it would reach the agent ahead
of the re-read earlier records of its partition: exactly once, but out of order, and a
rule that follows the order of one customer's touchpoints would decide otherwise. So
when its partition has dropped records, the resume counts it among them and marks its
message superseded; the stream buffers (:class:`StreamBuffer`, which Faust's channels
get from ``app.FlowControlQueue``) discard a superseded message's event where it lands,
and the re-read hands the record over again in its place. Whether its put has already
happened (the event is then buffered, and dropped with the rest, or taken by the
agent, and not read again) the buffers tell by remembering the last message put.

One limit remains: where several channels subscribe to one topic, a record dropped
from one buffer is read again for all of them (Warroom has one agent per topic).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import faust
from faust.types import TP
from mode.utils.queues import ThrowableQueue

from .offsets import holes_of

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Reread:
    """One partition's re-read: seek to ``start``; up to ``last``, hand over only
    the ``dropped`` offsets again (the others had reached the stream)."""

    start: int
    dropped: frozenset[int]
    last: int

    def admits(self, offset: int) -> bool:
        # Below ``start`` only another seek (Faust's) can lead: not this re-read's.
        return not self.start <= offset <= self.last or offset in self.dropped

    def then(self, later: Reread, applied: bool) -> Reread:
        """This request combined with a ``later`` one for the same partition.

        Not yet ``applied``, nothing of this one has been read again, so everything
        either dropped is still missing. Applied, the re-read has handed over
        everything up to what ``later`` dropped again; past ``later.last`` this
        request still says what is missing.
        """
        if not applied:
            return Reread(
                min(self.start, later.start),
                self.dropped | later.dropped,
                max(self.last, later.last),
            )
        still_missing = frozenset(o for o in self.dropped if o > later.last)
        return Reread(later.start, later.dropped | still_missing, max(self.last, later.last))


def dropped_by_resume(
    buffered: Iterable[Any],
    in_flight: Any | None,
    put_cancelled: bool,
    generation: int,
    assigned: Iterable[TP],
) -> dict[TP, Reread]:
    """Per assigned partition, what a resume drops and must be read again.

    ``buffered`` are the messages of the events in the stream buffers, ``in_flight``
    the message the drain loop is delivering, if any, and ``put_cancelled`` whether
    its put is blocked on a full buffer (the resume cancels it). Messages of an
    earlier generation belong to an earlier assignment and are rightly dropped.
    """
    owned = set(assigned)
    messages = list(buffered)
    if in_flight is not None and put_cancelled:
        messages.append(in_flight)
    dropped: dict[TP, set[int]] = {}
    for message in messages:
        if message.generation_id == generation and message.tp in owned:
            dropped.setdefault(message.tp, set()).add(message.offset)
    rereads: dict[TP, Reread] = {}
    for tp, offsets in dropped.items():
        last = max(offsets)
        if in_flight is not None and in_flight.tp == tp:
            last = max(last, in_flight.offset)  # delivered where it was, if not dropped
        rereads[tp] = Reread(min(offsets), frozenset(offsets), last)
    return rereads


class Rereads:
    """A consumer's re-reads: requested by a resume, applied by its drain loop."""

    def __init__(self) -> None:
        self.generation = -1
        self.seeks_to_committed = 0
        self.in_flight: Any | None = None
        self.last_put: Any | None = None
        self.pending: dict[TP, Reread] = {}
        self.applied: dict[TP, Reread] = {}
        self._superseded: dict[int, Any] = {}  # by identity: a re-read has the same offset

    def supersede(self, message: Any) -> None:
        """``message``'s event, still on its way to a stream buffer, is discarded where it
        lands: a re-read hands its record over again."""
        self._superseded[id(message)] = message

    def lands(self, message: Any) -> bool:
        """Whether ``message``'s event may go into a stream buffer (it is not superseded);
        remembers it as the last message put."""
        marked = self._superseded.get(id(message)) if self._superseded else None
        if marked is not None and marked is message:
            del self._superseded[id(message)]
            log.info(
                "record %d of %s landed after the resume and is discarded: its re-read delivers it",
                message.offset,
                message.tp,
            )
            return False
        self.last_put = message
        return True

    def superseded(self, changelogs: Collection[str]) -> None:
        """Faust seeks the source partitions to their committed offsets (or their
        beginning), which reads again everything not committed: every re-read of
        them requested so far is covered. Changelogs it leaves where they are."""
        self.seeks_to_committed += 1
        for requests in (self.pending, self.applied):
            for tp in [tp for tp in requests if tp.topic not in changelogs]:
                del requests[tp]

    def request(self, rereads: Mapping[TP, Reread], generation: int) -> None:
        self._follow(generation)
        for tp, reread in rereads.items():
            if tp in self.pending:
                self.pending[tp] = self.pending[tp].then(reread, applied=False)
            elif tp in self.applied:
                self.pending[tp] = self.applied.pop(tp).then(reread, applied=True)
            else:
                self.pending[tp] = reread

    def admits(self, tp: TP, offset: int) -> bool:
        reread = self.applied.get(tp)
        if reread is None:
            return True
        if offset > reread.last:
            del self.applied[tp]
        return reread.admits(offset)

    async def seek(self, consumer: Any) -> set[TP]:
        """Seek the partitions with pending re-reads, in the consumer thread; return
        those seeked (still assigned)."""
        self._follow(consumer.app.consumer_generation_id)
        pending, self.pending = self.pending, {}
        if not pending:
            return set()
        thread = consumer._thread
        seeks_to_committed = self.seeks_to_committed
        positions = {tp: _reread_position(consumer, tp, reread) for tp, reread in pending.items()}
        try:
            seeked: set[TP] = await thread.call_thread(
                _seek_assigned, thread._ensure_consumer(), positions
            )
        except BaseException:
            self.request(pending, self.generation)  # nothing of these was read again
            raise
        if consumer.app.consumer_generation_id != self.generation:
            return set()  # a rebalance came in between: the new assignment reads afresh
        if self.seeks_to_committed != seeks_to_committed:
            # Faust's seek to committed offsets came in between and seeked after ours
            # (its call was queued after ours, whose seek never waits).
            changelogs = consumer.app.tables.changelog_topics
            seeked = {tp for tp in seeked if tp.topic in changelogs}
        for tp in seeked:
            position = positions[tp]
            log.info("re-reading %s from offset %d: buffered events were dropped", tp, position)
            self.applied[tp] = pending[tp]
            consumer._read_offset[tp] = position if position else None
            holes_of(consumer).seeked(consumer, {tp: position})
        return seeked

    def _follow(self, generation: int) -> None:
        if generation != self.generation:
            self.generation = generation
            self.pending.clear()
            self.applied.clear()
            self._superseded.clear()


def _reread_position(consumer: Any, tp: TP, reread: Reread) -> int:
    """Where a re-read seeks: its start, or where the partition's reading has got to if
    that is lower. A dropped record can have been read before Faust's seek to the
    committed offsets, which took the reading back below it; seeking forward to the
    record would skip what lies between (records not yet read again, or the marker at
    the committed offset, which then is never counted as a hole and holds back every
    commit). Records below ``start`` are handed over as read (``Reread.admits``)."""
    reading_at = holes_of(consumer).reading_at(consumer, tp)
    return reread.start if reading_at is None else min(reread.start, reading_at)


async def _seek_assigned(aiokafka_consumer: Any, positions: Mapping[TP, int]) -> set[TP]:
    assigned = aiokafka_consumer.assignment()
    seeked = set()
    for tp, offset in positions.items():
        if tp in assigned:
            aiokafka_consumer.seek(tp, offset)
            seeked.add(tp)
    return seeked


def rereads_of(consumer: Any) -> Rereads:
    rereads: Rereads | None = consumer.__dict__.get("_warroom_rereads")
    if rereads is None:
        rereads = consumer._warroom_rereads = Rereads()
    return rereads


def install_lossless_resume(app: faust.App) -> None:
    """Make ``app.flow_control.resume`` record what it drops, and give ``app`` a
    consumer whose drain loop reads it again (see the module); call before start."""
    flow: Any = app.flow_control
    resume = flow.resume

    def resume_and_reread() -> None:
        consumer: Any = app.consumer
        rereads = rereads_of(consumer)
        generation = app.consumer_generation_id
        in_flight = rereads.in_flight
        put_blocked = _put_blocked(flow)
        dropped = dropped_by_resume(
            _buffered_messages(flow), in_flight, put_blocked, generation, consumer.assignment()
        )
        if (
            in_flight is not None
            and not put_blocked
            and rereads.last_put is not in_flight
            and in_flight.tp in dropped
        ):
            # On its way to the buffer, it would land ahead of the re-read: it is read
            # again with the dropped records instead (see the module).
            reread = dropped[in_flight.tp]
            dropped[in_flight.tp] = Reread(
                reread.start, reread.dropped | {in_flight.offset}, reread.last
            )
            rereads.supersede(in_flight)
            log.info(
                "record %d of %s is read again from offset %d with the records dropped "
                "before it, in order",
                in_flight.offset,
                in_flight.tp,
                reread.start,
            )
        resume()
        rereads.request(dropped, generation)

    resume_and_reread.warroom_patch = True  # type: ignore[attr-defined]
    flow.resume = resume_and_reread

    def stream_buffer(maxsize: int | None = None, *, clear_on_resume: bool = False) -> Any:
        return StreamBuffer(
            lambda: rereads_of(app.consumer),
            maxsize=maxsize,
            flow_control=flow,
            clear_on_resume=clear_on_resume,
        )

    app.FlowControlQueue = stream_buffer  # type: ignore[method-assign]

    base: Any = app.transport.Consumer

    async def perform_seek(self: Any) -> None:
        rereads_of(self).superseded(self.app.tables.changelog_topics)
        await base.perform_seek(self)
        read_offset = self._read_offset
        holes_of(self).seeked(
            self, {tp: read_offset.get(tp) for tp in self.assignment()}, to_committed=True
        )

    async def seek(self: Any, partition: TP, offset: int) -> None:
        await base.seek(self, partition, offset)
        holes_of(self).seeked(self, {TP(partition.topic, partition.partition): offset})

    async def getmany(
        self: Any,
        timeout: float,  # noqa: ASYNC109 - Faust's signature
    ) -> AsyncIterator[tuple[TP, Any]]:
        rereads = rereads_of(self)
        holes = holes_of(self)
        await rereads.seek(self)
        stale: set[TP] = set()  # seeked while this batch was out: fetched before the seek
        async for tp, message in base.getmany(self, timeout):
            if rereads.pending:
                stale |= await rereads.seek(self)
            if tp in stale:
                continue
            if not rereads.admits(tp, message.offset):
                self._read_offset[tp] = message.offset  # it reached the stream: no gap
                holes.read(self, tp, message.offset)
                continue
            read_offset = self._read_offset.get(tp)
            if read_offset is None or message.offset >= read_offset:
                holes.read(self, tp, message.offset)  # the drain loop takes it
            rereads.in_flight = message
            try:
                yield tp, message
            finally:
                rereads.in_flight = None

    app.transport.Consumer = type(  # type: ignore[misc]
        "WarroomRereadConsumer",
        (base,),
        {"getmany": getmany, "perform_seek": perform_seek, "seek": seek, "warroom_reread": True},
    )


def is_lossless_resume_installed(app: faust.App) -> bool:
    flow: Any = app.flow_control
    return (
        bool(getattr(flow.resume, "warroom_patch", False))
        and isinstance(app.FlowControlQueue(1), StreamBuffer)
        and bool(getattr(app.transport.Consumer, "warroom_reread", False))
        and _queue_internals_present()
    )


class StreamBuffer(ThrowableQueue[Any]):
    """A stream buffer that discards the event of a superseded message where it lands
    (every put, blocking or not, ends in ``_put``)."""

    def __init__(self, rereads: Callable[[], Rereads], *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._rereads = rereads

    def _put(self, item: Any) -> None:
        message = getattr(item, "message", None)
        if message is None or self._rereads().lands(message):
            super()._put(item)


def _queue_internals_present() -> bool:
    # Instance attributes of asyncio.Queue that ThrowableQueue.clear itself uses.
    queue: asyncio.Queue[None] = asyncio.Queue()
    return hasattr(queue, "_queue") and hasattr(queue, "_putters")


def _buffered_messages(flow: Any) -> Iterable[Any]:
    for queue in list(flow._queues):
        for item in list(queue._queue):
            message = getattr(item, "message", None)
            if message is not None:
                yield message


def _put_blocked(flow: Any) -> bool:
    """Whether a put into a buffer the resume clears waits for room (clear cancels it)."""
    return any(not putter.done() for queue in list(flow._queues) for putter in queue._putters)
