"""What scoring costs the worker, no broker needed:

    .venv/bin/python bench/scoring_overhead.py [--touchpoints 20000] [--examples 4000]
        [--customers 100000] [--only touchpoint|loop|top]

1. **Per touchpoint.** The same touchpoints (``--touchpoints`` over 2,000 customers, 2%
   of them label events) go through the worker's pipeline (``streams.pipeline.Pipeline``,
   the built-in bundle and a bundle with two scores) one at a time, without scoring and
   with it; the models are ones the learner published from a first pass over the same
   touchpoints (``Learner`` → ``ModelRecord`` bytes → ``Scoring.receive``), so the
   prediction is a trained model's. The two runs alternate (``--rounds``) so the
   machine's load falls on both alike. Printed: p50 and p99 µs per touchpoint of each,
   what scoring adds and the ratio.
2. **The event loop while learning.** The learner's loop as the worker runs it
   (``streams.scoring_learner``: a batch of up to FETCH_MAX_RECORDS examples, a yield
   every LEARN_BEFORE_YIELD examples, the models published every PUBLISH_EVERY_SECONDS)
   folds ``--examples`` examples while a second task measures every gap between its own
   turns on the loop. Once with the champion alone, once with the forest challenger
   learning beside it. Printed: examples/s, p50, p99 and max gap in ms, and the max
   against the 50 ms bar.
3. **warroom top across partitions.** Score leaders for ``--customers`` customers, 100
   reps (10 managers) and 12 partitions, built and encoded as the workers publish them
   (``partition_leaders``, ``Leaders.to_bytes``); then timed: what ``warroom top`` does
   with the records once read (``Board.take`` decodes each, ``Board.top`` merges and
   answers), for the global top 5, a rep's and a team's. Printed: ms of each and the ratio
   to the 1 s bar.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import random
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from engine.builtin import BUILTIN_BUNDLE  # noqa: E402
from engine.bundle import load_bundle  # noqa: E402
from engine.rulebook import RuleBook  # noqa: E402
from engine.scoring.learner import Example  # noqa: E402
from engine.state import CustomerState, Score  # noqa: E402
from engine.timestamps import TimestampPolicy  # noqa: E402
from schemas.codec import encode_touchpoint  # noqa: E402
from schemas.models import TouchpointEvent  # noqa: E402
from schemas.partitioning import customer_partition  # noqa: E402
from streams import scoring_learner  # noqa: E402
from streams.metrics import WorkerMetrics  # noqa: E402
from streams.pipeline import Pipeline, RawRecord  # noqa: E402
from streams.scoring import Scoring, encode_example  # noqa: E402
from streams.scoring_leaders import Board, partition_leaders  # noqa: E402
from streams.scoring_learner import (  # noqa: E402
    FETCH_MAX_RECORDS,
    LEARN_BEFORE_YIELD,
    PUBLISH_EVERY_SECONDS,
    YIELD_AFTER_SECONDS,
    Learner,
)
from streams.settings import Settings  # noqa: E402

SCORES = """\
bundle: scores
version: 1
scoring:
  profile: [plan, region]
  scores:
    churn:
      features: all
      labels: {churned: 1, renewed: 0}
      timeout: {after: 90d, label: 0}
      challenger: {name: forest, trees: 10, seed: 42}
    win:
      features: [days_since_last_event, reply_latency_hours, count.*, profile.plan, stage]
      labels: {deal_won: 1, deal_lost: 0}
