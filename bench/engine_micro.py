#!/usr/bin/env python3
"""The engine's cost per touchpoint, no broker: ``engine.reducer.apply`` as the worker's
pipeline calls it, with the rules the throughput benchmark runs.

    .venv/bin/python bench/engine_micro.py [--events 200000] [--customers 5000]
        [--rounds 2] [--cases none,packs,full-all,full]

The same seeded touchpoints (``--customers`` customers, Zipf-like: a few customers have
most of the touchpoints; the 20 generated kinds plus the example packs' kinds, with the
attributes the packs test) go through ``apply`` one by one, each customer's state kept
in a dict as the worker's table would, in every case:

- ``none``: no rules at all (state update only), the baseline;
- ``packs``: the built-in bundle and the example packs of rules/examples, as a
  ``RuleBook`` holds them;
- ``full-all``: the packs plus 100 generated rules over 20 kinds (bench/rulegen.py),
  every rule evaluated at every touchpoint (a plain tuple of rules);
- ``full``: the same rules as the ``RuleBook`` hands them to the pipeline, so with
  the engine's rule index (only the rules a touchpoint can change are evaluated).

Cases run interleaved ``--rounds`` times; the best round of each is printed as µs per
touchpoint and as a ratio to ``none`` and to ``full-all``, so compare ratios from one
run. Times are the process's CPU time (``time.process_time``), not wall time: on a
machine shared with other work the wall time of the same run doubles. ``full`` and
``full-all`` must decide the same interventions and leave the same states: the script
says so or fails.

Profile one case: ``py-spy record -o out.json --format speedscope --
.venv/bin/python bench/engine_micro.py --cases full --rounds 1``.
"""

from __future__ import annotations

import argparse
import gc
import random
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.rulegen import bundle_yaml, direction_of, touchpoint_kinds  # noqa: E402
from engine.builtin import BUILTIN_BUNDLE  # noqa: E402
from engine.bundle import load_bundle  # noqa: E402
from engine.reducer import apply  # noqa: E402
from engine.rulebook import RuleBook  # noqa: E402
from engine.rules import CompiledRule  # noqa: E402
from engine.state import CustomerState  # noqa: E402
from schemas.models import Channel, Direction, TouchpointEvent  # noqa: E402

T0 = datetime(2026, 11, 1, tzinfo=UTC)
NOW = datetime(2026, 12, 1, tzinfo=UTC)
PACK_KINDS = (
    "lead_form_submitted", "prescription_filled", "ticket_reopened", "equipment_alarm",
    "spare_part_ordered", "deal_won", "churned",
)  # fmt: skip
CHANNELS = (Channel.CHAT, Channel.EMAIL, Channel.PRODUCT, Channel.CRM, Channel.MEETING)


def rulebooks() -> dict[str, RuleBook]:
    """The rule books of the cases: none, packs, and packs plus 100 generated rules."""
    packs = [
        load_bundle(p.read_text("utf-8"), str(p))
        for p in sorted(REPO.glob("rules/examples/*.yaml"))
    ]
    generated = load_bundle(bundle_yaml(rules=100, kinds=20, seed=12), "generated.yaml")
    return {
        "none": RuleBook(),
        "packs": RuleBook(BUILTIN_BUNDLE, *packs),
        "full": RuleBook(BUILTIN_BUNDLE, *packs, generated),
    }  # fmt: skip


