"""Models by name, built from a :class:`ModelSpec`: River pipelines behind one small API.

``logistic_regression`` (the default) scales numbers (River's StandardScaler), one-hot
encodes strings (River's OneHotEncoder) and learns a River LogisticRegression with SGD;
it explains a score by ``weight × scaled value`` per feature and can be written as plain
data (engine.scoring.codec). ``forest`` is River's adaptive random forest (ARF), a
challenger that is evaluated where it learns and never shipped (docs/scoring.md).

A feature missing from the mapping is left out (for the linear model that is the same as
its running mean); a category never seen before has weight 0 until the model learns it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from river import forest, linear_model, optim, preprocessing

from engine.features import FeatureValue

from .spec import ModelSpec

TOP_CONTRIBUTIONS = 3
CATEGORIES_MAX = 1_000
"""Categories a linear model learns per string feature; later ones share ``OTHER``."""
OTHER = "(other)"


@dataclass(frozen=True, slots=True)
class Contribution:
    """What one feature added to a score's log-odds: ``weight × scaled``."""

    feature: str
    value: FeatureValue
    """The feature's value as given (a string for a category)."""
    scaled: float
    """The value the model saw: standardised for a number, 1 for a category."""
    weight: float
    contribution: float


class Scorer(Protocol):
    spec: ModelSpec
    examples: int
    """Labelled examples learnt so far."""

    def predict(self, x: Mapping[str, FeatureValue]) -> float:
        """Probability of label 1; never changes the model."""
        ...

    def learn(self, x: Mapping[str, FeatureValue], label: int) -> None: ...

    def contributions(self, x: Mapping[str, FeatureValue]) -> list[Contribution]:
        """Every feature's contribution, largest magnitude first (empty when the model
        cannot tell)."""
        ...

    def explain(
        self, x: Mapping[str, FeatureValue], top: int = TOP_CONTRIBUTIONS
    ) -> tuple[float, tuple[Contribution, ...]]:
        """``predict(x)`` and the first ``top`` of ``contributions(x)``, the same values,
        in one pass where the model can."""
        ...


def build(spec: ModelSpec) -> Scorer:
    """A new, untrained model for ``spec``."""
    if spec.name == "logistic_regression":
        return LinearScorer(spec)
    if spec.name == "forest":
        return ForestScorer(spec)
    raise ValueError(f"expected a model name of logistic_regression or forest, found {spec.name!r}")


def _category(known: list[str] | None, value: str) -> str:
    """``value`` as a model that learnt the categories ``known`` reads it: a category
    beyond CATEGORIES_MAX becomes OTHER."""
    if known is not None and value not in known and len(known) >= CATEGORIES_MAX:
        return OTHER
    return value


