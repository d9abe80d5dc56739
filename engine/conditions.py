"""Compiled conditions: what a rule checks, per customer, touchpoint by touchpoint.

Every condition is built once, when its bundle is loaded, and then stepped with
each touchpoint of a customer. ``step`` takes the condition's memory for that
customer (plain JSON-friendly values, ``None`` at first) and returns the new
memory and an :class:`Observation` when the condition holds at that moment. The
shapes of those memories are listed in ``engine/memories.py``.

Conditions that track several touchpoints hold at the touchpoint that
*completes* them (the third unanswered message, the count that reaches its
threshold, the last step of a sequence), so a rule built on them fires once per
occurrence rather than at every later touchpoint. Absence holds when its
deadline passes, whether a touchpoint or a timer notices it first.
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from operator import itemgetter
from typing import Any, Protocol

import re2
from re2 import _re2 as re2_engine
from schemas.models import TouchpointEvent

from .durations import format_duration
from .state import CustomerState

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MAX_PARTIAL_SEQUENCES = 16
"""Partial sequence matches kept per customer and rule (the newest win)."""
MAX_WINDOW_ENTRIES = 1000
"""Matching touchpoints kept per customer for a windowed sum, or a count that accepts late
touchpoints (the newest win; beyond this many in one window the aggregate undercounts)."""
MAX_EXPLAINED_EVENTS = 20


def micros(moment: datetime) -> int:
    delta = moment - EPOCH  # exact integer arithmetic, no timedelta division per call
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


@dataclass(frozen=True, slots=True)
class Observation:
    """Why a condition holds: (condition, observed value) pairs and the touchpoints involved."""

    matched: tuple[tuple[str, str], ...]
    event_ids: tuple[str, ...]


def merged(observations: Sequence[Observation]) -> Observation:
    """One observation for parts that all hold: their matches in order, and their
    touchpoints in order of first mention, each once."""
    if len(observations) == 1:
        return observations[0]
    matched: tuple[tuple[str, str], ...] = ()
    ids: list[str] = []
    for observation in observations:
        matched += observation.matched
        for event_id in observation.event_ids:
            if event_id not in ids:
                ids.append(event_id)
    return Observation(matched, tuple(ids))


Ranks = Callable[[str, str | None, str, float], int | None]
"""(score, owner rep, customer id, the customer's value) -> how many of the rep's other
customers score higher (equal values: the smaller customer id ranks first), or None when
the score's standings are unknown. The worker answers from the score leaders it read
last (streams.scoring_leaders), so a rank is as fresh as their publication."""


@dataclass(frozen=True, slots=True)
class Moment:
    """What a condition is evaluated against: a touchpoint, or a timer at ``at``."""

    state: CustomerState
    at: int
    """Event time in microseconds since the epoch (the touchpoint's, or the deadline's)."""
    event: TouchpointEvent | None = None
    ranks: Ranks | None = None
    """Where the customer stands among its rep's customers by a score (``rank``
    conditions); None where nobody can tell (such a condition does not hold)."""
    newest: int | None = None
    """The customer's newest touchpoint time (µs): ``state.last_event_at`` or ``at``,
    whichever is later, when the caller has worked it out already (once per touchpoint,
    not once per window condition); None: worked out from ``state`` where needed."""

    def newest_at(self) -> int:
        """The customer's newest touchpoint time (µs), ``at`` if later."""
        if self.newest is not None:
            return self.newest
        last = self.state.last_event_at
        return max(micros(last), self.at) if last is not None else self.at

    @property
    def at_datetime(self) -> datetime:
        return EPOCH + timedelta(microseconds=self.at)


class Condition(Protocol):
    @property
    def label(self) -> str: ...

    def step(self, memory: Any, moment: Moment) -> tuple[Any, Observation | None]: ...

    def deadline(self, memory: Any) -> int | None:
        """The next event time (µs) at which this condition may hold without a touchpoint."""
        ...

    def describe(self, memory: Any, moment: Moment) -> str:
        """Where this condition stands for the customer, in words."""
        ...


