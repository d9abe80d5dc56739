"""Conformance of every model the bundle language offers, after River's own estimator
checks (``river/checks``): each model name in ``engine.scoring.spec.MODELS`` goes
through every check below, so a model added to the language is checked the day it is.

- a serialisation round trip gives identical predictions and identical continued
  learning, where a data-only format exists (``logistic_regression``, the model topic's
  JSON); ``forest`` has none (docs/scoring.md, *Model format*): it is never shipped, and
  the codec writes no document for it;
- learning and predicting never change the feature mapping passed in;
- predicting never changes what the model does (the linear model: not a byte of it);
- missing features (absent from the mapping), features never seen while learning and
  categories never seen are handled without an exception, and as documented: the linear
  model scores a mapping with them exactly as one without them (a missing or unseen
  number counts as its running mean, an unseen category has weight 0);
- seeded runs are deterministic: the same examples and the same seed give the same
  predictions, also in another process with another string-hash seed (two workers are two
  processes).
"""

from __future__ import annotations

import copy
import json
import os
import pickle
import random
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import pytest

from engine.features import FeatureValue
from engine.scoring import codec
from engine.scoring.models import LinearScorer, Scorer, build
from engine.scoring.spec import MODELS, ModelSpec

ROOT = Path(__file__).resolve().parents[2]


def spec_for(name: str) -> ModelSpec:
    if name == "forest":
        return ModelSpec(name="forest", trees=3, seed=7)
    return ModelSpec(name=name, learning_rate=0.05, l2=0.001)


def examples(n: int = 300, seed: int = 1) -> list[tuple[dict[str, FeatureValue], int]]:
    """Churn-like examples: numbers and categories, some features absent at times."""
    rng = random.Random(seed)
    out: list[tuple[dict[str, FeatureValue], int]] = []
    for _ in range(n):
        x: dict[str, FeatureValue] = {
            "touchpoints": float(rng.randrange(60)),
            "unanswered_outbound": float(rng.randrange(6)),
            "profile.plan": rng.choice(["free", "team", "pro"]),
        }
        if rng.random() < 0.7:
            x["days_since_last_inbound"] = rng.random() * 40
        if rng.random() < 0.5:
            x["stage"] = rng.choice(["trial", "proposal", "renewal"])
        risk = x["unanswered_outbound"] > 2 or x.get("days_since_last_inbound", 0.0) > 25  # type: ignore[operator]
        label = int(risk if rng.random() < 0.85 else not risk)
        out.append((x, label))
    return out


PROBES: list[dict[str, FeatureValue]] = [x for x, _ in examples(40, seed=2)]


def trained(name: str, n: int = 300, seed: int = 1) -> Scorer:
    model = build(spec_for(name))
    for x, label in examples(n, seed):
        model.learn(x, label)
    return model


def predictions(model: Scorer) -> list[float]:
    return [model.predict(x) for x in PROBES]


def test_every_model_name_of_the_language_is_checked() -> None:
    for name in MODELS:
        assert build(spec_for(name)).spec.name == name
    assert set(MODELS) == {"logistic_regression", "forest"}  # a new name: check it here


@pytest.mark.parametrize("name", MODELS)
def test_learning_and_predicting_leave_the_features_as_they_were(name: str) -> None:
    model = build(spec_for(name))
    for x, label in examples(120):
        before = copy.deepcopy(x)
        model.predict(x)
        model.contributions(x)
        model.learn(x, label)
        assert x == before
        assert [type(v) for v in x.values()] == [type(v) for v in before.values()]


@pytest.mark.parametrize("name", MODELS)
def test_predicting_does_not_change_what_the_model_does(name: str) -> None:
    model, twin = trained(name), trained(name)
    unseen: dict[str, FeatureValue] = {"brand_new": 3.0, "profile.plan": "enterprise"}
    for x in [*PROBES, {}, unseen]:
        model.predict(x)
        model.contributions(x)
    assert predictions(model) == predictions(twin)
    # and learning from here is what it would have been without the predictions
    for x, label in examples(50, seed=3):
        model.learn(x, label)
        twin.learn(x, label)
    assert predictions(model) == predictions(twin)


def test_predicting_does_not_change_the_linear_model_at_all() -> None:
    """Byte for byte. The forest is checked by behaviour only (above): River's nominal
    splitters keep per-class tables in defaultdicts, and the naive Bayes prediction at a
    leaf reads them, adding an empty table for a class the leaf has not seen; that changes
    the pickled bytes but no prediction and no learning."""
    model = trained("logistic_regression")
    before = pickle.dumps(model)  # a test's own copy, never a format on a topic
    for x in [*PROBES, {}, {"brand_new": 3.0, "profile.plan": "enterprise"}]:
        model.predict(x)
        model.contributions(x)
    assert pickle.dumps(model) == before


