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
from typing import Any, cast

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
        """The earlier form, ``{score: [[at, {feature: value}, score, version], ...]}``:
        read from states written before :meth:`to_compact` (and still written by nobody)."""
        return {name: [s.to_json() for s in kept] for name, kept in self.by_score.items()}

    @classmethod
    def from_json(cls, data: Any) -> Snapshots:
        if not isinstance(data, dict):
            raise ValueError(f"snapshots: expected a mapping, found {type(data).__name__}")
        return cls({k: tuple(Snapshot.from_json(s) for s in v) for k, v in data.items()})

    def to_compact(self) -> dict[str, Any]:
        """The form a state is written in (docs/scoring.md, "Snapshots in the state"):
        every distinct (time, features) once for all the scores that took it, its
        values positional against a shared key list, a value equal to the previous
        vector's for the same feature written as part of a run-length count."""
        return _encode_compact(self)

    @classmethod
    def from_compact(cls, data: Any) -> Snapshots:
        """Inverse of :meth:`to_compact`; raises ValueError naming the part that is wrong."""
        return _decode_compact(data)


FIXED_FEATURE_NAMES: tuple[str, ...] = (
    "touchpoints", "touchpoints_per_week", "days_since_first_seen",
    "days_since_last_event", "days_since_last_inbound", "days_since_last_outbound",
    "amount_total", "amount_mean", "purchases", "reply_latency_hours", "replies",
    "unanswered_outbound", "meetings", "customer_talk_share", "video_seconds", "videos",
    "sandbox_errors", "support_sentiment", "stage", "days_in_stage", "event_kind",
    "event_channel",
)  # fmt: skip
"""Feature names written in compact snapshots as their place in this tuple (0, 1, ...);
other names are written once per state and referred to as -1, -2, ... Places are written
in states: append new names, never move or remove one."""
_FIXED_PLACE = {name: place for place, name in enumerate(FIXED_FEATURE_NAMES)}
_Vector = tuple[int, tuple[tuple[str, FeatureValue], ...]]


_MISSING: Any = object()


def _encode_compact(snapshots: Snapshots) -> dict[str, Any]:
    extra: list[str] = []
    extra_at: dict[str, int] = {}
    key_lists: list[list[int]] = []
    key_list_at: dict[tuple[str, ...], int] = {}
    found: dict[_Vector, int] = {}
    seen: dict[tuple[int, int], int] = {}
    """(time, id of the features) -> vector: scores that took the same features at a
    touchpoint hold the same mapping, so most are found without comparing values."""
    vectors: list[tuple[int, Mapping[str, FeatureValue]]] = []
    chosen: dict[str, list[int]] = {}
    for name, kept in snapshots.by_score.items():
        mine = chosen[name] = []
        for snap in kept:
            quick = (snap.at, id(snap.features))
            i = seen.get(quick)
            if i is None:
                vector = (snap.at, tuple(snap.features.items()))
                i = found.get(vector)
                if i is None:
                    i = found[vector] = len(vectors)
                    vectors.append((snap.at, snap.features))
                seen[quick] = i
            mine.append(i)
    order = sorted(range(len(vectors)), key=lambda i: vectors[i][0])
    place = {old: new for new, old in enumerate(order)}
    rows: list[list[Any]] = []
    previous_at = 0
    previous: Mapping[str, FeatureValue] = {}
    for i in order:
        at, features = vectors[i]
        names = tuple(features)
        keys = key_list_at.get(names)
        if keys is None:
            refs: list[int] = []
            for name in names:
                ref = _FIXED_PLACE.get(name)
                if ref is None:
                    ref = extra_at.get(name)
                    if ref is None:
                        ref = extra_at[name] = -1 - len(extra)
                        extra.append(name)
                refs.append(ref)
            keys = key_list_at[names] = len(key_lists)
            key_lists.append(refs)
        row: list[Any] = [at - previous_at, keys]
        run = 0
        before = previous.get
        for name, value in features.items():
            earlier = before(name, _MISSING)
            if earlier == value and type(earlier) is type(value):
                run += 1
                continue
            if run:
                row.append(run)
                run = 0
            row.append(value if type(value) is float or isinstance(value, str) else float(value))
        if run:
            row.append(run)
        rows.append(row)
        previous_at, previous = at, features
    scores: dict[str, list[Any]] = {}
    for name, kept in snapshots.by_score.items():
        flat: list[Any] = []
        for snap, i in zip(kept, chosen[name], strict=True):
            flat.extend((place[i], snap.score, snap.model_version))
        scores[name] = flat
    return {"n": extra, "k": key_lists, "x": rows, "s": scores}