# --- predicates on one touchpoint -------------------------------------------------

Getter = Callable[[TouchpointEvent], Any]
Test = Callable[[Any], bool]


@dataclass(frozen=True, slots=True)
class FieldTest:
    label: str
    get: Getter
    test: Test
    field: str = ""
    """The touchpoint field tested (``kind``, ``attributes.plan``, ...); "" if unknown."""
    op: str = ""
    """The operator (``eq``, ``in``, ...); "" if unknown."""
    operand: Any = None
    """What the field is compared with, as the bundle gives it."""


@dataclass(frozen=True, slots=True)
class EventMatch:
    """Holds at a touchpoint whose fields pass every test."""

    tests: tuple[FieldTest, ...]
    label: str

    def matches(self, event: TouchpointEvent | None) -> bool:
        if event is None:
            return False
        for field_test in self.tests:  # noqa: SIM110 - a plain loop is faster on the hot path
            if not field_test.test(field_test.get(event)):
                return False
        return True

    def step(self, memory: Any, moment: Moment) -> tuple[Any, Observation | None]:
        event = moment.event
        if not self.matches(event):
            return None, None
        assert event is not None
        return None, Observation(
            tuple((t.label, _shown(t.get(event))) for t in self.tests), (event.event_id,)
        )

    def describe(self, memory: Any, moment: Moment) -> str:
        return f"holds at a touchpoint with {self.label}"

    def deadline(self, memory: Any) -> int | None:
        return None


def _shown(value: Any) -> str:
    if isinstance(value, float) and value == math.inf:
        return "never"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else f"{value:.2f}"
    return str(value)


# --- thresholds on state ----------------------------------------------------------

StateGetter = Callable[[CustomerState, int], Any]


@dataclass(frozen=True, slots=True)
class StateThreshold:
    """Holds while a feature of the customer's state passes its test."""

    feature: str
    get: StateGetter
    test: Test
    label: str

    def step(self, memory: Any, moment: Moment) -> tuple[Any, Observation | None]:
        value = self.get(moment.state, moment.at)
        # None: a value the customer does not have yet (a score never predicted).
        if value is None or not self.test(value):
            return None, None
        return None, Observation(((self.label, _shown(value)),), ())

    def describe(self, memory: Any, moment: Moment) -> str:
        value = self.get(moment.state, moment.at)
        verdict = "holds" if value is not None and self.test(value) else "does not hold"
        return f"{self.label}: {verdict} now ({self.feature} = {_shown(value)})"

    def deadline(self, memory: Any) -> int | None:
        return None


@dataclass(frozen=True, slots=True)
class RankCondition:
    """Holds while the customer is among its owner rep's ``top`` customers by ``score``."""

    score: str
    top: int
    label: str

    def _above(self, moment: Moment) -> tuple[int | None, str]:
        state = moment.state
        score = state.scores.get(self.score)
        if score is None:
            return None, f"no {self.score} score yet"
        if moment.ranks is None:
            return None, "standings unknown here"
        above = moment.ranks(self.score, state.owner_rep_id, state.customer_id, score.value)
        if above is None:
            return None, f"no standings by {self.score} published yet"
        return above, f"#{above + 1} of rep {state.owner_rep_id or '(unowned)'}"

    def step(self, memory: Any, moment: Moment) -> tuple[Any, Observation | None]:
        above, shown = self._above(moment)
        if above is None or above >= self.top:
            return None, None
        return None, Observation(((self.label, shown),), ())

    def describe(self, memory: Any, moment: Moment) -> str:
        above, shown = self._above(moment)
        verdict = "holds" if above is not None and above < self.top else "does not hold"
        return f"{self.label}: {verdict} now ({shown})"

    def deadline(self, memory: Any) -> int | None:
        return None


