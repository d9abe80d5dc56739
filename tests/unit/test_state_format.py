"""The stored form of a customer's state: typed memories written with named fields, and
records written before memories had names (positional lists under ``rules``) still read,
so a running deployment upgrades without losing partial matches, cooldowns or journeys."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
import zstandard
from hypothesis import given
from hypothesis import strategies as st

from engine.bundle import load_bundle
from engine.conditions import micros
from engine.errors import StateFormatError
from engine.journeys import HOLDOUT, JourneySignal
from engine.memories import JourneyMemory, RuleMemory
from engine.reducer import apply, apply_timer, next_deadline
from engine.rules import Decision
from engine.state import CustomerState
from schemas.models import Channel, Direction, TouchpointEvent
from streams.state_codec import CustomerStateCodec

SALES = load_bundle(
    """\
bundle: sales
version: 1
rules:
  - id: quotes.three-in-a-week
    when: {count: {of: {kind: quote_sent}, within: 7d, at_least: 3}}
    then: {kind: task, title: "Three quotes to {customer_id}", due_in: 1d}
  - id: demos.booked
    cooldown: 1d
    when: {event: {kind: demo_booked}}
    then: {kind: task, title: "Prepare the demo for {customer_id}", due_in: 1d}
journeys:
  - id: trial
    entry: {event: {kind: trial_started}}
    conversion: {event: {kind: subscribed}}
    holdout: 0
    required_signals: [login, sandbox_error]
    variants:
      - name: guided
        steps:
          - id: welcome-call
            after: 1h
            then: {kind: task, title: "Welcome call for {customer_id}", due_in: 1d}
  - id: nudge
    entry: {event: {kind: trial_started}}
    holdout: 99
    variants:
      - name: guided
        steps:
          - id: tips
            after: 2h
            then: {kind: content_push, title: "Tips for {customer_id}", due_in: 1d}
