"""kill -9 the worker at random moments while it works through a load: every
intervention the oracle expects is emitted exactly once."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable

from streams.settings import Settings
from streams.topics import ensure_topics
from tests.integration.harness import group_progress, worker_pid

from .conftest import ChaosWorker
from .workload import (
    Scale,
    compare,
    emitted_interventions,
    encode_mixed,
    generate_events,
    oracle,
    produce_paced,
    short_tail,
    wait_for,
)


async def test_kill_9_at_random_moments_loses_and_repeats_nothing(
    settings: Settings,
    workers: Callable[[int], list[ChaosWorker]],
    scale: Scale,
    seed: int,
    figures: dict[str, object],
) -> None:
    started = time.monotonic()
    rng = random.Random(seed)
    events = generate_events(scale.kill_touchpoints, scale.kill_touchpoints // 10, seed, "k")
    records = encode_mixed(events, settings.partitions, rng)
    # Kill when the group has committed past these shares of the records (plus a random
    # pause, so kills land between commits too).
    kill_at = sorted(int(rng.uniform(0.1, 0.9) * len(records)) for _ in range(scale.kills))
    figures.update(seed=seed, touchpoints=len(events), records=len(records))
    await ensure_topics(settings)
    [worker] = workers(1)
    worker.start()
    producing = asyncio.create_task(
        produce_paced(settings, records, len(events) / len(records), scale.touchpoints_per_second)
    )
    kills: list[str] = []
    try:
        async with group_progress(settings) as progress:
            for point in kill_at:

                async def past(point: int = point) -> bool:
                    return (await progress())[0] >= point

                await wait_for(past, f"the worker group to commit {point} records", 120, [worker])
                await asyncio.sleep(rng.uniform(0.0, 0.5))
                done, _ = await progress()
                kills.append(f"pid {worker_pid(worker)} at ~{done}/{len(records)} records")
                worker.kill()
                worker.start()
            await producing

            async def all_committed() -> bool:
                done, total = await progress()
                return done == total == len(records)

            await wait_for(all_committed, "every touchpoint to be committed", 180, [worker])
    finally:
        producing.cancel()
    print("kills:", "; ".join(kills))
    expected = await oracle(settings)
    emitted = await emitted_interventions(settings)
    verdict = compare([c for _, c in expected.interventions], emitted)
    figures.update(
        kills=len(kills),
        processed_by_oracle=expected.processed,
        **verdict.figures(),
        wall_seconds=round(time.monotonic() - started, 1),
    )
    assert expected.processed == len(events), "the oracle did not see every touchpoint"
    assert verdict.exact, f"kills: {kills}; {verdict.problems()}\n{short_tail(worker)}"
