"""The worker's scoring gives the scores and settles the examples the straightforward way
does: every score selects, predicts and explains on its own, snapshots kept in memory.
The reference below is that way, kept here; the pipeline runs a seeded workload once with
it and once with :class:`streams.scoring.Scoring`, the latter's states written and read
back through the changelog codec after every batch."""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from engine import (
    CustomerState,
    Score,
    Snapshot,
    Snapshots,
    features,
    may_train,
    micros,
    observe,
    remember_snapshot,
    settle_on_touchpoint,
)
from engine.builtin import BUILTIN_BUNDLE
from engine.bundle import load_bundle
from engine.rulebook import RuleBook
from engine.scoring.learner import Example, ScoreModel
from engine.scoring.models import TOP_CONTRIBUTIONS, LinearScorer
from engine.timestamps import TimestampPolicy
from schemas.codec import encode_touchpoint
from schemas.models import Channel, Direction, TouchpointEvent
from schemas.partitioning import customer_partition
from streams.pipeline import Pipeline, RawRecord
from streams.scoring import SHIPPED_MODELS, SNAPSHOTS_DEFAULT, ModelRecord, Scoring, encode_example
from streams.state_codec import CustomerStateCodec

PARTITIONS = 4
TOPIC = "touchpoints"
NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)

BUNDLE = """\
bundle: three
version: 1
scoring:
  profile: [plan, seats]
  snapshots: 4
  scores:
    lead:
      labels: {quote_sent: 1}
      timeout: {after: 3d, label: 0}
    win:
      features: [touchpoints, days_since_last_event, stage, event_kind, count.*]
      labels: {deal_won: 1, deal_lost: 0}
    churn:
      features: [touchpoints, unanswered_outbound, profile.*, channel.*, event_channel]
      labels: {churned: 1}
      timeout: {after: 5d, label: 0}
rules:
  - id: hot_lead
    when:
      all:
        - event: {kind: email_received}
        - state: {score.lead: {gte: 0.3}}
    then: {kind: task, title: 'Call {customer_id}', due_in: 1h}
"""
KINDS = (
    ("email_sent", Channel.EMAIL, Direction.OUTBOUND),
    ("email_received", Channel.EMAIL, Direction.INBOUND),
    ("message_received", Channel.CHAT, Direction.INBOUND),
    ("sandbox_error", Channel.PRODUCT, Direction.NONE),
    ("stage_changed", Channel.CRM, Direction.NONE),
    ("quote_sent", Channel.EMAIL, Direction.OUTBOUND),
    ("deal_won", Channel.CRM, Direction.NONE),
    ("deal_lost", Channel.CRM, Direction.NONE),
    ("churned", Channel.CRM, Direction.NONE),
)


class ReferenceScoring(Scoring):
    """The score hook as it was before features were shared between scores: select,
    compare, predict and explain (a second pass over the features) per score."""

    def __call__(self, state: CustomerState, event: TouchpointEvent) -> CustomerState:
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
        for name, spec in book.scores.items():
            if spec.model.name not in SHIPPED_MODELS:
                continue
            model = self.model(spec)
            selected = spec.select(x)
            kept = snapshots.by_score.get(name, ()) if snapshots is not None else ()
            previous = scores.get(name)
            if (
                previous is not None
                and previous.model_version == model.version
                and kept
                and kept[-1].features == selected
            ):
                continue
            value = model.champion.predict(selected)
            top = model.champion.contributions(selected)[:TOP_CONTRIBUTIONS]
            self.predictions += 1
            scores[name] = Score(
                value, model.version, at, tuple((c.feature, c.value, c.contribution) for c in top)
            )
            if trainable and event.kind not in spec.labels:
                snapshots = remember_snapshot(
                    snapshots,
                    name,
                    Snapshot(at, selected, value, model.version),
                    book.keep.get(name, SNAPSHOTS_DEFAULT),
                )
        for name in [n for n in scores if n not in book.scores]:
            del scores[name]
        return replace(state, feature_memory=memory, snapshots=snapshots, scores=scores)


def workload(seed: int, customers: int, count: int) -> list[TouchpointEvent]:
    rng = random.Random(seed)
    start = NOW - timedelta(days=12)
    out = []
    for n in range(count):
        kind, channel, direction = rng.choice(KINDS)
        attributes: dict[str, object] = {}
        if kind == "stage_changed":
            attributes["stage"] = rng.choice(["trial", "proposal", "negotiation"])
        if rng.random() < 0.2:
            attributes["plan"] = rng.choice(["free", "pro", "team"])
        if rng.random() < 0.1:
            attributes["seats"] = rng.randint(1, 400)
        if rng.random() < 0.2:
            attributes["amount"] = rng.randint(10, 9000)
        at = start + timedelta(minutes=n * 40 + rng.randint(0, 30))
        customer = f"c{rng.randrange(customers)}"
        out.append(
            TouchpointEvent.model_validate(
                {
                    "event_id": f"e{n}",
                    "customer_id": customer,
                    "occurred_at": at,
                    "received_at": at,
                    "channel": channel,
                    "kind": kind,
                    "direction": direction,
                    "rep_id": "rep-1",
                    "source": "test/1",
                    "attributes": attributes,
                }
            )
        )
    return out


