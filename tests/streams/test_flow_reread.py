"""The flow-control re-read against Faust's own drain loop, with the orderings forced.

A real Faust app, its real flow control, conductor and stream buffer, and Faust's own
``Consumer._drain_messages``; only the aiokafka consumer thread is replaced by an
in-memory log with fetch positions (:class:`MemoryLog`), and the producer's buffer by a
wait the test can hold. Each test brings the drain loop to an exact point (a put
blocked on a full buffer, a put just woken, a record waiting before its put, a fetch
in progress), resumes flow control there and checks that every record reaches the
stream exactly once. Nothing waits on a clock: the waits count event-loop turns.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

import faust
import pytest
from aiokafka.structs import ConsumerRecord
from faust.types import TP

from streams.patches.flow import install_lossless_resume

TOPIC = "touchpoints"
P0 = TP(TOPIC, 0)
P1 = TP(TOPIC, 1)
BUFFER = 4
STEPS = 10_000
"""Event-loop turns a wait below may take before the test fails (never a clock)."""


class MemoryLog:
    """The partitions' records and the fetch positions an aiokafka consumer keeps.

    Stands in for Faust's consumer thread (``getmany``, ``seek``, ``call_thread``,
    ``seek_to_committed``) and for the aiokafka consumer inside it (``seek``,
    ``assignment``). A fetch returns every record from each active partition's
    position onwards, once ``fetches`` is set (the test clears it to hold a fetch).
    """

    def __init__(self, partitions: Iterable[TP]) -> None:
        self.records: dict[TP, list[ConsumerRecord[bytes, bytes]]] = {tp: [] for tp in partitions}
        self.positions = {tp: 0 for tp in self.records}
        self.committed: dict[TP, int] = {}
        self.empty_fetches = 0
        self.fetches = asyncio.Event()
        self.fetches.set()
        self.fetch_held = False

    def append(self, tp: TP, count: int) -> None:
        log = self.records[tp]
        for _ in range(count):
            offset = len(log)
            log.append(
                ConsumerRecord(
                    topic=tp.topic,
                    partition=tp.partition,
                    offset=offset,
                    timestamp=1_700_000_000_000,
                    timestamp_type=0,
                    key=b"customer",
                    value=f"{tp.partition}:{offset}".encode(),
                    checksum=None,
                    serialized_key_size=8,
                    serialized_value_size=3,
                    headers=(),
                )
            )

    # Faust's ConsumerThread

    async def getmany(
        self,
        active_partitions: set[TP] | None,
        timeout: float,  # noqa: ASYNC109 - Faust's signature
    ) -> dict[TP, list[ConsumerRecord[bytes, bytes]]]:
        await asyncio.sleep(0)
        self.fetch_held = not self.fetches.is_set()
        await self.fetches.wait()
        self.fetch_held = False
        fetched = {}
        for tp in sorted(active_partitions or self.records):
            records = self.records[tp][self.positions[tp] :]
            if records:
                fetched[tp] = records
                self.positions[tp] += len(records)
        self.empty_fetches = 0 if fetched else self.empty_fetches + 1
        return fetched

    async def call_thread(self, fun: Callable[..., Awaitable[Any]], *args: Any) -> Any:
        return await fun(*args)

    def _ensure_consumer(self) -> MemoryLog:
        return self

    def highwater(self, tp: TP) -> int:
        return len(self.records[tp])

    async def seek_to_committed(self) -> dict[TP, int]:
        self.positions.update(self.committed)
        return dict(self.committed)

    # aiokafka's AIOKafkaConsumer (and the thread's synchronous seek)

    def seek(self, tp: TP, offset: int) -> None:
        self.positions[TP(tp.topic, tp.partition)] = offset

    def assignment(self) -> set[TP]:
        return set(self.records)


class Worker:
    """Faust's drain loop feeding one stream buffer, and the agent's end of it."""

    def __init__(self, app: faust.App, log: MemoryLog, queue: Any) -> None:
        self.app = app
        self.log = log
        self.queue = queue
        self.taken: list[tuple[int, int]] = []
        self.ebb_calls = 0
        self.hold_at_ebb: int | None = None  # which record's on_message waits there
        self.ebb = asyncio.Event()

    async def wait_until_producer_ebb(self) -> None:
        """Where ``on_message`` waits for the producer's buffer before its put."""
        self.ebb_calls += 1
        if self.ebb_calls - 1 == self.hold_at_ebb:
            await self.ebb.wait()

    def take(self, count: int) -> None:
        """The agent takes ``count`` events from the buffer (wakes a blocked put)."""
        for _ in range(count):
            message = self.queue.get_nowait().message
            self.taken.append((message.partition, message.offset))

    def put_blocked(self) -> bool:
        return any(not putter.done() for putter in self.queue._putters)

    async def until(self, condition: Callable[[], bool]) -> None:
        for _ in range(STEPS):
            if condition():
                return
            await asyncio.sleep(0)
        raise AssertionError(f"the drain loop never reached {condition!r}")

    async def take_the_rest(self) -> None:
        """Run the agent (awaiting ``get`` as a stream does, which also lets Faust
        fetch again from partitions it paused while their buffer was under pressure)
        until the drain loop finds nothing more to fetch."""

        async def agent() -> None:
            while True:
                message = (await self.queue.get()).message
                self.taken.append((message.partition, message.offset))

        running = asyncio.create_task(agent())
        try:
            await self.until(lambda: self.queue.empty() and self.log.empty_fetches >= 3)
        finally:
            running.cancel()
            await asyncio.gather(running, return_exceptions=True)

    def delivered(self) -> Counter[tuple[int, int]]:
        return Counter(self.taken)

    def expected(self) -> Counter[tuple[int, int]]:
        return Counter(
            (tp.partition, offset)
            for tp, records in self.log.records.items()
            for offset in range(len(records))
        )