""",
    "sales.yaml",
)
T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
NOW = T0 + timedelta(days=1)
M = 60_000_000
"""A minute in µs."""
T0_US = 1_793_610_000_000_000
"""T0 in µs since the Unix epoch."""

# A changelog record as states were written before memories had names: one "rules"
# mapping, a rule's memory [condition, last fired µs, version], a journey's under
# "journey:<id>" as [variant, inside, steps done, waiting since µs, entry, exit,
# conversion, when, version, required kinds seen, variant followed]. Customer c1 after
# quote_sent (minute 0), demo_booked (1), trial_started (2), quote_sent (3), login (4).
OLD_RECORD = b"""{
  "customer_id": "c1", "owner_rep_id": "rep-1", "touchpoints": 5,
  "first_seen_at": 1793610000000000, "last_event_at": 1793610240000000,
  "last_inbound_at": null, "last_outbound_at": null,
  "kind_counts": {"quote_sent": 2, "demo_booked": 1, "trial_started": 1, "login": 1},
  "recent_event_ids": ["e1", "e2", "e3", "e4", "e5"],
  "emitted": [],
  "rules": {
    "quotes.three-in-a-week": [
      [[1793610000000000, 1.0, "e1"], [1793610180000000, 1.0, "e4"]], null, 1
    ],
    "journey:trial": [
      "guided", 1, 0, 1793610120000000, null, null, null, null, 1, ["login"]
    ],
    "journey:nudge": [
      "holdout", 1, 0, 1793610120000000, null, null, null, null, 1, [], "guided"
    ],
    "demos.booked": [null, 1793610060000000, 1]
  }
}"""

QUOTES = RuleMemory([[T0_US, 1.0, "e1"], [T0_US + 3 * M, 1.0, "e4"]], None, 1)
DEMOS = RuleMemory(None, T0_US + 1 * M, 1)
TRIAL = JourneyMemory("guided", True, 0, T0_US + 2 * M, None, None, None, None, 1, ("login",))
NUDGE = JourneyMemory(HOLDOUT, True, 0, T0_US + 2 * M, None, None, None, None, 1, (), "guided")

# The same state as written now: memories by what they hold, fields by name.
NEW_RECORD: dict[str, Any] = {
    "customer_id": "c1",
    "owner_rep_id": "rep-1",
    "touchpoints": 5,
    "first_seen_at": 1793610000000000,
    "last_event_at": 1793610240000000,
    "last_inbound_at": None,
    "last_outbound_at": None,
    "kind_counts": {"quote_sent": 2, "demo_booked": 1, "trial_started": 1, "login": 1},
    "recent_event_ids": ["e1", "e2", "e3", "e4", "e5"],
    "emitted": [],
    "rule_memories": {
        "quotes.three-in-a-week": {
            "condition": [[1793610000000000, 1.0, "e1"], [1793610180000000, 1.0, "e4"]],
            "last_fired": None,
            "version": 1,
        },
        "demos.booked": {"condition": None, "last_fired": 1793610060000000, "version": 1},
    },
    "journey_memories": {
        "trial": {
            "variant": "guided",
            "inside": True,
            "steps_done": 0,
            "waiting_since": 1793610120000000,
            "entry": None,
            "exit": None,
            "conversion": None,
            "when": None,
            "version": 1,
            "signals_seen": ["login"],
            "follows": None,
        },
        "nudge": {
            "variant": "holdout",
            "inside": True,
            "steps_done": 0,
            "waiting_since": 1793610120000000,
            "entry": None,
            "exit": None,
            "conversion": None,
            "when": None,
            "version": 1,
            "signals_seen": [],
            "follows": "guided",
        },
    },
}


def tp(n: int, kind: str, minutes: float) -> TouchpointEvent:
    at = T0 + timedelta(minutes=minutes)
    return TouchpointEvent(
        event_id=f"e{n}",
        customer_id="c1",
        occurred_at=at,
        received_at=at,
        channel=Channel.PRODUCT,
        kind=kind,
        direction=Direction.NONE,
        rep_id="rep-1",
        source="test/1",
    )


BEFORE = [
    tp(1, "quote_sent", 0),
    tp(2, "demo_booked", 1),
    tp(3, "trial_started", 2),
    tp(4, "quote_sent", 3),
    tp(5, "login", 4),
]


def feed(state: CustomerState | None, events: list[TouchpointEvent]) -> CustomerState:
    for event in events:
        state, _ = apply(state, event, NOW, SALES.rules, None, SALES.journeys)
    assert state is not None
    return state


def test_a_record_written_before_memories_had_names_is_read_into_typed_memories() -> None:
    state = CustomerState.from_dict(orjson.loads(OLD_RECORD))
    assert state.rule_memories == {"quotes.three-in-a-week": QUOTES, "demos.booked": DEMOS}
    assert state.journey_memories == {"trial": TRIAL, "nudge": NUDGE}
    assert state.kind_counts["quote_sent"] == 2 and state.touchpoints == 5
    # It is the state the engine reaches today from the same touchpoints.
    assert state == feed(None, BEFORE)


def test_the_changelog_codec_reads_the_earlier_form_and_writes_the_named_one() -> None:
    codec = CustomerStateCodec()
    state = codec.loads(OLD_RECORD)
    assert isinstance(state, CustomerState)
    written = orjson.loads(zstandard.ZstdDecompressor().decompress(codec.dumps(state)))
    assert written == NEW_RECORD
    assert "rules" not in written
    assert codec.loads(codec.dumps(state)) == state


def test_the_named_form_reads_back_to_the_same_state() -> None:
    state = CustomerState.from_dict(NEW_RECORD)
    assert state.rule_memories == {"quotes.three-in-a-week": QUOTES, "demos.booked": DEMOS}
    assert state.journey_memories == {"trial": TRIAL, "nudge": NUDGE}
    assert state.to_dict() == NEW_RECORD


def run_on(state: CustomerState) -> tuple[list[Decision], list[JourneySignal], CustomerState]:
    """What happens next: a third quote and a second demo within the cooldown, the
    journeys' timers, the last required signal."""
    decisions: list[Decision] = []
    signals: list[JourneySignal] = []
    rules, journeys = SALES.rules, SALES.journeys
    for event in (tp(6, "quote_sent", 5), tp(7, "demo_booked", 6)):
        state, fired = apply(state, event, NOW, rules, None, journeys, signals)
        decisions.extend(fired)
    for at in (T0 + timedelta(minutes=62), T0 + timedelta(minutes=122)):
        assert next_deadline(state, rules, journeys) == micros(at)
        state, fired = apply_timer(state, at, NOW, rules, None, journeys, signals)
        decisions.extend(fired)
    state, fired = apply(state, tp(8, "sandbox_error", 130), NOW, rules, None, journeys, signals)
    decisions.extend(fired)
    return decisions, signals, state


