"""Consent per purpose and per field, in the pure core."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.bundle import InvalidBundle, load_bundle
from engine.conditions import EPOCH
from engine.consent import apply_consent, granted, may_train, missing_purposes
from engine.reducer import apply, apply_timer, next_deadline
from engine.state import CustomerState
from schemas.models import ConsentChange, TouchpointEvent

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
NOW = T0 + timedelta(days=400)

BUNDLE = """\
bundle: consent-test
version: 1
fields:
  battery_health: {purposes: [service]}
rules:
  - id: promo.after-message
    when: {event: {kind: message_received}}
    then:
      kind: content_push
      title: "Offer for {customer_id}"
      due_in: 1d
      purposes: [marketing, contact_by_chat]
  - id: service.battery
    when: {event: {kind: device_report, attributes.battery_health: {lt: 70}}}
    then: {kind: task, title: "Battery check {customer_id}", due_in: 1d, purposes: [service]}
  - id: promo.silence
    when:
      absence:
        after: {kind: message_received}
        missing: {direction: outbound}
        within: 1h
    then: {kind: task, title: "Call {customer_id}", due_in: 1d, purposes: [marketing]}
  - id: plain.no-purpose
    when: {event: {kind: message_received}}
    then: {kind: alert, title: "Message from {customer_id}", due_in: 1d}
