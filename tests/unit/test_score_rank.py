"""The ``rank`` condition: among the owner rep's top N customers by a score."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from engine.bundle import RANK_TOP_MAX, InvalidBundle, load_bundle
from engine.reducer import apply, apply_timer
from engine.state import CustomerState, Score
from schemas.models import TouchpointEvent

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


def bundle(rank: str) -> str:
    return (
        "bundle: b\nversion: 1\nrules:\n"
        "  - id: top_risk\n"
        f"    when: {{all: [{{event: {{kind: email_received}}}}, {{rank: {rank}}}]}}\n"
        "    then: {kind: task, title: 'Call {customer_id}', due_in: 1h}\n"
    )


RULES = load_bundle(bundle("{score: churn, top: 3}"), "b.yaml").rules
STATE = CustomerState(customer_id="c1", owner_rep_id="rep-a", scores={"churn": Score(0.8, 5, 0)})


def event() -> TouchpointEvent:
    return TouchpointEvent.model_validate(
        {
            "event_id": "e1",
            "customer_id": "c1",
            "occurred_at": NOW - timedelta(minutes=5),
            "received_at": NOW - timedelta(minutes=5),
            "channel": "email",
            "kind": "email_received",
            "direction": "inbound",
            "source": "test/1",
        }
    )


def fired(state: CustomerState, above: int | None, asked: list[tuple[object, ...]]) -> list[str]:
    def ranks(score: str, rep: str | None, customer: str, value: float) -> int | None:
        asked.append((score, rep, customer, value))
        return above

    _, decisions = apply(state, event(), NOW, RULES, ranks=ranks)
    return [d.intervention.rule_id for d in decisions]


def test_rank_holds_within_the_top_n_only() -> None:
    asked: list[tuple[object, ...]] = []
    assert fired(STATE, 0, asked) == ["top_risk"]
    assert asked == [("churn", "rep-a", "c1", 0.8)]
    assert fired(STATE, 2, []) == ["top_risk"]
    assert fired(STATE, 3, []) == []


def test_rank_does_not_hold_without_a_score_or_standings() -> None:
    assert fired(CustomerState(customer_id="c1", owner_rep_id="rep-a"), 0, []) == []
    assert fired(STATE, None, []) == []
    _, decisions = apply(STATE, event(), NOW, RULES)  # no ranks given at all
    assert decisions == []


def test_the_observation_says_where_the_customer_stands() -> None:
    _, decisions = apply(STATE, event(), NOW, RULES, ranks=lambda *_: 1)
    matched = [(m.condition, m.observed) for m in decisions[0].intervention.explanation.matched]
    assert ("rank: top 3 of the rep by churn", "#2 of rep rep-a") in matched


def test_timers_pass_ranks_too() -> None:
    rules = load_bundle(
        "bundle: b\nversion: 1\nrules:\n  - id: top_risk\n"
        "    when: {rank: {score: churn, top: 1}}\n"
        "    then: {kind: task, title: 'Call {customer_id}', due_in: 1h}\n",
        "b.yaml",
    ).rules
    _, decisions = apply_timer(STATE, NOW, NOW, rules, ranks=lambda *_: 0)
    assert [d.intervention.rule_id for d in decisions] == ["top_risk"]


@pytest.mark.parametrize(
    ("rank", "message"),
    [
        (
            "{score: churn, top: 0}",
            "rules[0].when.all[1].rank.top: expected a whole number from 1 to 50, found 0",
        ),
        (f"{{score: churn, top: {RANK_TOP_MAX + 1}}}", "found 51"),
        ("{score: Churn-Risk, top: 3}", "rank.score: expected a score name"),
        ("{score: churn}", "top"),
    ],
)
def test_a_bad_rank_is_refused_at_load_naming_line_and_field(rank: str, message: str) -> None:
    with pytest.raises(InvalidBundle) as refused:
        load_bundle(bundle(rank), "b.yaml")
    text = str(refused.value)
    assert message in text and "b.yaml:5" in text, text
