"""Predict, keep the features, learn from late labels; consent; drift; champion and
challenger."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from engine.bundle import load_bundle
from engine.consent import apply_consent
from engine.features import FeatureValue, features, observe
from engine.reducer import apply
from engine.scoring.learner import (
    Example,
    ScoreModel,
    Snapshot,
    Snapshots,
    learn,
    next_deadline,
    on_touchpoint,
    predict,
    remember,
    settle,
    snapshot,
)
from engine.scoring.models import LinearScorer
from engine.scoring.spec import ModelSpec, ScoreSpec, Timeout
from engine.state import CustomerState
from schemas.models import ConsentChange, TouchpointEvent

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
DAY = 86_400_000_000
US0 = int(T0.timestamp()) * 1_000_000

WIN = ScoreSpec(name="win", labels={"deal_won": 1, "deal_lost": 0})
CHURN = ScoreSpec(
    name="churn", labels={"churned": 1, "renewed": 0}, timeout=Timeout(after=90 * DAY, label=0)
)


def touchpoint(n: int, at: datetime, kind: str, **fields: Any) -> TouchpointEvent:
    data: dict[str, Any] = {
        "event_id": f"e{n}",
        "customer_id": "c1",
        "occurred_at": at,
        "received_at": at,
        "channel": "crm",
        "kind": kind,
        "direction": "none",
        "source": "test/1",
    }
    data.update(fields)
    return TouchpointEvent.model_validate(data)


def snap(day: int, value: float) -> Snapshot:
    return Snapshot(US0 + day * DAY, {"x": value}, 0.5)


def test_snapshots_are_bounded_and_skip_features_that_did_not_move() -> None:
    kept: Snapshots | None = None
    for day in range(10):
        kept = remember(kept, "win", snap(day, float(day)), keep=4)
        kept = remember(kept, "win", snap(day, float(day)), keep=4)  # unchanged: not kept
    assert kept is not None
    assert [s.features["x"] for s in kept.by_score["win"]] == [6.0, 7.0, 8.0, 9.0]
    assert Snapshots.from_json(kept.to_json()) == kept


def test_a_late_label_trains_on_the_features_as_they_were() -> None:
    kept = remember(None, "win", snap(0, 1.0), keep=8)
    kept = remember(kept, "win", snap(20, 2.0), keep=8)
    still, examples = settle(WIN, "c1", kept, US0 + 45 * DAY, label=1)
    assert [(e.features, e.label, e.at) for e in examples] == [
        ({"x": 1.0}, 1, US0),
        ({"x": 2.0}, 1, US0 + 20 * DAY),
    ]
    assert all(e.labelled_at == US0 + 45 * DAY for e in examples)
    assert "win" not in still.by_score


def test_no_churn_within_the_timeout_labels_zero_at_the_deadline() -> None:
    kept = remember(None, "churn", snap(0, 1.0), keep=8)
    kept = remember(kept, "churn", snap(60, 2.0), keep=8)
    assert next_deadline(CHURN, kept) == US0 + 90 * DAY
    still, examples = settle(CHURN, "c1", kept, US0 + 89 * DAY)
    assert examples == [] and still == kept
    still, examples = settle(CHURN, "c1", kept, US0 + 100 * DAY, label=1)  # churned on day 100
    assert [(e.features["x"], e.label, e.labelled_at) for e in examples] == [
        (1.0, 0, US0 + 90 * DAY),  # the 90 days had passed: not churned in time
        (2.0, 1, US0 + 100 * DAY),
    ]
    assert next_deadline(CHURN, still) is None


def test_a_customer_who_refused_training_is_never_learnt_from() -> None:
    state, _ = apply(None, touchpoint(1, T0, "message_received"), T0, rules=())
    refused = apply_consent(
        state,
        ConsentChange.model_validate(
            {
                "change_id": "k1",
                "customer_id": "c1",
                "purpose": "risk_modelling",
                "granted": False,
                "occurred_at": T0,
                "source": "test/1",
            }
        ),
    ).state
    model = ScoreModel(WIN)
    before = model.version
    assert learn(model, snap(0, 1.0), 1, refused) is None
    assert model.version == before and model.champion.examples == 0
    assert learn(model, snap(0, 1.0), 1, state) is not None
    assert model.champion.examples == 1

    kept = remember(None, "win", snap(0, 1.0), keep=8)
    won = touchpoint(2, T0 + timedelta(days=1), "deal_won")
    still, examples = on_touchpoint(WIN, refused, kept, won)
    assert examples == [] and "win" not in still.by_score  # dropped, not kept for later
    _, examples = on_touchpoint(WIN, state, kept, won)
    assert [e.label for e in examples] == [1]


def test_predict_returns_the_score_and_its_top_three_contributions() -> None:
    spec = load_bundle(
        """\