@pytest.fixture
async def worker(tmp_path: Path) -> AsyncIterator[Worker]:
    app = faust.App(
        "reread-order",
        broker="kafka://127.0.0.1:1",  # never connected
        store="memory://",
        datadir=str(tmp_path),
        autodiscover=False,
        stream_buffer_maxsize=BUFFER,
    )
    install_lossless_resume(app)
    log = MemoryLog([P0, P1])
    worker = Worker(app, log, None)
    producer: Any = app.producer
    producer.buffer.wait_until_ebb = worker.wait_until_producer_ebb
    topic = app.topic(TOPIC, key_serializer="raw", value_serializer="raw", partitions=2)
    stream_channel: Any = topic.clone(is_iterator=True)
    conductor: Any = app.topics
    conductor.add(stream_channel)
    await conductor._update_indices()
    await conductor.on_partitions_assigned({P0, P1})
    consumer: Any = app.consumer
    consumer._thread = log
    consumer.resume_partitions({P0, P1})
    app.flow_control.resume()  # as recovery does before the streams run
    consumer.resume_flow()
    fetcher: Any = app._fetcher
    worker.queue = stream_channel.queue
    drain = asyncio.create_task(consumer._drain_messages(fetcher))
    try:
        yield worker
    finally:
        fetcher._stopped.set()
        drain.cancel()
        await asyncio.gather(drain, return_exceptions=True)


async def test_a_put_blocked_on_a_full_buffer_when_flow_resumes_is_read_again(
    worker: Worker,
) -> None:
    worker.log.append(P0, 10)
    await worker.until(worker.put_blocked)  # buffer 0-3, the put of 4 waits
    worker.take(2)  # 0 and 1 reach the agent; the puts of 4 and 5 go through
    await worker.until(worker.put_blocked)  # buffer 2-5, the put of 6 waits

    worker.app.flow_control.resume()  # empties 2-5 and cancels the put of 6
    await worker.take_the_rest()

    assert worker.delivered() == worker.expected()
    assert worker.taken == [(0, offset) for offset in range(10)]  # and in order


