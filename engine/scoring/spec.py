"""Compiling the ``scoring:`` section of a bundle (the language is in docs/scoring.md).

The bundle loader hands over the section as located YAML and its checker; every problem
is recorded with its line and field, and a section with any problem is not compiled.
Nothing here imports River: a bundle is checked without building a model.
"""

from __future__ import annotations

import difflib
import functools
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from engine.features import BASE_FEATURES, FAMILIES, PROFILE_KEYS_MAX

if TYPE_CHECKING:
    from engine.bundle import _Checker, _Located

SCORES_MAX = 8
"""Scores in one bundle."""
FEATURES_MAX = 200
"""Features named by one score (``all`` takes every feature there is)."""
LABELS_MAX = 16
"""Label events of one score."""
SNAPSHOTS_MAX = 32
"""Feature snapshots kept per customer and score, waiting for a label."""
SNAPSHOTS_DEFAULT = 8
TIMEOUT_MAX = timedelta(days=730)
"""The longest ``timeout.after``: two years."""
FOREST_MODELS_MAX = 25
"""Trees in a ``forest`` model."""

MODELS = ("logistic_regression", "forest")
DRIFT_DETECTORS = ("adwin",)
_SCORE_NAME = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
_KIND = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_FEATURE = re.compile(r"^[a-z][a-z0-9_]{0,63}(\.[A-Za-z0-9_:-]{1,64})?(\.\*)?$")


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """A model by name and its settings (``logistic_regression`` or ``forest``)."""

    name: str = "logistic_regression"
    learning_rate: float = 0.01
    """logistic_regression: the SGD step of the weights and of the intercept."""
    l2: float = 0.0
    """logistic_regression: L2 penalty on the weights."""
    trees: int = 10
    """forest: trees in the adaptive random forest."""
    seed: int = 42
    """forest: the seed, so two workers given the same examples grow the same forest."""


@dataclass(frozen=True, slots=True)
class DriftSpec:
    detector: str = "adwin"
    delta: float = 0.002
    """ADWIN's confidence: smaller means fewer, surer drift reports."""


@dataclass(frozen=True, slots=True)
class Timeout:
    """A snapshot with no label after ``after`` (µs of event time) is labelled ``label``."""

    after: int
    label: int


@dataclass(frozen=True, slots=True)
class ScoreSpec:
    """One score of a bundle's ``scoring:`` section, compiled."""

    name: str
    labels: Mapping[str, int]
    """Touchpoint kind -> label (1 or 0) it gives the customer's open snapshots."""
    features: frozenset[str] | None = None
    """Exact feature names; None with no ``families`` means ``all``."""
    families: frozenset[str] = frozenset()
    """Family prefixes taken whole (``count``, ``channel``, ``profile``)."""
    timeout: Timeout | None = None
    model: ModelSpec = field(default_factory=ModelSpec)
    challenger: ModelSpec | None = None
    drift: DriftSpec = field(default_factory=DriftSpec)

    def select(self, features: Mapping[str, float | str]) -> dict[str, float | str]:
        """The features this score uses, out of all of a customer's features."""
        if self.features is None and not self.families:
            return dict(features)
        chosen = self.features or frozenset()
        return {
            name: value
            for name, value in features.items()
            if name in chosen or name.split(".", 1)[0] in self.families
        }


@dataclass(frozen=True, slots=True)
class ScoringSpec:
    """A bundle's ``scoring:`` section, compiled."""

    scores: tuple[ScoreSpec, ...]
    profile: tuple[str, ...] = ()
    """Attributes remembered per customer (latest value) as ``profile.<name>``."""
    snapshots: int = SNAPSHOTS_DEFAULT
    snapshot_every: int = 0
    """µs: at most one snapshot per score and customer in each interval of event time
    this long (the newest); 0 keeps every snapshot whose features moved."""

    def score(self, name: str) -> ScoreSpec | None:
        return next((s for s in self.scores if s.name == name), None)


def compile_scoring(checker: _Checker, value: Any, line: int) -> ScoringSpec | None:
    """The compiled section, or None when a problem was recorded on ``checker``."""
    before = len(checker.problems)
    spec = checker.attempt(lambda: _Compiler(checker).section(value, line))
    if len(checker.problems) > before:
        return None
    assert isinstance(spec, ScoringSpec)
    return spec


