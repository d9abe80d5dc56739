"""The full pipeline without Kafka: µs of Python per touchpoint, and where they go.

`make bench`'s full-pipeline cases run the worker against the broker; this runs the same
workload (bench/cases/full_workload.py: the example packs, the default policy, the three
scores, 100 generated rules, consents and drafts) straight through the worker's
``Pipeline`` in one process, batch by batch as the worker's slices see it, with each
changed state encoded once per batch as the table's codec writes it. What is left is the
engine's own cost per touchpoint: the bound no Kafka path can beat, and the part to
profile when the worker is CPU-bound.

    .venv/bin/python bench/pipeline_micro.py                     # 30,000 touchpoints
    .venv/bin/python bench/pipeline_micro.py --profile 25        # and cProfile's top 25
    .venv/bin/python bench/pipeline_micro.py --without scores    # ratio without a part

``--without`` leaves out a part (scores, rules, policy, consents, drafts) to show its share;
each run also prints the baseline measured in the same process (every part on).
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import pstats
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.cases import full_workload
from engine import CustomerState
from engine.builtin import BUILTIN_BUNDLE
from engine.bundle import load_bundle
from engine.rulebook import RuleBook
from engine.scoring.learner import Example, ScoreModel
from streams.app import build_pipeline
from streams.pipeline import RawRecord
from streams.scoring import ModelRecord, Scoring
from streams.settings import Settings
from streams.state_codec import CustomerStateCodec

PARTITIONS = 4
PARTS = ("scores", "rules", "policy", "consents", "drafts")


def inputs(
    workload: full_workload.FullWorkload, settings: Settings, without: set[str], singles: bool
) -> list[RawRecord]:
    """Consents first, then touchpoints (one per record, or the connector's envelopes)
    with each outbound message's draft ahead of its touchpoint, as the bench produces."""
    out: list[RawRecord] = []
    if "consents" not in without:
        topic = settings.topic("consents")
        out += [RawRecord(topic, p, i, k, v) for i, (p, k, v) in enumerate(workload.consents)]
    touchpoints = settings.topic("touchpoints")
    drafts_topic = settings.topic("message-drafts")
    drafts = {} if "drafts" in without else dict(workload.drafts)
    if singles:
        for index, (p, k, v) in enumerate(workload.singles):
            draft = drafts.get(index)
            if draft is not None:
                out.append(RawRecord(drafts_topic, draft[0], index, draft[1], draft[2]))
            out.append(RawRecord(touchpoints, p, index, k, v))
    else:
        out += [RawRecord(drafts_topic, p, i, k, v) for i, (p, k, v) in enumerate(drafts.values())]
        out += [
            RawRecord(touchpoints, p, i, k, v) for i, (p, k, v) in enumerate(workload.envelopes)
        ]
    return out


def rulebook(without: set[str]) -> RuleBook:
    bundles = []
    for source, text in full_workload.bundles():
        if "scores" in without and source == "bench-scores.yaml":
            continue
        if "policy" in without and source == str(full_workload.POLICY_FILE):
            continue
        if "rules" in without and source.startswith("generated-"):
            continue
        bundles.append(load_bundle(text, source))
    return RuleBook(BUILTIN_BUNDLE, *bundles)


def run(
    workload: full_workload.FullWorkload,
    without: set[str],
    singles: bool,
    batch: int,
    profile: cProfile.Profile | None = None,
    models: Sequence[ModelRecord] = (),
    examples_out: list[Example] | None = None,
) -> tuple[float, int]:
    """Seconds to process the workload, and interventions emitted. ``models`` are what
    the worker would have read from the models topic (none: untrained models)."""
    settings = Settings(app_id="pipeline-micro", topic_prefix="pm.", partitions=PARTITIONS)
    book = rulebook(without)
    scoring = None
    if "scores" not in without:
        scoring = Scoring(book)
        for record in models:
            scoring.receive(record.score.encode(), record.to_bytes())
    pipeline = build_pipeline(settings, book, scoring)
    records = inputs(workload, settings, without, singles)
    store: dict[str, bytes] = {}
    codec = CustomerStateCodec()

    def load(customer_id: str) -> CustomerState | None:
        value = store.get(customer_id)
        return None if value is None else codec.loads(value)

    emitted = 0
    now = datetime.now(UTC)
    gc.collect()
    if profile is not None:
        profile.enable()
    started = time.perf_counter()
    for first in range(0, len(records), batch):
        result = pipeline.process(records[first : first + batch], load, now)
        for states in result.states.values():
            for customer_id, state in states.items():
                store[customer_id] = codec.dumps(state)
        emitted += len(result.interventions)
        if examples_out is not None:
            examples_out.extend(example for _, example in result.examples)
    seconds = time.perf_counter() - started
    if profile is not None:
        profile.disable()
    return seconds, emitted


def trained(workload: full_workload.FullWorkload, singles: bool, batch: int) -> list[ModelRecord]:
    """One pass over the workload (which also warms imports and caches) and each score's
    model trained on the examples it labelled, as the learner would publish it: a trained
    model explains every feature, an untrained one answers at once."""
    examples: list[Example] = []
    run(workload, set(), singles, batch, examples_out=examples)
    models = {name: ScoreModel(spec) for name, spec in rulebook(set()).scores.items()}
    for example in examples:
        models[example.score].learn(example)
    print(f"models trained on {len(examples)} examples of the first pass")
    return [
        ModelRecord(name, len(examples), model.champion, model.version, {})  # type: ignore[arg-type]
        for name, model in models.items()
        if model.version
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=30_000)
    parser.add_argument("--customers", type=int, default=5000)
    parser.add_argument("--skew", type=float, default=0.9)
    parser.add_argument("--seed", type=int, default=20261122)
    parser.add_argument("--batch", type=int, default=500, help="records per batch (500)")
    parser.add_argument("--singles", action="store_true", help="one record per touchpoint")
    parser.add_argument("--without", action="append", default=[], choices=PARTS)
    parser.add_argument("--repeat", type=int, default=3, help="runs of each; the fastest counts")
    parser.add_argument("--profile", type=int, default=0, help="list cProfile's top N")
    parser.add_argument(
        "--untrained", action="store_true", help="score with untrained models (no warm-up pass)"
    )
    args = parser.parse_args(argv)
    workload = full_workload.build(
        args.events, args.customers, args.skew, args.seed, datetime.now(UTC), PARTITIONS
    )
    shape = "one record per touchpoint" if args.singles else "envelopes"
    print(
        f"{args.events} touchpoints, {args.customers} customers, {shape}, "
        f"{len(workload.drafts)} drafts, {len(workload.consents)} consents"
    )
    models = () if args.untrained else trained(workload, args.singles, args.batch)
    # The fastest of the repeats: what the code costs, without the machine's noise.
    runs = [
        run(workload, set(), args.singles, args.batch, None, models) for _ in range(args.repeat)
    ]
    base, emitted = min(runs)
    per = base / args.events * 1e6
    spread = ", ".join(f"{s / args.events * 1e6:.0f}" for s, _ in runs)
    print(
        f"every part:        {per:7.1f} µs/touchpoint  {args.events / base:9,.0f}/s  "
        f"{emitted} interventions  (runs: {spread} µs)"
    )
    if args.without:
        left = set(args.without)
        seconds, emitted = min(
            run(workload, left, args.singles, args.batch, None, models) for _ in range(args.repeat)
        )
        print(
            f"without {'+'.join(sorted(left)):10} {seconds / args.events * 1e6:7.1f} µs/touchpoint"
            f"  {args.events / seconds:9,.0f}/s  {emitted} interventions  "
            f"({base / seconds:.2f}x the baseline)"
        )
    if args.profile:
        profile = cProfile.Profile()
        run(workload, set(args.without), args.singles, args.batch, profile, models)
        stats = pstats.Stats(profile)
        stats.sort_stats("cumulative").print_stats(args.profile)
        stats.sort_stats("tottime").print_stats(args.profile)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