def test_partial_matches_cooldowns_and_journeys_carry_on_after_the_upgrade() -> None:
    upgraded = CustomerState.from_dict(orjson.loads(OLD_RECORD))
    decisions, signals, after = run_on(upgraded)
    # The window had two quotes: the third fires. The demo is within a day of the last
    # firing: held by the cooldown. The trial's welcome call falls due an hour after
    # entry; the holdout customer passes the nudge's only step silently and leaves.
    assert [d.intervention.rule_id for d in decisions] == [
        "quotes.three-in-a-week",
        "trial.welcome-call",
    ]
    experiment = decisions[1].intervention.experiment
    assert experiment is not None and (experiment.experiment_id, experiment.variant) == (
        "trial",
        "guided",
    )
    assert [(s.journey_id, s.variant, s.what) for s in signals] == [
        ("trial", "guided", "intervened"),
        ("trial", "guided", "completed"),
        ("trial", "guided", "covered"),
    ]
    assert not after.journey_memories["nudge"].inside
    assert after.journey_memories["trial"].inside  # waits for conversion
    # Exactly what a state never written down would have done.
    fresh_decisions, fresh_signals, fresh_after = run_on(feed(None, BEFORE))
    assert [d.intervention for d in decisions] == [d.intervention for d in fresh_decisions]
    assert signals == fresh_signals and after == fresh_after


def test_the_earliest_forms_of_memories_are_read_too() -> None:
    # Rule memories before rule versions: [condition, last fired]; journey memories
    # before required signals: nine items.
    old = {
        "customer_id": "c1",
        "rules": {
            "demos.booked": [None, T0_US],
            "journey:trial": ["guided", 0, 1, T0_US, None, None, None, None, 1],
        },
    }
    state = CustomerState.from_dict(old)
    assert state.rule_memories == {"demos.booked": RuleMemory(None, T0_US, 0)}
    assert state.journey_memories == {
        "trial": JourneyMemory("guided", False, 1, T0_US, None, None, None, None, 1, ())
    }
    # Version 0 is not the running version: the cooldown holds all the same.
    _, decisions = apply(state, tp(9, "demo_booked", 60), NOW, SALES.rules)
    assert decisions == []


@pytest.mark.parametrize(
    ("record", "fragments"),
    [
        (
            {"rules": {"demos.booked": [None]}},
            ["rule 'demos.booked'", "condition, last_fired and version", "found [None]"],
        ),
        (
            {"rule_memories": {"demos.booked": {"condition": None, "version": 1}}},
            ["rule 'demos.booked'", "found {'condition': None, 'version': 1}"],
        ),
        (
            {"rules": {"journey:trial": ["guided", 1, 0]}},
            ["journey 'trial'", "variant, inside", "found ['guided', 1, 0]"],
        ),
        (
            {"journey_memories": {"trial": "guided"}},
            ["journey 'trial'", "found 'guided'"],
        ),
        (
            {"rule_memories": {"r": {"condition": None, "last_fired": "soon", "version": 1}}},
            ["rule 'r'", "'last_fired': 'soon'"],
        ),
        (
            {
                "journey_memories": {
                    "trial": {**NEW_RECORD["journey_memories"]["trial"], "steps_done": "1"}
                }
            },
            ["journey 'trial'", "'steps_done': '1'"],
        ),
    ],
)
def test_a_memory_of_unknown_shape_is_named_with_what_was_expected(
    record: dict[str, Any], fragments: list[str]
) -> None:
    with pytest.raises(StateFormatError) as caught:
        CustomerState.from_dict({"customer_id": "c1", **record})
    for fragment in fragments:
        assert fragment in str(caught.value)


kinds = st.sampled_from(["quote_sent", "demo_booked", "trial_started", "login", "subscribed"])


@given(st.lists(st.tuples(kinds, st.integers(min_value=0, max_value=3000)), max_size=25))
def test_every_state_the_engine_reaches_round_trips_through_its_stored_form(
    steps: list[tuple[str, int]],
) -> None:
    state = feed(
        CustomerState("c1"),
        [tp(n, kind, minutes) for n, (kind, minutes) in enumerate(steps)],
    )
    assert CustomerState.from_dict(orjson.loads(orjson.dumps(state.to_dict()))) == state
