"""The pure core: reducer, the built-in streak rule, ids, timestamp checks."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.interventions import INTERVENTION_NAMESPACE, intervention_id, uuid5_text
from engine.memories import JourneyMemory, RuleMemory
from engine.reducer import apply
from engine.state import RECENT_EVENT_IDS, CustomerState
from engine.timestamps import TimestampPolicy, timestamp_problem
from schemas.models import Channel, Direction, InterventionKind, TouchpointEvent

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
NOW = datetime(2026, 11, 2, 12, 0, tzinfo=UTC)


def touchpoint(
    n: int,
    direction: str = "outbound",
    kind: str | None = None,
    customer: str = "cust-1",
    rep: str | None = "rep-ana",
    at: datetime | None = None,
) -> TouchpointEvent:
    kind = kind or ("message_sent" if direction == "outbound" else "message_received")
    moment = at or T0 + timedelta(minutes=n)
    return TouchpointEvent(
        event_id=f"e{n}",
        customer_id=customer,
        occurred_at=moment,
        received_at=moment,
        channel=Channel.CHAT,
        kind=kind,
        direction=Direction(direction),
        rep_id=rep,
        source="test/1",
    )


def run(events: list[TouchpointEvent]) -> tuple[CustomerState | None, list]:
    state: CustomerState | None = None
    fired = []
    for event in events:
        state, decisions = apply(state, event, NOW)
        fired.extend(d.intervention for d in decisions if not d.shadow)
    return state, fired


def test_three_unanswered_outbound_messages_raise_one_task_for_the_owner() -> None:
    state, fired = run([touchpoint(1), touchpoint(2), touchpoint(3)])
    assert len(fired) == 1
    command = fired[0]
    assert command.kind is InterventionKind.TASK
    assert command.rep_id == "rep-ana"
    assert command.customer_id == "cust-1"
    assert command.rule_id == "builtin.unanswered-outbound"
    assert command.title == "Change approach: 3 messages to cust-1 without a reply"
    assert command.explanation.triggering_event_ids == ["e1", "e2", "e3"]
    assert command.due_at == T0 + timedelta(minutes=3, hours=24)
    assert command.created_at == NOW
    assert any(m.observed == "3" for m in command.explanation.matched)
    assert state is not None and state.touchpoints == 3


def test_two_outbound_messages_are_not_enough() -> None:
    _, fired = run([touchpoint(1), touchpoint(2)])
    assert fired == []


def test_an_inbound_reply_breaks_the_streak() -> None:
    _, fired = run(
        [touchpoint(1), touchpoint(2), touchpoint(3, "inbound"), touchpoint(4), touchpoint(5)]
    )
    assert fired == []


def test_one_unanswered_run_gives_one_intervention_then_a_new_run_gives_another() -> None:
    events = [touchpoint(n) for n in range(1, 7)]
    events += [touchpoint(7, "inbound"), touchpoint(8), touchpoint(9), touchpoint(10)]
    _, fired = run(events)
    assert [c.explanation.triggering_event_ids for c in fired] == [
        ["e1", "e2", "e3"],
        ["e8", "e9", "e10"],
    ]


def test_touchpoints_that_neither_count_nor_reset_leave_the_streak_alone() -> None:
    events = [
        touchpoint(1),
        touchpoint(2, "none", kind="stage_changed"),
        touchpoint(3),
        touchpoint(4, "outbound", kind="meeting_held"),
        touchpoint(5),
    ]
    _, fired = run(events)
    assert [c.explanation.triggering_event_ids for c in fired] == [["e1", "e3", "e5"]]


def test_a_redelivered_event_changes_nothing() -> None:
    state, _ = run([touchpoint(1), touchpoint(2)])
    again, fired = apply(state, touchpoint(2), NOW)
    assert again is state
    assert fired == []


def test_dedupe_window_is_bounded() -> None:
    state, _ = run([touchpoint(n, "none", kind="web_visit") for n in range(RECENT_EVENT_IDS + 5)])
    assert state is not None
    assert len(state.recent_event_ids) == RECENT_EVENT_IDS
    assert state.recent_event_ids[-1] == f"e{RECENT_EVENT_IDS + 4}"


def test_owner_is_the_rep_of_the_latest_outbound_touchpoint() -> None:
    state, fired = run(
        [
            touchpoint(1, rep="rep-a"),
            touchpoint(2, "inbound", rep="rep-z"),
            touchpoint(3, rep="rep-b"),
        ]
    )
    assert state is not None and state.owner_rep_id == "rep-b"
    assert fired == []


def test_intervention_id_is_deterministic_and_depends_on_every_input() -> None:
    base = intervention_id("r", 1, "c", ["a", "b"])
    assert base == intervention_id("r", 1, "c", ["a", "b"])
    variants = {
        intervention_id("r2", 1, "c", ["a", "b"]),
        intervention_id("r", 2, "c", ["a", "b"]),
        intervention_id("r", 1, "c2", ["a", "b"]),
        intervention_id("r", 1, "c", ["a", "c"]),
        intervention_id("r", 1, "c", ["ab"]),
    }
    assert base not in variants and len(variants) == 5


@given(st.text())
def test_intervention_ids_are_the_standard_name_based_uuid(name: str) -> None:
    # CRMs and earlier releases compute ids with uuid.uuid5: the fast path must agree.
    expected = str(uuid.uuid5(INTERVENTION_NAMESPACE, name))
    assert uuid5_text(name) == expected, f"name {name!r}: expected {expected}"


def test_replaying_the_same_events_gives_the_same_intervention_id() -> None:
    _, first = run([touchpoint(1), touchpoint(2), touchpoint(3)])
    _, second = run([touchpoint(1), touchpoint(2), touchpoint(3)])
    assert first[0].intervention_id == second[0].intervention_id


def test_state_round_trips_through_its_dict_form() -> None:
    state, _ = run([touchpoint(1), touchpoint(2, "inbound"), touchpoint(3), touchpoint(4)])
    assert state is not None
    assert CustomerState.from_dict(state.to_dict()) == state


@pytest.mark.parametrize(
    ("occurred", "received", "fragment"),
    [
        (datetime(1999, 12, 31, tzinfo=UTC), None, "before the earliest accepted time"),
        (NOW + timedelta(minutes=6), None, "in the future"),
        (NOW - timedelta(hours=1), NOW - timedelta(hours=2), "received_at"),
    ],
)
def test_untrustworthy_timestamps_are_named(
    occurred: datetime, received: datetime | None, fragment: str
) -> None:
    event = touchpoint(1, at=occurred).model_copy(update={"received_at": received or occurred})
    problem = timestamp_problem(event, NOW)
    assert problem is not None and fragment in problem


def test_timestamps_within_the_allowed_skew_are_fine() -> None:
    event = touchpoint(1, at=NOW + timedelta(minutes=4))
    assert timestamp_problem(event, NOW) is None
    assert timestamp_problem(event, NOW, TimestampPolicy(max_clock_skew=timedelta(0))) is not None


directions = st.sampled_from(["inbound", "outbound", "none"])


@given(st.lists(directions, max_size=40))
def test_interventions_match_a_brute_force_count_of_unanswered_runs(seq: list[str]) -> None:
    events = [touchpoint(n, d, kind="note" if d == "none" else None) for n, d in enumerate(seq)]
    _, fired = run(events)
    expected = 0
    run_length = 0
    for direction in seq:
        if direction == "inbound":
            run_length = 0
        elif direction == "outbound":
            run_length += 1
            if run_length == 3:
                expected += 1
    assert len(fired) == expected
    assert len({c.intervention_id for c in fired}) == len(fired)


def test_apply_carries_every_state_field_it_does_not_change() -> None:
    import dataclasses

    changed_by_apply = {
        "owner_rep_id", "touchpoints", "first_seen_at", "last_event_at", "last_inbound_at",
        "last_outbound_at", "kind_counts", "recent_event_ids",
    }  # fmt: skip
    state = CustomerState(
        customer_id="cust-1",
        emitted=(1, 2),
        rule_memories={"gone": RuleMemory(None, 5, 1)},
        journey_memories={"left": JourneyMemory("a", False, 1, 5, None, None, None, None, 1, ())},
        touchpoints=4,
    )
    after, _ = apply(state, touchpoint(1, "none", kind="web_visit"), NOW, rules=())
    for field in dataclasses.fields(CustomerState):
        if field.name not in changed_by_apply:
            assert getattr(after, field.name) == getattr(state, field.name), field.name


@pytest.mark.parametrize(
    ("method", "changed"),
    [
        ("with_scoring", ("feature_memory", "snapshots", "scores")),
        ("with_memories", ("rule_memories", "journey_memories")),
    ],
)
def test_new_parts_of_a_state_carry_every_other_field(
    method: str, changed: tuple[str, ...]
) -> None:
    import dataclasses

    # A distinct object per field: a field forgotten or swapped shows.
    state = CustomerState(**{f.name: object() for f in dataclasses.fields(CustomerState)})
    new = [object() for _ in changed]
    after = getattr(state, method)(*new)
    assert [getattr(after, name) for name in changed] == new, method
    for field in dataclasses.fields(CustomerState):
        if field.name not in changed:
            assert getattr(after, field.name) is getattr(state, field.name), (method, field.name)


def test_a_timer_that_changes_memories_carries_every_other_state_field() -> None:
    import dataclasses

    from engine.bundle import load_bundle
    from engine.reducer import apply_timer

    bundle = load_bundle(
        "bundle: b\nversion: 1\nrules:\n  - id: quiet\n"
        "    when: {absence: {after: {kind: lead}, missing: {direction: outbound}, within: 1h}}\n"
        "    then: {kind: task, title: 'Call {customer_id}', due_in: 1h}\n",
        "b.yaml",
    )
    lead = touchpoint(1, "inbound", kind="lead", rep=None)
    state, _ = apply(None, lead, NOW, bundle.rules)
    state = dataclasses.replace(
        state,
        owner_rep_id="rep-ana",
        last_outbound_at=T0,
        emitted=(1, 2),
        journey_memories={"j": JourneyMemory("a", False, 1, 5, None, None, None, None, 1, ())},
    )
    after, [decision] = apply_timer(state, T0 + timedelta(hours=2), NOW, bundle.rules)
    assert decision.intervention.rule_id == "quiet"
    assert after.rule_memories != state.rule_memories
    # The journey is not running: its memory goes with the change.
    assert after.journey_memories == {}
    for field in dataclasses.fields(CustomerState):
        if field.name not in {"rule_memories", "journey_memories"}:
            assert getattr(after, field.name) == getattr(state, field.name), field.name
