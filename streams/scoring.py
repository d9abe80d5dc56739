"""Online scoring in the worker: features, predictions and snapshots per touchpoint, the
labelled examples they settle into, and the models every worker reads.

:class:`Scoring` is the reducer's score hook (engine.reducer.ScoreHook): for each
accepted touchpoint it folds the customer's feature memory, settles open snapshots into
labelled :class:`Example` records (only for customers :func:`engine.consent.may_train`
allows), and predicts every running score (``RuleBook.scores``) whose selected features
or model version moved since the last prediction. The state keeps the latest score per
name (value, model version, top contributions) and the bounded snapshots.

Workers never learn. They predict with the model version they last read from the
compacted ``models`` topic (:meth:`Scoring.receive`), or with an untrained model
(version 0) until one is published; the learner (streams.scoring_learner) is the only
writer of that topic. docs/scoring.md ("Wiring") is the contract.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

import orjson

from engine import (
    CustomerState,
    Example,
    LinearScorer,
    ModelFormatError,
    Ranks,
    RuleBook,
    Score,
    ScoreModel,
    ScoreSpec,
    Snapshot,
    Snapshots,
    decode_model,
    encode_model,
    features,
    may_train,
    micros,
    observe,
    remember_snapshot,
    settle_on_touchpoint,
    settle_snapshots,
)
from schemas.models import TouchpointEvent

SNAPSHOTS_DEFAULT = 8
SHIPPED_MODELS = frozenset({"logistic_regression"})
"""Champions that have a data-only format, so a worker can predict with them."""
MODEL_RECORD_FORMAT = "warroom.model-record"


class ScoringRecordError(ValueError):
    """A record of the models or scoring-examples topic that cannot be used; the message
    names the field, what was expected and what was found."""


@dataclass(frozen=True, slots=True)
class ModelRecord:
    """What the ``models`` topic holds per score: the champion as plain data
    (engine.scoring.codec) and where the learner stands in ``scoring-examples``."""

    score: str
    next_example_offset: int
    """Offset on ``scoring-examples`` of the first example this model has not learnt: the
    learner resumes there, so the model after a restart is the one it would have had."""
    champion: LinearScorer
    version: int
    evaluation: Mapping[str, float | None]
    """Progressive validation at publication: champion and challenger log loss and AUC,
    examples, drifts (for people; workers do not use it)."""

    def to_bytes(self) -> bytes:
        return orjson.dumps(
            {
                "format": MODEL_RECORD_FORMAT,
                "score": self.score,
                "next_example_offset": self.next_example_offset,
                "evaluation": dict(self.evaluation),
                "model": encode_model(self.champion, self.version),
            },
            option=orjson.OPT_SORT_KEYS,
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> ModelRecord:
        try:
            document = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise ScoringRecordError(f"model record: expected JSON, found ({exc})") from None
        expected = {"format", "score", "next_example_offset", "evaluation", "model"}
        if not isinstance(document, dict) or set(document) != expected:
            found = sorted(document) if isinstance(document, dict) else type(document).__name__
            raise ScoringRecordError(
                f"model record: expected the fields {sorted(expected)}, found {found}"
            )
        if document["format"] != MODEL_RECORD_FORMAT:
            raise ScoringRecordError(
                f"model record.format: expected {MODEL_RECORD_FORMAT!r}, found "
                f"{document['format']!r}"
            )
        score = document["score"]
        offset = document["next_example_offset"]
        evaluation = document["evaluation"]
        if not isinstance(score, str) or not score:
            raise ScoringRecordError(f"model record.score: expected a name, found {score!r}")
        if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
            raise ScoringRecordError(
                f"model record.next_example_offset: expected a whole number of at least 0, "
                f"found {offset!r}"
            )
        if not isinstance(evaluation, dict) or not all(
            isinstance(v, int | float | type(None)) and not isinstance(v, bool)
            for v in evaluation.values()
        ):
            raise ScoringRecordError(
                f"model record.evaluation: expected a mapping of numbers, found {evaluation!r}"
            )
        try:
            champion, version = decode_model(document["model"])
        except ModelFormatError as exc:
            raise ScoringRecordError(f"model record.model: {exc}") from None
        return cls(score, offset, champion, version, evaluation)


def encode_example(example: Example) -> bytes:
    return orjson.dumps(
        {
            "score": example.score,
            "customer_id": example.customer_id,
            "features": dict(example.features),
            "label": example.label,
            "at": example.at,
            "labelled_at": example.labelled_at,
        }
    )


def decode_example(data: bytes) -> Example:
    """An example of the ``scoring-examples`` topic, checked field by field."""
    try:
        document = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise ScoringRecordError(f"example: expected JSON, found ({exc})") from None
    expected = {"score", "customer_id", "features", "label", "at", "labelled_at"}
    if not isinstance(document, dict) or set(document) != expected:
        found = sorted(document) if isinstance(document, dict) else type(document).__name__
        raise ScoringRecordError(f"example: expected the fields {sorted(expected)}, found {found}")
    x = document["features"]
    if not isinstance(x, dict) or not all(
        isinstance(v, str) or (isinstance(v, int | float) and not isinstance(v, bool))
        for v in x.values()
    ):
        raise ScoringRecordError("example.features: expected a mapping of numbers and strings")
    if document["label"] not in (0, 1):
        raise ScoringRecordError(f"example.label: expected 0 or 1, found {document['label']!r}")
    for name in ("at", "labelled_at"):
        if isinstance(document[name], bool) or not isinstance(document[name], int):
            raise ScoringRecordError(
                f"example.{name}: expected a whole number of µs, found {document[name]!r}"
            )
    if not isinstance(document["score"], str) or not isinstance(document["customer_id"], str):
        raise ScoringRecordError("example: expected score and customer_id to be text")
    return Example(
        document["score"],
        document["customer_id"],
        {k: (v if isinstance(v, str) else float(v)) for k, v in x.items()},
        int(document["label"]),
        document["at"],
        document["labelled_at"],
    )


_Chosen = tuple[frozenset[str] | None, frozenset[str]]
"""A score's ``features`` and ``families``: what it selects."""