@pytest.mark.parametrize("name", MODELS)
def test_missing_and_unseen_features_give_a_probability_not_an_exception(name: str) -> None:
    untrained = build(spec_for(name))
    model = trained(name)
    odd: list[Mapping[str, FeatureValue]] = [
        {},  # nothing known yet
        {"touchpoints": 4.0},  # most features missing
        {"never_seen": 12.0, "profile.region": "mars"},  # a number and a category never seen
        {"profile.plan": "enterprise", "stage": "lost"},  # categories never seen
    ]
    for x in odd:
        for scorer in (untrained, model):
            value = scorer.predict(x)
            assert 0.0 <= value <= 1.0, (name, x, value)
            scorer.contributions(x)
    # an untrained model knows nothing: even odds (the linear model) or no answer (forest: 0.5)
    assert untrained.predict({"touchpoints": 4.0}) == 0.5
    # learning from a mapping with unseen and missing features is an ordinary example
    model.learn({"never_seen": 12.0, "profile.region": "mars"}, 1)
    model.learn({}, 0)
    assert model.examples == 302


def test_the_linear_model_scores_unseen_features_as_if_absent() -> None:
    """The documented behaviour: an unseen number is left out (weight 0, the scaler must
    not grow while predicting), an unseen category has weight 0, a missing number counts
    as its running mean (its scaled value is 0)."""
    model = trained("logistic_regression")
    for x in PROBES:
        with_unseen = {**x, "never_seen": 99.0, "profile.plan": "enterprise"}
        without = {k: v for k, v in x.items() if k != "profile.plan"}
        assert model.predict(with_unseen) == model.predict(without)
        assert all(c.feature != "never_seen" for c in model.contributions(with_unseen))
    assert isinstance(model, LinearScorer)
    mean = model.scaler.means["days_since_last_inbound"]
    x = {"touchpoints": 10.0, "unanswered_outbound": 1.0, "profile.plan": "pro"}
    assert model.predict(x) == pytest.approx(
        model.predict({**x, "days_since_last_inbound": mean}), abs=1e-12
    )


@pytest.mark.parametrize("name", MODELS)
def test_the_same_examples_and_seed_give_the_same_predictions(name: str) -> None:
    assert predictions(trained(name)) == predictions(trained(name))


def test_forest_seed_matters() -> None:
    """The seed is used, so the determinism above is the seed's doing."""
    one, other = (
        build(ModelSpec(name="forest", trees=3, seed=7)),
        build(ModelSpec(name="forest", trees=3, seed=8)),
    )
    for x, label in examples(600):
        one.learn(x, label)
        other.learn(x, label)
    assert predictions(one) != predictions(other)


CHILD = """
import json, sys
sys.path.insert(0, {root!r})
from tests.unit.test_scorer_conformance import predictions, trained
from engine.scoring import codec
model = trained({name!r})
out = {{"predictions": predictions(model)}}
if {name!r} == "logistic_regression":
    out["document"] = codec.to_bytes(model, 1).decode()
print(json.dumps(out))
"""


@pytest.mark.parametrize("name", MODELS)
def test_seeded_runs_agree_across_processes_with_different_hash_seeds(name: str) -> None:
    answers = []
    for hash_seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        done = subprocess.run(
            [sys.executable, "-c", CHILD.format(root=str(ROOT), name=name)],
            env=env,
            capture_output=True,
            text=True,
            check=False,
            cwd=ROOT,
        )
        assert done.returncode == 0, done.stderr
        answers.append(json.loads(done.stdout))
    assert answers[0] == answers[1]
    assert answers[0]["predictions"] == predictions(trained(name))


def test_a_linear_round_trip_predicts_and_learns_identically() -> None:
    model = trained("logistic_regression")
    assert isinstance(model, LinearScorer)
    back, version = codec.from_bytes(codec.to_bytes(model, 7))
    assert version == 7 and back.examples == model.examples
    assert predictions(back) == predictions(model)
    assert [back.contributions(x) for x in PROBES] == [model.contributions(x) for x in PROBES]
    for x, label in examples(80, seed=4):
        back.learn(x, label)
        model.learn(x, label)
    assert predictions(back) == predictions(model)
    assert codec.to_bytes(back, 7) == codec.to_bytes(model, 7)


def test_an_untrained_linear_round_trip_is_the_untrained_model() -> None:
    model = build(spec_for("logistic_regression"))
    assert isinstance(model, LinearScorer)
    back, _ = codec.from_bytes(codec.to_bytes(model))
    assert predictions(back) == predictions(model) == [0.5] * len(PROBES)


def test_the_forest_has_no_data_only_format_and_the_codec_refuses_it() -> None:
    forest = trained("forest", n=50)
    with pytest.raises((TypeError, AttributeError, ValueError)):
        codec.encode(forest, 1)  # type: ignore[arg-type]
