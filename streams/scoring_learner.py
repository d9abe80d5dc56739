"""One model per score across all workers: the learner and the model feed.

The learner runs in the worker that owns partition 0 of the touchpoints topic (the same
owner that writes bundle decisions into audit chain 0); on a rebalance it stops where it
is and the new owner takes over. It reads ``scoring-examples`` (one partition, examples
keyed by score name, committed transactions only) in offset order, folds each example
into its score's :class:`ScoreModel` (champion and challenger, progressive validation,
drift), and publishes the champion to the compacted ``models`` topic, keyed by score.

Exactness across restarts: every model record carries ``next_example_offset``, the
offset of the first example it has not learnt. A new learner reads ``models`` to its
end, rebuilds each champion from its record and reads ``scoring-examples`` from the
smallest of those offsets, skipping for each score what its record already holds. The
model after a restart is therefore the one an uninterrupted learner would have, and
its version (the number of examples learnt) says so. Two learners for a moment (a
rebalance in flight) publish the same records. ADWIN's window and the challenger are not
in the record: after a restart they start afresh (docs/scoring.md).

Every worker follows ``models`` from the beginning with its own consumer, like the
rules feed, and predicts with the version it last read (:meth:`Scoring.receive`).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from engine import LinearScorer, ModelSpec, RuleBook, ScoreModel, ScoreSpec
from schemas.topics import METRICS, MODELS, SCORING_EXAMPLES

from .kafka_security import client_options
from .metrics import WorkerMetrics
from .scoring import ModelRecord, Scoring, ScoringRecordError, decode_example
from .settings import Settings
from .topic_reader import records_to_end

log = logging.getLogger(__name__)

LEARN_BEFORE_YIELD = 16
"""Examples learnt between two yields to the event loop, at most."""
YIELD_AFTER_SECONDS = 0.010
"""The learner also yields once this long has passed since its last yield: a forest
challenger takes from under 1 ms to over 10 ms an example, so counting examples alone
held the loop for up to 70 ms (bench/scoring_overhead.py)."""
clock: Callable[[], float] = time.perf_counter
FETCH_MAX_RECORDS = 500
PUBLISH_EVERY_SECONDS = 0.5
"""A changed model is published at most this often (and when the learner stops)."""


@dataclass(frozen=True, slots=True)
class Drift:
    """A drift the champion's error stream showed: a metrics event."""

    score: str
    model_version: int
    offset: int
    drifts: int
    champion_log_loss: float
    champion_auc: float

    def to_metric(self, now: datetime) -> dict[str, Any]:
        return {
            "metric": "score_drift",
            "score": self.score,
            "model_version": self.model_version,
            "example_offset": self.offset,
            "drifts": self.drifts,
            "champion_log_loss": self.champion_log_loss,
            "champion_auc": self.champion_auc,
            "at": now.isoformat(),
        }


def _settings(spec: ModelSpec) -> dict[str, Any]:
    if spec.name == "forest":
        return {"name": spec.name, "trees": spec.trees, "seed": spec.seed}
    return {"name": spec.name, "learning_rate": spec.learning_rate, "l2": spec.l2}


@dataclass(frozen=True, slots=True)
class ModelChange:
    """The bundle changed a score's champion (or its settings): a new model from here on.
    The bundle version that did it is audited as ``bundle_activated``; this is the
    learner's side of the switch, on the metrics topic."""

    score: str
    before: ModelSpec
    after: ModelSpec
    model_version: int
    offset: int
    shipped: bool
    """False when the new champion has no data-only format (``forest``): workers keep no
    score for it until that changes (docs/scoring.md)."""

    def to_metric(self, now: datetime) -> dict[str, Any]:
        return {
            "metric": "score_model_changed",
            "score": self.score,
            "from": _settings(self.before),
            "to": _settings(self.after),
            "model_version": self.model_version,
            "example_offset": self.offset,
            "shipped": self.shipped,
            "at": now.isoformat(),
        }


