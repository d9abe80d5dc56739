"""Predict now, learn weeks later: feature snapshots, late labels, champion and challenger.

Per customer, :class:`Snapshots` keeps the features as they were each time a score was
predicted (the last ``snapshots`` per score, with their event time). When a label event
arrives (``deal_won``, ``churned`` ...) or a snapshot's timeout passes (no churn within
90 days), :func:`settle` turns the open snapshots into :class:`Example` records, which is
what a learner consumes; :func:`learn` checks the customer's consent
(:func:`engine.consent.may_train`) before any example reaches a model.

Per score, :class:`ScoreModel` holds the champion, the optional challenger and an ADWIN
drift detector on the champion's error stream; :meth:`ScoreModel.learn` does progressive
validation: both models predict an example, their running log loss and ROC AUC are
updated, and only then do they learn from it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from river import drift, metrics
from schemas.models import TouchpointEvent

from engine.conditions import micros
from engine.consent import may_train
from engine.features import FeatureValue
from engine.state import CustomerState

from .models import TOP_CONTRIBUTIONS, Contribution, Scorer, build
from .spec import ScoreSpec


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A score's features as they were when it was predicted."""

    at: int
    """Event time of the prediction, µs since the epoch."""
    features: Mapping[str, FeatureValue]
    score: float
    model_version: int = 0

    def to_json(self) -> list[Any]:
        return [self.at, dict(self.features), self.score, self.model_version]

    @classmethod
    def from_json(cls, data: Any) -> Snapshot:
        if not isinstance(data, list) or len(data) != 4:
            raise ValueError(f"snapshot: expected [at, features, score, version], found {data!r}")
        at, features, score, version = data
        if not isinstance(at, int) or not isinstance(features, dict):
            raise ValueError(f"snapshot: expected [int, mapping, ...], found {data!r}")
        return cls(at, features, float(score), int(version))


