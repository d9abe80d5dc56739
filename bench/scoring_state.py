#!/usr/bin/env python3
"""Scoring's cost per touchpoint and the state bytes per customer, before and after in one
run, no broker.

    .venv/bin/python bench/scoring_state.py [--templates 300] [--rounds 3] [--trained]

The full pipeline's bundles (bench/cases/full_workload.py: example packs, default policy,
the three scores, 100 generated rules) run the state-bytes histories
(bench/cases/state_bytes.py) through ``streams.app.build_pipeline``; the score hook is
timed per touchpoint, once as it was (the reference kept in
tests/streams/test_scoring_equivalence.py) and once as :class:`streams.scoring.Scoring`,
interleaved ``--rounds`` times, the best round of each printed. The states left are
encoded with snapshots in the earlier form (``snapshots``) and in the shared form
(``feature_snapshots``): mean changelog value bytes per customer, and the share of the
snapshots; then the value as the changelog codec writes it (zstd) and what that costs
per state written, with zlib for comparison.
"""

from __future__ import annotations

import argparse
import functools
import random
import statistics
import sys
import time
import zlib
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import orjson  # noqa: E402

from bench.cases import full_workload, state_bytes  # noqa: E402
from engine import CustomerState, Example, LinearScorer, RuleBook, ScoreModel  # noqa: E402
from engine.builtin import BUILTIN_BUNDLE  # noqa: E402
from engine.bundle import load_bundle  # noqa: E402
from schemas.codec import encode_touchpoint  # noqa: E402
from schemas.models import TouchpointEvent  # noqa: E402
from schemas.partitioning import customer_partition  # noqa: E402
from streams.app import build_pipeline  # noqa: E402
from streams.pipeline import RawRecord  # noqa: E402
from streams.scoring import ModelRecord, Scoring  # noqa: E402
from streams.settings import Settings  # noqa: E402
from streams.state_codec import CustomerStateCodec  # noqa: E402
from tests.streams.test_scoring_equivalence import ReferenceScoring  # noqa: E402


def run(
    kind: type[Scoring],
    events: list[TouchpointEvent],
    now: datetime,
    models: dict[str, bytes] | None = None,
    examples: list[Example] | None = None,
) -> tuple[float, dict[str, CustomerState]]:
    """µs per touchpoint spent in the score hook, and the states left; ``models``: model
    records to predict with; ``examples``: where to collect the examples settled."""
    book = RuleBook(
        BUILTIN_BUNDLE,
        *(load_bundle(text, source) for source, text in full_workload.bundles()),
    )
    spent = [0.0, 0]

    class Timed(kind):  # type: ignore[valid-type,misc]
        def __call__(self, state: CustomerState, event: TouchpointEvent) -> CustomerState:
            started = time.perf_counter()
            out: CustomerState = super().__call__(state, event)
            spent[0] += time.perf_counter() - started
            spent[1] += 1
            return out

    scoring = Timed(book)
    for name, published in (models or {}).items():
        scoring.receive(name.encode(), published)
    settings = Settings(max_clock_skew_seconds=3600)
    pipeline = build_pipeline(settings, book, scoring)
    store: dict[str, CustomerState] = {}
    for offset, event in enumerate(events):
        partition = customer_partition(event.customer_id, settings.partitions)
        record = RawRecord(
            settings.topic("touchpoints"),
            partition,
            offset,
            event.customer_id.encode(),
            encode_touchpoint(event),
        )
        result = pipeline.process([record], store.get, now)
        for changed in result.states.values():
            store.update(changed)
        if examples is not None:
            examples.extend(e for _, e in result.examples)
    return spent[0] / max(1, spent[1]) * 1e6, store


