"""The rule index (engine.rule_index) changes nothing but the work done.

For random bundles (every condition type, nested all / any / not, journeys) and random
customers' touchpoints and timers, including a new bundle version mid-stream,
evaluating through the index gives exactly the decisions, journey signals and states
that evaluating every rule and journey gives. The same property, run with a
deliberately wrong reach, must find a difference: that is what shows it can catch an
index that drops a rule it should not.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, assume, given, settings
from hypothesis import strategies as st

from engine.bundle import InvalidBundle, RuleBundle, load_bundle
from engine.conditions import Absence, Condition, EventMatch, Not, Sequence_, StateThreshold
from engine.journeys import JourneySignal
from engine.reducer import apply, apply_timer, next_deadline
from engine.rule_index import (
    ALWAYS,
    OTHER_KIND,
    REMEMBERED,
    TIMER,
    WOKEN,
    IndexedJourneys,
    IndexedRules,
    Reach,
    ReachOf,
    Universe,
    Wake,
    reach,
    wake,
)
from engine.rulebook import RuleBook
from engine.rules import Decision
from engine.state import CustomerState
from schemas.models import Channel, Direction, TouchpointEvent

KINDS = ("alpha", "beta", "gamma")
SEEN_KINDS = (*KINDS, "delta")  # delta: a kind no rule names
DIRECTIONS = tuple(d.value for d in Direction)
T0 = datetime(2026, 11, 1, tzinfo=UTC)
NOW = datetime(2026, 12, 1, tzinfo=UTC)

# --- bundles ---------------------------------------------------------------------------

kinds = st.sampled_from(KINDS)
event_tests = st.one_of(
    kinds.map(lambda k: {"kind": k}),
    st.lists(kinds, min_size=1, max_size=2, unique=True).map(lambda ks: {"kind": ks}),
    st.sampled_from(DIRECTIONS).map(lambda d: {"direction": d}),
    st.tuples(kinds, st.sampled_from(DIRECTIONS)).map(lambda p: {"kind": p[0], "direction": p[1]}),
    kinds.map(lambda k: {"kind": {"ne": k}}),
    kinds.map(lambda k: {"kind": {"not_in": [k]}}),
    st.just({"kind": {"matches": "^(al|de)"}}),
    st.tuples(kinds, st.integers(1, 9)).map(
        lambda p: {"kind": p[0], "attributes.amount": {"gte": p[1]}}
    ),
    st.integers(1, 9).map(lambda n: {"attributes.amount": {"lt": n}}),
)
durations = st.sampled_from(["10m", "30m", "1h", "3h"])
LEAVES = ("event", "state", "count", "sum", "sequence", "streak", "absence")


@st.composite
def leaves(draw: st.DrawFn) -> dict[str, Any]:
    shape = draw(st.sampled_from(LEAVES))
    if shape == "event":
        return {"event": draw(event_tests)}
    if shape == "state":
        kind = draw(kinds)
        return {
            "state": draw(
                st.sampled_from(
                    [
                        {"touchpoints": {"gte": 3}},
                        {f"count.{kind}": {"gte": 2}},
                        {"days_since_last_inbound": {"gte": 0.02}},
                    ]
                )
            )
        }
    if shape in ("count", "sum"):
        of, within = draw(event_tests), draw(durations)
        if shape == "count":
            return {"count": {"of": of, "within": within, "at_least": draw(st.integers(1, 3))}}
        at_least = draw(st.integers(3, 15))
        return {
            "sum": {"of": of, "field": "attributes.amount", "within": within, "at_least": at_least}
        }
    if shape == "sequence":
        steps = draw(st.lists(event_tests, min_size=2, max_size=3))
        return {"sequence": {"within": draw(durations), "steps": steps}}
    if shape == "streak":
        length = draw(st.integers(1, 3))
        return {
            "streak": {"of": draw(event_tests), "reset_by": draw(event_tests), "length": length}
        }
    after, missing, within = draw(event_tests), draw(event_tests), draw(durations)
    return {"absence": {"after": after, "missing": missing, "within": within}}


@st.composite
def conditions(draw: st.DrawFn, depth: int = 2) -> dict[str, Any]:
    shape = draw(st.sampled_from(["leaf", "leaf", "all", "any", "not"] if depth else ["leaf"]))
    if shape == "leaf":
        return draw(leaves())
    if shape == "not":
        return {"not": draw(conditions(depth - 1))}
    return {shape: draw(st.lists(conditions(depth - 1), min_size=2, max_size=3))}


@dataclass(frozen=True)
class Case:
    first: RuleBundle
    second: RuleBundle
    """A later version of the same bundle (other conditions, same ids)."""
    moments: list[tuple[str, Any]]
    """("touchpoint", (kind, direction, minutes later, amount)), ("timer", minutes later),
    ("deadline", None): a timer at the customer's next deadline, or ("upgrade", None)."""
    cap: int | None