class Learner:
    """Folds examples in topic order into one :class:`ScoreModel` per running score."""

    def __init__(self, rulebook: RuleBook) -> None:
        self.rulebook = rulebook
        self.models: dict[str, ScoreModel] = {}
        self.next_offset: dict[str, int] = {}
        self.changed: set[str] = set()
        self.drifts: list[Drift] = []
        self.changes: list[ModelChange] = []
        self.refused = 0
        """Examples that could not be read (logged, skipped, never retried)."""

    def resume(self, records: Mapping[str, ModelRecord]) -> int:
        """Start from the published ``records``; returns the offset of
        ``scoring-examples`` to read from."""
        self.models.clear()
        self.next_offset.clear()
        for name, spec in self.rulebook.scores.items():
            record = records.get(name)
            if record is None:
                self.models[name] = ScoreModel(spec)
                self.next_offset[name] = 0
                continue
            self.next_offset[name] = record.next_example_offset
            if record.champion.spec == spec.model:
                self.models[name] = ScoreModel(spec, record.champion, record.version)
            else:  # the bundle changed the model: a new one, from here on
                self.models[name] = ScoreModel(spec, None, record.version)
                self._changed(name, record.champion.spec, spec, record.version)
        return min(self.next_offset.values(), default=0)

    def _model(self, spec: ScoreSpec) -> ScoreModel:
        model = self.models.get(spec.name)
        if model is None:
            model = self.models[spec.name] = ScoreModel(spec)
        elif model.spec != spec:
            champion = model.champion if model.champion.spec == spec.model else None
            if champion is None:
                self._changed(spec.name, model.champion.spec, spec, model.version)
            model = self.models[spec.name] = ScoreModel(spec, champion, model.version)
        return model

    def _changed(self, name: str, before: ModelSpec, spec: ScoreSpec, version: int) -> None:
        shipped = spec.model.name == "logistic_regression"
        offset = self.next_offset.get(name, 0)
        self.changes.append(ModelChange(name, before, spec.model, version, offset, shipped))
        log.warning(
            "score %r: the champion is now %s (was %s) from example offset %d%s",
            name,
            _settings(spec.model),
            _settings(before),
            offset,
            "" if shipped else "; it has no data-only format, so workers keep no score for it",
        )

    def fold(self, offset: int, key: bytes | None, value: bytes | None) -> bool:
        """Learn the example at ``offset``; False when it is not one to learn (no running
        score of that name, already in the published model, unreadable)."""
        name = None if key is None else key.decode(errors="replace")
        spec = None if name is None else self.rulebook.scores.get(name)
        if spec is None or value is None or offset < self.next_offset.get(spec.name, 0):
            return False
        self.next_offset[spec.name] = offset + 1
        try:
            example = decode_example(value)
        except ScoringRecordError as exc:
            self.refused += 1
            log.warning("scoring-examples offset %d: %s; skipped", offset, exc)
            return False
        model = self._model(spec)
        learnt = model.learn(example)
        self.changed.add(spec.name)
        if learnt.drifted:
            evaluation = model.champion_eval
            self.drifts.append(
                Drift(
                    spec.name,
                    model.version,
                    offset,
                    model.drift.drifts,
                    evaluation.log_loss(),
                    evaluation.auc(),
                )
            )
        return True

    def publish(self) -> list[ModelRecord]:
        """A record of every model that learnt since the last call."""
        out = []
        for name in sorted(self.changed):
            model = self.models.get(name)
            if model is None or not isinstance(model.champion, LinearScorer):
                continue  # only the linear model has a data-only format
            out.append(
                ModelRecord(
                    name,
                    self.next_offset[name],
                    model.champion,
                    model.version,
                    evaluation(model),
                )
            )
        self.changed.clear()
        return out


def evaluation(model: ScoreModel) -> dict[str, float | None]:
    """Progressive validation of the champion and the challenger, side by side."""
    challenger = model.challenger_eval if model.challenger is not None else None
    return {
        "examples": float(model.champion_eval.examples),
        "champion_log_loss": model.champion_eval.log_loss(),
        "champion_auc": model.champion_eval.auc(),
        "challenger_log_loss": None if challenger is None else challenger.log_loss(),
        "challenger_auc": None if challenger is None else challenger.auc(),
        "drifts": float(model.drift.drifts),
    }


async def read_models(settings: Settings) -> dict[str, ModelRecord]:
    """Every score's newest record on ``models``, read to the end."""
    records: dict[str, ModelRecord] = {}
    async for message in records_to_end(settings, settings.topic(MODELS)):
        name = message.key.decode(errors="replace") if message.key else None
        if name is None:
            continue
        if message.value is None:
            records.pop(name, None)
            continue
        try:
            records[name] = ModelRecord.from_bytes(message.value)
        except ScoringRecordError as exc:
            log.warning("models offset %d: %s; ignored", message.offset, exc)
    return records