def sizes(states: dict[str, CustomerState]) -> tuple[float, float, float, float]:
    """Mean bytes per customer: value with snapshots in the earlier form, their part; the
    value with shared snapshots, their part."""
    old, old_part, new, new_part = [], [], [], []
    for state in states.values():
        data = state.to_dict()
        shared = data.pop("feature_snapshots", None)
        bare = len(orjson.dumps(data))
        if state.snapshots is not None:
            data["snapshots"] = state.snapshots.to_json()
        old.append(len(orjson.dumps(data)))
        old_part.append(old[-1] - bare)
        data.pop("snapshots", None)
        if shared is not None:
            data["feature_snapshots"] = shared
        new.append(len(orjson.dumps(data)))
        new_part.append(new[-1] - bare)
    return (
        statistics.fmean(old),
        statistics.fmean(old_part),
        statistics.fmean(new),
        statistics.fmean(new_part),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--templates", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--trained",
        action="store_true",
        help="predict with models learnt from a first pass (default: untrained, as in make bench)",
    )
    args = parser.parse_args()
    now = datetime.now(UTC)
    population = full_workload.Customers(args.templates, 0.9, args.seed)
    rng = random.Random(args.seed)
    events = [
        event
        for number in range(args.templates)
        for event in state_bytes._history(rng, number, population, now)
    ]
    models: dict[str, bytes] = {}
    if args.trained:
        models = trained(events, now)
        print(f"predicting with models that learnt from a first pass: {sorted(models)}")
    best: dict[str, float] = {}
    left: dict[str, dict[str, CustomerState]] = {}
    for _ in range(args.rounds):
        for name, kind in (("before", ReferenceScoring), ("after", Scoring)):
            micros, left[name] = run(kind, events, now, models)
            best[name] = min(best.get(name, micros), micros)
    assert {k: s.scores for k, s in left["before"].items()} == {
        k: s.scores for k, s in left["after"].items()
    }, "expected the same scores before and after"
    print(f"{len(events):,} touchpoints, {len(left['after']):,} customers, best of {args.rounds}")
    print(
        f"score hook µs/touchpoint: before {best['before']:.1f}, after {best['after']:.1f} "
        f"({best['after'] / best['before']:.2f}x)"
    )
    old, old_part, new, new_part = sizes(left["after"])
    print(
        f"state value B/customer: earlier snapshots {old:,.0f} (snapshots {old_part:,.0f}), "
        f"shared snapshots {new:,.0f} (snapshots {new_part:,.0f})"
    )
    states = list(left["after"].values())
    codec = CustomerStateCodec()
    encode = _per_state(lambda: [orjson.dumps(s.to_dict()) for s in states])
    written = _per_state(lambda: [codec.dumps(s) for s in states])
    sent = statistics.fmean(len(codec.dumps(s)) for s in states)
    print(
        f"changelog value as written (zstd level 1): {sent:,.0f} B/customer; "
        f"µs per state: to_dict + JSON {encode:.1f}, with zstd {written:.1f}"
    )
    values = [orjson.dumps(s.to_dict()) for s in states]
    for level in (1, 6):
        packed = statistics.fmean(len(zlib.compress(v, level)) for v in values)
        spent = _per_state(functools.partial(_zlib_all, values, level))
        print(f"zlib level {level} instead: {packed:,.0f} B/customer, {spent:.1f} µs per state")


def trained(events: list[TouchpointEvent], now: datetime) -> dict[str, bytes]:
    """Model records per score, learnt from the examples a first pass settles."""
    examples: list[Example] = []
    run(Scoring, events, now, None, examples)
    book = RuleBook(
        BUILTIN_BUNDLE,
        *(load_bundle(text, source) for source, text in full_workload.bundles()),
    )
    out: dict[str, bytes] = {}
    for name, spec in book.scores.items():
        model = ScoreModel(spec)
        for example in (e for e in examples if e.score == name):
            model.learn(example)
        if model.version and isinstance(model.champion, LinearScorer):
            out[name] = ModelRecord(name, 0, model.champion, model.version, {}).to_bytes()
    return out


def _zlib_all(values: list[bytes], level: int) -> list[bytes]:
    return [zlib.compress(v, level) for v in values]


def _per_state(work: Callable[[], list[bytes]]) -> float:
    """Best of 5: µs per state of ``work`` (which handles every state once)."""
    best = float("inf")
    for _ in range(5):
        started = time.perf_counter()
        done = len(work())
        best = min(best, (time.perf_counter() - started) / done * 1e6)
    return best


if __name__ == "__main__":
    main()
