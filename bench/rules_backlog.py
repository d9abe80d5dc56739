#!/usr/bin/env python3
"""Touchpoints per second through the real worker on a backlog, with 10, 100 and 1,000
rules, on a real Kafka broker.

    .venv/bin/python deploy/kafka/broker.py run -- .venv/bin/python bench/rules_backlog.py
    ... bench/rules_backlog.py --touchpoints 20000 --rules 10,100,1000

For every rule count: fresh topics (own topic prefix and app id, 4 partitions), a
generated bundle of that many rules pushed with ``warroom rules push``'s code (event
predicates, count and sum windows, streaks, sequences, all/any/not over twenty
touchpoint kinds: tests/integration/harness.py ``slow_bundle``), the same seeded backlog
produced as envelopes (``connectors.publisher.envelopes``) before the worker starts,
then ``warroom worker`` in a child process with default settings (exactly-once, slices
of at most 2,000 touchpoints or 1 s). Figures per case:

- wall: touchpoints / seconds from the start of the worker's first slice to the group's
  commit of the last record. The start is when the /metrics page (polled every 0.05 s)
  first shows touchpoints processed, less the time in slices it shows;
- in slices: touchpoints / the sum of ``warroom_batch_duration_seconds`` (time spent
  processing and writing slices, without fetching and committing);
- the longest slice: the smallest bucket of that histogram holding every observation.

Ratios are against the 10-rule case of the same run. The broker, the worker and anything
else running share the machine's cores: compare ratios from one invocation.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.serving import free_port  # noqa: E402
from connectors.publisher import envelopes  # noqa: E402
from streams.rules_push import push_bundle  # noqa: E402
from streams.settings import Settings  # noqa: E402
from streams.topics import ensure_topics  # noqa: E402
from tests.integration.harness import (  # noqa: E402
    WorkerProcess,
    backlog_events,
    group_progress,
    histogram_summary,
    produce_records,
    slow_bundle,
    worker_metrics,
)

BOOTSTRAP_ENV = "WARROOM_BOOTSTRAP_SERVERS"
SLICES = "warroom_batch_duration_seconds"


@dataclass(frozen=True)
class Case:
    rules: int
    touchpoints: int
    records: int
    wall_seconds: float
    startup_seconds: float
    slices: int
    slice_seconds: float
    longest_slice: float
    interventions: int

    @property
    def per_second(self) -> float:
        return self.touchpoints / self.wall_seconds

    @property
    def per_second_in_slices(self) -> float:
        return self.touchpoints / self.slice_seconds


def processed_and_fired(metrics: str) -> tuple[float, int]:
    """Touchpoints processed and interventions emitted, by the worker's own counters."""
    processed, fired = 0.0, 0
    for line in metrics.splitlines():
        if line.startswith("warroom_touchpoints_total{") and 'outcome="processed"' in line:
            processed += float(line.rsplit(" ", 1)[1])
        elif line.startswith("warroom_interventions_total{"):
            fired += int(float(line.rsplit(" ", 1)[1]))
    return processed, fired


async def run_case(bootstrap: str, rules: int, touchpoints: int, folder: Path) -> Case:
    run = uuid.uuid4().hex[:8]
    settings = Settings(
        app_id=f"warroom-bench-{run}",
        bootstrap_servers=bootstrap,
        topic_prefix=f"bench-{run}.",
        data_dir=folder / run,
        web_port=free_port(),
    )
    await ensure_topics(settings)
    await push_bundle(settings, slow_bundle(rules), f"slow-{rules}.yaml")
    events = backlog_events(touchpoints, 400, seed=5, tag="bk")
    records = envelopes(events, settings.partitions)
    await produce_records(settings, [(p, k, v) for p, k, v in records])
    worker = WorkerProcess(settings, folder / f"worker-{rules}.log")
    started = time.monotonic()
    worker.start()
    try:
        first: float | None = None
        async with group_progress(settings) as progress:
            while True:
                worker.assert_alive()
                if first is None:
                    asked = time.monotonic()
                    try:
                        text = await worker_metrics(settings)
                    except (OSError, TimeoutError):
                        text = ""  # the web server is not up yet, or busy
                    if processed_and_fired(text)[0] > 0:
                        # Slices so far ran back to back, but for commits in between.
                        first = asked - histogram_summary(text, SLICES)[1]
                done, total = await progress()
                if done == total == len(records):
                    break
                if time.monotonic() - started > 1800:
                    raise AssertionError(f"not done after 1800 s\n{worker.tail_log()}")
                await asyncio.sleep(0.05)
        finished = time.monotonic()
        metrics = await worker_metrics(settings)
    finally:
        worker.stop()
    slices, slice_seconds, longest = histogram_summary(metrics, SLICES)
    processed, fired = processed_and_fired(metrics)
    if int(processed) != touchpoints:
        raise AssertionError(f"expected {touchpoints} touchpoints processed, found {processed}")
    assert first is not None
    return Case(
        rules=rules,
        touchpoints=touchpoints,
        records=len(records),
        wall_seconds=finished - first,
        startup_seconds=first - started,
        slices=slices,
        slice_seconds=slice_seconds,
        longest_slice=longest,
        interventions=fired,
    )


def report(cases: list[Case]) -> None:
    base = cases[0]
    print(
        f"{base.touchpoints:,} touchpoints in {base.records} envelopes, 400 customers, "
        f"4 partitions, exactly-once, default slices (2,000 touchpoints / 1 s)"
    )
    header = (
        "rules",
        "wall s",
        "touchpoints/s",
        f"x {base.rules} rules",
        "in slices/s",
        f"x {base.rules} rules",
        "slices",
        "longest slice",
        "interventions",
    )
    print("{:>6} {:>7} {:>14} {:>11} {:>12} {:>11} {:>7} {:>14} {:>14}".format(*header))
    for case in cases:
        print(
            f"{case.rules:>6} {case.wall_seconds:>7.1f} {case.per_second:>14,.0f} "
            f"{case.per_second / base.per_second:>11.3f} {case.per_second_in_slices:>12,.0f} "
            f"{case.per_second_in_slices / base.per_second_in_slices:>11.3f} "
            f"{case.slices:>7} {'<= ' + format(case.longest_slice, 'g') + ' s':>14} "
            f"{case.interventions:>14,}"
        )


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--touchpoints", type=int, default=50_000)
    parser.add_argument("--rules", default="10,100,1000")
    args = parser.parse_args()
    bootstrap = os.environ.get(BOOTSTRAP_ENV, "").strip()
    if not bootstrap:
        sys.exit(
            f"{BOOTSTRAP_ENV} is not set; run: .venv/bin/python deploy/kafka/broker.py run -- "
            ".venv/bin/python bench/rules_backlog.py"
        )
    cases = []
    with tempfile.TemporaryDirectory(prefix="warroom-rules-backlog-") as folder:
        for rules in (int(n) for n in args.rules.split(",")):
            case = await run_case(bootstrap, rules, args.touchpoints, Path(folder))
            print(
                f"[bench] {rules} rules: {case.wall_seconds:.1f} s after "
                f"{case.startup_seconds:.1f} s of start-up",
                file=sys.stderr,
                flush=True,
            )
            cases.append(case)
    report(cases)


if __name__ == "__main__":
    asyncio.run(main())
