"""The learner: examples folded in topic order, model records that resume exactly,
drift reported, a changed model definition starting afresh."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime

from engine.bundle import load_bundle
from engine.rulebook import RuleBook
from engine.scoring.learner import Example
from streams.scoring import ModelRecord, Scoring, encode_example
from streams.scoring_learner import Learner

BUNDLE = """\
bundle: scoring
version: {version}
scoring:
  profile: [plan]
  scores:
    churn:
      features: [touchpoints, profile.plan]
      labels: {{churned: 1, renewed: 0}}
      model: {model}
"""


def book(version: int = 1, model: str = "logistic_regression") -> RuleBook:
    return RuleBook(load_bundle(BUNDLE.format(version=version, model=model), "b.yaml"))


def examples(n: int, seed: int = 7, flip_after: int | None = None) -> list[tuple[bytes, bytes]]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        x = rng.uniform(-3, 3)
        label = int(x > 0)
        if flip_after is not None and i >= flip_after:
            label = 1 - label
        features: dict[str, float | str] = {
            "touchpoints": x,
            "profile.plan": rng.choice(["pro", "free"]),
        }
        out.append((b"churn", encode_example(Example("churn", f"c{i}", features, label, i, i))))
    return out


def fold_all(learner: Learner, records: list[tuple[bytes, bytes]], start: int = 0) -> None:
    for offset, (key, value) in enumerate(records):
        if offset >= start:
            learner.fold(offset, key, value)


def test_a_resumed_learner_publishes_the_model_an_uninterrupted_one_would() -> None:
    stream = examples(300)
    whole = Learner(book())
    whole.resume({})
    fold_all(whole, stream)
    (expected,) = whole.publish()
    assert expected.version == 300 and expected.next_example_offset == 300

    first = Learner(book())
    first.resume({})
    fold_all(first, stream[:120])
    (halfway,) = first.publish()
    restored = ModelRecord.from_bytes(halfway.to_bytes())
    second = Learner(book())
    start = second.resume({"churn": restored})
    assert start == 120
    fold_all(second, stream, start=100)  # a few already learnt ones are read again
    (resumed,) = second.publish()
    # the model is the same to the bit; the running evaluation restarts with the learner
    mine, theirs = json.loads(resumed.to_bytes()), json.loads(expected.to_bytes())
    assert mine["model"] == theirs["model"]
    assert mine["next_example_offset"] == theirs["next_example_offset"] == 300


def test_workers_predict_with_the_published_version() -> None:
    learner = Learner(book())
    learner.resume({})
    fold_all(learner, examples(50))
    (record,) = learner.publish()
    one, two = Scoring(book()), Scoring(book())
    for scoring in (one, two):
        scoring.receive(b"churn", record.to_bytes())
    spec = book().scores["churn"]
    x: dict[str, float | str] = {"touchpoints": 1.5, "profile.plan": "pro"}
    assert one.model(spec).version == two.model(spec).version == 50
    assert one.model(spec).predict(x) == two.model(spec).predict(x)
    assert one.model(spec).predict(x)[0] > 0.5


def test_what_cannot_be_learnt_is_skipped() -> None:
    learner = Learner(book())
    learner.resume({})
    assert not learner.fold(0, b"lead", examples(1)[0][1])  # no such running score
    assert not learner.fold(1, b"churn", b"not json")
    assert learner.refused == 1
    assert learner.fold(2, b"churn", examples(1)[0][1])
    assert learner.next_offset["churn"] == 3


def test_drift_is_reported_when_the_champion_gets_worse() -> None:
    learner = Learner(book())
    learner.resume({})
    fold_all(learner, examples(3000, flip_after=1500))
    assert learner.drifts, "the labels flipped half way: ADWIN should see the error rise"
    drift = learner.drifts[0]
    assert drift.score == "churn" and drift.offset > 1500
    metric = drift.to_metric(datetime(2026, 1, 1, tzinfo=UTC))
    assert metric["metric"] == "score_drift" and metric["score"] == "churn"


def test_a_changed_model_definition_starts_a_new_model_with_later_versions() -> None:
    learner = Learner(book())
    learner.resume({})
    fold_all(learner, examples(40))
    (record,) = learner.publish()
    changed = book(2, "{name: logistic_regression, learning_rate: 0.05}")
    other = Learner(changed)
    other.resume({"churn": record})
    model = other.models["churn"]
    assert model.champion.examples == 0 and model.version == 40
    [change] = other.changes
    metric = change.to_metric(datetime(2026, 1, 1, tzinfo=UTC))
    assert metric["metric"] == "score_model_changed" and metric["shipped"] is True
    assert metric["from"]["learning_rate"] == 0.01 and metric["to"]["learning_rate"] == 0.05
    assert metric["example_offset"] == 40
    # and a worker never predicts with a model made for other settings
    scoring = Scoring(changed)
    scoring.receive(b"churn", record.to_bytes())
    assert scoring.model(changed.scores["churn"]).version == 0


def test_a_switch_to_a_forest_champion_is_reported_and_never_shipped() -> None:
    learner = Learner(book())
    learner.resume({})
    stream = examples(30)
    fold_all(learner, stream[:10])
    learner.publish()
    learner.rulebook = book(2, "forest")  # the bundle switched champion and challenger
    fold_all(learner, stream, start=10)
    [change] = learner.changes
    assert (change.before.name, change.after.name, change.shipped) == (
        "logistic_regression",
        "forest",
        False,
    )
    assert learner.publish() == []  # no data-only format: nothing goes to the workers
    scoring = Scoring(book(2, "forest"))
    from engine.state import CustomerState
    from tests.streams.test_pipeline import touchpoint

    state = scoring(CustomerState(customer_id="c1", touchpoints=1), touchpoint(1, "c1"))
    assert state.scores == {}  # no score rather than an untrained one