def _rule(index: int, condition: dict[str, Any], cooldown: str, mode: str) -> dict[str, Any]:
    return {
        "id": f"r{index}",
        "mode": mode,
        "cooldown": cooldown,
        "when": condition,
        "then": {
            "kind": "task",
            "priority": ["low", "normal", "high", "urgent"][index % 4],
            "title": f"r{index} for {{customer_id}}",
            "due_in": "1h",
        },
    }


def _journey(entry: dict[str, Any], when: dict[str, Any], exit_: dict[str, Any] | None) -> Any:
    journey: dict[str, Any] = {
        "id": "j",
        "entry": entry,
        "holdout": 20,
        "variants": [
            {
                "name": "a",
                "steps": [
                    {
                        "id": "wait",
                        "after": "30m",
                        "then": {"kind": "task", "title": "t", "due_in": "1h"},
                    },
                    {
                        "id": "when",
                        "when": when,
                        "then": {"kind": "alert", "title": "w", "due_in": "1h"},
                    },
                ],
            },
            {
                "name": "b",
                "steps": [
                    {
                        "id": "b1",
                        "after": "1h",
                        "then": {"kind": "task", "title": "b", "due_in": "1h"},
                    }
                ],
            },
        ],
    }
    if exit_ is not None:
        journey["exit"] = exit_
    return journey


@st.composite
def bundles(draw: st.DrawFn, version: int) -> RuleBundle:
    count = draw(st.integers(1, 4))
    rules = [
        _rule(
            i,
            draw(conditions()),
            draw(st.sampled_from(["0s", "20m", "2h"])),
            draw(st.sampled_from(["enforce", "enforce", "shadow"])),
        )
        for i in range(count)
    ]
    document: dict[str, Any] = {"bundle": "b", "version": version, "rules": rules}
    if draw(st.booleans()):
        exit_ = draw(st.one_of(st.none(), conditions()))
        document["journeys"] = [_journey(draw(conditions()), draw(conditions()), exit_)]
    try:
        return load_bundle(json.dumps(document), "random.yaml")  # JSON is YAML
    except InvalidBundle:  # e.g. ``all`` of two events no touchpoint can match
        assume(False)
        raise


moment = st.one_of(
    st.tuples(
        st.sampled_from(SEEN_KINDS),
        st.sampled_from(DIRECTIONS),
        st.integers(-5, 90),
        st.integers(0, 10),
    ).map(lambda t: ("touchpoint", t)),
    st.integers(0, 240).map(lambda m: ("timer", m)),
    st.just(("deadline", None)),
)


@st.composite
def cases(draw: st.DrawFn) -> Case:
    moments = draw(st.lists(moment, min_size=5, max_size=40))
    if draw(st.booleans()):
        moments.insert(draw(st.integers(0, len(moments))), ("upgrade", None))
    return Case(draw(bundles(1)), draw(bundles(2)), moments, draw(st.sampled_from([None, None, 2])))


# --- the property ----------------------------------------------------------------------


Outcome = tuple[CustomerState, list[Decision], list[JourneySignal]]
WakeOf = Callable[[Condition], Wake | None]


