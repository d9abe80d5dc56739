"""What a flow-control resume drops, and which records its re-read hands over again."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from faust.types import TP

from streams.app import create_app
from streams.patches import PatchError, check
from streams.patches.flow import Reread, Rereads, dropped_by_resume
from streams.settings import Settings

TOUCHPOINTS_0 = TP("touchpoints", 0)
TOUCHPOINTS_1 = TP("touchpoints", 1)
TIMERS_0 = TP("timers", 0)
ASSIGNED = {TOUCHPOINTS_0, TOUCHPOINTS_1, TIMERS_0}


def message(tp: TP, offset: int, generation: int = 7) -> SimpleNamespace:
    return SimpleNamespace(tp=tp, offset=offset, generation_id=generation)


def test_each_partition_goes_back_to_its_earliest_buffered_offset() -> None:
    buffered = [
        message(TOUCHPOINTS_0, 12),
        message(TOUCHPOINTS_0, 10),
        message(TOUCHPOINTS_0, 11),
        message(TIMERS_0, 0),
        message(TOUCHPOINTS_1, 4),
    ]
    assert dropped_by_resume(buffered, None, False, 7, ASSIGNED) == {
        TOUCHPOINTS_0: Reread(10, frozenset({10, 11, 12}), 12),
        TIMERS_0: Reread(0, frozenset({0}), 0),
        TOUCHPOINTS_1: Reread(4, frozenset({4}), 4),
    }


def test_events_of_an_earlier_assignment_or_of_partitions_gone_elsewhere_are_left_dropped() -> None:
    buffered = [
        message(TOUCHPOINTS_0, 3, generation=6),  # read before the last rebalance
        message(TOUCHPOINTS_1, 9),  # this partition now belongs to another worker
        message(TOUCHPOINTS_0, 5),
    ]
    assert dropped_by_resume(buffered, None, False, 7, {TOUCHPOINTS_0}) == {
        TOUCHPOINTS_0: Reread(5, frozenset({5}), 5)
    }
    assert dropped_by_resume([], None, False, 7, {TOUCHPOINTS_0}) == {}
    stale = message(TOUCHPOINTS_0, 8, generation=6)
    assert dropped_by_resume([], stale, True, 7, {TOUCHPOINTS_0}) == {}


def test_the_record_whose_put_the_resume_cancels_is_read_again() -> None:
    buffered = [message(TOUCHPOINTS_0, 2), message(TOUCHPOINTS_0, 3)]
    in_flight = message(TOUCHPOINTS_0, 4)
    assert dropped_by_resume(buffered, in_flight, True, 7, ASSIGNED) == {
        TOUCHPOINTS_0: Reread(2, frozenset({2, 3, 4}), 4)
    }
    # Its partition had nothing buffered: it alone is read again.
    assert dropped_by_resume([], message(TOUCHPOINTS_1, 0), True, 7, ASSIGNED) == {
        TOUCHPOINTS_1: Reread(0, frozenset({0}), 0)
    }


def test_a_record_still_on_its_way_into_a_buffer_is_not_read_again() -> None:
    buffered = [message(TOUCHPOINTS_0, 2), message(TOUCHPOINTS_0, 3)]
    reread = dropped_by_resume(buffered, message(TOUCHPOINTS_0, 4), False, 7, ASSIGNED)
    assert reread == {TOUCHPOINTS_0: Reread(2, frozenset({2, 3}), 4)}
    admitted = [o for o in range(2, 7) if reread[TOUCHPOINTS_0].admits(o)]
    assert admitted == [2, 3, 5, 6]
    # Nothing of its own partition was dropped: no re-read at all.
    assert dropped_by_resume([], message(TOUCHPOINTS_0, 4), False, 7, ASSIGNED) == {}


def test_an_applied_re_read_lets_through_only_the_dropped_records_then_ends() -> None:
    rereads = Rereads()
    rereads.request({TOUCHPOINTS_0: Reread(2, frozenset({2, 3}), 4)}, generation=7)
    rereads.applied, rereads.pending = rereads.pending, {}  # what seek does once seeked
    handed = [o for o in (2, 3, 4, 5, 6) if rereads.admits(TOUCHPOINTS_0, o)]
    assert handed == [2, 3, 5, 6]
    assert rereads.applied == {}
    assert rereads.admits(TOUCHPOINTS_1, 0)


def test_a_second_resume_before_the_first_re_read_is_seeked_keeps_both() -> None:
    rereads = Rereads()
    rereads.request({TOUCHPOINTS_0: Reread(5, frozenset({5, 6}), 7)}, generation=7)
    rereads.request({TOUCHPOINTS_0: Reread(9, frozenset({9}), 9)}, generation=7)
    assert rereads.pending == {TOUCHPOINTS_0: Reread(5, frozenset({5, 6, 9}), 9)}


def test_a_second_resume_during_a_re_read_keeps_what_the_first_still_misses() -> None:
    rereads = Rereads()
    rereads.request({TOUCHPOINTS_0: Reread(5, frozenset({5, 6, 7, 9}), 9)}, generation=7)
    rereads.applied, rereads.pending = rereads.pending, {}
    assert rereads.admits(TOUCHPOINTS_0, 5)
    assert rereads.admits(TOUCHPOINTS_0, 6)
    # 5 and 6 were buffered again and dropped again; 7 and 9 were not read yet.
    rereads.request({TOUCHPOINTS_0: Reread(5, frozenset({5, 6}), 6)}, generation=7)
    merged = rereads.pending[TOUCHPOINTS_0]
    assert merged == Reread(5, frozenset({5, 6, 7, 9}), 9)
    assert [o for o in range(5, 11) if merged.admits(o)] == [5, 6, 7, 9, 10]


def test_a_new_generation_forgets_every_re_read() -> None:
    rereads = Rereads()
    rereads.request({TOUCHPOINTS_0: Reread(5, frozenset({5}), 5)}, generation=7)
    rereads.request({TOUCHPOINTS_1: Reread(1, frozenset({1}), 1)}, generation=8)
    assert rereads.pending == {TOUCHPOINTS_1: Reread(1, frozenset({1}), 1)}


def test_a_worker_whose_drain_loop_would_not_re_read_does_not_start(tmp_path: Path) -> None:
    warroom = create_app(Settings(app_id="reread-check", data_dir=tmp_path / "w", web_port=16067))
    transport: Any = warroom.app.transport
    transport.Consumer = transport.Consumer.__mro__[1]  # the consumer before this patch
    with pytest.raises(PatchError, match="lossless_resume is not installed"):
        check(warroom.app, exactly_once=True)


async def test_a_seek_that_fails_keeps_its_re_read_for_the_next_attempt() -> None:
    async def call_thread(*_: Any) -> Any:
        raise ConnectionError("consumer thread gone")

    thread = SimpleNamespace(call_thread=call_thread, _ensure_consumer=lambda: None)
    consumer = SimpleNamespace(
        app=SimpleNamespace(consumer_generation_id=7), _thread=thread, _read_offset={}
    )
    rereads = Rereads()
    rereads.request({TOUCHPOINTS_0: Reread(5, frozenset({5}), 5)}, generation=7)
    with pytest.raises(ConnectionError):
        await rereads.seek(consumer)
    assert rereads.pending == {TOUCHPOINTS_0: Reread(5, frozenset({5}), 5)}
    assert consumer._read_offset == {}


def test_faust_seeking_to_committed_offsets_supersedes_the_source_re_reads() -> None:
    rereads = Rereads()
    rereads.request(
        {TOUCHPOINTS_0: Reread(5, frozenset({5}), 5), TIMERS_0: Reread(2, frozenset({2}), 2)},
        generation=7,
    )
    rereads.applied = {TOUCHPOINTS_1: Reread(3, frozenset({3}), 8)}
    changelog = TP("warroom-customer-state-changelog", 0)
    rereads.pending[changelog] = Reread(40, frozenset({40}), 40)
    rereads.superseded({changelog.topic})
    assert rereads.pending == {changelog: Reread(40, frozenset({40}), 40)}
    assert rereads.applied == {}


def test_records_below_a_re_read_come_from_another_seek_and_pass() -> None:
    reread = Reread(5, frozenset({5, 6}), 8)
    assert [o for o in range(2, 11) if reread.admits(o)] == [2, 3, 4, 5, 6, 9, 10]
