#!/usr/bin/env python3
"""Cost of rule evaluation per touchpoint, for 10, 100 and 1,000 rules, in the pure engine.

    .venv/bin/python bench/rules_eval.py [--events 20000] [--rules 10,100,1000]

First, the worker's batch pipeline (decode + engine, no Kafka) over envelopes of
the same touchpoints, with the built-in rule only and with the five example packs
of rules/examples loaded: the packs' cost as a throughput ratio.

Each run replays the same seeded touchpoints (500 customers) through
``engine.reducer.apply`` with a bundle of N generated rules that cycles through
every condition type (event, state, count, sum, sequence, streak, absence, all,
any, not), and once with no rules at all as the baseline measured in the same
run. It prints µs per touchpoint, the cost per rule, and the ratio to the
baseline. No Kafka: this is the engine's share of a worker's time.
"""

from __future__ import annotations

import argparse
import gc
import random
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from engine.bundle import load_bundle
from engine.reducer import apply
from engine.rules import CompiledRule
from engine.state import CustomerState
from schemas.models import Channel, Direction, TouchpointEvent

KINDS = ["message_sent", "message_received", "email_sent", "video_watched", "sandbox_error",
         "purchase", "login", "stage_changed"]  # fmt: skip
T0 = datetime(2026, 11, 1, tzinfo=UTC)

CONDITIONS = [
    "event: {{kind: purchase, attributes.amount: {{gte: {n}}}}}",
    "all: [{{event: {{kind: purchase}}}}, {{state: {{touchpoints: {{gte: {n}}}}}}}]",
    "count: {{of: {{kind: sandbox_error}}, within: {n}h, at_least: 3}}",
    "sum: {{of: {{kind: purchase}}, field: attributes.amount, within: 7d, at_least: {n}00}}",
    "sequence: {{within: {n}h, steps: [{{kind: video_watched}}, {{kind: sandbox_error}}]}}",
    "streak: {{of: {{direction: outbound}}, reset_by: {{direction: inbound}}, length: {m}}}",
    "absence: {{after: {{kind: stage_changed}}, missing: {{direction: inbound}}, within: {n}d}}",
    "all: [{{event: {{kind: login}}}}, {{state: {{count.login: {{gte: {n}}}}}}}]",
    "any: [{{event: {{kind: churned}}}}, {{event: {{attributes.plan: p{n}}}}}]",
    "all: [{{event: {{kind: stage_changed}}}}, {{not: {{event: {{channel: chat}}}}}}]",
]


def bundle(size: int) -> tuple[CompiledRule, ...]:
    lines = ["bundle: bench\nversion: 1\nrules:"]
    for i in range(size):
        condition = CONDITIONS[i % len(CONDITIONS)].format(n=i % 50 + 2, m=i % 5 + 2)
        lines.append(
            f"  - id: r{i}\n    cooldown: 30d\n    when: {{{condition}}}\n"
            f"    then: {{kind: task, title: 'r{i} for {{customer_id}}', due_in: 1h}}"
        )
    return load_bundle("\n".join(lines), f"bench-{size}.yaml").rules


def touchpoints(count: int, seed: int = 7) -> list[TouchpointEvent]:
    rng = random.Random(seed)
    events = []
    for n in range(count):
        kind = rng.choice(KINDS)
        at = T0 + timedelta(seconds=30 * n)
        direction = (
            "outbound"
            if kind.endswith("_sent")
            else "inbound"
            if kind.endswith("received")
            else "none"
        )
        events.append(
            TouchpointEvent(
                event_id=f"e{n}",
                customer_id=f"c{rng.randrange(500)}",
                occurred_at=at,
                received_at=at,
                channel=rng.choice([Channel.CHAT, Channel.EMAIL, Channel.PRODUCT]),
                kind=kind,
                direction=Direction(direction),
                rep_id="rep-1",
                source="bench/1",
                attributes={"amount": rng.randrange(1, 500), "plan": f"p{rng.randrange(60)}"},
            )
        )
    return events


