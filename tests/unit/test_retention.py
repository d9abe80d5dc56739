"""Bounded customer state: the byte budget and expiry."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson
from hypothesis import given
from hypothesis import strategies as st

from engine.memories import JourneyMemory, RuleMemory
from engine.retention import expired, fit_state
from engine.state import CustomerState

NOW = datetime(2026, 12, 1, tzinfo=UTC)


def size(state: CustomerState) -> int:
    return len(orjson.dumps(state.to_dict()))


def entries_from(start: int, count: int) -> list[list[object]]:
    # A window's condition memory: a time-ordered list of [µs, amount, event id].
    return [[start + i, 1.0, f"e{start + i}"] for i in range(count)]


def window_memory(entries: int, start: int = 0) -> RuleMemory:
    return RuleMemory(entries_from(start, entries), None, 1)


def test_a_state_within_budget_is_left_alone() -> None:
    state = CustomerState("c", rule_memories={"r": window_memory(10)})
    fitted = fit_state(state, 10_000, size)
    assert fitted.state is state and fitted.entries_dropped == 0


def test_oldest_window_entries_go_first_until_the_state_fits() -> None:
    state = CustomerState(
        "c", rule_memories={"big": window_memory(4000), "small": window_memory(3)}
    )
    budget = 20_000
    assert size(state) > budget
    fitted = fit_state(state, budget, size)
    assert fitted.size == size(fitted.state) <= budget
    assert fitted.entries_dropped > 0 and fitted.memories_dropped == 0
    kept = fitted.state.rule_memories["big"].condition
    # what is kept is the newest entries, still in order
    assert [e[0] for e in kept] == list(range(4000 - len(kept), 4000))


def test_nested_memories_of_all_and_any_are_trimmed_too() -> None:
    nested = RuleMemory([entries_from(0, 2000), entries_from(10_000, 2000)], None, 1)
    state = CustomerState("c", rule_memories={"both": nested})
    fitted = fit_state(state, 30_000, size)
    assert fitted.size <= 30_000
    first, second = fitted.state.rule_memories["both"].condition
    assert first and second and first[-1][0] == 1999 and second[-1][0] == 11_999


def test_memories_that_only_look_like_entries_are_not_cut() -> None:
    # an all: of two streaks keeps one memory per part; cutting it would misalign them
    parts = [[3, ["a", "b", "c"], False], [2, ["d", "e"], False]]
    state = CustomerState("c", rule_memories={"all": RuleMemory(parts, None, 1)})
    fitted = fit_state(state, 10, size)
    assert fitted.entries_dropped == 0 and fitted.memories_dropped == 1


def test_memories_without_entries_are_dropped_whole_as_a_last_resort() -> None:
    state = CustomerState(
        "c", rule_memories={"streak": RuleMemory([5, ["x" * 1000] * 50, False], None, 1)}
    )
    fitted = fit_state(state, 2_000, size)
    assert fitted.memories_dropped == 1 and "streak" not in fitted.state.rule_memories


def test_windows_inside_journey_memories_are_trimmed_too() -> None:
    # a journey whose exit is a count keeps that window's entries in its memory
    inside = JourneyMemory("a", True, 0, 0, None, entries_from(0, 4000), None, None, 1, ())
    state = CustomerState("c", journey_memories={"trial": inside})
    fitted = fit_state(state, 20_000, size)
    assert fitted.size <= 20_000 and fitted.entries_dropped > 0 and fitted.memories_dropped == 0
    kept = fitted.state.journey_memories["trial"]
    assert kept.exit and kept.exit[-1][0] == 3999
    assert (kept.variant, kept.inside, kept.version) == ("a", True, 1)


def test_the_largest_memory_goes_first_whether_a_rule_s_or_a_journey_s() -> None:
    journey = JourneyMemory("a", True, 0, 0, None, [5, ["x" * 1000] * 50, False], None, None, 1, ())
    small = RuleMemory([1, ["y"], False], None, 1)
    state = CustomerState("c", rule_memories={"small": small}, journey_memories={"j": journey})
    fitted = fit_state(state, 2_000, size)
    assert fitted.memories_dropped == 1
    assert fitted.state.journey_memories == {} and fitted.state.rule_memories == {"small": small}


@given(st.integers(min_value=0, max_value=3000), st.integers(min_value=500, max_value=50_000))
def test_fitting_never_exceeds_the_budget_when_it_can_be_met(entries: int, budget: int) -> None:
    state = CustomerState("c", rule_memories={"r": window_memory(entries)})
    fitted = fit_state(state, budget, size)
    empty = size(CustomerState("c"))
    assert fitted.size <= budget or budget < empty


def test_a_customer_expires_after_the_ttl_of_event_time_silence() -> None:
    quiet = CustomerState("c", last_event_at=NOW - timedelta(days=401))
    recent = CustomerState("c", last_event_at=NOW - timedelta(days=399))
    assert expired(quiet, NOW, timedelta(days=400))
    assert not expired(recent, NOW, timedelta(days=400))
    assert not expired(CustomerState("c"), NOW, timedelta(days=400))