@dataclass
class _Compiler:
    checker: _Checker

    def section(self, value: Any, line: int) -> ScoringSpec:
        c = self.checker
        spec = c.mapping(value, line, "scoring")
        c.keys(spec, "scoring", ("scores",), ("profile", "snapshots", "snapshot_every"))
        profile = self.profile(spec) if "profile" in spec else ()
        snapshots = (
            c.integer(spec, "snapshots", "scoring", minimum=1, maximum=SNAPSHOTS_MAX)
            if "snapshots" in spec
            else SNAPSHOTS_DEFAULT
        )
        scores_value = c.mapping(spec["scores"], spec.lines["scores"], "scoring.scores")
        if not scores_value:
            c.refuse(spec.lines["scores"], "scoring.scores", "expected at least one score")
        if len(scores_value) > SCORES_MAX:
            c.refuse(
                spec.lines["scores"],
                "scoring.scores",
                f"expected at most {SCORES_MAX} scores in a bundle, found {len(scores_value)}",
            )
        scores: list[ScoreSpec] = []
        for name, item in scores_value.items():
            path = f"scoring.scores.{name}"
            score = c.attempt(
                functools.partial(self.score, name, item, scores_value.lines[name], path, profile)
            )
            if score is not None:
                scores.append(score)
        every = c.duration(spec, "snapshot_every", "scoring")
        return ScoringSpec(
            scores=tuple(scores),
            profile=profile,
            snapshots=snapshots,
            snapshot_every=0 if every is None else every // timedelta(microseconds=1),
        )

    def profile(self, spec: _Located) -> tuple[str, ...]:
        c = self.checker
        value = spec["profile"]
        line = spec.lines["profile"]
        if not isinstance(value, list) or len(value) > PROFILE_KEYS_MAX:
            c.refuse(
                line,
                "scoring.profile",
                f"expected a list of at most {PROFILE_KEYS_MAX} attribute names, found "
                f"{_show(value)}",
            )
        for item in value:
            if not isinstance(item, str) or not 0 < len(item) <= 64 or "." in item:
                c.refuse(
                    line,
                    "scoring.profile",
                    f"expected attribute names of 1 to 64 characters without '.', found {item!r}",
                )
        return tuple(dict.fromkeys(value))

    def score(
        self, name: Any, value: Any, line: int, path: str, profile: tuple[str, ...]
    ) -> ScoreSpec:
        c = self.checker
        if not isinstance(name, str) or not _SCORE_NAME.match(name):
            c.refuse(
                line,
                path,
                "expected a score name such as lead, win or churn (lower-case letters, digits "
                f"and '_', at most 32), found {name!r}",
            )
        spec = c.mapping(value, line, path)
        c.keys(spec, path, ("labels",), ("features", "timeout", "model", "challenger", "drift"))
        labels = self.labels(spec, path)
        chosen, families = self.features(spec, path, profile)
        timeout = self.timeout(spec, path) if "timeout" in spec else None
        if timeout is None and set(labels.values()) != {0, 1}:
            c.refuse(
                spec.lines["labels"],
                _join(path, "labels"),
                "expected label events giving both 1 and 0 (or a timeout giving the other), "
                f"found only {sorted(set(labels.values()))}",
            )
        if timeout is not None and set(labels.values()) | {timeout.label} != {0, 1}:
            c.refuse(
                spec.lines["timeout"],
                _join(path, "timeout.label"),
                f"expected the label the events do not give, found {timeout.label}",
            )
        model = self.model(spec, "model", path) if "model" in spec else ModelSpec()
        challenger = self.model(spec, "challenger", path) if "challenger" in spec else None
        drift = self.drift(spec, path) if "drift" in spec else DriftSpec()
        return ScoreSpec(
            name=name,
            labels=labels,
            features=chosen,
            families=families,
            timeout=timeout,
            model=model,
            challenger=challenger,
            drift=drift,
        )

    def labels(self, spec: _Located, path: str) -> dict[str, int]:
        c = self.checker
        where = _join(path, "labels")
        labels = c.mapping(spec["labels"], spec.lines["labels"], where)
        if not labels or len(labels) > LABELS_MAX:
            c.refuse(
                spec.lines["labels"],
                where,
                f"expected 1 to {LABELS_MAX} touchpoint kinds with a label, found {len(labels)}",
            )
        out: dict[str, int] = {}
        for kind, label in labels.items():
            if not isinstance(kind, str) or not _KIND.match(kind):
                c.refuse(
                    labels.lines[kind],
                    _join(where, str(kind)),
                    f"expected a touchpoint kind (lower_snake_case), found {kind!r}",
                )
            if label not in (0, 1) or isinstance(label, bool | float):
                c.refuse(
                    labels.lines[kind],
                    _join(where, kind),
                    f"expected the label 1 or 0, found {label!r}",
                )
            out[kind] = int(label)
        return out

    def features(
        self, spec: _Located, path: str, profile: tuple[str, ...]
    ) -> tuple[frozenset[str] | None, frozenset[str]]:
        c = self.checker
        if "features" not in spec or spec["features"] == "all":
            return None, frozenset()
        where = _join(path, "features")
        line = spec.lines["features"]
        value = spec["features"]
        if not isinstance(value, list) or not value or len(value) > FEATURES_MAX:
            c.refuse(
                line,
                where,
                f"expected all or a list of 1 to {FEATURES_MAX} feature names, found "
                f"{_show(value)}",
            )
        names: set[str] = set()
        families: set[str] = set()
        known = (*BASE_FEATURES, *(f"{f}.*" for f in FAMILIES), *(f"profile.{p}" for p in profile))
        for item in value:
            if not isinstance(item, str) or not _FEATURE.match(item):
                c.refuse(line, where, f"expected a feature name, found {item!r}")
            family, _, rest = item.partition(".")
            if item in BASE_FEATURES:
                names.add(item)
            elif family in FAMILIES and rest == "*":
                families.add(family)
            elif family == "profile":
                if rest not in profile:
                    c.refuse(
                        line,
                        where,
                        f"{item!r} is not declared: expected a name listed in scoring.profile "
                        f"({', '.join(profile) or 'none declared'})",
                    )
                names.add(item)
            elif family in ("count", "channel") and rest and not rest.endswith("*"):
                names.add(item)
            else:
                c.refuse(
                    line,
                    where,
                    f"unknown feature {item!r}; expected one of docs/scoring.md's features",
                    _suggest(item, known),
                )
        return frozenset(names), frozenset(families)

    def timeout(self, spec: _Located, path: str) -> Timeout:
        c = self.checker
        where = _join(path, "timeout")
        timeout = c.mapping(spec["timeout"], spec.lines["timeout"], where)
        c.keys(timeout, where, ("after", "label"))
        after = c.duration(timeout, "after", where)
        assert after is not None
        if after > TIMEOUT_MAX:
            c.refuse(
                timeout.lines["after"],
                _join(where, "after"),
                f"expected at most {TIMEOUT_MAX.days} days, found {timeout['after']!r}",
            )
        label = timeout["label"]
        if label not in (0, 1) or isinstance(label, bool | float):
            c.refuse(
                timeout.lines["label"],
                _join(where, "label"),
                f"expected the label 1 or 0, found {label!r}",
            )
        return Timeout(after=after // timedelta(microseconds=1), label=int(label))

    def model(self, spec: _Located, key: str, path: str) -> ModelSpec:
        c = self.checker
        where = _join(path, key)
        value = spec[key]
        if isinstance(value, str):
            if value not in MODELS:
                c.refuse(
                    spec.lines[key],
                    where,
                    f"expected one of {', '.join(MODELS)}, found {value!r}",
                    _suggest(value, MODELS),
                )
            return ModelSpec(name=value)
        model = c.mapping(value, spec.lines[key], where)
        c.keys(model, where, ("name",), ("learning_rate", "l2", "trees", "seed"))
        name = c.choice(model, "name", where, MODELS)
        settings: dict[str, Any] = {"name": name}
        allowed = ("learning_rate", "l2") if name == "logistic_regression" else ("trees", "seed")
        for option in ("learning_rate", "l2", "trees", "seed"):
            if option not in model:
                continue
            if option not in allowed:
                c.refuse(
                    model.lines[option],
                    _join(where, option),
                    f"is not a setting of {name}; expected one of {', '.join(allowed)}",
                )
            if option == "learning_rate":
                settings[option] = self.fraction(model, option, where, zero_ok=False)
            elif option == "l2":
                settings[option] = self.fraction(model, option, where, zero_ok=True)
            elif option == "trees":
                settings[option] = c.integer(model, option, where, 1, FOREST_MODELS_MAX)
            else:
                settings[option] = c.integer(model, option, where, 0, 2**31 - 1)
        return ModelSpec(**settings)

    def drift(self, spec: _Located, path: str) -> DriftSpec:
        c = self.checker
        where = _join(path, "drift")
        value = spec["drift"]
        if isinstance(value, str):
            if value not in DRIFT_DETECTORS:
                c.refuse(
                    spec.lines["drift"],
                    where,
                    f"expected one of {', '.join(DRIFT_DETECTORS)}, found {value!r}",
                )
            return DriftSpec(detector=value)
        drift = c.mapping(value, spec.lines["drift"], where)
        c.keys(drift, where, ("detector",), ("delta",))
        detector = c.choice(drift, "detector", where, DRIFT_DETECTORS)
        delta = self.fraction(drift, "delta", where, zero_ok=False) if "delta" in drift else 0.002
        if delta >= 1.0:
            c.refuse(
                drift.lines["delta"], _join(where, "delta"), f"expected below 1, found {delta}"
            )
        return DriftSpec(detector=detector, delta=delta)

    def fraction(self, mapping: _Located, key: str, path: str, zero_ok: bool) -> float:
        value = mapping[key]
        low = 0.0 if zero_ok else math.ulp(0.0)
        if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= 1.0:
            bound = "from 0" if zero_ok else "above 0"
            self.checker.refuse(
                mapping.lines[key],
                _join(path, key),
                f"expected a number {bound} up to 1, found {value!r}",
            )
        return float(value)


def _suggest(word: str, choices: tuple[str, ...]) -> str | None:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return close[0] if close else None


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _show(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(str(v) for v in value) + "]"
    return repr(value)