def _fail(where: str, expected: str, found: Any) -> ValueError:
    return ValueError(f"feature_snapshots.{where}: expected {expected}, found {found!r}")


def _decode_compact(data: Any) -> Snapshots:
    if not isinstance(data, dict) or set(data) != {"n", "k", "x", "s"}:
        found = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise _fail("", "the parts ['k', 'n', 's', 'x']", found)
    extra, key_lists, rows, scores = data["n"], data["k"], data["x"], data["s"]
    if not isinstance(extra, list) or not all(isinstance(n, str) for n in extra):
        raise _fail("n", "a list of feature names", extra)
    if not isinstance(key_lists, list) or not isinstance(rows, list):
        raise _fail("k/x", "lists", (type(key_lists).__name__, type(rows).__name__))
    resolved: list[tuple[str, ...]] = []
    for k, refs in enumerate(key_lists):
        names: list[str] = []
        for ref in refs if isinstance(refs, list) else [None]:
            if isinstance(ref, int) and 0 <= ref < len(FIXED_FEATURE_NAMES):
                names.append(FIXED_FEATURE_NAMES[ref])
            elif isinstance(ref, int) and -len(extra) <= ref < 0:
                names.append(extra[-1 - ref])
            else:
                raise _fail(f"k[{k}]", "places of known feature names", refs)
        resolved.append(tuple(names))
    vectors: list[tuple[int, dict[str, FeatureValue]]] = []
    at = 0
    previous: dict[str, FeatureValue] = {}
    for r, row in enumerate(rows):
        if (
            not isinstance(row, list)
            or len(row) < 2
            or not isinstance(row[0], int)
            or not isinstance(row[1], int)
            or not 0 <= row[1] < len(resolved)
        ):
            raise _fail(f"x[{r}]", "[time step, key list, values...]", row)
        at += row[0]
        names_of = resolved[row[1]]
        features: dict[str, FeatureValue] = {}
        position = 0
        for item in row[2:]:
            if isinstance(item, bool):
                raise _fail(f"x[{r}]", "numbers, text and run lengths", item)
            if item is None and position < len(names_of):
                # JSON has no inf or nan: orjson wrote null, read as the earlier form did
                features[names_of[position]] = cast(FeatureValue, item)
                position += 1
            elif isinstance(item, int):
                for name in names_of[position : position + item]:
                    if name not in previous:
                        raise _fail(f"x[{r}]", f"{name!r} in the previous vector", row)
                    features[name] = previous[name]
                position += item
            elif isinstance(item, float | str) and position < len(names_of):
                features[names_of[position]] = item
                position += 1
            else:
                raise _fail(f"x[{r}]", f"{len(names_of)} values", row)
        if position != len(names_of):
            raise _fail(f"x[{r}]", f"{len(names_of)} values", row)
        vectors.append((at, features))
        previous = features
    if not isinstance(scores, dict):
        raise _fail("s", "a mapping of score names", scores)
    by_score: dict[str, tuple[Snapshot, ...]] = {}
    for name, flat in scores.items():
        if not isinstance(flat, list) or len(flat) % 3:
            raise _fail(f"s.{name}", "[vector, score, version] triples", flat)
        kept: list[Snapshot] = []
        for i in range(0, len(flat), 3):
            x, score, version = flat[i : i + 3]
            if not isinstance(x, int) or not 0 <= x < len(vectors) or not isinstance(version, int):
                raise _fail(f"s.{name}", "[vector, score, version] triples", flat[i : i + 3])
            at_x, features_x = vectors[x]
            kept.append(Snapshot(at_x, features_x, float(score), version))
        by_score[name] = tuple(kept)
    return Snapshots(by_score)


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


def remember(
    snapshots: Snapshots | None, score: str, snapshot: Snapshot, keep: int, every: int = 0
) -> Snapshots:
    """``snapshots`` with ``snapshot`` kept for ``score`` (at most ``keep``, newest win).
    Features equal to the newest kept ones add nothing: the features did not move. With
    ``every`` (µs), event time is cut into intervals of ``every`` from the epoch and a
    snapshot in the same interval as the newest kept one replaces it: at most one
    snapshot per score per interval, the newest."""
    kept = snapshots.by_score if snapshots is not None else {}
    mine = kept.get(score, ())
    if mine and mine[-1].features == snapshot.features:
        return snapshots if snapshots is not None else Snapshots()
    if mine and every > 0 and snapshot.at // every == mine[-1].at // every:
        mine = mine[:-1]
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
        return self.champion.explain(self.spec.select(features), top)

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
    "FIXED_FEATURE_NAMES",
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
