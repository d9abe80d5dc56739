"""Conformance of every scorer, and the data-only model format of the linear model."""

from __future__ import annotations

import copy
import json
import random
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.features import FeatureValue
from engine.scoring.codec import ModelFormatError, decode, encode, from_bytes, to_bytes
from engine.scoring.models import (
    CATEGORIES_MAX,
    OTHER,
    LinearScorer,
    Scorer,
    build,
    predict,
)
from engine.scoring.spec import ModelSpec

SPECS = [ModelSpec(), ModelSpec(l2=0.01, learning_rate=0.05), ModelSpec(name="forest", trees=3)]


def stream(seed: int, n: int) -> Iterator[tuple[dict[str, FeatureValue], int]]:
    """A learnable stream: the label follows ``a`` and the plan, with noise."""
    rng = random.Random(seed)
    for _ in range(n):
        a = rng.gauss(0, 1)
        plan = rng.choice(["free", "pro", "team"])
        x: dict[str, FeatureValue] = {"a": a * 10 + 50, "b": rng.random(), "plan": plan}
        if rng.random() < 0.2:
            del x["b"]  # sometimes missing
        logit = 2 * a + (1.5 if plan == "free" else -0.5)
        yield x, int(rng.random() < 1 / (1 + 2.718281828**-logit))


def trained(spec: ModelSpec, n: int = 300, seed: int = 1) -> Scorer:
    model = build(spec)
    for x, y in stream(seed, n):
        model.learn(x, y)
    return model


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_learning_does_not_mutate_the_features(spec: ModelSpec) -> None:
    model = build(spec)
    for x, y in stream(2, 50):
        before = copy.deepcopy(x)
        model.learn(x, y)
        model.predict(x)
        assert x == before


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_missing_and_unseen_features_are_handled(spec: ModelSpec) -> None:
    model = trained(spec)
    probes: list[dict[str, FeatureValue]] = [
        {},
        {"a": 50.0},
        {"never_seen": 3.0, "plan": "enterprise"},
        {"plan": "free"},
    ]
    for x in probes:
        score = model.predict(x)
        assert 0.0 <= score <= 1.0


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_seeded_runs_are_deterministic(spec: ModelSpec) -> None:
    one, two = trained(spec), trained(spec)
    probes = [x for x, _ in stream(9, 50)]
    assert [one.predict(x) for x in probes] == [two.predict(x) for x in probes]


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_a_model_learns_the_stream(spec: ModelSpec) -> None:
    model = trained(spec, n=1500)
    probes = list(stream(11, 400))
    positives = [model.predict(x) for x, y in probes if y]
    negatives = [model.predict(x) for x, y in probes if not y]
    wins = sum((p > q) + 0.5 * (p == q) for p in positives for q in negatives)
    assert wins / (len(positives) * len(negatives)) > 0.75


def test_predicting_never_changes_the_linear_model() -> None:
    model = trained(ModelSpec())
    assert isinstance(model, LinearScorer)
    before = to_bytes(model)
    model.predict({"a": 1.0, "new_number": 5.0, "plan": "new plan", "other": "x"})
    model.contributions({"new_number": 5.0, "plan": "new plan"})
    assert to_bytes(model) == before


def test_contributions_are_weight_times_scaled_value_and_sum_to_the_log_odds() -> None:
    model = trained(ModelSpec())
    assert isinstance(model, LinearScorer)
    x: dict[str, FeatureValue] = {"a": 62.0, "b": 0.3, "plan": "free"}
    score, top = predict(model, x)
    everything = model.contributions(x)
    assert len(top) == 3 and top == tuple(everything[:3])
    for c in everything:
        assert c.contribution == pytest.approx(c.weight * c.scaled)
    by_feature = {c.feature: c for c in everything}
    assert by_feature["plan"].value == "free" and by_feature["plan"].scaled == 1.0
    mean, var = model.scaler.means["a"], model.scaler.vars["a"]
    assert by_feature["a"].scaled == pytest.approx((62.0 - mean) / var**0.5)
    log_odds = sum(c.contribution for c in everything) + model.regression.intercept
    assert score == pytest.approx(1 / (1 + 2.718281828459045**-log_odds))
    assert top[0].feature == "a"  # the feature the stream is built on
    assert abs(top[0].contribution) >= abs(top[-1].contribution)