async def run_learner(
    settings: Settings,
    rulebook: RuleBook,
    owns: Callable[[], bool],
    metrics: WorkerMetrics,
    ready: asyncio.Event,
) -> None:
    """Learn while ``owns()`` (this worker owns touchpoints partition 0); until cancelled."""
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.bootstrap_servers, acks="all", **client_options(settings)
    )
    await producer.start()
    try:
        while True:
            await ready.wait()
            if not owns() or not rulebook.scores:
                await asyncio.sleep(1.0)
                continue
            await _learn_while_owner(settings, rulebook, owns, metrics, producer)
    finally:
        await producer.stop()


async def _learn_while_owner(
    settings: Settings,
    rulebook: RuleBook,
    owns: Callable[[], bool],
    metrics: WorkerMetrics,
    producer: AIOKafkaProducer,
) -> None:
    learner = Learner(rulebook)
    start = learner.resume(await read_models(settings))
    # What exists now (tables, bundles, the models just read) lives as long as the
    # worker: kept out of the cyclic collector's full passes, which would otherwise walk
    # it all while the learner folds examples and hold the event loop past 50 ms.
    gc.freeze()
    log.info("learning from scoring-examples offset %d", start)
    tp = TopicPartition(settings.topic(SCORING_EXAMPLES), 0)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers,
        **client_options(settings),
        enable_auto_commit=False,
        isolation_level="read_committed",
    )
    await consumer.start()
    loop = asyncio.get_running_loop()
    published_at = 0.0
    try:
        consumer.assign([tp])
        consumer.seek(tp, start)
        while owns():
            batches = await consumer.getmany(tp, timeout_ms=200, max_records=FETCH_MAX_RECORDS)
            learnt = 0
            since = clock()
            for message in batches.get(tp, []):
                if learner.fold(message.offset, message.key, message.value):
                    learnt += 1
                    if learnt % LEARN_BEFORE_YIELD == 0 or clock() - since >= YIELD_AFTER_SECONDS:
                        await asyncio.sleep(0)
                        since = clock()
            if learnt:
                metrics.examples_learnt.inc(learnt)
            due = loop.time() - published_at >= PUBLISH_EVERY_SECONDS
            if (learner.changed or learner.changes) and due:
                await _publish(settings, learner, metrics, producer)
                published_at = loop.time()
    finally:
        await consumer.stop()
        if learner.changed and owns():
            await _publish(settings, learner, metrics, producer)


async def _publish(
    settings: Settings, learner: Learner, metrics: WorkerMetrics, producer: AIOKafkaProducer
) -> None:
    now = datetime.now(UTC)
    drifted = {d.score for d in learner.drifts}
    for drift in learner.drifts:
        await producer.send(
            settings.topic(METRICS),
            orjson.dumps(drift.to_metric(now)),
            key=f"score:{drift.score}".encode(),
        )
        metrics.score_drifts.labels(drift.score).inc()
    learner.drifts.clear()
    for change in learner.changes:
        await producer.send(
            settings.topic(METRICS),
            orjson.dumps(change.to_metric(now)),
            key=f"score:{change.score}".encode(),
        )
    learner.changes.clear()
    for record in learner.publish():
        await producer.send(settings.topic(MODELS), record.to_bytes(), key=record.score.encode())
        metrics.score_drifted.labels(record.score).set(1 if record.score in drifted else 0)
        for measure, value in record.evaluation.items():
            if value is not None and measure != "drifts":
                who, _, what = measure.partition("_")
                if what:
                    metrics.score_quality.labels(record.score, who, what).set(value)
        metrics.models_published.labels(record.score).inc()
    await producer.flush()


async def follow_models(
    settings: Settings, scoring: Scoring, metrics: WorkerMetrics, loaded: asyncio.Event
) -> None:
    """Read ``models`` from the beginning into ``scoring`` until cancelled; ``loaded`` is
    set once what was on the topic at the start has been read."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers,
        enable_auto_commit=False,
        **client_options(settings),
    )
    await consumer.start()
    try:
        tp = TopicPartition(settings.topic(MODELS), 0)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        end = (await consumer.end_offsets([tp]))[tp]
        if end == 0:
            loaded.set()
        while True:
            batches = await consumer.getmany(tp, timeout_ms=500)
            for message in batches.get(tp, []):
                try:
                    name = scoring.receive(message.key, message.value)
                except ScoringRecordError as exc:
                    metrics.model_records_refused.inc()
                    log.warning(
                        "models offset %d: %s; the model in use is kept", message.offset, exc
                    )
                    continue
                if name is not None:
                    version = scoring.version(name)
                    if version is not None:
                        metrics.model_version.labels(name).set(version)
            if not loaded.is_set() and await consumer.position(tp) >= end:
                loaded.set()
    finally:
        await consumer.stop()