async def test_a_put_woken_just_before_flow_resumes_completes_after_the_seek(
    worker: Worker, caplog: pytest.LogCaptureFixture
) -> None:
    worker.log.append(P0, 10)
    await worker.until(worker.put_blocked)  # buffer 0-3, the put of 4 waits
    worker.take(1)  # wakes the put of 4, which has not run yet
    assert not worker.put_blocked()

    with caplog.at_level(logging.INFO, logger="streams.patches.flow"):
        worker.app.flow_control.resume()  # empties 1-3; the put of 4 completes after it
    await worker.take_the_rest()

    # The put of 4 lands after the clear, ahead of the re-read 1-3: it is discarded
    # there and 4 comes again with the re-read, in its place.
    assert any("record 4 of" in m and "read again from offset 1" in m for m in caplog.messages), (
        f"expected the note on the discarded put, found {caplog.messages}"
    )

    assert worker.delivered() == worker.expected()
    assert worker.taken == [(0, offset) for offset in range(10)]  # and in order
    # The re-read passes over 4 without Faust taking it for a gap, which would count
    # as acked and let a commit pass 4 before the agent has handled it.
    consumer: Any = worker.app.consumer
    assert not consumer._gap[P0]


async def test_a_blocked_put_of_a_partition_with_nothing_buffered_is_read_again(
    worker: Worker,
) -> None:
    worker.log.append(P0, BUFFER)
    await worker.until(lambda: worker.queue.full() and worker.log.empty_fetches > 0)
    worker.log.append(P1, 3)
    await worker.until(worker.put_blocked)  # buffer holds P0 0-3; P1 0 waits

    worker.app.flow_control.resume()
    await worker.take_the_rest()

    assert worker.delivered() == worker.expected()


async def test_events_buffered_while_the_drain_loop_waits_for_records_are_read_again(
    worker: Worker,
) -> None:
    worker.log.append(P0, 3)
    worker.log.append(P1, 1)
    await worker.until(lambda: worker.queue.full() and worker.log.empty_fetches > 0)

    worker.app.flow_control.resume()  # nothing in flight: only the buffer is dropped
    await worker.take_the_rest()

    assert worker.delivered() == worker.expected()


async def test_a_record_still_on_its_way_to_the_buffer_when_flow_resumes_is_not_read_twice(
    worker: Worker,
) -> None:
    worker.hold_at_ebb = 4  # the record at offset 4 waits for the producer's buffer
    worker.log.append(P0, 10)
    await worker.until(lambda: worker.ebb_calls == 5)
    worker.take(2)  # buffer 2-3

    worker.app.flow_control.resume()  # empties 2-3; 4 is put after the clear
    worker.ebb.set()
    await worker.take_the_rest()

    assert worker.delivered() == worker.expected()
    assert worker.taken == [(0, offset) for offset in range(10)]  # and in order


async def test_faust_seeking_to_committed_offsets_after_a_resume_reads_all_from_there(
    worker: Worker,
) -> None:
    worker.log.append(P0, BUFFER)
    await worker.until(lambda: worker.queue.full() and worker.log.empty_fetches > 0)
    worker.take(2)  # buffer 2-3; the agent handled 0 and 1, only 0 is committed
    worker.log.committed = {P0: 1}
    worker.log.fetches.clear()
    await worker.until(lambda: worker.log.fetch_held)

    worker.app.flow_control.resume()  # asks for 2-3 to be read again
    consumer: Any = worker.app.consumer
    await consumer.perform_seek()  # as recovery does, but after the resume
    handed_before_the_seek = len(worker.taken)
    worker.log.fetches.set()
    await worker.take_the_rest()

    # The re-read never moves a partition past where Faust's seek put it.
    after_the_seek = sorted(offset for _, offset in worker.taken[handed_before_the_seek:])
    assert after_the_seek == [1, 2, 3]