class LinearScorer:
    """StandardScaler on numbers + OneHotEncoder on strings + LogisticRegression."""

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec
        self.examples = 0
        self.scaler = preprocessing.StandardScaler()
        # drop_zeros: a category the customer does not have adds nothing to the log-odds
        # nor to the gradient, so only the ones present are emitted; the categories the
        # model knows are the keys of its weights.
        self.encoder = preprocessing.OneHotEncoder(drop_zeros=True)
        self.regression = linear_model.LogisticRegression(
            optimizer=optim.SGD(spec.learning_rate),
            l2=spec.l2,
            intercept_lr=spec.learning_rate,
        )
        self.categories: dict[str, list[str]] = {}
        """String feature -> the categories learnt, in the order first seen."""

    def _split(
        self, x: Mapping[str, FeatureValue], learning: bool = False
    ) -> tuple[dict[str, float], dict[str, str]]:
        """Numbers and categories; a number the scaler never saw is left out (its weight
        is 0 anyway, and the scaler must not grow while predicting), a category beyond
        CATEGORIES_MAX becomes OTHER."""
        numbers: dict[str, float] = {}
        categories: dict[str, str] = {}
        counts = self.scaler.counts
        for name, value in x.items():
            if isinstance(value, str):
                categories[name] = _category(self.categories.get(name), value)
            elif learning or name in counts:
                numbers[name] = float(value)
        return numbers, categories

    def _transform(self, x: Mapping[str, FeatureValue]) -> dict[str, float]:
        numbers, categories = self._split(x)
        scaled: dict[str, float] = self.scaler.transform_one(numbers)  # type: ignore[no-untyped-call]
        scaled.update(self.encoder.transform_one(categories))  # type: ignore[no-untyped-call]
        return scaled

    def predict(self, x: Mapping[str, FeatureValue]) -> float:
        proba = self.regression.predict_proba_one(self._transform(x))  # type: ignore[no-untyped-call]
        return float(proba[True])

    def learn(self, x: Mapping[str, FeatureValue], label: int) -> None:
        numbers, categories = self._split(x, learning=True)
        self.scaler.learn_one(numbers)  # type: ignore[no-untyped-call]
        for name, category in categories.items():
            known = self.categories.setdefault(name, [])
            if category not in known:
                known.append(category)
        self.regression.learn_one(self._transform(x), bool(label))
        self.examples += 1

    def contributions(self, x: Mapping[str, FeatureValue]) -> list[Contribution]:
        numbers, categories = self._split(x)
        scaled = self.scaler.transform_one(numbers)  # type: ignore[no-untyped-call]
        out = self._contributions(x, scaled, categories)
        out.sort(key=_weight_first)
        return out

    def _contributions(
        self, x: Mapping[str, FeatureValue], scaled: Mapping[str, float], categories: dict[str, str]
    ) -> list[Contribution]:
        weights = self.regression._weights
        out: list[Contribution] = []
        for name, value in scaled.items():
            weight = float(weights.get(name, 0.0))
            out.append(Contribution(name, x[name], float(value), weight, weight * float(value)))
        for name, category in categories.items():
            if category not in self.categories.get(name, ()):
                continue
            weight = float(weights.get(f"{name}_{category}", 0.0))
            out.append(Contribution(name, category, 1.0, weight, weight))
        return out

    def explain(
        self, x: Mapping[str, FeatureValue], top: int = TOP_CONTRIBUTIONS
    ) -> tuple[float, tuple[Contribution, ...]]:
        if not self.scaler.counts and not self.categories and not self.regression._weights:
            # learnt nothing: no number is kept, every category weighs 0 and none is
            # known, so the score is the intercept's and nothing contributes
            proba = self.regression.predict_proba_one({})  # type: ignore[no-untyped-call]
            return float(proba[True]), ()
        # One pass over the features: what _split and the scaler's transform_one do (the
        # same arithmetic, so predict sees the same values), ranking each as it goes by
        # (-|contribution|, feature), which is how contributions() sorts them (feature
        # names are unique, so no two keys tie). A Contribution only for the top ones.
        counts = self.scaler.counts
        means = self.scaler.means
        variances = self.scaler.vars
        known = self.categories
        weight_of = self.regression._weights.get
        scaled: dict[str, float] = {}
        categories: list[tuple[str, str]] = []
        ranked: list[tuple[float, str, float, str | None]] = []
        for name, value in x.items():
            if isinstance(value, str):
                seen = known.get(name)
                value = _category(seen, value)
                categories.append((name, value))
                if seen is not None and value in seen:
                    ranked.append((-abs(weight_of(f"{name}_{value}", 0.0)), name, 1.0, value))
            elif name in counts:
                variance = variances[name]
                number = (float(value) - means[name]) / variance**0.5 if variance else 0.0
                scaled[name] = number
                ranked.append((-abs(weight_of(name, 0.0) * number), name, number, None))
        ranked.sort()  # what heapq.nsmallest(top, ranked) gives, at C speed for tens of features
        chosen: list[Contribution] = []
        for _, name, number, category in ranked[:top]:
            if category is None:
                weight = float(weight_of(name, 0.0))
                chosen.append(Contribution(name, x[name], number, weight, weight * number))
            else:
                weight = float(weight_of(f"{name}_{category}", 0.0))
                chosen.append(Contribution(name, category, 1.0, weight, weight))
        # the numbers' scaled values are what predict sees, then every category present
        for name, category in categories:
            scaled[f"{name}_{category}"] = 1
        proba = self.regression.predict_proba_one(scaled)  # type: ignore[no-untyped-call]
        return float(proba[True]), tuple(chosen)


class ForestScorer:
    """River's adaptive random forest classifier, seeded."""

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec
        self.examples = 0
        self.forest = forest.ARFClassifier(n_models=spec.trees, seed=spec.seed)

    def predict(self, x: Mapping[str, FeatureValue]) -> float:
        proba = self.forest.predict_proba_one(dict(x))
        return float(proba.get(True, 0.0)) if proba else 0.5

    def learn(self, x: Mapping[str, FeatureValue], label: int) -> None:
        self.forest.learn_one(dict(x), bool(label))
        self.examples += 1

    def contributions(self, x: Mapping[str, FeatureValue]) -> list[Contribution]:
        return []

    def explain(
        self, x: Mapping[str, FeatureValue], top: int = TOP_CONTRIBUTIONS
    ) -> tuple[float, tuple[Contribution, ...]]:
        return self.predict(x), ()


def _weight_first(c: Contribution) -> tuple[float, str]:
    return (-abs(c.contribution), c.feature)


def predict(
    model: Scorer, features: Mapping[str, FeatureValue], top: int = TOP_CONTRIBUTIONS
) -> tuple[float, tuple[Contribution, ...]]:
    """The score (probability of label 1) and its ``top`` contributing features."""
    return model.explain(features, top)