def touchpoints(count: int, customers: int, seed: int = 7) -> list[TouchpointEvent]:
    """``count`` touchpoints, in event time order, 13 s apart on average."""
    rng = random.Random(seed)
    kinds = touchpoint_kinds(20) + PACK_KINDS
    weights = [1.0 / (i + 1) ** 0.9 for i in range(customers)]
    chosen = rng.choices(range(customers), weights, k=count)
    events = []
    at = T0
    for n, customer in enumerate(chosen):
        at += timedelta(seconds=rng.randrange(1, 26))
        kind = rng.choice(kinds)
        attributes: dict[str, str | int | float | bool] = {
            "amount": rng.randrange(1, 500),
            "plan": f"p{rng.randrange(60)}",
        }
        if kind.startswith("email") and rng.random() < 0.3:
            attributes["quote" if kind == "email_sent" else "ticket"] = f"Q{n}"
        if kind == "prescription_filled":
            attributes["chronic"] = rng.random() < 0.5
            attributes["days_supply"] = 30
        events.append(
            TouchpointEvent(
                event_id=f"e{n}",
                customer_id=f"c{customer}",
                occurred_at=at,
                received_at=at,
                channel=rng.choice(CHANNELS),
                kind=kind,
                direction=Direction(direction_of(kind)),
                rep_id=f"rep-{customer % 50}",
                source="bench/1",
                attributes=attributes,
            )
        )
    return events


def run(
    events: Sequence[TouchpointEvent], rules: Sequence[CompiledRule], book: RuleBook
) -> tuple[float, int, dict[str, CustomerState]]:
    """Seconds to apply ``events`` one by one, interventions decided, the final states."""
    states: dict[str, CustomerState] = {}
    get = states.get
    cap = book.per_customer_per_day
    journeys = book.journeys
    restricted = book.restricted_fields
    decided = 0
    gc.collect()
    started = time.process_time()
    for event in events:
        state, decisions = apply(
            get(event.customer_id), event, NOW, rules, cap, journeys, None, restricted
        )
        states[event.customer_id] = state
        decided += len(decisions)
    return time.process_time() - started, decided, states


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--customers", type=int, default=5_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--cases", default="none,packs,full-all,full")
    args = parser.parse_args()
    books = rulebooks()
    cases: dict[str, tuple[Sequence[CompiledRule], RuleBook]] = {
        "none": ((), books["none"]),
        "packs": (books["packs"].rules, books["packs"]),
        "full-all": (tuple(books["full"].rules), books["full"]),
        "full": (books["full"].rules, books["full"]),
    }
    wanted = args.cases.split(",")
    unknown = [c for c in wanted if c not in cases]
    if unknown:
        parser.error(f"expected cases among {', '.join(cases)}, found {', '.join(unknown)}")
    events = touchpoints(args.events, args.customers)
    best = dict.fromkeys(wanted, float("inf"))
    decided: dict[str, int] = {}
    final: dict[str, dict[str, CustomerState]] = {}
    for _ in range(args.rounds):  # interleaved, so drift in the machine hits every case alike
        for case in wanted:
            rules, book = cases[case]
            seconds, decided[case], final[case] = run(events, rules, book)
            best[case] = min(best[case], seconds)
    print(
        f"{len(events):,} touchpoints, {args.customers:,} customers, best of {args.rounds} "
        f"round(s); rules: packs {len(books['packs'].rules)}, full {len(books['full'].rules)}"
    )
    header = ("case", "rules", "µs/touchpoint", "touchpoints/s", "x none", "x full-all", "decided")
    print("{:<9} {:>5} {:>14} {:>14} {:>7} {:>10} {:>8}".format(*header))
    for case in wanted:
        us = best[case] / len(events) * 1e6
        ratio_none = f"{best[case] / best['none']:.2f}" if "none" in best else "-"
        ratio_all = f"{best[case] / best['full-all']:.2f}" if "full-all" in best else "-"
        print(
            f"{case:<9} {len(cases[case][0]):>5} {us:>14.2f} {1e6 / us:>14,.0f} "
            f"{ratio_none:>7} {ratio_all:>10} {decided[case]:>8,}"
        )
    if "full" in final and "full-all" in final:
        same = decided["full"] == decided["full-all"] and final["full"] == final["full-all"]
        print("full and full-all: " + ("same decisions and states" if same else "DIFFER"))
        if not same:
            sys.exit(1)


if __name__ == "__main__":
    main()