def test_the_forest_explains_nothing() -> None:
    assert trained(ModelSpec(name="forest", trees=2), n=50).contributions({"a": 1.0}) == []


def test_categories_are_bounded() -> None:
    model = build(ModelSpec())
    assert isinstance(model, LinearScorer)
    for i in range(CATEGORIES_MAX + 20):
        model.learn({"city": f"c{i}"}, i % 2)
    assert len(model.categories["city"]) == CATEGORIES_MAX + 1
    assert model.categories["city"][-1] == OTHER


# --- the data-only format ------------------------------------------------------------


def test_a_round_trip_predicts_and_goes_on_learning_identically() -> None:
    model = trained(ModelSpec(l2=0.001))
    assert isinstance(model, LinearScorer)
    copy_, version = from_bytes(to_bytes(model, version=7))
    assert version == 7
    probes = [x for x, _ in stream(5, 200)]
    assert [copy_.predict(x) for x in probes] == [model.predict(x) for x in probes]
    assert [copy_.contributions(x) for x in probes] == [model.contributions(x) for x in probes]
    for x, y in stream(6, 300):
        model.learn(x, y)
        copy_.learn(x, y)
    assert [copy_.predict(x) for x in probes] == [model.predict(x) for x in probes]
    assert to_bytes(copy_) == to_bytes(model)


def test_the_document_is_plain_json_with_a_checksum() -> None:
    document = json.loads(to_bytes(trained(ModelSpec()), version=3))  # type: ignore[arg-type]
    assert document["format"] == "warroom.linear"
    assert document["checksum"].startswith("sha256:")
    assert {row[0] for row in document["weights"]} >= {"a", "plan_free"}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.__setitem__("intercept", d["intercept"] + 1), "model.checksum: expected"),
        (lambda d: d.__setitem__("format_version", 2), "model.format: expected warroom.linear"),
        (lambda d: d.pop("weights"), "model: expected the fields"),
        (lambda d: d.__setitem__("code", "__import__('os')"), "model: expected the fields"),
    ],
)
def test_a_changed_or_foreign_document_is_refused(change: object, message: str) -> None:
    model = trained(ModelSpec())
    assert isinstance(model, LinearScorer)
    document = encode(model)
    change(document)  # type: ignore[operator]
    with pytest.raises(ModelFormatError, match=message):
        decode(document)


def test_a_well_signed_document_with_bad_values_is_refused_naming_the_field() -> None:
    model = trained(ModelSpec())
    assert isinstance(model, LinearScorer)
    document = encode(model)
    document["weights"][1][1] = "1e3"
    document.pop("checksum")
    from engine.scoring.codec import _checksum

    document["checksum"] = _checksum(document)
    with pytest.raises(ModelFormatError, match=r"model.weights\[1\].weight: expected a finite"):
        decode(document)


def test_bytes_that_are_not_json_are_refused() -> None:
    with pytest.raises(ModelFormatError, match="expected JSON"):
        from_bytes(b"\x80\x04\x95 pickle")


@settings(max_examples=30, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.dictionaries(
                st.sampled_from(["a", "b", "c", "plan"]),
                st.one_of(st.floats(-1e6, 1e6, allow_nan=False), st.sampled_from(["x", "y", "z"])),
                max_size=4,
            ),
            st.integers(0, 1),
        ),
        max_size=40,
    )
)
def test_round_trip_is_exact_for_any_stream(
    examples: list[tuple[dict[str, FeatureValue], int]],
) -> None:
    model = LinearScorer(ModelSpec())
    for x, y in examples:
        model.learn(x, y)
    again, _ = from_bytes(to_bytes(model))
    assert to_bytes(again) == to_bytes(model)
    for x, _ in examples:
        assert again.predict(x) == model.predict(x)


def test_a_name_given_twice_is_refused() -> None:
    model = trained(ModelSpec())
    assert isinstance(model, LinearScorer)
    document = encode(model)
    document["weights"].append(list(document["weights"][0]))
    document.pop("checksum")
    from engine.scoring.codec import _checksum

    document["checksum"] = _checksum(document)
    with pytest.raises(ModelFormatError, match=r"model.weights\[\d+\].name: .* appears twice"):
        decode(document)
