"""Scores in customer state: carried by the reducer, kept through the state's JSON form,
tested by ``state`` conditions (a missing score is false) and carried in explanations."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

from engine.bundle import load_bundle
from engine.features import FeatureMemory
from engine.reducer import apply, apply_timer
from engine.scoring.learner import Snapshot, Snapshots
from engine.state import CustomerState, Score, explained_scores
from schemas.models import TouchpointEvent

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)

SCORED = CustomerState(
    customer_id="c1",
    touchpoints=3,
    feature_memory=FeatureMemory(replies=2, profile={"plan": "pro"}),
    snapshots=Snapshots({"churn": (Snapshot(5, {"touchpoints": 3.0}, 0.4, 7),)}),
    scores={"churn": Score(0.81, 7, 5, (("touchpoints", 3.0, 0.6), ("profile.plan", "pro", 0.2)))},
)


def event(n: int, kind: str = "email_received") -> TouchpointEvent:
    at = NOW - timedelta(hours=1) + timedelta(minutes=n)
    return TouchpointEvent.model_validate(
        {
            "event_id": f"e{n}",
            "customer_id": "c1",
            "occurred_at": at,
            "received_at": at,
            "channel": "email",
            "kind": kind,
            "direction": "inbound",
            "source": "test/1",
        }
    )


RULES = load_bundle(
    "bundle: b\nversion: 1\nrules:\n"
    "  - id: risky\n"
    "    when: {state: {score.churn: {gte: 0.7}}}\n"
    "    then: {kind: task, title: 'Call {customer_id}', due_in: 1h}\n"
    "  - id: unknown\n"
    "    when: {state: {score.lead: {gte: 0.0}}}\n"
    "    then: {kind: task, title: 'Never', due_in: 1h}\n"
    "  - id: quiet\n"
    "    when: {absence: {after: {kind: lead}, missing: {direction: outbound}, within: 1h}}\n"
    "    then: {kind: task, title: 'Call {customer_id}', due_in: 1h}\n",
    "b.yaml",
).rules


def test_apply_without_a_score_hook_carries_the_scoring_fields() -> None:
    after, _ = apply(SCORED, event(1), NOW, rules=())
    assert after.feature_memory == SCORED.feature_memory
    assert after.snapshots == SCORED.snapshots
    assert after.scores == SCORED.scores


def test_a_timer_that_changes_memories_carries_the_scoring_fields() -> None:
    state, _ = apply(SCORED, event(1, kind="lead"), NOW, rules=RULES)
    later = NOW + timedelta(hours=2)
    after, decisions = apply_timer(state, later, NOW, RULES)
    assert "quiet" in [d.intervention.rule_id for d in decisions]
    assert after.rule_memories != state.rule_memories
    for name in ("feature_memory", "snapshots", "scores"):
        assert getattr(after, name) == getattr(SCORED, name), name


def test_the_hook_runs_before_rules_see_the_state() -> None:
    low = dataclasses.replace(SCORED, scores={"churn": Score(0.1, 7, 5)})

    def hook(state: CustomerState, _: TouchpointEvent) -> CustomerState:
        return dataclasses.replace(state, scores=SCORED.scores)

    _, without = apply(low, event(1), NOW, rules=RULES)
    _, decisions = apply(low, event(1), NOW, rules=RULES, score=hook)
    assert without == []
    assert [d.intervention.rule_id for d in decisions] == ["risky"]
    explanation = decisions[0].intervention.explanation
    assert explanation.scores == {
        "churn": 0.81,
        "churn.model_version": 7.0,
        "churn.contribution.touchpoints": 0.6,
        "churn.contribution.profile.plan": 0.2,
    }
    assert explanation.scores == explained_scores(SCORED)
    assert ("score.churn gte 0.7", "0.81") in [
        (m.condition, m.observed) for m in explanation.matched
    ]


def test_state_json_round_trip_keeps_scores_and_old_states_read_without_them() -> None:
    assert CustomerState.from_dict(SCORED.to_dict()) == SCORED
    plain = CustomerState(customer_id="c2")
    assert set(plain.to_dict()) >= {"customer_id"} and "scores" not in plain.to_dict()
    assert CustomerState.from_dict(plain.to_dict()) == plain