def _run(case: Case, reach_of: ReachOf, wake_of: WakeOf) -> list[tuple[str, Outcome, Outcome]]:
    """Every moment of ``case`` evaluated with the index and without; (what, indexed,
    every rule)."""
    out = []
    bundle = case.first
    plain: CustomerState | None = None
    indexed: CustomerState | None = None
    at = T0
    for n, (what, detail) in enumerate(case.moments):
        if what == "upgrade":
            bundle = case.second
            continue
        rules = IndexedRules(bundle.rules, reach_of, wake_of)
        journeys = IndexedJourneys(bundle.journeys, reach_of)
        every: tuple[Any, ...] = (tuple(bundle.rules), tuple(bundle.journeys))
        signals_plain: list[JourneySignal] = []
        signals_indexed: list[JourneySignal] = []
        if what == "touchpoint":
            kind, direction, minutes, amount = detail
            at = max(at + timedelta(minutes=minutes), T0)
            event = TouchpointEvent(
                event_id=f"e{n}",
                customer_id="c1",
                occurred_at=at,
                received_at=at,
                channel=Channel.CHAT,
                kind=kind,
                direction=Direction(direction),
                rep_id="rep-1",
                source="test/1",
                attributes={"amount": amount},
            )
            new_plain = apply(plain, event, NOW, every[0], case.cap, every[1], signals_plain)
            new_indexed = apply(indexed, event, NOW, rules, case.cap, journeys, signals_indexed)
        else:
            if plain is None or indexed is None:
                continue
            if what == "deadline":
                deadline = next_deadline(plain, every[0], every[1])
                if deadline is None:
                    continue
                when = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=deadline)
            else:
                when = at + timedelta(minutes=detail)
            new_plain = apply_timer(plain, when, NOW, every[0], case.cap, every[1], signals_plain)
            new_indexed = apply_timer(
                indexed, when, NOW, rules, case.cap, journeys, signals_indexed
            )
        out.append(
            (
                f"moment {n} ({what} {detail})",
                (new_indexed[0], new_indexed[1], signals_indexed),
                (new_plain[0], new_plain[1], signals_plain),
            )
        )
        plain, indexed = new_plain[0], new_indexed[0]
    return out


def assert_same(case: Case, reach_of: ReachOf, wake_of: WakeOf = wake) -> None:
    for what, indexed, every in _run(case, reach_of, wake_of):
        assert indexed[1] == every[1], f"{what}: decisions differ"
        assert indexed[2] == every[2], f"{what}: journey signals differ"
        assert indexed[0] == every[0], f"{what}: states differ"


def check_property(
    reach_of: ReachOf, examples: int, shrink: bool = True, wake_of: WakeOf = wake
) -> None:
    phases = [Phase.explicit, Phase.generate] + ([Phase.shrink] if shrink else [])

    @settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        database=None,
        phases=phases,
        report_multiple_bugs=False,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
    @given(case=cases())
    def indexed_evaluation_is_evaluating_every_rule(case: Case) -> None:
        assert_same(case, reach_of, wake_of)

    indexed_evaluation_is_evaluating_every_rule()


def test_indexed_evaluation_decides_what_evaluating_every_rule_decides() -> None:
    check_property(reach, examples=120)


# --- broken indexes the property must catch ----------------------------------------------


def _fresh_only(condition: Condition, universe: Universe) -> Reach:
    """Forgets that a remembered condition reaches further (a waiting absence, a
    sequence with partial matches, a streak under way)."""
    r = reach(condition, universe)
    return Reach(r.holds_fresh, r.moves_fresh, r.holds_fresh, r.moves_fresh)


def _no_timers(condition: Condition, universe: Universe) -> Reach:
    """Forgets that a timer can make a condition hold (an absence at its deadline)."""
    r = reach(condition, universe)
    return Reach(
        *(
            keys - {TIMER}
            for keys in (r.holds_fresh, r.moves_fresh, r.holds_kept, r.moves_kept, r.timed)
        )
    )


def _timeless(condition: Condition, universe: Universe) -> Reach:
    """Forgets that time alone changes a remembered condition (an absence past its
    deadline, a partial sequence past its window)."""
    r = reach(condition, universe)
    return Reach(r.holds_fresh, r.moves_fresh, r.holds_kept, r.moves_kept)


def _late_wake(condition: Condition) -> Wake | None:
    """Wakes a remembered condition an hour after it should."""
    woken = wake(condition)
    if woken is None:
        return None
    return lambda memory: None if (at := woken(memory)) is None else at + 3_600_000_000


def _events_only(condition: Condition, universe: Universe) -> Reach:
    """Takes ``not`` and state thresholds for conditions on the touchpoint alone."""
    if isinstance(condition, Not | StateThreshold):
        nothing: frozenset[Any] = frozenset()
        return Reach(nothing, nothing, nothing, nothing)
    return reach(condition, universe)


def _listed_kinds_only(condition: Condition, universe: Universe) -> Reach:
    """Forgets the kinds no rule names (a ``ne`` or ``not_in`` test, a direction test)."""
    r = reach(condition, universe)
    return Reach(
        *(
            frozenset(k for k in keys if k[0] != OTHER_KIND)
            for keys in (r.holds_fresh, r.moves_fresh, r.holds_kept, r.moves_kept, r.timed)
        )
    )


