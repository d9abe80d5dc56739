"""Scoring in the worker's batch pipeline: touchpoints scored, snapshots kept, labels
settled into examples (never for a customer who refused training), scores in rules and
in intervention explanations, models read from the models topic."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from engine.builtin import BUILTIN_BUNDLE
from engine.bundle import InvalidBundle, load_bundle
from engine.rulebook import RuleBook
from engine.scoring.learner import Example, ScoreModel
from engine.scoring.models import LinearScorer
from engine.state import CustomerState
from engine.timestamps import TimestampPolicy
from schemas.codec import consent_change_codec, encode_intervention
from schemas.models import ConsentChange
from schemas.partitioning import customer_partition
from streams.pipeline import BatchResult, Pipeline, RawRecord
from streams.scoring import (
    ModelRecord,
    Scoring,
    ScoringRecordError,
    decode_example,
    encode_example,
)
from tests.streams.test_pipeline import PARTITIONS, single, touchpoint

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)

BUNDLE = """\
bundle: scoring
version: 1
scoring:
  profile: [plan]
  snapshots: 3
  scores:
    churn:
      features: [touchpoints, count.*, profile.plan, unanswered_outbound]
      labels: {churned: 1, renewed: 0}
rules:
  - id: churn_watch
    when:
      all:
        - event: {kind: email_received}
        - state: {score.churn: {gte: 0.0}}
    then: {kind: task, title: 'Call {customer_id}', due_in: 1h}
  - id: unknown_score
    when:
      all:
        - event: {kind: email_received}
        - state: {score.missing: {gte: 0.0}}
    then: {kind: task, title: 'Never {customer_id}', due_in: 1h}