def run(events: list[TouchpointEvent], rules: tuple[CompiledRule, ...]) -> tuple[float, int]:
    states: dict[str, CustomerState] = {}
    fired = 0
    now = datetime.now(UTC)
    started = time.perf_counter()
    for event in events:
        state, decisions = apply(states.get(event.customer_id), event, now, rules)
        states[event.customer_id] = state
        fired += len(decisions)
    return time.perf_counter() - started, fired


def pipeline_with_packs(count: int) -> None:
    """Decode + engine (the worker's batch pipeline, no Kafka) with and without the packs."""
    from pathlib import Path

    from connectors.publisher import envelopes
    from engine.builtin import BUILTIN_BUNDLE
    from engine.rulebook import RuleBook
    from engine.timestamps import TimestampPolicy
    from streams.pipeline import Pipeline, RawRecord

    now = datetime.now(UTC)
    events = [
        e.model_copy(update={"occurred_at": now - timedelta(seconds=count - n)})
        for n, e in enumerate(touchpoints(count))
    ]
    records = [
        RawRecord("touchpoints", p, offset, key, value)
        for offset, (p, key, value) in enumerate(envelopes(events, 4))
    ]
    packs = sorted(Path(__file__).resolve().parents[1].glob("rules/examples/*.yaml"))
    with_packs = RuleBook(BUILTIN_BUNDLE)
    for pack in packs:
        verdict = with_packs.offer(pack.read_text(encoding="utf-8"), str(pack))
        assert verdict.accepted, verdict.problems
    results = {}
    books = (
        ("no rules", RuleBook()),
        ("builtin only", RuleBook(BUILTIN_BUNDLE)),
        ("with packs", with_packs),
    )
    _timed(Pipeline(RuleBook(), TimestampPolicy(), 4), records, now)  # warm caches first
    pipelines = {name: Pipeline(book, TimestampPolicy(), 4) for name, book in books}
    best = dict.fromkeys(pipelines, float("inf"))
    for _ in range(5):  # interleaved rounds, so drift in the machine hits every case alike
        for name, pipeline in pipelines.items():
            best[name] = min(best[name], _timed(pipeline, records, now))
    for name, book in books:
        results[name] = count / best[name]
        print(
            f"pipeline, {name:<12} ({len(book.rules)} rules, {len(book.journeys)} journeys): "
            f"{results[name]:>9,.0f} touchpoints/s"
        )
    for baseline in ("no rules", "builtin only"):
        ratio = results["with packs"] / results[baseline]
        print(f"with the {len(packs)} example packs: {ratio:.2f}x the throughput with {baseline}")


def _timed(pipeline: Any, records: list[Any], now: datetime) -> float:
    gc.collect()
    started = time.perf_counter()
    pipeline.process(records, {}.get, now)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--rules", default="10,100,1000")
    parser.add_argument("--packs-events", type=int, default=50_000)
    args = parser.parse_args()
    pipeline_with_packs(args.packs_events)
    events = touchpoints(args.events)
    sizes = [int(s) for s in args.rules.split(",")]
    baseline, _ = run(events, ())
    base_us = baseline / len(events) * 1e6
    print(f"{len(events)} touchpoints, 500 customers; no rules: {base_us:.1f} µs/touchpoint")
    header = ("rules", "µs/touchpoint", "µs/rule", "x no rules", "touchpoints/s", "fired")
    print("{:>6} {:>14} {:>9} {:>11} {:>14} {:>7}".format(*header))
    for size in sizes:
        rules = bundle(size)
        per_size = events if size <= 100 else events[: max(2000, len(events) // 5)]
        seconds, fired = run(per_size, rules)
        us = seconds / len(per_size) * 1e6
        print(
            f"{size:>6} {us:>14.1f} {(us - base_us) / size:>9.2f} {us / base_us:>11.1f} "
            f"{1e6 / us:>14,.0f} {fired:>7}"
        )


if __name__ == "__main__":
    main()