# --- windows ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WindowAggregate:
    """Count (or sum of a field) of matching touchpoints within a sliding event-time window.

    Holds at the matching touchpoint that brings the aggregate of a window to
    ``at_least``: the window ending at that touchpoint's time or, for a late
    touchpoint, one ending at a later touchpoint's time. Touchpoints may arrive out
    of order; one more than ``lateness`` older than the customer's newest
    touchpoint is not counted.
    """

    of: EventMatch
    within: int
    at_least: float
    value: Getter | None
    lateness: int
    label: str

    def step(self, memory: Any, moment: Moment) -> tuple[Any, Observation | None]:
        event = moment.event
        if not self.of.matches(event):
            return memory, None
        assert event is not None
        newest = moment.newest_at()
        if moment.at < newest - self.lateness:
            return memory, None
        amount = 1.0 if self.value is None else _number(self.value(event))
        entries: list[list[Any]] = list(memory or [])
        _insert(entries, [moment.at, amount, event.event_id])
        # Entries are kept in time order: the horizon cuts off a prefix.
        del entries[: bisect_left(entries, newest - self.within - self.lateness, key=_time)]
        if self.value is None and self.lateness == 0:
            # In order: the newest at_least + 1 tell whether the count just reached at_least.
            entries = entries[-(int(self.at_least) + 1) :]
        else:
            entries = entries[-MAX_WINDOW_ENTRIES:]
        # The window ending at this touchpoint, and, for a late one, every window
        # ending at a later touchpoint that it falls into.
        ends = [moment.at] + [e[0] for e in entries if moment.at < e[0] <= moment.at + self.within]
        for end in ends:
            total, ids = window_total(entries, end, self.within)
            if total >= self.at_least > total - amount:
                return entries, Observation(
                    ((self.label, _shown(total)),), tuple(ids[-MAX_EXPLAINED_EVENTS:])
                )
        return entries, None

    def describe(self, memory: Any, moment: Moment) -> str:
        total, _ = window_total(memory or [], moment.at, self.within)
        return (
            f"{self.label}: {_shown(total)} in the window ending now, needs {_shown(self.at_least)}"
        )

    def deadline(self, memory: Any) -> int | None:
        return None


def window_total(
    entries: Sequence[Sequence[Any]], end: int, within: int
) -> tuple[float, list[str]]:
    """Sum of amounts of entries with ``end - within <= time <= end``, and their ids;
    ``entries`` are in time order (as a window's memory keeps them), so only those in the
    window are visited, in the same order."""
    total = 0.0
    ids: list[str] = []
    low = bisect_left(entries, end - within, key=_time)
    high = bisect_right(entries, end, lo=low, key=_time)
    for _at, amount, event_id in entries[low:high]:
        total += amount
        ids.append(event_id)
    return total, ids


_time = itemgetter(0)


def _insert(entries: list[list[Any]], entry: list[Any]) -> None:
    index = len(entries)
    while index > 0 and entries[index - 1][0] > entry[0]:
        index -= 1
    entries.insert(index, entry)


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0.0
    return float(value)


