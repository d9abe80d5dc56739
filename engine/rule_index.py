"""Which rules and journeys a touchpoint can change: an index by touchpoint kind and direction.

Most rules look at one or two kinds of touchpoint. A rule whose condition can neither
hold nor change its memory on a touchpoint returns its memory unchanged and decides
nothing, so skipping it changes nothing either. :class:`IndexedRules` works out, when a
bundle is loaded, which touchpoints (by ``kind`` and ``direction``, and a timer) can make
each rule's condition hold or move, and hands :func:`engine.reducer.apply` only those
rules for each touchpoint. It is a tuple of all the rules, so everything else that walks
the rules (deadlines, explanations, clean-up of memories) sees them all.

How far a condition reaches (:class:`Reach`) is told apart for a customer with no
memory of the rule yet ("fresh") and one with a memory ("kept"): a streak under way is
reset by its ``reset_by`` touchpoints, a waiting absence ends at a ``missing`` one. What
time alone changes is told apart too: a waiting absence holds at any touchpoint or timer
past its deadline, a sequence drops a partial match at any touchpoint past its window;
such a rule is evaluated at other touchpoints only from the event time its memory says
(:func:`wake`). Conditions on state (thresholds, ``rank``, scores) and ``not`` hold at
any touchpoint and timer, so rules built on them (outside an ``all`` with an event
test) are evaluated always. Correctness comes first: where in doubt, a condition
reaches everything.

The keys are (kind, direction) pairs over the kinds the rules name, plus
:data:`OTHER_KIND` for every kind no rule names, plus :data:`TIMER` for a timer (no
touchpoint).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from schemas.models import Direction, TouchpointEvent

from .conditions import (
    Absence,
    AllOf,
    AnyOf,
    Condition,
    EventMatch,
    Not,
    RankCondition,
    Sequence_,
    StateThreshold,
    Streak,
    WindowAggregate,
)
from .journeys import CompiledJourney
from .rules import CompiledRule

OTHER_KIND = "\x00other"
"""Stands for every touchpoint kind that no indexed condition names."""
TIMER: tuple[str, str] = ("\x00timer", "\x00timer")
"""The key of a timer: a moment with no touchpoint."""

Key = tuple[str, Any]
"""(touchpoint kind or OTHER_KIND, direction), or TIMER."""
Keys = frozenset[Key]


class Universe:
    """Every key a touchpoint or a timer can have, for a set of conditions."""

    __slots__ = ("everything", "kinds", "touchpoints")

    def __init__(self, kinds: frozenset[str]) -> None:
        self.kinds = kinds
        """The kinds the conditions name; every other kind is OTHER_KIND."""
        self.touchpoints: Keys = frozenset(
            (kind, direction) for kind in (*kinds, OTHER_KIND) for direction in Direction
        )
        self.everything: Keys = self.touchpoints | {TIMER}


@dataclass(frozen=True, slots=True)
class Reach:
    """The keys at which a condition may hold (``holds_*``) or change its memory
    (``moves_*``), with no memory (``*_fresh``) and with one (``*_kept``), and the keys
    at which time alone may change a kept memory (``timed``: an absence past its
    deadline, a sequence's partial match past its window), from the event time its
    :data:`Wake` gives on. The kept sets include the fresh ones (a composite's memory
    may hold ``None`` for some parts)."""

    holds_fresh: Keys
    moves_fresh: Keys
    holds_kept: Keys
    moves_kept: Keys
    timed: Keys = frozenset()

    @property
    def fresh(self) -> Keys:
        """Where the condition must be evaluated for a customer with no memory of it."""
        return self.holds_fresh | self.moves_fresh

    @property
    def kept(self) -> Keys:
        """Where it must be evaluated for a customer with a memory of it, whatever the
        time."""
        return self.holds_kept | self.moves_kept


Wake = Callable[[Any], int | None]
"""A condition's memory -> the earliest event time (µs) from which a moment at one of
its ``timed`` keys may change it; None: never by time alone."""


ReachOf = Callable[[Condition, Universe], Reach]
"""How far a condition reaches; :func:`reach` unless a test wants to break it."""


def named_kinds(condition: Condition) -> set[str]:
    """Every kind a ``kind`` test of ``condition`` (at any depth) names."""
    if isinstance(condition, EventMatch):
        return {
            value
            for test in condition.tests
            if test.field == "kind"
            for value in (test.operand if isinstance(test.operand, list) else [test.operand])
            if isinstance(value, str)
        }
    return set().union(*(named_kinds(part) for part in _parts(condition)))


def _parts(condition: Condition) -> tuple[Condition, ...]:
    if isinstance(condition, WindowAggregate):
        return (condition.of,)
    if isinstance(condition, Sequence_):
        return condition.steps
    if isinstance(condition, Streak):
        return (condition.of, condition.reset_by)
    if isinstance(condition, Absence):
        return (condition.after, condition.missing)
    if isinstance(condition, AllOf | AnyOf):
        return condition.parts
    if isinstance(condition, Not):
        return (condition.part,)
    return ()


def matching(match: EventMatch, universe: Universe) -> Keys:
    """The keys of the touchpoints ``match`` may hold at: a kind or direction test is
    run on every kind the universe names and every direction; a kind no rule names
    (OTHER_KIND) passes unless the test only accepts listed values (``eq``, ``in``).
    Tests on other fields do not narrow anything."""
    kinds: set[str] | None = None  # None: every kind, OTHER_KIND included
    directions: set[Any] = set(Direction)
    for test in match.tests:
        if test.field == "kind" and test.op in ("eq", "in"):
            # Only the listed kinds can pass: no need to try every kind of the universe.
            listed = test.operand if isinstance(test.operand, list) else [test.operand]
            candidates = {k for k in listed if isinstance(k, str)} & universe.kinds
            kinds = candidates if kinds is None else kinds & candidates
            kinds = {k for k in kinds if _passes(test.test, k)}
        elif test.field == "kind":
            every = {*universe.kinds, OTHER_KIND} if kinds is None else kinds
            kinds = {k for k in every if k == OTHER_KIND or _passes(test.test, k)}
        elif test.field == "direction":
            directions = {d for d in directions if _passes(test.test, d)}
    if kinds is None and len(directions) == len(Direction):
        return universe.touchpoints
    every_kind = (*universe.kinds, OTHER_KIND) if kinds is None else kinds
    return frozenset((k, d) for k in every_kind for d in directions)


def _passes(test: Callable[[Any], bool], value: Any) -> bool:
    try:
        return bool(test(value))
    except Exception:  # a test that cannot tell: the key stays in
        return True


def reach(condition: Condition, universe: Universe) -> Reach:
    """How far ``condition`` reaches (see the module doc; each case follows the
    condition's ``step`` in engine.conditions)."""
    nothing: Keys = frozenset()
    if isinstance(condition, EventMatch):
        keys = matching(condition, universe)
        return Reach(keys, nothing, keys, nothing)
    if isinstance(condition, StateThreshold | RankCondition):
        everything = universe.everything
        return Reach(everything, nothing, everything, nothing)
    if isinstance(condition, WindowAggregate):
        keys = matching(condition.of, universe)
        return Reach(keys, keys, keys, keys)
    if isinstance(condition, Sequence_):
        # No partial match yet: only the first step starts one. With partial matches, a
        # step's touchpoint advances or completes one, and any touchpoint (not a timer)
        # past a partial match's window drops it.
        steps = [matching(step, universe) for step in condition.steps]
        return Reach(
            nothing,
            steps[0],
            frozenset().union(*steps[1:]),
            frozenset().union(*steps),
            universe.touchpoints,
        )
    if isinstance(condition, Streak):
        counted = matching(condition.of, universe)
        reset = matching(condition.reset_by, universe)
        return Reach(counted, counted, counted, counted | reset)
    if isinstance(condition, Absence):
        # Waiting: a ``missing`` touchpoint ends the wait; past the deadline, any
        # touchpoint or timer makes it hold.
        started = matching(condition.after, universe)
        missing = matching(condition.missing, universe)
        return Reach(nothing, started, nothing, started | missing, universe.everything)
    if isinstance(condition, AllOf | AnyOf):
        parts = [reach(part, universe) for part in condition.parts]
        holds = _every if isinstance(condition, AllOf) else _some
        return Reach(
            holds(universe, (p.holds_fresh for p in parts)),
            frozenset().union(*(p.moves_fresh for p in parts)),
            holds(universe, (p.holds_kept for p in parts)),
            frozenset().union(*(p.moves_kept for p in parts)),
            frozenset().union(*(p.timed for p in parts)),
        )
    if isinstance(condition, Not):
        # Holds wherever its part does not: anywhere.
        part = reach(condition.part, universe)
        everything = universe.everything
        return Reach(everything, part.moves_fresh, everything, part.moves_kept, part.timed)
    everything = universe.everything  # a condition this index does not know
    return Reach(everything, everything, everything, everything)


def wake(condition: Condition) -> Wake | None:
    """When time alone may change ``condition``'s memory (None: never), following
    ``step``: an absence holds at a moment after its deadline, a sequence drops a partial
    match at a touchpoint more than ``within`` after its start."""
    if isinstance(condition, Absence):
        return _absence_wake
    if isinstance(condition, Sequence_):
        within = condition.within

        def sequence_wake(memory: Any) -> int | None:
            if not memory:
                return None
            earliest = memory[0][0]
            for partial in memory:
                if partial[0] < earliest:
                    earliest = partial[0]
            return int(earliest) + within + 1

        return sequence_wake
    if isinstance(condition, AllOf | AnyOf):
        wakes = [(index, w) for index, part in enumerate(condition.parts) if (w := wake(part))]
        if not wakes:
            return None
        return lambda memory: _earliest(memory, wakes)
    if isinstance(condition, Not):
        return wake(condition.part)
    return None


def _absence_wake(memory: Any) -> int | None:
    return None if memory is None else int(memory[1]) + 1


def _earliest(memory: Any, wakes: list[tuple[int, Wake]]) -> int | None:
    if memory is None:
        return None
    times = [t for index, w in wakes if (t := w(memory[index])) is not None]
    return min(times) if times else None


def _some(universe: Universe, sets: Iterable[Keys]) -> Keys:
    return frozenset().union(*sets)


def _every(universe: Universe, sets: Iterable[Keys]) -> Keys:
    out = universe.everything
    for keys in sets:
        out = out & keys
    return out


def _key(event: TouchpointEvent | None) -> Key:
    return TIMER if event is None else (event.kind, event.direction)


ALWAYS = 0
"""Evaluate the rule."""
REMEMBERED = 1
"""Evaluate the rule only for a customer with a memory of it."""
WOKEN = 2
"""Evaluate the rule only for a customer with a memory of it (of this version) whose
wake time has come."""

RuleEntry = tuple[CompiledRule, int, Wake | None]
"""A rule to evaluate, when (ALWAYS, REMEMBERED or WOKEN), and its wake for WOKEN."""


class IndexedRules(tuple[CompiledRule, ...]):
    """All the rules, in order, and for each touchpoint the ones it can change.

    ``for_moment(event)`` is what :func:`engine.reducer.apply` evaluates: the rules, in
    the order of the tuple, whose condition may hold or move at that touchpoint (or at a
    timer when ``event`` is None), each with when to evaluate it (ALWAYS, REMEMBERED,
    WOKEN). How far each rule reaches is worked out when the rules are loaded; the
    selection for a key when a moment with that key first comes.
    """

    _universe: Universe
    _reaches: tuple[tuple[CompiledRule, Reach, Wake | None], ...]
    _entries: dict[Key, tuple[RuleEntry, ...]]
    _every_rule: tuple[RuleEntry, ...]

    def __new__(
        cls,
        rules: Iterable[CompiledRule] = (),
        reach_of: ReachOf = reach,
        wake_of: Callable[[Condition], Wake | None] = wake,
    ) -> IndexedRules:
        self = super().__new__(cls, rules)
        universe = Universe(frozenset().union(*(named_kinds(r.condition) for r in self)))
        self._universe = universe
        self._reaches = tuple(
            (rule, reach_of(rule.condition, universe), wake_of(rule.condition)) for rule in self
        )
        self._entries = {}
        self._every_rule = tuple((rule, ALWAYS, None) for rule in self)
        return self

    def for_moment(self, event: TouchpointEvent | None) -> tuple[RuleEntry, ...]:
        found = self._entries.get(_key(event))
        return self._select(event) if found is None else found

    def _select(self, event: TouchpointEvent | None) -> tuple[RuleEntry, ...]:
        key = _universe_key(self._universe, event)
        if key is None:  # a direction no index knows: every rule
            return self._every_rule
        found = self._entries.get(key)
        if found is not None:
            return found
        selected: list[RuleEntry] = []
        for rule, r, w in self._reaches:
            if key in r.holds_fresh or key in r.moves_fresh:
                selected.append((rule, ALWAYS, None))
            elif key in r.holds_kept or key in r.moves_kept or (key in r.timed and w is None):
                selected.append((rule, REMEMBERED, None))
            elif key in r.timed:
                selected.append((rule, WOKEN, w))
        found = self._entries[key] = tuple(selected)  # kinds no rule names share one
        return found

    def __reduce__(self) -> tuple[Any, ...]:
        return (IndexedRules, (tuple(self),))


def _universe_key(universe: Universe, event: TouchpointEvent | None) -> Key | None:
    """``event``'s key in ``universe`` (OTHER_KIND for a kind no rule names), or None."""
    if event is None:
        return TIMER
    kind = event.kind if event.kind in universe.kinds else OTHER_KIND
    key = (kind, event.direction)
    return key if key in universe.touchpoints else None


JourneyEntry = tuple[CompiledJourney, bool]
"""A journey to evaluate, and whether its entry condition may hold or move here (when it
may not, a customer outside the journey, with a memory of this version, is left alone)."""


class IndexedJourneys(tuple[CompiledJourney, ...]):
    """All the journeys, in order, each flagged per touchpoint with whether its entry may
    hold or move there. A customer inside a journey, never seen by it, or remembered
    under another version is always evaluated (steps fall due with time)."""

    _universe: Universe
    _reaches: tuple[tuple[CompiledJourney, Reach], ...]
    _entries: dict[Key, tuple[JourneyEntry, ...]]
    _every_journey: tuple[JourneyEntry, ...]

    def __new__(
        cls, journeys: Iterable[CompiledJourney] = (), reach_of: ReachOf = reach
    ) -> IndexedJourneys:
        self = super().__new__(cls, journeys)
        universe = Universe(frozenset().union(*(named_kinds(j.entry) for j in self)))
        self._universe = universe
        self._reaches = tuple((j, reach_of(j.entry, universe)) for j in self)
        self._entries = {}
        self._every_journey = tuple((journey, True) for journey in self)
        return self

    def for_moment(self, event: TouchpointEvent | None) -> tuple[JourneyEntry, ...]:
        found = self._entries.get(_key(event))
        return self._select(event) if found is None else found

    def _select(self, event: TouchpointEvent | None) -> tuple[JourneyEntry, ...]:
        key = _universe_key(self._universe, event)
        if key is None:
            return self._every_journey
        found = self._entries.get(key)
        if found is None:
            found = self._entries[key] = tuple(
                (j, key in r.kept or key in r.timed) for j, r in self._reaches
            )
        return found

    def __reduce__(self) -> tuple[Any, ...]:
        return (IndexedJourneys, (tuple(self),))


def rule_entries(
    rules: Sequence[CompiledRule], event: TouchpointEvent | None
) -> Sequence[RuleEntry]:
    """What :func:`engine.reducer.apply` evaluates: the indexed selection, or every rule."""
    if isinstance(rules, IndexedRules):
        return rules.for_moment(event)
    return [(rule, ALWAYS, None) for rule in rules]


def journey_entries(
    journeys: Sequence[CompiledJourney], event: TouchpointEvent | None
) -> Sequence[JourneyEntry]:
    if isinstance(journeys, IndexedJourneys):
        return journeys.for_moment(event)
    return [(journey, True) for journey in journeys]