def _first_step_only(condition: Condition, universe: Universe) -> Reach:
    """Indexes a sequence or an absence by its first touchpoint alone."""
    if isinstance(condition, Sequence_ | Absence):
        first = condition.steps[0] if isinstance(condition, Sequence_) else condition.after
        keys = reach(first, universe).holds_fresh
        return Reach(keys, keys, keys, keys)
    return reach(condition, universe)


BROKEN: dict[str, tuple[ReachOf, WakeOf]] = {
    "fresh only": (_fresh_only, wake),
    "no timers": (_no_timers, wake),
    "timeless": (_timeless, wake),
    "late wake": (reach, _late_wake),
    "events only": (_events_only, wake),
    "listed kinds only": (_listed_kinds_only, wake),
    "first step only": (_first_step_only, wake),
}


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_the_property_catches_an_index_that_drops_rules(name: str) -> None:
    reach_of, wake_of = BROKEN[name]
    with pytest.raises(AssertionError, match="differ"):
        check_property(reach_of, examples=150, shrink=False, wake_of=wake_of)


# --- the index itself ----------------------------------------------------------------------


def _event(kind: str, direction: Direction) -> TouchpointEvent:
    return TouchpointEvent(
        event_id="e1",
        customer_id="c1",
        occurred_at=T0,
        received_at=T0,
        channel=Channel.CHAT,
        kind=kind,
        direction=direction,
        source="test/1",
    )


PACK = """\
bundle: pack
version: 1
rules:
  - id: purchase
    when: {event: {kind: purchase}}
    then: {kind: task, title: "t", due_in: 1h}
  - id: outbound-streak
    when: {streak: {of: {direction: outbound}, reset_by: {kind: reply}, length: 3}}
    then: {kind: task, title: "t", due_in: 1h}
  - id: quiet-after-quote
    when: {absence: {after: {kind: quote_sent}, missing: {direction: inbound}, within: 1d}}
    then: {kind: task, title: "t", due_in: 1h}
  - id: many-touchpoints
    when: {state: {touchpoints: {gte: 10}}}
    then: {kind: task, title: "t", due_in: 1h}
"""


def _selected(book: RuleBook, event: TouchpointEvent | None) -> list[tuple[str, int]]:
    rules = book.rules
    assert isinstance(rules, IndexedRules)
    return [(rule.rule_id, when) for rule, when, _wake in rules.for_moment(event)]


def test_a_touchpoint_selects_the_rules_that_name_it_and_those_on_state() -> None:
    book = RuleBook(load_bundle(PACK, "pack.yaml"))
    assert _selected(book, _event("purchase", Direction.NONE)) == [
        ("purchase", ALWAYS),
        ("quiet-after-quote", WOKEN),
        ("many-touchpoints", ALWAYS),
    ]
    assert _selected(book, _event("login", Direction.OUTBOUND)) == [
        ("outbound-streak", ALWAYS),
        ("quiet-after-quote", WOKEN),
        ("many-touchpoints", ALWAYS),
    ]
    assert _selected(book, _event("reply", Direction.INBOUND)) == [
        ("outbound-streak", REMEMBERED),
        ("quiet-after-quote", REMEMBERED),
        ("many-touchpoints", ALWAYS),
    ]
    assert _selected(book, None) == [("quiet-after-quote", WOKEN), ("many-touchpoints", ALWAYS)]


def test_the_rule_book_hands_out_indexed_rules_equal_to_the_plain_tuple() -> None:
    bundle = load_bundle(PACK, "pack.yaml")
    book = RuleBook(bundle)
    assert isinstance(book.rules, IndexedRules)
    assert isinstance(book.journeys, IndexedJourneys)
    assert book.rules == bundle.rules


def test_an_event_match_on_an_unlisted_kind_reaches_only_the_kinds_it_can_match() -> None:
    [rule] = load_bundle(
        "bundle: k\nversion: 1\nrules:\n  - id: r\n"
        "    when: {event: {kind: {not_in: [a_b]}, direction: [inbound, outbound]}}\n"
        "    then: {kind: task, title: t, due_in: 1h}\n",
        "k.yaml",
    ).rules
    assert isinstance(rule.condition, EventMatch)
    universe = Universe(frozenset({"a_b"}))
    assert reach(rule.condition, universe).holds_fresh == {
        (OTHER_KIND, Direction.INBOUND),
        (OTHER_KIND, Direction.OUTBOUND),
    }
