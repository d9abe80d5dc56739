"""Which rules and journeys a touchpoint can change: an index by touchpoint kind and direction.

Most rules look at one or two kinds of touchpoint. A rule whose condition can neither
hold nor change its memory on a touchpoint returns its memory unchanged and decides
nothing, so skipping it changes nothing either. :class:`IndexedRules` works out, when a
bundle is loaded, which touchpoints (by ``kind`` and ``direction``, and a timer) can make
each rule's condition hold or move, and hands :func:`engine.reducer.apply` only those
rules for each touchpoint. It is a tuple of all the rules, so everything else that walks
the rules (deadlines, explanations, clean-up of memories) sees them all.

How far a condition reaches (:class:`Reach`) is told apart for a customer with no
memory of the rule yet ("fresh") and one with a memory ("kept"): an absence waiting
for its deadline holds at any touchpoint or timer, a sequence with partial matches
drops expired ones at any touchpoint, a streak under way is reset by its ``reset_by``
touchpoints. Conditions on state (thresholds, ``rank``, scores) and ``not`` hold at any
touchpoint and timer, so rules built on them (outside an ``all`` with an event test)
are evaluated always. Correctness comes first: where in doubt, a condition reaches
everything.

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


@dataclass(frozen=True, slots=True)
class Universe:
    """Every key a touchpoint or a timer can have, for a set of conditions."""

    kinds: frozenset[str]
    """The kinds the conditions name; every other kind is OTHER_KIND."""

    @property
    def touchpoints(self) -> Keys:
        return frozenset(
            (kind, direction) for kind in (*self.kinds, OTHER_KIND) for direction in Direction
        )

    @property
    def everything(self) -> Keys:
        return self.touchpoints | {TIMER}


@dataclass(frozen=True, slots=True)
class Reach:
    """The keys at which a condition may hold (``holds_*``) or change its memory
    (``moves_*``), with no memory (``*_fresh``) and with one (``*_kept``). The kept sets
    include the fresh ones (a composite's memory may hold ``None`` for some parts)."""

    holds_fresh: Keys
    moves_fresh: Keys
    holds_kept: Keys
    moves_kept: Keys

    @property
    def fresh(self) -> Keys:
        """Where the condition must be evaluated for a customer with no memory of it."""
        return self.holds_fresh | self.moves_fresh

    @property
    def kept(self) -> Keys:
        """Where it must be evaluated for a customer with a memory of it."""
        return self.holds_kept | self.moves_kept


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
    kinds: set[str] = {*universe.kinds, OTHER_KIND}
    directions: set[Any] = set(Direction)
    for test in match.tests:
        if test.field == "kind":
            listed_only = test.op in ("eq", "in")
            kinds = {
                k for k in kinds if (not listed_only if k == OTHER_KIND else _passes(test.test, k))
            }
        elif test.field == "direction":
            directions = {d for d in directions if _passes(test.test, d)}
    return frozenset((k, d) for k in kinds for d in directions)


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
        # No partial match yet: only the first step starts one. With partial matches,
        # any touchpoint (not a timer) may drop expired ones or complete a match.
        first = matching(condition.steps[0], universe)
        touchpoints = universe.touchpoints
        return Reach(nothing, first, touchpoints, touchpoints)
    if isinstance(condition, Streak):
        counted = matching(condition.of, universe)
        reset = matching(condition.reset_by, universe)
        return Reach(counted, counted, counted, counted | reset)
    if isinstance(condition, Absence):
        # Waiting: any touchpoint or timer past the deadline makes it hold.
        started = matching(condition.after, universe)
        everything = universe.everything
        return Reach(nothing, started, everything, everything)
    if isinstance(condition, AllOf):
        parts = [reach(part, universe) for part in condition.parts]
        return Reach(
            _every(universe, (p.holds_fresh for p in parts)),
            frozenset().union(*(p.moves_fresh for p in parts)),
            _every(universe, (p.holds_kept for p in parts)),
            frozenset().union(*(p.moves_kept for p in parts)),
        )
    if isinstance(condition, AnyOf):
        parts = [reach(part, universe) for part in condition.parts]
        return Reach(
            frozenset().union(*(p.holds_fresh for p in parts)),
            frozenset().union(*(p.moves_fresh for p in parts)),
            frozenset().union(*(p.holds_kept for p in parts)),
            frozenset().union(*(p.moves_kept for p in parts)),
        )
    if isinstance(condition, Not):
        # Holds wherever its part does not: anywhere.
        part = reach(condition.part, universe)
        everything = universe.everything
        return Reach(everything, part.moves_fresh, everything, part.moves_kept)
    everything = universe.everything  # a condition this index does not know
    return Reach(everything, everything, everything, everything)


def _every(universe: Universe, sets: Iterable[Keys]) -> Keys:
    out = universe.everything
    for keys in sets:
        out = out & keys
    return out


def _key(event: TouchpointEvent | None) -> Key:
    return TIMER if event is None else (event.kind, event.direction)


RuleEntry = tuple[CompiledRule, bool]
"""A rule to evaluate, and whether only for a customer with a memory of it."""


class IndexedRules(tuple[CompiledRule, ...]):
    """All the rules, in order, and for each touchpoint the ones it can change.

    ``for_moment(event)`` is what :func:`engine.reducer.apply` evaluates: the rules, in
    the order of the tuple, whose condition may hold or move at that touchpoint (or at a
    timer when ``event`` is None); each with a flag: evaluate only when the customer
    has a memory of the rule.
    """

    _entries: dict[Key, tuple[RuleEntry, ...]]
    _every_rule: tuple[RuleEntry, ...]

    def __new__(cls, rules: Iterable[CompiledRule] = (), reach_of: ReachOf = reach) -> IndexedRules:
        self = super().__new__(cls, rules)
        universe = Universe(frozenset().union(*(named_kinds(r.condition) for r in self)))
        reaches = [reach_of(rule.condition, universe) for rule in self]
        entries: dict[Key, tuple[RuleEntry, ...]] = {}
        for key in universe.everything:
            entries[key] = tuple(
                (rule, key not in r.fresh)
                for rule, r in zip(self, reaches, strict=True)
                if key in r.fresh or key in r.kept
            )
        self._entries = entries
        self._every_rule = tuple((rule, False) for rule in self)
        return self

    def for_moment(self, event: TouchpointEvent | None) -> tuple[RuleEntry, ...]:
        key = _key(event)
        found = self._entries.get(key)
        if found is None and event is not None:
            found = self._entries.get((OTHER_KIND, event.direction))
        return self._every_rule if found is None else found

    def __reduce__(self) -> tuple[Any, ...]:
        return (IndexedRules, (tuple(self),))


JourneyEntry = tuple[CompiledJourney, bool]
"""A journey to evaluate, and whether its entry condition may hold or move here (when it
may not, a customer outside the journey, with a memory of this version, is left alone)."""


class IndexedJourneys(tuple[CompiledJourney, ...]):
    """All the journeys, in order, each flagged per touchpoint with whether its entry may
    hold or move there. A customer inside a journey, never seen by it, or remembered
    under another version is always evaluated (steps fall due with time)."""

    _entries: dict[Key, tuple[JourneyEntry, ...]]
    _every_journey: tuple[JourneyEntry, ...]

    def __new__(
        cls, journeys: Iterable[CompiledJourney] = (), reach_of: ReachOf = reach
    ) -> IndexedJourneys:
        self = super().__new__(cls, journeys)
        universe = Universe(frozenset().union(*(named_kinds(j.entry) for j in self)))
        reaches = [reach_of(journey.entry, universe) for journey in self]
        self._entries = {
            key: tuple((j, key in r.kept) for j, r in zip(self, reaches, strict=True))
            for key in universe.everything
        }
        self._every_journey = tuple((journey, True) for journey in self)
        return self

    def for_moment(self, event: TouchpointEvent | None) -> tuple[JourneyEntry, ...]:
        key = _key(event)
        found = self._entries.get(key)
        if found is None and event is not None:
            found = self._entries.get((OTHER_KIND, event.direction))
        return self._every_journey if found is None else found

    def __reduce__(self) -> tuple[Any, ...]:
        return (IndexedJourneys, (tuple(self),))


def rule_entries(
    rules: Sequence[CompiledRule], event: TouchpointEvent | None
) -> Sequence[RuleEntry]:
    """What :func:`engine.reducer.apply` evaluates: the indexed selection, or every rule."""
    if isinstance(rules, IndexedRules):
        return rules.for_moment(event)
    return [(rule, False) for rule in rules]


def journey_entries(
    journeys: Sequence[CompiledJourney], event: TouchpointEvent | None
) -> Sequence[JourneyEntry]:
    if isinstance(journeys, IndexedJourneys):
        return journeys.for_moment(event)
    return [(journey, True) for journey in journeys]
