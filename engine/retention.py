"""Keeping each customer's state bounded: a byte budget, and expiry of quiet customers.

State is written to a changelog topic, and the broker refuses records above its
``message.max.bytes``. A customer whose state grows past the budget (long windows
over busy channels, many partial sequences) loses its oldest window entries
first, half at a time, until the state fits; whole rule memories
go only if that is not enough. Nothing here raises: a state that cannot shrink
further is returned as it is, and the caller counts what was dropped.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, TypeVar

from .memories import JourneyMemory, RuleMemory
from .state import CustomerState

MAX_KIND_COUNTS = 256
"""Distinct touchpoint kinds counted per customer; further kinds count under OTHER_KINDS."""
OTHER_KINDS = "(other)"


@dataclass(frozen=True, slots=True)
class Fitted:
    state: CustomerState
    size: int
    entries_dropped: int = 0
    memories_dropped: int = 0


def fit_state(state: CustomerState, budget: int, measure: Callable[[CustomerState], int]) -> Fitted:
    """``state`` cut down until ``measure(state) <= budget`` (or nothing is left to cut)."""
    size = measure(state)
    entries = 0
    while size > budget:
        rule_memories, from_rules = _trim_memories(state.rule_memories, _trim_rule)
        journey_memories, from_journeys = _trim_memories(state.journey_memories, _trim_journey)
        if not from_rules + from_journeys:
            break
        entries += from_rules + from_journeys
        state = replace(state, rule_memories=rule_memories, journey_memories=journey_memories)
        size = measure(state)
    memories = 0
    while size > budget and (state.rule_memories or state.journey_memories):
        state = _without_largest_memory(state)
        memories += 1
        size = measure(state)
    return Fitted(state, size, entries, memories)


def _without_largest_memory(state: CustomerState) -> CustomerState:
    """``state`` without its largest rule or journey memory (by the length of its repr)."""
    sizes = [(len(repr(m)), False, k) for k, m in state.rule_memories.items()]
    sizes += [(len(repr(m)), True, k) for k, m in state.journey_memories.items()]
    _size, journey, largest = max(sizes, key=lambda item: item[0])
    if journey:
        kept = {k: m for k, m in state.journey_memories.items() if k != largest}
        return replace(state, journey_memories=kept)
    return replace(
        state, rule_memories={k: m for k, m in state.rule_memories.items() if k != largest}
    )


_Memory = TypeVar("_Memory", RuleMemory, JourneyMemory)


def _trim_memories(
    memories: Mapping[str, _Memory], trim: Callable[[_Memory], tuple[_Memory, int]]
) -> tuple[dict[str, _Memory], int]:
    trimmed: dict[str, _Memory] = {}
    total = 0
    for key, memory in memories.items():
        trimmed[key], dropped = trim(memory)
        total += dropped
    return trimmed, total


def _trim_rule(memory: RuleMemory) -> tuple[RuleMemory, int]:
    condition, dropped = _trim(memory.condition)
    return (replace(memory, condition=condition) if dropped else memory), dropped


def _trim_journey(memory: JourneyMemory) -> tuple[JourneyMemory, int]:
    entry, from_entry = _trim(memory.entry)
    exit_, from_exit = _trim(memory.exit)
    conversion, from_conversion = _trim(memory.conversion)
    when, from_when = _trim(memory.when)
    dropped = from_entry + from_exit + from_conversion + from_when
    if not dropped:
        return memory, 0
    trimmed = replace(memory, entry=entry, exit=exit_, conversion=conversion, when=when)
    return trimmed, dropped


def _is_entries(value: list[Any] | tuple[Any, ...]) -> bool:
    """A window's entries: every item ``[time µs, amount, event id]``."""
    return bool(value) and all(
        isinstance(item, list | tuple)
        and len(item) == 3
        and type(item[0]) is int
        and type(item[1]) is float
        and isinstance(item[2], str)
        for item in value
    )


def _trim(memory: Any) -> tuple[Any, int]:
    """Drop the oldest half of every window's entries inside ``memory``."""
    if isinstance(memory, list | tuple):
        if _is_entries(memory):
            ordered = sorted(memory, key=lambda item: item[0])
            drop = max(1, len(ordered) // 2)
            return type(memory)(ordered[drop:]), drop
        total = 0
        parts: list[Any] = []
        for part in memory:
            new_part, dropped = _trim(part)
            parts.append(new_part)
            total += dropped
        return type(memory)(parts), total
    if isinstance(memory, dict):
        total = 0
        out: dict[str, Any] = {}
        for key, part in memory.items():
            out[key], dropped = _trim(part)
            total += dropped
        return out, total
    return memory, 0


def expired(state: CustomerState, now: datetime, ttl: timedelta) -> bool:
    """True when the customer's newest touchpoint (event time) is more than ``ttl`` before
    ``now``; a customer never seen (no touchpoint time) never expires here."""
    newest = state.last_event_at
    return newest is not None and now - newest > ttl
