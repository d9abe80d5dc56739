"""A scorer's score and top contributions in one pass (``explain``) are those of
``predict`` and ``contributions``; a model that has learnt nothing answers without walking
the features."""

from __future__ import annotations

import random

from engine.features import FeatureValue
from engine.scoring.models import LinearScorer
from engine.scoring.spec import ModelSpec


def features_at(n: int) -> dict[str, FeatureValue]:
    return {
        "touchpoints": float(n),
        "days_since_first_seen": n / 7,
        "event_kind": "email_sent",
        "count.email_sent": float(n),
        "profile.plan": "pro",
    }


def test_a_model_that_learnt_nothing_explains_without_walking_the_features() -> None:
    class Watched(dict[str, FeatureValue]):
        reads = 0

        def items(self):
            Watched.reads += 1
            return super().items()

    model = LinearScorer(ModelSpec())
    x = Watched(features_at(3))
    full = (model.predict(dict(x)), tuple(model.contributions(dict(x))[:3]))
    assert model.explain(x) == full == (0.5, ())
    assert Watched.reads == 0
    model.learn(dict(x), 1)  # once it has learnt, every feature counts
    assert model.explain(x) == (model.predict(dict(x)), tuple(model.contributions(dict(x))[:3]))
    assert Watched.reads > 0


def test_explain_is_predict_and_the_top_contributions_of_a_trained_model() -> None:
    rng = random.Random(5)
    model = LinearScorer(ModelSpec())
    for _ in range(40):
        x = features_at(rng.randint(1, 9))
        x["event_kind"] = rng.choice(["email_sent", "chat", "call"])
        model.learn(x, rng.randint(0, 1))
    for n in range(1, 12):
        x = features_at(n)
        x["event_kind"] = "chat" if n % 2 else "never_seen"
        if n % 3 == 0:
            x["never_learnt"] = float(n)  # a number the scaler never saw counts for nothing
        for top in (0, 1, 3, 10):
            assert model.explain(x, top) == (
                model.predict(x),
                tuple(model.contributions(x)[:top]),
            )