"""


def make() -> tuple[Pipeline, Scoring, RuleBook]:
    book = RuleBook(BUILTIN_BUNDLE, load_bundle(BUNDLE, "scoring.yaml"))
    scoring = Scoring(book)
    pipeline = Pipeline(book, TimestampPolicy(), PARTITIONS, scoring=scoring)
    return pipeline, scoring, book


class Store:
    def __init__(self) -> None:
        self.states: dict[str, CustomerState] = {}

    def run(self, pipeline: Pipeline, records: list[RawRecord]) -> BatchResult:
        result = pipeline.process(records, self.states.get, NOW)
        for changed in result.states.values():
            self.states.update(changed)
        return result


def test_a_touchpoint_is_scored_and_its_snapshot_kept() -> None:
    pipeline, _, _ = make()
    store = Store()
    store.run(pipeline, [single(touchpoint(1, "c1", attributes={"plan": "pro"}))])
    state = store.states["c1"]
    score = state.scores["churn"]
    assert 0.0 < score.value < 1.0
    assert score.model_version == 0  # untrained until a model is published
    assert state.feature_memory is not None and state.feature_memory.profile == {"plan": "pro"}
    assert state.snapshots is not None
    (kept,) = state.snapshots.by_score["churn"]
    assert kept.features["profile.plan"] == "pro"
    assert "days_since_first_seen" not in kept.features  # only the score's features


def test_state_with_scores_survives_its_json_round_trip() -> None:
    pipeline, _, _ = make()
    store = Store()
    store.run(pipeline, [single(touchpoint(n, "c1", attributes={"plan": "pro"})) for n in (1, 2)])
    state = store.states["c1"]
    assert CustomerState.from_dict(state.to_dict()) == state


def test_a_label_event_settles_the_snapshots_into_examples() -> None:
    pipeline, _, _ = make()
    store = Store()
    store.run(pipeline, [single(touchpoint(n, "c1")) for n in (1, 2)])
    result = store.run(pipeline, [single(touchpoint(3, "c1", kind="churned"))])
    examples = [e for _, e in result.examples]
    assert [e.label for e in examples] == [1, 1]
    assert [e.features["touchpoints"] for e in examples] == [1.0, 2.0]
    assert {p for p, _ in result.examples} == {customer_partition("c1", PARTITIONS)}
    snapshots = store.states["c1"].snapshots
    assert snapshots is None or "churn" not in snapshots.by_score  # all settled
    assert decode_example(encode_example(examples[0])) == examples[0]


def test_snapshots_are_bounded_by_the_bundle() -> None:
    pipeline, _, _ = make()
    store = Store()
    store.run(pipeline, [single(touchpoint(n, "c1")) for n in range(1, 8)])
    snapshots = store.states["c1"].snapshots
    assert snapshots is not None and len(snapshots.by_score["churn"]) == 3


def consent(customer: str, granted: bool, minute: int) -> RawRecord:
    at = NOW - timedelta(hours=1) + timedelta(minutes=minute)
    change = ConsentChange(
        change_id=f"{customer}-{minute}",
        customer_id=customer,
        purpose="profiling",
        granted=granted,
        occurred_at=at,
        source="test/1",
    )
    value = consent_change_codec().encode(change)
    return RawRecord(
        "consents", customer_partition(customer, PARTITIONS), minute, customer.encode(), value
    )


def test_a_customer_who_revoked_profiling_gives_no_example_and_keeps_no_snapshot() -> None:
    pipeline, _, _ = make()
    store = Store()
    store.run(pipeline, [single(touchpoint(1, "c1")), single(touchpoint(1, "c2"))])
    store.run(pipeline, [consent("c1", False, 2)])
    assert store.states["c1"].snapshots is None  # dropped at the revocation
    store.run(pipeline, [single(touchpoint(3, "c1")), single(touchpoint(3, "c2"))])
    assert store.states["c1"].snapshots is None
    assert "churn" in store.states["c1"].scores  # still scored, never learnt from
    result = store.run(
        pipeline,
        [single(touchpoint(4, "c1", kind="churned")), single(touchpoint(4, "c2", kind="churned"))],
    )
    assert {e.customer_id for _, e in result.examples} == {"c2"}


def test_scores_reach_rules_and_the_intervention_explanation() -> None:
    pipeline, _, _ = make()
    store = Store()
    result = store.run(pipeline, [single(touchpoint(1, "c1", "inbound"))])
    fired = [c for _, c in result.interventions if c.rule_id == "churn_watch"]
    assert len(fired) == 1
    scores = fired[0].explanation.scores
    assert scores["churn"] == store.states["c1"].scores["churn"].value
    assert scores["churn.model_version"] == 0.0
    assert any(k.startswith("churn.contribution.") for k in scores) or scores["churn"] == 0.5
    # a score nobody declares: the condition is false, nothing fires
    assert not [c for _, c in result.interventions if c.rule_id == "unknown_score"]
    assert encode_intervention(fired[0])  # the explanation still encodes


def trained_record(book: RuleBook, version_examples: int) -> bytes:
    spec = book.scores["churn"]
    model = ScoreModel(spec)

    for n in range(version_examples):
        x: dict[str, float | str] = {"touchpoints": float(n % 5), "profile.plan": "pro"}
        model.learn(Example("churn", f"c{n}", x, n % 2, n, n))
    assert isinstance(model.champion, LinearScorer)
    return ModelRecord("churn", version_examples, model.champion, model.version, {}).to_bytes()


def test_a_model_read_from_the_topic_is_the_one_predictions_use() -> None:
    pipeline, scoring, book = make()
    store = Store()
    store.run(pipeline, [single(touchpoint(1, "c1"))])
    assert store.states["c1"].scores["churn"].model_version == 0
    scoring.receive(b"churn", trained_record(book, 12))
    store.run(pipeline, [single(touchpoint(2, "c1"))])
    assert store.states["c1"].scores["churn"].model_version == 12


def test_a_model_record_that_cannot_be_used_is_refused_naming_the_field() -> None:
    _, scoring, book = make()
    good = trained_record(book, 3)
    with pytest.raises(ScoringRecordError, match="expected 'other'"):
        scoring.receive(b"other", good)
    tampered = json.loads(good)
    tampered["model"]["intercept"] += 1.0
    with pytest.raises(ScoringRecordError, match="checksum"):
        scoring.receive(b"churn", json.dumps(tampered).encode())
    with pytest.raises(ScoringRecordError, match="expected JSON"):
        scoring.receive(b"churn", b"\x80\x04pickle")
    assert scoring.records == {}


def test_a_bundle_naming_a_bad_score_is_refused_at_load() -> None:
    text = BUNDLE.replace("score.missing", "score.Bad-Name")
    with pytest.raises(InvalidBundle, match=r"score\.<name>"):
        load_bundle(text, "scoring.yaml")


TIMEOUT_BUNDLE = """\
bundle: renewals
version: 1
scoring:
  scores:
    churn:
      features: [touchpoints]
      labels: {churned: 1}
      timeout: {after: 1h, label: 0}