def trained(book: RuleBook, name: str, seed: int) -> bytes:
    """A published model for ``name`` that learnt from seeded examples."""
    rng = random.Random(seed)
    model = ScoreModel(book.scores[name])
    for n in range(60):
        x: dict[str, float | str] = {
            "touchpoints": float(rng.randint(1, 30)),
            "days_since_last_event": rng.random() * 5,
            "unanswered_outbound": float(rng.randint(0, 4)),
            "count.email_sent": float(rng.randint(0, 9)),
            "channel.email": float(rng.randint(0, 9)),
            "event_kind": rng.choice(["email_sent", "email_received", "deal_won"]),
            "stage": rng.choice(["trial", "proposal"]),
            "profile.plan": rng.choice(["free", "pro"]),
        }
        model.learn(Example(name, f"c{n}", x, rng.randint(0, 1), n, n))
    assert isinstance(model.champion, LinearScorer)
    return ModelRecord(name, 60, model.champion, model.version, {}).to_bytes()


def run(
    scoring_type: type[Scoring], through_codec: bool
) -> tuple[dict[str, CustomerState], list[bytes], int]:
    book = RuleBook(BUILTIN_BUNDLE, load_bundle(BUNDLE, "three.yaml"))
    scoring = scoring_type(book)
    for name, seed in (("lead", 1), ("win", 2)):  # churn stays untrained (version 0)
        scoring.receive(name.encode(), trained(book, name, seed))
    pipeline = Pipeline(book, TimestampPolicy(), PARTITIONS, scoring=scoring)
    codec = CustomerStateCodec()
    states: dict[str, CustomerState] = {}
    examples: list[bytes] = []
    predictions = 0
    events = workload(11, 9, 400)
    for offset in range(0, len(events), 25):
        records = [
            RawRecord(
                TOPIC,
                customer_partition(e.customer_id, PARTITIONS),
                offset + i,
                e.customer_id.encode(),
                encode_touchpoint(e),
            )
            for i, e in enumerate(events[offset : offset + 25])
        ]
        result = pipeline.process(records, states.get, NOW)
        for changed in result.states.values():
            for customer_id, state in changed.items():
                states[customer_id] = codec.loads(codec.dumps(state)) if through_codec else state
        examples.extend(encode_example(e) for _, e in result.examples)
        predictions += scoring.take_predictions()
    return states, examples, predictions


def test_scores_snapshots_and_examples_are_those_of_the_reference() -> None:
    expected_states, expected_examples, expected_predictions = run(ReferenceScoring, False)
    states, examples, predictions = run(Scoring, True)
    assert len(expected_examples) > 20  # labels and timeouts did settle snapshots
    assert examples == expected_examples  # the same bytes: features, order, labels, times
    assert predictions == expected_predictions
    assert states.keys() == expected_states.keys()
    values: set[float] = set()
    for customer_id, expected in expected_states.items():
        mine = states[customer_id]
        assert mine.scores == expected.scores, customer_id
        assert mine.snapshots == expected.snapshots, customer_id
        values.update(s.value for s in mine.scores.values())
    assert len(values) > 10  # trained models: the scores differ between customers


def test_a_bundle_with_snapshot_every_keeps_one_snapshot_per_score_per_interval() -> None:
    text = BUNDLE.replace("  snapshots: 4\n", "  snapshots: 4\n  snapshot_every: 1h\n")
    book = RuleBook(BUILTIN_BUNDLE, load_bundle(text, "three.yaml"))
    pipeline = Pipeline(book, TimestampPolicy(), PARTITIONS, scoring=Scoring(book))
    start = NOW - timedelta(hours=6)
    start -= timedelta(microseconds=micros(start) % 3_600_000_000)  # on the hour
    events = [
        e.model_copy(update={"customer_id": "c1", "occurred_at": at, "received_at": at})
        for e, at in zip(
            [e for e in workload(3, 1, 40) if e.kind in ("email_sent", "message_received")],
            [start + timedelta(minutes=m) for m in (0, 10, 50, 70, 80, 200)],
            strict=False,
        )
    ]
    records = [
        RawRecord(TOPIC, customer_partition("c1", PARTITIONS), i, b"c1", encode_touchpoint(e))
        for i, e in enumerate(events)
    ]
    assert len(records) == 6
    empty: dict[str, CustomerState] = {}
    result = pipeline.process(records, empty.get, NOW)
    state = result.states[customer_partition("c1", PARTITIONS)]["c1"]
    assert state.snapshots is not None
    for name in ("lead", "win", "churn"):
        kept = [(s.at - micros(start)) // 60_000_000 for s in state.snapshots.by_score[name]]
        assert kept == [50, 80, 200], name  # the newest of each hour