@dataclass(frozen=True, slots=True)
class _Book:
    """What scoring needs from the running bundles, worked out once per rule book change."""

    scores: Mapping[str, ScoreSpec]
    profile: tuple[str, ...]
    keep: Mapping[str, int]
    """Score name -> snapshots kept per customer (its bundle's ``scoring.snapshots``)."""
    every: Mapping[str, int]
    """Score name -> its bundle's ``scoring.snapshot_every`` (µs; 0: no thinning)."""


class Scoring:
    """The worker's scoring: predicts with the models it read; collects examples."""

    def __init__(self, rulebook: RuleBook) -> None:
        self.rulebook = rulebook
        self.records: dict[str, ModelRecord] = {}
        """Score name -> the newest model record read from the ``models`` topic."""
        self._models: dict[str, ScoreModel] = {}
        self._served: dict[str, tuple[ScoreSpec, ScoreModel]] = {}
        """Score name -> the spec object last asked for and the model it was given."""
        self._book: _Book | None = None
        self._book_of: object = None
        self.pending: list[Example] = []
        """Examples settled by the touchpoint being processed: the pipeline takes them
        once the touchpoint is accepted (and drops them if it is not)."""
        self.predictions = 0
        """Predictions made (for metrics)."""
        self.ranks: Ranks | None = None
        """Answers ``rank`` conditions (the worker's score leaders board); None: they do
        not hold."""

    def book(self) -> _Book:
        scores = self.rulebook.scores
        if self._book is None or self._book_of is not scores:
            profile: list[str] = []
            keep: dict[str, int] = {}
            every: dict[str, int] = {}
            bundles = self.rulebook.bundles
            for name in sorted(bundles):
                scoring = bundles[name].scoring
                if scoring is None:
                    continue
                profile.extend(p for p in scoring.profile if p not in profile)
                for spec in scoring.scores:
                    keep.setdefault(spec.name, scoring.snapshots)
                    every.setdefault(spec.name, scoring.snapshot_every)
            self._book = _Book(dict(scores), tuple(profile), keep, every)
            self._book_of = scores
        return self._book

    def receive(self, key: bytes | None, value: bytes | None) -> str | None:
        """Take a record of the ``models`` topic; returns the score it was for. A record
        that cannot be used raises :class:`ScoringRecordError` (the caller logs it and
        keeps the model it had)."""
        if key is None:
            raise ScoringRecordError("model record: expected the score name as key, found none")
        name = key.decode(errors="replace")
        if value is None:
            self.records.pop(name, None)
            self._models.pop(name, None)
            return name
        record = ModelRecord.from_bytes(value)
        if record.score != name:
            raise ScoringRecordError(
                f"model record.score: expected {name!r} (the key), found {record.score!r}"
            )
        self.records[name] = record
        self._models.pop(name, None)
        return name

    def model(self, spec: ScoreSpec) -> ScoreModel:
        """The model this worker predicts ``spec`` with: the published champion when its
        settings are the bundle's, otherwise an untrained one (version 0)."""
        model = self._models.get(spec.name)
        served_for = self._served.get(spec.name)
        if served_for is not None and served_for[0] is spec and served_for[1] is model:
            return model  # the same spec object as last time: no comparison needed
        served = replace(spec, challenger=None)  # the challenger is never shipped
        if model is None or model.spec != served:
            record = self.records.get(spec.name)
            if record is not None and record.champion.spec == spec.model:
                model = ScoreModel(served, record.champion, record.version)
            else:
                model = ScoreModel(served)
            self._models[spec.name] = model
        self._served[spec.name] = (spec, model)
        return model

    def version(self, name: str) -> int | None:
        model = self._models.get(name)
        if model is not None:
            return model.version
        record = self.records.get(name)
        return None if record is None else record.version

    def __call__(self, state: CustomerState, event: TouchpointEvent) -> CustomerState:
        """The reducer's score hook: ``state`` (with ``event`` folded in) with its feature
        memory, snapshots and scores brought up to date."""
        book = self.book()
        if not book.scores:
            return state
        memory = observe(state.feature_memory, event, book.profile)
        trainable = may_train(state)
        snapshots: Snapshots | None = state.snapshots
        for spec in book.scores.values():
            snapshots, examples = settle_on_touchpoint(spec, state, snapshots, event)
            self.pending.extend(examples)
        if not trainable:
            snapshots = None
        x = features(state, memory, event.occurred_at, event)
        at = micros(event.occurred_at)
        scores = dict(state.scores)
        # one selection per distinct feature list, shared by the scores (and snapshots)
        # that name the same features; ``all`` is the touchpoint's features themselves
        selections: dict[
            tuple[frozenset[str] | None, frozenset[str]], Mapping[str, float | str]
        ] = {}
        for name, spec in book.scores.items():
            if spec.model.name not in SHIPPED_MODELS:
                continue  # never published: no score rather than an untrained one
            model = self.model(spec)
            chosen = (spec.features, spec.families)
            selected = selections.get(chosen)
            if selected is None:
                everything = spec.features is None and not spec.families
                selected = selections[chosen] = x if everything else spec.select(x)
            kept = snapshots.by_score.get(name, ()) if snapshots is not None else ()
            previous = scores.get(name)
            if (
                previous is not None
                and previous.model_version == model.version
                and kept
                and kept[-1].features == selected
            ):
                continue  # the features did not move
            value, top = model.champion.explain(selected)
            self.predictions += 1
            scores[name] = Score(
                value,
                model.version,
                at,
                tuple((c.feature, c.value, c.contribution) for c in top),
            )
            if trainable and event.kind not in spec.labels:
                snapshots = remember_snapshot(
                    snapshots,
                    name,
                    Snapshot(at, selected, value, model.version),
                    book.keep.get(name, SNAPSHOTS_DEFAULT),
                    book.every.get(name, 0),
                )
        for name in [n for n in scores if n not in book.scores]:
            del scores[name]  # a score no running bundle declares any more
        return state.with_scoring(memory, snapshots, scores)

    def settle_due(self, state: CustomerState, at: int) -> CustomerState:
        """``state`` with the snapshots that timed out by event time ``at`` settled (their
        examples pending, unless the customer refuses training)."""
        snapshots = state.snapshots
        if snapshots is None:
            return state
        trainable = may_train(state)
        for spec in self.book().scores.values():
            snapshots, examples = settle_snapshots(spec, state.customer_id, snapshots, at)
            if trainable:
                self.pending.extend(examples)
        if snapshots == state.snapshots:
            return state
        return replace(state, snapshots=snapshots if trainable else None)

    def take_predictions(self) -> int:
        """Predictions made since the last call."""
        made, self.predictions = self.predictions, 0
        return made

    def take(self) -> list[Example]:
        out, self.pending = self.pending, []
        return out