# --- sequences, streaks, absence ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class Sequence_:
    """Holds when touchpoints matching ``steps`` arrive in order within ``within`` of the first."""

    steps: tuple[EventMatch, ...]
    within: int
    label: str

    def step(self, memory: Any, moment: Moment) -> tuple[Any, Observation | None]:
        event = moment.event
        if event is None:
            return memory, None
        partials: list[list[Any]] = [p for p in (memory or []) if moment.at - p[0] <= self.within]
        changed = len(partials) != len(memory or [])
        completed: list[Any] | None = None
        advanced: list[list[Any]] = []
        for start, next_step, ids in partials:
            if self.steps[next_step].matches(event):
                changed = True
                grown = [start, next_step + 1, [*ids, event.event_id]]
                if grown[1] == len(self.steps):
                    completed = completed or grown
                    continue
                advanced.append(grown)
            else:
                advanced.append([start, next_step, ids])
        if self.steps[0].matches(event):
            changed = True
            advanced.append([moment.at, 1, [event.event_id]])
        if not changed:
            return memory, None
        new_memory = advanced[-MAX_PARTIAL_SEQUENCES:] or None
        if completed is None:
            return new_memory, None
        elapsed = timedelta(microseconds=moment.at - completed[0])
        return new_memory, Observation(
            ((self.label, f"completed in {format_duration(elapsed)}"),), tuple(completed[2])
        )

    def describe(self, memory: Any, moment: Moment) -> str:
        live = [p for p in (memory or []) if moment.at - p[0] <= self.within]
        if not live:
            return f"{self.label}: no partial match; waits for ({self.steps[0].label})"
        start, next_step, ids = max(live, key=lambda p: p[1])
        left = format_duration(timedelta(microseconds=start + self.within - moment.at))
        return (
            f"{self.label}: {next_step} of {len(self.steps)} steps done ({', '.join(ids)}); "
            f"waits for ({self.steps[next_step].label}) for {left} more"
        )

    def deadline(self, memory: Any) -> int | None:
        return None


@dataclass(frozen=True, slots=True)
class Streak:
    """Holds when ``length`` touchpoints matching ``of`` arrive with none matching ``reset_by``.

    Holds once per streak: after it holds, it stays quiet until the streak is reset.
    """

    of: EventMatch
    reset_by: EventMatch
    length: int
    label: str

    def step(self, memory: Any, moment: Moment) -> tuple[Any, Observation | None]:
        event = moment.event
        if event is None:
            return memory, None
        if self.reset_by.matches(event):
            return None, None
        if not self.of.matches(event):
            return memory, None
        count, ids, fired = memory or (0, [], False)
        count += 1
        ids = [*ids, event.event_id][-self.length :]
        if fired or count < self.length:
            return [count, ids, fired], None
        return [count, ids, True], Observation(((self.label, str(count)),), tuple(ids))

    def describe(self, memory: Any, moment: Moment) -> str:
        count, _ids, fired = memory or (0, [], False)
        if fired:
            return f"{self.label}: held at {count}; quiet until ({self.reset_by.label})"
        return f"{self.label}: {count} of {self.length} so far"

    def deadline(self, memory: Any) -> int | None:
        return None


@dataclass(frozen=True, slots=True)
class Absence:
    """After a touchpoint matching ``after``, none matching ``missing`` within ``within``.

    Holds once, at the deadline: when a later touchpoint or a timer at or past
    the deadline notices that nothing came. A touchpoint that ends a wait (it
    matched ``missing``, or came after the deadline) starts the next wait if it
    also matches ``after``, so every refill or quote is watched.
    """

    after: EventMatch
    missing: EventMatch
    within: int
    label: str

    def step(self, memory: Any, moment: Moment) -> tuple[Any, Observation | None]:
        event = moment.event
        if memory is not None:
            _start, deadline, trigger = memory
            if moment.at > deadline:
                overdue = format_duration(timedelta(microseconds=self.within))
                observation = Observation(((self.label, f"nothing within {overdue}"),), (trigger,))
                return self._start(event, moment), observation
            if event is None or not self.missing.matches(event):
                return memory, None
            # The wait is over; the same touchpoint may start the next one (a refill).
        return self._start(event, moment), None

    def _start(self, event: TouchpointEvent | None, moment: Moment) -> list[Any] | None:
        if event is not None and self.after.matches(event):
            return [moment.at, moment.at + self.within, event.event_id]
        return None

    def describe(self, memory: Any, moment: Moment) -> str:
        if memory is None:
            return f"{self.label}: not waiting; starts at ({self.after.label})"
        _start, deadline, trigger = memory
        when = (EPOCH + timedelta(microseconds=deadline)).isoformat()
        return (
            f"{self.label}: waiting since {trigger}; holds after {when} "
            f"unless ({self.missing.label})"
        )

    def deadline(self, memory: Any) -> int | None:
        return None if memory is None else int(memory[1]) + 1