bundle: s
version: 1
scoring:
  scores:
    win:
      features: [touchpoints, days_since_last_event, count.*]
      labels: {deal_won: 1, deal_lost: 0}
"""
    ).scoring
    assert spec is not None
    score_spec = spec.score("win")
    assert score_spec is not None
    model = ScoreModel(score_spec)
    rng = random.Random(3)
    for n in range(200):
        x: dict[str, FeatureValue] = {
            "touchpoints": float(rng.randint(1, 20)),
            "days_since_last_event": rng.random() * 30,
            "count.message_received": float(rng.randint(0, 5)),
            "count.purchase": float(rng.randint(0, 2)),
            "channel.chat": 4.0,  # not selected by the score
        }
        y = int(x["touchpoints"] > 10)  # type: ignore[operator]
        model.learn(Example("win", "c", x, y, n, n))
    state, memory = None, None
    for n in range(12):
        event = touchpoint(n, T0 + timedelta(hours=n), "message_received", channel="chat")
        state, _ = apply(state, event, T0, rules=())
        memory = observe(memory, event)
    assert state is not None
    all_features = features(state, memory, T0 + timedelta(days=1))
    score, top = predict(model, all_features)
    assert score > 0.5
    assert len(top) == 3
    assert top[0].feature == "touchpoints" and top[0].value == 12.0
    assert "channel.chat" not in {c.feature for c in top}
    kept = snapshot(model, all_features, US0)
    assert set(kept.features) == {"touchpoints", "days_since_last_event", "count.message_received"}
    assert kept.score == score


def test_champion_and_challenger_are_validated_before_they_learn() -> None:
    model = ScoreModel(
        ScoreSpec(
            name="win", labels={"won": 1, "lost": 0}, challenger=ModelSpec(name="forest", trees=3)
        )
    )
    rng = random.Random(4)
    first = model.learn(Example("win", "c", {"a": 1.0}, 1, 0, 0))
    assert first.champion == 0.5  # an untrained model knows nothing
    assert first.challenger is not None
    for n in range(400):
        a = rng.gauss(0, 1)
        model.learn(Example("win", "c", {"a": a}, int(a + rng.gauss(0, 0.5) > 0), n, n))
    assert model.champion_eval.examples == model.challenger_eval.examples == 401
    assert model.champion_eval.auc() > 0.8
    assert model.challenger_eval.auc() > 0.7
    assert model.champion_eval.log_loss() < 0.6
    assert model.version == 401


def test_drift_is_flagged_when_the_error_stream_changes() -> None:
    model = ScoreModel(ScoreSpec(name="win", labels={"won": 1, "lost": 0}))
    rng = random.Random(5)
    flags: list[bool] = []
    for n in range(3000):
        a = rng.gauss(0, 1)
        truth = a > 0 if n < 1500 else a < 0  # the world flips half-way
        flags.append(model.learn(Example("win", "c", {"a": a}, int(truth), n, n)).drifted)
    assert not any(flags[:1400])
    assert any(flags[1500:])
    assert model.drift.drifts == sum(flags)
    assert model.drift.errors == 3000


def test_a_restored_champion_scores_like_the_original() -> None:
    from engine.scoring.codec import from_bytes, to_bytes

    model = ScoreModel(WIN)
    for n in range(50):
        model.learn(Example("win", "c", {"a": float(n % 5)}, n % 2, n, n))
    assert isinstance(model.champion, LinearScorer)
    champion, version = from_bytes(to_bytes(model.champion, model.version))
    restored = ScoreModel(WIN, champion=champion, version=version)
    assert restored.version == 50
    assert predict(restored, {"a": 3.0}) == predict(model, {"a": 3.0})


@pytest.mark.parametrize("bad", [[1, 2], "x", [1, {}, 0.5]])
def test_a_snapshot_of_an_unknown_shape_is_refused(bad: object) -> None:
    with pytest.raises(ValueError, match="snapshot: expected"):
        Snapshot.from_json(bad)


def test_a_customer_state_alone_is_enough_to_train() -> None:
    assert learn(ScoreModel(WIN), snap(0, 1.0), 0, CustomerState("c9")) is not None


def test_a_label_older_than_a_snapshot_leaves_that_snapshot_open() -> None:
    kept = remember(None, "win", snap(0, 1.0), keep=8)
    kept = remember(kept, "win", snap(10, 2.0), keep=8)
    still, examples = settle(WIN, "c1", kept, US0 + 5 * DAY, label=0)  # a late label event
    assert [(e.features["x"], e.label) for e in examples] == [(1.0, 0)]
    assert [s.features["x"] for s in still.by_score["win"]] == [2.0]


def test_a_champion_built_for_other_settings_is_refused() -> None:
    other = LinearScorer(ModelSpec(learning_rate=0.5))
    with pytest.raises(ValueError, match=r"expected a model for .*learning_rate=0\.01.*found"):
        ScoreModel(WIN, champion=other)