rules:
  - id: any_reply
    when: {state: {touchpoints: {gte: 1}}}
    then: {kind: task, title: 'Call {customer_id}', due_in: 1h}
"""


def test_a_snapshot_timing_out_is_settled_at_its_tick_without_evaluating_rules() -> None:
    from engine.reducer import next_deadline
    from streams.timers import Schedule, encode_tick

    book = RuleBook(load_bundle(TIMEOUT_BUNDLE, "renewals.yaml"))
    pipeline = Pipeline(book, TimestampPolicy(), PARTITIONS, scoring=Scoring(book))
    store = Store()
    event = touchpoint(1, "c1")
    store.run(pipeline, [single(event)])
    state = store.states["c1"]
    assert state.snapshots is not None
    due = next_deadline(state, book.rules, book.journeys, book.scores)
    hour = 3_600_000_000
    assert due == state.snapshots.by_score["churn"][0].at + hour
    schedule = Schedule(book)
    schedule.note("c1", 0, state)
    assert [d for _, _, d in schedule.due(due)] == [due]  # the scheduler ticks for it
    assert due is not None
    partition = customer_partition("c1", PARTITIONS)
    early = RawRecord("timers", partition, 1, b"c1", encode_tick("c1", due - 1))
    assert store.run(pipeline, [early]).examples == []  # a stale tick: nothing due
    tick = RawRecord("timers", partition, 2, b"c1", encode_tick("c1", due))
    result = store.run(pipeline, [tick])
    [(where, example)] = result.examples
    assert (where, example.label, example.labelled_at) == (partition, 0, due)
    assert result.interventions == [] and result.ticks == 0  # rules were not evaluated
    snapshots = store.states["c1"].snapshots
    assert snapshots is not None and "churn" not in snapshots.by_score
    assert next_deadline(store.states["c1"], book.rules, book.journeys, book.scores) is None


def test_rank_conditions_read_the_standings_the_worker_was_given() -> None:
    text = BUNDLE.replace(
        "        - state: {score.churn: {gte: 0.0}}", "        - rank: {score: churn, top: 2}"
    )
    book = RuleBook(load_bundle(text, "scoring.yaml"))
    scoring = Scoring(book)
    pipeline = Pipeline(book, TimestampPolicy(), PARTITIONS, scoring=scoring)
    store = Store()
    result = store.run(pipeline, [single(touchpoint(1, "c1", "inbound"))])
    assert not [c for _, c in result.interventions if c.rule_id == "churn_watch"]
    asked: list[tuple[str, str | None, str, float]] = []

    def ranks(score: str, rep: str | None, customer: str, value: float) -> int:
        asked.append((score, rep, customer, value))
        return 1

    scoring.ranks = ranks
    result = store.run(pipeline, [single(touchpoint(2, "c1", "inbound"))])
    assert [c.rule_id for _, c in result.interventions] == ["churn_watch"]
    assert asked == [("churn", "rep-1", "c1", store.states["c1"].scores["churn"].value)]


def test_snapshots_are_trimmed_before_rule_memories_to_fit_the_state_budget() -> None:
    import dataclasses

    import orjson

    text = BUNDLE.replace("snapshots: 3", "snapshots: 16").replace(
        "features: [touchpoints, count.*, profile.plan, unanswered_outbound]", "features: all"
    ) + (
        "  - id: three_mails\n"
        "    when: {count: {of: {kind: email_sent}, within: 30d, at_least: 100}}\n"
        "    then: {kind: task, title: 'Call {customer_id}', due_in: 1h}\n"
    )
    book = RuleBook(load_bundle(text, "scoring.yaml"))
    pipeline = Pipeline(book, TimestampPolicy(), PARTITIONS, scoring=Scoring(book))

    def dump(state: CustomerState) -> bytes:
        return orjson.dumps(state.to_dict())

    result = pipeline.process([single(touchpoint(n, "c1")) for n in range(1, 13)], {}.get, NOW)
    state = result.states[customer_partition("c1", PARTITIONS)]["c1"]
    assert state.snapshots is not None and len(state.snapshots.by_score["churn"]) == 12
    assert state.rule_memories["three_mails"]
    without = len(dump(dataclasses.replace(state, snapshots=None)))
    budget = without + (len(dump(state)) - without) // 3
    fitted = dataclasses.replace(pipeline, state_max_bytes=budget)
    [(_, _, value)] = fitted.encode_states(result, dump)
    assert len(value) <= budget
    kept = result.states[customer_partition("c1", PARTITIONS)]["c1"]
    assert kept.rule_memories == state.rule_memories  # untouched
    assert kept.snapshots is not None
    snaps = kept.snapshots.by_score["churn"]
    assert 0 < len(snaps) < 12 and snaps == state.snapshots.by_score["churn"][-len(snaps) :]
    assert result.trimmed_snapshots == 12 - len(snaps) and result.trimmed_memories == 0


def test_warroom_explain_prints_each_score_with_its_version_and_top_features() -> None:
    from streams.explain_cli import format_explanation

    page = {
        "customer_id": "c1",
        "partition": 2,
        "owned_here": True,
        "state": None,
        "scores": {
            "churn": {
                "value": 0.8123,
                "model_version": 42,
                "at": "2026-11-22T11:00:00+00:00",
                "top": [
                    {"feature": "unanswered_outbound", "value": 4.0, "contribution": 1.25},
                    {"feature": "profile.plan", "value": "free", "contribution": -0.5},
                ],
            }
        },
        "rules": [],
    }
    lines = format_explanation(page).splitlines()
    assert "  score churn 0.812 (model v42)" in lines
    assert "    weighed most: unanswered_outbound 4.0 (+1.25), profile.plan free (-0.50)" in lines


RESTRICTED = """\
bundle: restricted
version: 1
fields:
  income: {purposes: [risk_modelling]}