# --- all / any / not -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AllOf:
    parts: tuple[Condition, ...]
    label: str
    memoryless: bool = field(default=False, init=False, repr=False, compare=False)
    """Every part keeps no memory (touchpoint tests, thresholds, ``not`` of those): the
    parts are tried in order and the first that does not hold ends the step."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "memoryless", all(map(_memoryless, self.parts)))

    def step(self, memory: Any, moment: Moment) -> tuple[Any, Observation | None]:
        if memory is None and self.memoryless:
            # Each part returns None as its memory: only the observations matter.
            held: list[Observation] = []
            for part in self.parts:
                _, observation = part.step(None, moment)
                if observation is None:
                    return None, None
                held.append(observation)
            return None, merged(held)
        memories, observations = _step_all(self.parts, memory, moment)
        if any(o is None for o in observations):
            return memories, None
        return memories, merged(observations)  # type: ignore[arg-type]  # none is None

    def describe(self, memory: Any, moment: Moment) -> str:
        memories = memory or [None] * len(self.parts)
        parts = [p.describe(m, moment) for p, m in zip(self.parts, memories, strict=True)]
        return "all of: " + "; ".join(f"[{part}]" for part in parts)

    def deadline(self, memory: Any) -> int | None:
        return _earliest(self.parts, memory)


@dataclass(frozen=True, slots=True)
class AnyOf:
    parts: tuple[Condition, ...]
    label: str

    def step(self, memory: Any, moment: Moment) -> tuple[Any, Observation | None]:
        memories, observations = _step_all(self.parts, memory, moment)
        for observation in observations:
            if observation is not None:
                return memories, observation
        return memories, None

    def describe(self, memory: Any, moment: Moment) -> str:
        memories = memory or [None] * len(self.parts)
        parts = [p.describe(m, moment) for p, m in zip(self.parts, memories, strict=True)]
        return "any of: " + "; ".join(f"[{part}]" for part in parts)

    def deadline(self, memory: Any) -> int | None:
        return _earliest(self.parts, memory)


@dataclass(frozen=True, slots=True)
class Not:
    part: Condition
    label: str

    def step(self, memory: Any, moment: Moment) -> tuple[Any, Observation | None]:
        new_memory, observation = self.part.step(memory, moment)
        if observation is not None:
            return new_memory, None
        return new_memory, Observation(((self.label, "true"),), ())

    def describe(self, memory: Any, moment: Moment) -> str:
        return f"not [{self.part.describe(memory, moment)}]"

    def deadline(self, memory: Any) -> int | None:
        return self.part.deadline(memory)


def _memoryless(condition: Condition) -> bool:
    """Whether ``condition`` never keeps a memory (its step always returns None)."""
    if isinstance(condition, EventMatch | StateThreshold | RankCondition):
        return True
    if isinstance(condition, Not):
        return _memoryless(condition.part)
    if isinstance(condition, AllOf):
        return condition.memoryless
    return False


def _step_all(
    parts: Sequence[Condition], memory: Any, moment: Moment
) -> tuple[Any, list[Observation | None]]:
    old = memory or [None] * len(parts)
    memories: list[Any] = []
    observations: list[Observation | None] = []
    unchanged = True
    for part, part_memory in zip(parts, old, strict=True):
        new_memory, observation = part.step(part_memory, moment)
        unchanged = unchanged and new_memory is part_memory
        memories.append(new_memory)
        observations.append(observation)
    if unchanged:
        return memory, observations
    return (None if all(m is None for m in memories) else memories), observations


def _earliest(parts: Sequence[Condition], memory: Any) -> int | None:
    if memory is None:
        return None
    deadlines = [d for p, m in zip(parts, memory, strict=True) if (d := p.deadline(m)) is not None]
    return min(deadlines) if deadlines else None


# --- operators ------------------------------------------------------------------------


def compile_test(op: str, expected: Any) -> Test:
    """A test for one comparison operator; ``expected`` is already validated."""
    if op in ("eq", "ne") and isinstance(expected, str):
        # Text never equals a number or a flag: plain comparison is exact and fast.
        return (lambda a: a == expected) if op == "eq" else (lambda a: a != expected)
    if op == "eq":
        return lambda actual: same(actual, expected)
    if op == "ne":
        return lambda actual: not same(actual, expected)
    if op in ("gt", "gte", "lt", "lte"):
        # One closure per operator, the number check inlined: these run for every rule
        # stepped on every touchpoint (a number is an int or a float, never a flag).
        number = _NUMBER
        if op == "gt":
            return lambda a: isinstance(a, number) and a.__class__ is not bool and a > expected
        if op == "gte":
            return lambda a: isinstance(a, number) and a.__class__ is not bool and a >= expected
        if op == "lt":
            return lambda a: isinstance(a, number) and a.__class__ is not bool and a < expected
        return lambda a: isinstance(a, number) and a.__class__ is not bool and a <= expected
    if op in ("in", "not_in"):
        values = frozenset(v for v in expected if not isinstance(v, bool))
        flags = frozenset(v for v in expected if isinstance(v, bool))

        def member(actual: Any) -> bool:
            if isinstance(actual, bool):
                return actual in flags
            return actual in values

        if op == "in":
            return member
        return lambda actual: not member(actual)
    if op == "contains":
        needle = str(expected).casefold()
        return lambda actual: isinstance(actual, str) and needle in actual.casefold()
    if op == "matches":
        search = compile_pattern(expected)
        return lambda actual: isinstance(actual, str) and search(actual)
    raise ValueError(f"unknown operator {op!r}")


class PatternRefused(ValueError):
    """A ``matches`` pattern RE2 cannot run; the message is RE2's reason."""