"""


def change(purpose: str, is_granted: bool, at: datetime, change_id: str = "") -> ConsentChange:
    return ConsentChange(
        change_id=change_id or f"{purpose}-{is_granted}-{at.isoformat()}",
        customer_id="c-1",
        purpose=purpose,
        granted=is_granted,
        occurred_at=at,
        source="test",
    )


def touchpoint(n: int, kind: str = "message_received", **attributes: Any) -> TouchpointEvent:
    return TouchpointEvent(
        event_id=f"e-{n}",
        customer_id="c-1",
        occurred_at=T0 + timedelta(minutes=n),
        received_at=T0 + timedelta(minutes=n),
        channel="chat",
        kind=kind,
        direction="inbound",
        rep_id="rep-1",
        attributes=attributes,
        source="test",
    )


def fired(decisions: list[Any]) -> dict[str, Any]:
    return {d.intervention.rule_id: d for d in decisions}


def test_a_purpose_never_granted_is_missing_and_the_newest_change_wins() -> None:
    state = apply_consent(None, change("marketing", True, T0)).state
    assert granted(state, "marketing")
    assert missing_purposes(state, ("marketing", "profiling")) == ("profiling",)
    older = apply_consent(state, change("marketing", False, T0 - timedelta(days=1)))
    assert not older.changed and granted(older.state, "marketing")
    newer = apply_consent(state, change("marketing", False, T0 + timedelta(days=1)))
    assert newer.changed and not granted(newer.state, "marketing")


def test_a_revocation_wins_a_tie_and_a_repeated_change_changes_nothing() -> None:
    state = apply_consent(None, change("marketing", False, T0, "a")).state
    tie = apply_consent(state, change("marketing", True, T0, "b"))
    assert not tie.changed and not granted(tie.state, "marketing")
    again = apply_consent(tie.state, change("marketing", False, T0, "a"))
    assert not again.changed and again.state is tie.state


def test_consents_survive_the_state_format() -> None:
    state = apply_consent(None, change("profiling", False, T0)).state
    assert CustomerState.from_dict(state.to_dict()) == state
    assert "consents" not in CustomerState(customer_id="x").to_dict()


def test_refusing_profiling_or_risk_modelling_keeps_the_customer_out_of_training() -> None:
    assert may_train(None)
    assert may_train(apply_consent(None, change("marketing", False, T0)).state)
    assert not may_train(apply_consent(None, change("profiling", False, T0)).state)
    assert not may_train(apply_consent(None, change("risk_modelling", False, T0)).state)


def test_an_intervention_needing_a_missing_purpose_is_suppressed_not_emitted() -> None:
    bundle = load_bundle(BUNDLE)
    state, decisions = apply(None, touchpoint(1), NOW, bundle.rules)
    by_rule = fired(decisions)
    assert by_rule["promo.after-message"].suppressed == ("marketing", "contact_by_chat")
    assert not by_rule["promo.after-message"].emitted
    assert by_rule["plain.no-purpose"].emitted

    state = apply_consent(state, change("marketing", True, T0)).state
    state = apply_consent(state, change("contact_by_chat", True, T0)).state
    _, decisions = apply(state, touchpoint(2), NOW, bundle.rules)
    assert fired(decisions)["promo.after-message"].emitted


def test_a_restricted_field_is_invisible_without_one_of_its_purposes() -> None:
    bundle = load_bundle(BUNDLE)
    restricted = bundle.restricted_fields
    event = touchpoint(1, "device_report", battery_health=55)
    _, decisions = apply(None, event, NOW, bundle.rules, restricted=restricted)
    assert "service.battery" not in fired(decisions)

    state = apply_consent(None, change("service", True, T0)).state
    _, decisions = apply(state, event, NOW, bundle.rules, restricted=restricted)
    decision = fired(decisions)["service.battery"]
    assert decision.emitted
    assert "55" in " ".join(m.observed for m in decision.intervention.explanation.matched)


def test_a_rule_may_not_serve_other_purposes_with_a_restricted_field() -> None:
    text = BUNDLE.replace(
        'title: "Battery check {customer_id}", due_in: 1d, purposes: [service]',
        'title: "Battery check {customer_id}", due_in: 1d, purposes: [service, marketing]',
    )
    with pytest.raises(InvalidBundle) as refused:
        load_bundle(text)
    problem = refused.value.problems[0]
    assert problem.field == "rules[1].then"
    assert "attributes.battery_health" in problem.message
    assert "found service, marketing" in problem.message

    no_purpose = BUNDLE.replace(
        'title: "Battery check {customer_id}", due_in: 1d, purposes: [service]',
        'title: "Battery check {customer_id}", due_in: 1d',
    )
    with pytest.raises(InvalidBundle, match="found none"):
        load_bundle(no_purpose)


def test_purposes_are_validated_with_their_line() -> None:
    text = BUNDLE.replace("purposes: [marketing, contact_by_chat]", "purposes: [Marketing!]")
    with pytest.raises(InvalidBundle) as refused:
        load_bundle(text)
    problem = refused.value.problems[0]
    assert (problem.line, problem.field) == (12, "rules[0].then.purposes")


# --- the property: after a revocation is processed, nothing needing it goes out -------

Step = tuple[str, int]


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.tuples(st.just("touchpoint"), st.integers(0, 3)),
            st.tuples(st.sampled_from(["grant", "revoke"]), st.integers(0, 3)),
            st.tuples(st.just("tick"), st.integers(0, 3)),
        ),
        max_size=30,
    )
)
def test_after_a_revocation_no_intervention_needing_it_is_emitted(steps: list[Step]) -> None:
    bundle = load_bundle(BUNDLE)
    state: CustomerState | None = None
    clock = T0
    # What the test itself believes each purpose is: (time, granted), newest wins and a
    # revocation wins a tie.
    believed: dict[str, tuple[datetime, bool]] = {}
    emitted_with_purposes = 0
    for n, (what, jump) in enumerate(steps):
        clock += timedelta(minutes=20 * jump)
        decisions: list[Any] = []
        if what == "touchpoint":
            event = touchpoint(n).model_copy(update={"occurred_at": clock, "received_at": clock})
            state, decisions = apply(state, event, NOW, bundle.rules, cap_per_day=3)
        elif what in ("grant", "revoke"):
            for purpose in ("marketing", "contact_by_chat"):
                is_granted = what == "grant"
                state = apply_consent(
                    state, change(purpose, is_granted, clock, f"{what}-{purpose}-{n}")
                ).state
                before = believed.get(purpose)
                if before is None or clock > before[0] or not is_granted:
                    believed[purpose] = (clock, is_granted)
        elif state is not None:
            deadline = next_deadline(state, bundle.rules)
            if deadline is not None:
                due = EPOCH + timedelta(microseconds=deadline)
                state, decisions = apply_timer(state, due, NOW, bundle.rules, cap_per_day=3)
        for decision in decisions:
            if decision.needs and not decision.suppressed:
                emitted_with_purposes += 1  # passed the gate (a cap may still hold it)
            if decision.emitted and decision.needs:
                for purpose in decision.needs:
                    assert believed.get(purpose, (T0, False))[1], (steps, n, purpose)
    if any(what == "grant" for what, _ in steps) and not any(w == "revoke" for w, _ in steps):
        # With grants only, the gate must not hold back everything either.
        touched = [n for n, (w, _) in enumerate(steps) if w == "touchpoint"]
        first_grant = next(n for n, (w, _) in enumerate(steps) if w == "grant")
        if any(n > first_grant for n in touched):
            assert emitted_with_purposes > 0