scoring:
  profile: [income, plan]
  scores:
    churn:
      features: [profile.*]
      labels: {churned: 1, renewed: 0}
"""


def test_a_restricted_field_is_scored_only_for_customers_who_granted_its_purpose() -> None:
    book = RuleBook(load_bundle(RESTRICTED, "restricted.yaml"))
    pipeline = Pipeline(book, TimestampPolicy(), PARTITIONS, scoring=Scoring(book))
    store = Store()
    grant = consent("c2", True, 0)
    granted_change = consent_change_codec().decode(grant.value or b"")
    grant = RawRecord(
        "consents",
        grant.partition,
        grant.offset,
        grant.key,
        consent_change_codec().encode(
            granted_change.model_copy(update={"purpose": "risk_modelling"})
        ),
    )
    store.run(pipeline, [grant])
    attributes = {"income": 52000, "plan": "pro"}
    store.run(
        pipeline,
        [
            single(touchpoint(1, "c1", attributes=attributes)),
            single(touchpoint(1, "c2", attributes=attributes)),
        ],
    )
    refused, allowed = store.states["c1"], store.states["c2"]
    assert refused.feature_memory is not None and allowed.feature_memory is not None
    assert refused.feature_memory.profile == {"plan": "pro"}  # income never reaches scoring
    assert allowed.feature_memory.profile == {"income": 52000.0, "plan": "pro"}
    assert refused.snapshots is not None
    assert "profile.income" not in refused.snapshots.by_score["churn"][0].features


def test_a_revoked_purpose_takes_its_restricted_fields_out_of_the_feature_memory() -> None:
    book = RuleBook(load_bundle(RESTRICTED, "restricted.yaml"))
    pipeline = Pipeline(book, TimestampPolicy(), PARTITIONS, scoring=Scoring(book))
    store = Store()

    def risk_modelling(granted: bool, minute: int) -> RawRecord:
        record = consent("c2", granted, minute)
        change = consent_change_codec().decode(record.value or b"")
        value = consent_change_codec().encode(
            change.model_copy(update={"purpose": "risk_modelling"})
        )
        return RawRecord(record.topic, record.partition, record.offset, record.key, value)

    store.run(pipeline, [risk_modelling(True, 0)])
    store.run(pipeline, [single(touchpoint(1, "c2", attributes={"income": 52000, "plan": "pro"}))])
    memory = store.states["c2"].feature_memory
    assert memory is not None and "income" in memory.profile
    store.run(pipeline, [risk_modelling(False, 2)])
    memory = store.states["c2"].feature_memory
    assert memory is not None
    assert (dict(memory.profile), set(memory.profile_at)) == ({"plan": "pro"}, {"plan"})