_UNANCHORED = re2_engine.RE2.Anchor.UNANCHORED
_NO_MATCH = (-1, -1)


@dataclass(frozen=True, slots=True)
class _Search:
    """Whether an RE2 program is found anywhere in a text.

    Calls RE2's own matcher (``re2._re2``, the extension google-re2's ``re2`` module
    wraps) rather than ``re2.compile(...).search``: that wrapper maps byte offsets back
    to characters and builds a match object, five times the cost of the search itself
    on a short message, and a rule only needs yes or no.
    """

    program: Any

    def __call__(self, text: str) -> bool:
        data = text.encode("utf-8", "surrogatepass")
        return bool(self.program.Match(_UNANCHORED, data, 0, len(data))[0] != _NO_MATCH)


def compile_pattern(pattern: str) -> Callable[[str], bool]:
    """A ``matches`` pattern compiled by RE2, which runs in time linear in the text.

    Semantics kept from the rule language: found anywhere in the text (a search, not a
    match at the start), case matters unless the pattern says ``(?i)``, and characters
    (not bytes) are matched, since RE2 reads the pattern and the text as UTF-8. What RE2
    cannot express (backreferences, lookaround, ``(?x)``, ``\\Z``, ...) raises
    :class:`PatternRefused` with RE2's reason.
    """
    options = re2.Options()
    options.log_errors = False  # the reason is in the exception; nothing goes to stderr
    options.never_capture = True  # groups are never read: the search is cheaper without
    try:
        program = re2_engine.RE2(pattern.encode("utf-8"), options)
    except UnicodeEncodeError as exc:
        raise PatternRefused(f"not valid Unicode text: {exc.reason}") from None
    if not program.ok():
        reason = program.error()
        if isinstance(reason, bytes):
            reason = reason.decode("utf-8", "replace")
        raise PatternRefused(str(reason))
    return _Search(program)


def same(actual: Any, expected: Any) -> bool:
    """Equality where true is not 1 and false is not 0 (YAML and JSON keep them apart)."""
    if isinstance(actual, bool) or isinstance(expected, bool):
        return type(actual) is type(expected) and actual == expected
    return bool(actual == expected)


_NUMBER = (int, float)