@dataclass(frozen=True, slots=True)
class Snapshots:
    """One customer's open snapshots, per score name (oldest first)."""

    by_score: Mapping[str, tuple[Snapshot, ...]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {name: [s.to_json() for s in kept] for name, kept in self.by_score.items()}

    @classmethod
    def from_json(cls, data: Any) -> Snapshots:
        if not isinstance(data, dict):
            raise ValueError(f"snapshots: expected a mapping, found {type(data).__name__}")
        return cls({k: tuple(Snapshot.from_json(s) for s in v) for k, v in data.items()})


@dataclass(frozen=True, slots=True)
class Example:
    """A labelled example for one score: what a learner consumes."""

    score: str
    customer_id: str
    features: Mapping[str, FeatureValue]
    label: int
    at: int
    """Event time of the prediction the features come from."""
    labelled_at: int
    """Event time of the label (the outcome event, or the timeout's deadline)."""


def remember(snapshots: Snapshots | None, score: str, snapshot: Snapshot, keep: int) -> Snapshots:
    """``snapshots`` with ``snapshot`` kept for ``score`` (at most ``keep``, newest win).
    Features equal to the newest kept ones add nothing: the features did not move."""
    kept = snapshots.by_score if snapshots is not None else {}
    mine = kept.get(score, ())
    if mine and mine[-1].features == snapshot.features:
        return snapshots if snapshots is not None else Snapshots()
    return Snapshots({**kept, score: (*mine, snapshot)[-keep:]})


def label_of(spec: ScoreSpec, event: TouchpointEvent) -> int | None:
    """The label ``event`` gives score ``spec``, if it is one of its label events."""
    return spec.labels.get(event.kind)


def settle(
    spec: ScoreSpec,
    customer_id: str,
    snapshots: Snapshots | None,
    at: int,
    label: int | None = None,
) -> tuple[Snapshots, list[Example]]:
    """Close what can be closed at event time ``at``: snapshots past the timeout get its
    label (at their deadline); with ``label`` (a label event at ``at``) every other open
    snapshot taken before ``at`` gets it. Returns the snapshots still open and the
    examples, oldest first."""
    kept = snapshots.by_score if snapshots is not None else {}
    mine = kept.get(spec.name, ())
    examples: list[Example] = []
    still: list[Snapshot] = []
    for snap in mine:
        if spec.timeout is not None and snap.at + spec.timeout.after <= at:
            deadline = snap.at + spec.timeout.after
            examples.append(
                Example(
                    spec.name, customer_id, snap.features, spec.timeout.label, snap.at, deadline
                )
            )
        elif label is not None and snap.at <= at:
            examples.append(Example(spec.name, customer_id, snap.features, label, snap.at, at))
        else:
            still.append(snap)
    if len(still) == len(mine):
        return (snapshots if snapshots is not None else Snapshots()), []
    by_score = dict(kept)
    if still:
        by_score[spec.name] = tuple(still)
    else:
        by_score.pop(spec.name, None)
    return Snapshots(by_score), examples


def on_touchpoint(
    spec: ScoreSpec, state: CustomerState, snapshots: Snapshots | None, event: TouchpointEvent
) -> tuple[Snapshots, list[Example]]:
    """:func:`settle` for a touchpoint: its label (if it is a label event) and any timeouts
    it passed. Examples of a customer who refused training are dropped here, with their
    snapshots (:func:`engine.consent.may_train`)."""
    snapshots, examples = settle(
        spec, state.customer_id, snapshots, micros(event.occurred_at), label_of(spec, event)
    )
    if examples and not may_train(state):
        return snapshots, []
    return snapshots, examples


def next_deadline(spec: ScoreSpec, snapshots: Snapshots | None) -> int | None:
    """The earliest event time (µs) at which a snapshot of ``spec`` times out."""
    if spec.timeout is None or snapshots is None:
        return None
    mine = snapshots.by_score.get(spec.name, ())
    return min(s.at for s in mine) + spec.timeout.after if mine else None


@dataclass(slots=True)
class DriftState:
    """The champion's error stream as ADWIN sees it."""

    detector: drift.ADWIN
    drifted: bool = False
    """True when the last error it saw made ADWIN cut its window and the mean error of
    what it kept is higher than before: the model got worse (the wiring turns it into a
    metrics event and raises a gauge). A cut towards lower errors (the model learning)
    is counted in ``changes`` only."""
    drifts: int = 0
    changes: int = 0
    errors: int = 0

    def update(self, error: float) -> bool:
        before = float(self.detector.estimation)
        self.detector.update(error)  # type: ignore[no-untyped-call]
        self.errors += 1
        changed = bool(self.detector.drift_detected)
        self.changes += changed
        self.drifted = changed and float(self.detector.estimation) > before
        self.drifts += self.drifted
        return self.drifted


@dataclass(slots=True)
class Evaluation:
    """Progressive validation of one model: predicted before it learnt each example."""

    log_loss_metric: metrics.LogLoss = field(default_factory=metrics.LogLoss)
    auc_metric: metrics.ROCAUC = field(
        default_factory=lambda: metrics.ROCAUC(n_thresholds=50)  # type: ignore[no-untyped-call]
    )
    """River's ROC AUC over 50 thresholds (an approximation; bench/ computes it exactly)."""
    examples: int = 0

    def update(self, label: int, score: float) -> None:
        self.log_loss_metric.update(bool(label), {True: score, False: 1.0 - score})
        self.auc_metric.update(bool(label), {True: score, False: 1.0 - score})  # type: ignore[no-untyped-call]
        self.examples += 1

    def log_loss(self) -> float:
        return float(self.log_loss_metric.get())  # type: ignore[no-untyped-call]

    def auc(self) -> float:
        return float(self.auc_metric.get())  # type: ignore[no-untyped-call]


@dataclass(frozen=True, slots=True)
class Learnt:
    """What learning one example did."""

    champion: float
    """The champion's score for the example, before it learnt."""
    challenger: float | None
    drifted: bool


class ScoreModel:
    """One score's champion, challenger, drift detector and running evaluation."""

    def __init__(self, spec: ScoreSpec, champion: Scorer | None = None, version: int = 0) -> None:
        if champion is not None and champion.spec != spec.model:
            raise ValueError(
                f"score {spec.name!r}: expected a model for {spec.model}, found one for "
                f"{champion.spec}; a changed model definition starts from a new model"
            )
        self.spec = spec
        self.champion: Scorer = champion if champion is not None else build(spec.model)
        self.challenger: Scorer | None = (
            build(spec.challenger) if spec.challenger is not None else None
        )
        self.version = version
        """Bumped by every example learnt: the version a published model carries."""
        self.drift = DriftState(drift.ADWIN(delta=spec.drift.delta))  # type: ignore[no-untyped-call]
        self.champion_eval = Evaluation()
        self.challenger_eval = Evaluation()

    def predict(
        self, features: Mapping[str, FeatureValue], top: int = TOP_CONTRIBUTIONS
    ) -> tuple[float, tuple[Contribution, ...]]:
        x = self.spec.select(features)
        return self.champion.predict(x), tuple(self.champion.contributions(x)[:top])

    def learn(self, example: Example) -> Learnt:
        """Progressive validation, then learning, for both models."""
        x = self.spec.select(example.features)
        score = self.champion.predict(x)
        self.champion_eval.update(example.label, score)
        drifted = self.drift.update(abs(example.label - score))
        self.champion.learn(x, example.label)
        other = None
        if self.challenger is not None:
            other = self.challenger.predict(x)
            self.challenger_eval.update(example.label, other)
            self.challenger.learn(x, example.label)
        self.version += 1
        return Learnt(score, other, drifted)


def predict(
    model: ScoreModel, features: Mapping[str, FeatureValue], top: int = TOP_CONTRIBUTIONS
) -> tuple[float, tuple[Contribution, ...]]:
    """The score for ``features`` (all of a customer's; the score picks its own) and the
    ``top`` features that contributed most to it."""
    return model.predict(features, top)


def learn(
    model: ScoreModel, snapshot: Snapshot, label: int, state: CustomerState | None
) -> Learnt | None:
    """Learn ``label`` from the features of ``snapshot``, unless the customer refused
    profiling or risk modelling (then nothing is learnt and None is returned)."""
    if not may_train(state):
        return None
    customer_id = state.customer_id if state is not None else ""
    return model.learn(
        Example(model.spec.name, customer_id, snapshot.features, label, snapshot.at, snapshot.at)
    )


def snapshot(model: ScoreModel, features: Mapping[str, FeatureValue], at: int) -> Snapshot:
    """A :class:`Snapshot` of the score ``model`` gives ``features`` at ``at``, keeping only
    the features the score uses."""
    x = model.spec.select(features)
    return Snapshot(at, x, model.champion.predict(x), model.version)


__all__ = [
    "DriftState",
    "Evaluation",
    "Example",
    "Learnt",
    "ScoreModel",
    "Snapshot",
    "Snapshots",
    "label_of",
    "learn",
    "next_deadline",
    "on_touchpoint",
    "predict",
    "remember",
    "settle",
    "snapshot",
]
