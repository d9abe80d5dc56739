"""Which buffered events must be read again when flow control empties the buffers."""

from __future__ import annotations

from types import SimpleNamespace

from faust.types import TP

from streams.patches.flow import earliest_buffered

TOUCHPOINTS_0 = TP("touchpoints", 0)
TOUCHPOINTS_1 = TP("touchpoints", 1)
TIMERS_0 = TP("timers", 0)


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
    assigned = {TOUCHPOINTS_0, TOUCHPOINTS_1, TIMERS_0}
    assert earliest_buffered(buffered, 7, assigned) == {
        TOUCHPOINTS_0: 10,
        TIMERS_0: 0,
        TOUCHPOINTS_1: 4,
    }


def test_events_of_an_earlier_assignment_or_of_partitions_gone_elsewhere_are_left_dropped() -> None:
    buffered = [
        message(TOUCHPOINTS_0, 3, generation=6),  # read before the last rebalance
        message(TOUCHPOINTS_1, 9),  # this partition now belongs to another worker
        message(TOUCHPOINTS_0, 5),
    ]
    assert earliest_buffered(buffered, 7, {TOUCHPOINTS_0}) == {TOUCHPOINTS_0: 5}
    assert earliest_buffered([], 7, {TOUCHPOINTS_0}) == {}