"""
NOW = datetime(2026, 11, 22, 12, tzinfo=UTC)
PARTITIONS = 4
BEHAVIOUR = [
    ("message_sent", "outbound", "chat"),
    ("message_received", "inbound", "chat"),
    ("email_received", "inbound", "email"),
    ("video_watched", "none", "product"),
    ("meeting_held", "none", "meeting"),
    ("sandbox_error", "none", "product"),
    ("support_chat", "inbound", "support"),
]
LABELS = [("churned", "none", "crm"), ("renewed", "none", "crm"), ("deal_won", "none", "crm")]
LOOP_BAR_MS = 50.0
TOP_BAR_MS = 1000.0


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def records(n: int, customers: int, seed: int = 1) -> list[RawRecord]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        customer = f"c{rng.randrange(customers)}"
        kind, direction, channel = rng.choice(LABELS if rng.random() < 0.02 else BEHAVIOUR)
        at = NOW - timedelta(days=30) + timedelta(seconds=i * 30)
        event = TouchpointEvent(
            event_id=f"e{i}",
            customer_id=customer,
            occurred_at=at,
            received_at=at,
            channel=channel,
            kind=kind,
            direction=direction,
            rep_id=f"rep-{rng.randrange(20)}",
            source="bench/1",
            attributes={
                "plan": rng.choice(["free", "team", "pro"]),
                "region": rng.choice(["eu", "us", "apac"]),
                "watched_seconds": rng.randrange(600),
                "customer_talk_share": rng.random(),
                "sentiment": rng.uniform(-1, 1),
            },
        )
        partition = customer_partition(customer, PARTITIONS)
        out.append(
            RawRecord("touchpoints", partition, i, customer.encode(), encode_touchpoint(event))
        )
    return out


def rulebook() -> RuleBook:
    return RuleBook(BUILTIN_BUNDLE, load_bundle(SCORES, "scores.yaml"))


def pipeline(book: RuleBook, scoring: Scoring | None) -> Pipeline:
    policy = TimestampPolicy(max_clock_skew=timedelta(days=365))
    return Pipeline(book, policy, PARTITIONS, scoring=scoring)


def trained_scoring(touchpoints: list[RawRecord]) -> tuple[Scoring, int]:
    """A worker's Scoring holding the models a learner published from a first pass over
    ``touchpoints`` (and how many examples they learnt)."""
    book = rulebook()
    first = pipeline(book, Scoring(book))
    store: dict[str, CustomerState] = {}
    examples: list[Example] = []
    for record in touchpoints:
        result = first.process((record,), store.get, NOW)
        for changed in result.states.values():
            store.update(changed)
        examples.extend(e for _, e in result.examples)
    learner = Learner(book)
    learner.resume({})
    for offset, example in enumerate(examples):
        learner.fold(offset, example.score.encode(), encode_example(example))
    scoring = Scoring(book)
    for published in learner.publish():
        scoring.receive(published.score.encode(), published.to_bytes())
    return scoring, len(examples)


def per_touchpoint(touchpoints: list[RawRecord], scoring: Scoring | None) -> list[float]:
    """µs per touchpoint through the pipeline (the first 10% left out: warm-up)."""
    book = scoring.rulebook if scoring is not None else rulebook()
    run = pipeline(book, scoring)
    store: dict[str, CustomerState] = {}
    times = []
    for record in touchpoints:
        started = time.perf_counter_ns()
        result = run.process((record,), store.get, NOW)
        times.append((time.perf_counter_ns() - started) / 1000)
        for changed in result.states.values():
            store.update(changed)
        if scoring is not None:
            scoring.take()
    return times[len(times) // 10 :]


def touchpoint_part(n: int, rounds: int) -> None:
    touchpoints = records(n, 2000)
    scoring, learnt = trained_scoring(touchpoints)
    versions = {name: scoring.records[name].version for name in sorted(scoring.records)}
    without: list[float] = []
    scored: list[float] = []
    for _ in range(rounds):
        without += per_touchpoint(touchpoints, None)
        fresh = Scoring(scoring.rulebook)
        fresh.records = dict(scoring.records)
        scored += per_touchpoint(touchpoints, fresh)
    print(
        f"\n1. per touchpoint: {n:,} touchpoints, 2,000 customers, {rounds} rounds each; "
        f"two scores, models learnt from {learnt:,} examples (versions {versions})"
    )
    print(f"{'pipeline':<28} {'p50 µs':>8} {'p99 µs':>8} {'p50 ratio':>10} {'p99 ratio':>10}")
    base50, base99 = statistics.median(without), percentile(without, 0.99)
    for name, times in (("without scoring", without), ("with two scores", scored)):
        p50, p99 = statistics.median(times), percentile(times, 0.99)
        print(f"{name:<28} {p50:>8.0f} {p99:>8.0f} {p50 / base50:>10.2f} {p99 / base99:>10.2f}")
    print(
        f"{'scoring adds':<28} {statistics.median(scored) - base50:>8.0f} "
        f"{percentile(scored, 0.99) - base99:>8.0f}"
    )


@dataclass
class LoopRun:
    examples: int
    seconds: float
    gaps_ms: list[float]
    """Every wait of the watching task for its next turn on the loop."""
    outside_gc_ms: list[float]
    """The same waits less the garbage collections inside them."""
    longest_gc_ms: float
    records_sent: int


def example_records(n: int, seed: int = 1) -> list[bytes]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        x: dict[str, float | str] = {
            "touchpoints": float(rng.randrange(50)),
            "days_since_last_event": rng.random() * 30,
            "count.message_sent": float(rng.randrange(9)),
            "count.sandbox_error": float(rng.randrange(4)),
            "support_sentiment": rng.uniform(-1, 1),
            "profile.plan": rng.choice(["pro", "free", "team"]),
            "profile.region": rng.choice(["eu", "us", "apac"]),
            "unanswered_outbound": float(rng.randrange(5)),
        }
        label = int(x["unanswered_outbound"] > 2 or rng.random() < 0.1)  # type: ignore[operator]
        out.append(encode_example(Example("churn", f"c{i}", x, label, i, i)))
    return out


class _Batches:
    """An in-memory stand-in for the learner's Kafka consumer: the examples in batches of
    FETCH_MAX_RECORDS, then nothing (``drained``)."""

    def __init__(self, examples: list[bytes]) -> None:
        self.examples = examples
        self.at = 0
        self.drained = False

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def assign(self, partitions: Any) -> None: ...

    def seek(self, partition: Any, offset: int) -> None: ...

    async def getmany(self, partition: Any, **_: Any) -> dict[Any, list[Any]]:
        await asyncio.sleep(0)
        if self.at >= len(self.examples):
            self.drained = True
            return {}
        batch = [
            SimpleNamespace(offset=offset, key=b"churn", value=self.examples[offset])
            for offset in range(self.at, min(self.at + FETCH_MAX_RECORDS, len(self.examples)))
        ]
        self.at += len(batch)
        return {partition: batch}


class _Producer:
    def __init__(self) -> None:
        self.sent = 0

    async def send(self, topic: str, value: bytes, key: bytes) -> None:
        await asyncio.sleep(0)
        self.sent += 1

    async def flush(self) -> None: ...


async def learn_and_watch(bundle: str, examples: list[bytes]) -> LoopRun:
    """The worker's own learner loop (``scoring_learner._learn_while_owner``) over an
    in-memory consumer and producer, and a task that notes every turn it gets."""
    batches = _Batches(examples)

    async def no_models(settings: Settings) -> dict[str, Any]:
        return {}

    setattr(scoring_learner, "AIOKafkaConsumer", lambda *a, **k: batches)  # noqa: B010
    setattr(scoring_learner, "read_models", no_models)  # noqa: B010
    done = False
    turns: list[tuple[float, float]] = []
    collections: list[tuple[float, float]] = []
    collecting = [0.0]

    def note_collection(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            collecting[0] = time.perf_counter()
        else:
            collections.append((collecting[0], time.perf_counter()))

    async def watch() -> None:
        last = time.perf_counter()
        while not done:
            await asyncio.sleep(0)
            now = time.perf_counter()
            turns.append((last, now))
            last = now

    watcher = asyncio.create_task(watch())
    await asyncio.sleep(0)
    producer = _Producer()
    gc.callbacks.append(note_collection)
    started = time.perf_counter()
    try:
        await scoring_learner._learn_while_owner(
            Settings(),
            RuleBook(load_bundle(bundle, "scores.yaml")),
            lambda: not batches.drained,
            WorkerMetrics.create(),
            producer,
        )
        seconds = time.perf_counter() - started
        done = True
        await watcher
    finally:
        gc.callbacks.remove(note_collection)
    gaps = [(end - start) * 1000 for start, end in turns]
    outside = [
        (end - start - sum(max(0.0, min(end, b) - max(start, a)) for a, b in collections)) * 1000
        for start, end in turns
    ]
    longest_gc = max(((b - a) * 1000 for a, b in collections), default=0.0)
    return LoopRun(len(examples), seconds, gaps, outside, longest_gc, producer.sent)


def loop_part(n: int) -> None:
    examples = example_records(n)
    champion_only = SCORES.replace("      challenger: {name: forest, trees: 10, seed: 42}\n", "")
    print(
        f"\n2. the event loop while the learner folds {n:,} churn examples "
        f"(a yield every {LEARN_BEFORE_YIELD} or after {YIELD_AFTER_SECONDS * 1000:.0f} ms, "
        f"publication every {PUBLISH_EVERY_SECONDS} s)"
    )
    print(
        f"{'learner':<30} {'examples/s':>10} {'gap p50 ms':>11} {'p99 ms':>8} {'max ms':>8} "
        f"{'max/50ms':>9} {'longest GC':>11} {'max less GC':>12}"
    )
    for name, bundle in (
        ("champion only", champion_only),
        ("champion + forest challenger", SCORES),
    ):
        run = asyncio.run(learn_and_watch(bundle, examples))
        gaps = run.gaps_ms
        print(
            f"{name:<30} {run.examples / run.seconds:>10,.0f} {statistics.median(gaps):>11.3f} "
            f"{percentile(gaps, 0.99):>8.2f} {max(gaps):>8.2f} {max(gaps) / LOOP_BAR_MS:>9.2f} "
            f"{run.longest_gc_ms:>11.2f} {max(run.outside_gc_ms):>12.2f}"
        )


def top_part(customers: int, reps: int = 100, partitions: int = 12) -> None:
    rng = random.Random(1)
    names = [f"rep-{i}" for i in range(reps)]
    manager_of = {rep: f"manager-{i % 10}" for i, rep in enumerate(names)}
    started = time.perf_counter()
    people = []
    for i in range(customers):
        customer = f"c{i}"
        state = CustomerState(
            customer_id=customer,
            owner_rep_id=rng.choice(names),
            scores={"churn": Score(rng.random(), 3, 0), "win": Score(rng.random(), 3, 0)},
        )
        people.append((customer, customer_partition(customer, partitions), state))
    at = datetime.now(UTC)
    built = time.perf_counter()
    leaders = partition_leaders(people, ["churn", "win"], manager_of, at)
    encoded = [(f"{r.score}/{r.partition}".encode(), r.to_bytes()) for r in leaders]
    published = time.perf_counter()
    print(
        f"\n3. warroom top: {customers:,} customers, {reps} reps, 10 managers, {partitions} "
        f"partitions, two scores: {len(encoded)} records, largest "
        f"{max(len(v) for _, v in encoded) / 1024:,.0f} KiB (states made in "
        f"{built - started:.1f} s, leaders built and encoded in {published - built:.2f} s)"
    )
    print(f"{'warroom top --score churn --k 5':<46} {'ms':>8} {'ratio to 1 s':>13}")
    for name, rep, team in (
        ("(global)", None, None),
        ("--rep rep-7", "rep-7", None),
        ("--team manager-3", None, "manager-3"),
    ):
        started = time.perf_counter()
        board = Board()
        for key, value in encoded:
            board.take(key, value)
        answer = board.top("churn", 5, rep=rep, team=team)
        ms = (time.perf_counter() - started) * 1000
        assert len(answer) == 5
        print(f"{'  decode + merge + answer ' + name:<46} {ms:>8.1f} {ms / TOP_BAR_MS:>13.3f}")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--touchpoints", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=2, help="alternating runs of each")
    parser.add_argument("--examples", type=int, default=4_000, help="examples the learner folds")
    parser.add_argument("--customers", type=int, default=100_000, help="for warroom top")
    parser.add_argument("--only", choices=["touchpoint", "loop", "top"])
    args = parser.parse_args(argv)
    if args.only in (None, "touchpoint"):
        touchpoint_part(args.touchpoints, args.rounds)
    if args.only in (None, "loop"):
        loop_part(args.examples)
    if args.only in (None, "top"):
        top_part(args.customers)


if __name__ == "__main__":
    main()
