"""Committed offsets pass transaction markers and aborted records, never a delivered one.

A producer that writes one record per transaction (a chat connector replica sending a
lone request) leaves a commit marker after each record: offsets go record, marker,
record, marker. Markers and aborted records take offsets but are never delivered to a
read_committed consumer, so the worker sees a one-offset hole after every record. A
commit must count such holes as done (else each commit moves about one record per
partition and the group takes minutes to commit a backlog), and must never count a
record that was delivered but not yet acknowledged (else a crash loses it).

The worker's own consumer (every Warroom patch applied) runs Faust's drain loop over a
log held in memory whose offsets have the holes a transactional producer leaves; the
records it delivers are acknowledged as an agent would, in the order each test chooses.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import pytest
from aiokafka.structs import ConsumerRecord
from faust.types import TP

from streams.app import create_app
from streams.parts import Warroom
from streams.patches.flow import Reread, rereads_of
from streams.settings import Settings

SOURCE = "tm.touchpoints"
TPX = TP(SOURCE, 0)


class MarkedLog:
    """Faust's consumer thread over one partition whose records sit at given offsets
    (the offsets in between are markers or aborted records: never delivered)."""

    def __init__(self, offsets: Iterable[int], committed: int | None) -> None:
        self.offsets = sorted(offsets)
        self.committed = committed
        self.position = 0

    async def getmany(
        self,
        active_partitions: set[TP] | None,
        timeout: float,  # noqa: ASYNC109 - Faust's signature
    ) -> dict[TP, list[ConsumerRecord[bytes, bytes]]]:
        await asyncio.sleep(0)
        records = [record(o) for o in self.offsets if o >= self.position]
        if not records:
            return {}
        self.position = records[-1].offset + 1
        return {TPX: records}

    async def call_thread(self, fun: Callable[..., Awaitable[Any]], *args: Any) -> Any:
        return await fun(*args)

    def _ensure_consumer(self) -> MarkedLog:
        return self

    def highwater(self, tp: TP) -> int:
        return self.offsets[-1] + 2 if self.offsets else 0

    async def seek_to_committed(self) -> dict[TP, int]:
        if self.committed is None:
            self.position = 0
            return {}
        self.position = self.committed
        return {TPX: self.committed}

    def seek(self, tp: TP, offset: int) -> None:
        self.position = offset

    def assignment(self) -> set[TP]:
        return {TPX}


def record(offset: int) -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord(
        topic=SOURCE,
        partition=0,
        offset=offset,
        timestamp=1_700_000_000_000,
        timestamp_type=0,
        key=b"acct",
        value=b"touchpoint",
        checksum=None,
        serialized_key_size=4,
        serialized_value_size=10,
        headers=(),
    )


@pytest.fixture
async def warroom(tmp_path: Path) -> AsyncIterator[Warroom]:
    settings = Settings(
        app_id="transaction-markers",
        data_dir=tmp_path / "w",
        web_port=16068,
        topic_prefix="tm.",
        partitions=1,
    )
    made = create_app(settings)
    assert made.settings.topic("touchpoints") == SOURCE
    yield made


async def deliver(
    warroom: Warroom,
    offsets: list[int],
    committed: int | None,
    after_seek: Callable[[Any], None] | None = None,
) -> dict[int, Any]:
    """Seek to ``committed`` as a worker does after its assignment (then call
    ``after_seek`` with the consumer), run Faust's drain loop until every record is
    delivered, and return the delivered messages by offset."""
    app: Any = warroom.app
    consumer: Any = app.consumer
    app.topics._acking_topics.add(SOURCE)
    consumer._thread = MarkedLog(offsets, committed)
    delivered: dict[int, Any] = {}
    everything = asyncio.Event()

    async def on_message(message: Any) -> None:
        message.tracked = True  # handed over to the agent
        message.incref()
        delivered[message.offset] = message
        if len(delivered) == len(offsets):
            everything.set()

    consumer.callback = on_message
    await consumer.perform_seek()
    if after_seek is not None:
        after_seek(consumer)
    consumer.resume_partitions({TPX})
    consumer.resume_flow()
    fetcher: Any = app._fetcher
    drain = asyncio.create_task(consumer._drain_messages(fetcher))
    try:
        await asyncio.wait_for(everything.wait(), 10)
    finally:
        fetcher._stopped.set()
        drain.cancel()
        await asyncio.gather(drain, return_exceptions=True)
    assert sorted(delivered) == sorted(offsets), f"expected {offsets} delivered, found {delivered}"
    return delivered


def ack(warroom: Warroom, messages: Mapping[int, Any], offsets: Iterable[int]) -> None:
    consumer: Any = warroom.app.consumer
    for offset in offsets:
        messages[offset].ack(consumer)


def new_offset(warroom: Warroom) -> int | None:
    consumer: Any = warroom.app.consumer
    found: int | None = consumer._new_offset(TPX)
    return found


@pytest.mark.parametrize(
    ("records", "committed", "expected"),
    [
        ([10, 12, 14], 10, 15),  # record, marker, record, marker, record
        ([0, 2, 4], None, 5),  # never committed: the first marker follows offset 0
        ([12, 14], 11, 15),  # the committed offset is a marker
        ([10, 17], 10, 18),  # 11-15 an aborted transaction, 16 its marker
        (list(range(0, 200, 2)), None, 199),  # a backlog: one commit takes all of it
    ],
)
async def test_a_commit_passes_every_marker_below_acknowledged_records(
    warroom: Warroom, records: list[int], committed: int | None, expected: int
) -> None:
    messages = await deliver(warroom, records, committed)
    ack(warroom, messages, records)

    found = new_offset(warroom)

    assert found == expected, (
        f"records at {records[:6]}{'...' if len(records) > 6 else ''} all acknowledged, "
        f"committed offset {committed}: expected a commit at {expected} (past every marker "
        f"in between), found {found}"
    )


async def test_a_delivered_record_not_yet_acknowledged_is_never_committed_past(
    warroom: Warroom,
) -> None:
    messages = await deliver(warroom, [10, 12, 14], 10)
    ack(warroom, messages, [10, 14])  # 12 is still with the agent

    found = new_offset(warroom)

    assert found == 12, (
        f"records 10 and 14 acknowledged, 12 delivered and not: expected a commit at 12 "
        f"(past the marker at 11, not past record 12), found {found}"
    )


async def test_the_record_at_the_committed_offset_must_be_acknowledged_first(
    warroom: Warroom,
) -> None:
    messages = await deliver(warroom, [10, 11], 10)
    ack(warroom, messages, [11])  # 10 is still with the agent

    found = new_offset(warroom)

    assert found is None, (
        f"committed offset 10, record 10 delivered and not acknowledged, 11 acknowledged: "
        f"expected no commit, found one at {found}"
    )


async def test_holes_cover_only_offsets_never_delivered(warroom: Warroom) -> None:
    await deliver(warroom, [10, 12, 14, 20], 10)
    consumer: Any = warroom.app.consumer

    holes = sorted(
        o for interval in consumer._gap[TPX] for o in range(interval.begin, interval.end)
    )

    assert holes == [11, 13, 15, 16, 17, 18, 19], (
        f"records delivered at 10, 12, 14 and 20: expected holes at 11, 13 and 15-19 only, "
        f"found {holes}"
    )


async def test_acknowledgements_left_after_a_commit_commit_next_time(warroom: Warroom) -> None:
    messages = await deliver(warroom, [10, 12, 14, 16], 10)
    consumer: Any = warroom.app.consumer
    ack(warroom, messages, [10, 12])
    first = new_offset(warroom)
    assert first == 14, f"records 10 and 12 acknowledged: expected a commit at 14, found {first}"
    consumer._committed_offset[TPX] = first  # as the commit does
    ack(warroom, messages, [14, 16])

    second = new_offset(warroom)

    assert second == 17, (
        f"committed 14, records 14 and 16 acknowledged: expected a commit at 17, found {second}"
    )


@pytest.mark.parametrize("committed", [None, 0])
async def test_the_first_record_read_from_the_start_must_be_acknowledged_first(
    warroom: Warroom, committed: int | None
) -> None:
    messages = await deliver(warroom, [0, 1, 3], committed)
    ack(warroom, messages, [1, 3])  # 0 is still with the agent

    found = new_offset(warroom)

    assert found is None, (
        f"committed offset {committed}, record 0 delivered and not acknowledged, 1 and 3 "
        f"acknowledged: expected no commit, found one at {found}"
    )


def reread_requested(dropped: list[int]) -> Callable[[Any], None]:
    """What the end of a recovery does when a record read *before* Faust's seek to the
    committed offsets is still buffered: flow control drops it and asks for it again."""

    def request(consumer: Any) -> None:
        rereads_of(consumer).request(
            {TPX: Reread(min(dropped), frozenset(dropped), max(dropped))},
            consumer.app.consumer_generation_id,
        )

    return request


async def test_a_reread_after_the_seek_to_a_committed_marker_lets_the_commit_pass_it(
    warroom: Warroom,
) -> None:
    # Committed at 1, a commit marker; the record at 2 was read before the seek to the
    # committed offsets finished and dropped at the resume that ends the recovery.
    messages = await deliver(warroom, [2], 1, after_seek=reread_requested([2]))
    ack(warroom, messages, [2])

    found = new_offset(warroom)

    assert found == 3, (
        f"committed offset 1 (a marker), record 2 read again and acknowledged: expected a "
        f"commit at 3, found {found}: the partition would never commit again"
    )


async def test_a_reread_never_seeks_past_records_not_yet_read_since_the_seek(
    warroom: Warroom,
) -> None:
    # Committed at 1 (a record not read yet since the seek); a record at 2, read before
    # the seek, dropped: reading again from 2 would skip record 1 for good.
    messages = await deliver(warroom, [1, 2], 1, after_seek=reread_requested([2]))
    ack(warroom, messages, [1, 2])

    found = new_offset(warroom)

    assert found == 3, f"records 1 and 2 acknowledged: expected a commit at 3, found {found}"
