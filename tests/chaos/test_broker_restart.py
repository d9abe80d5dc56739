"""The broker restarts (same data, same port) while the worker works through a load:
the worker resumes, or crashes and is restarted as a supervisor would; nothing is lost
or repeated."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from streams.settings import Settings
from streams.topics import ensure_topics
from tests.integration.harness import group_progress

from .conftest import ChaosWorker, OwnBroker, chaos_settings
from .workload import (
    Scale,
    Supervisor,
    compare,
    emitted_interventions,
    encode_mixed,
    generate_events,
    oracle,
    produce_paced,
    short_tail,
    tracebacks,
)

DOWN_SECONDS = 1.0


@pytest.fixture
def settings(own_broker: OwnBroker, tmp_path: Path) -> Settings:
    return chaos_settings(own_broker.bootstrap, tmp_path / "worker")


async def test_a_broker_restart_mid_run_loses_and_repeats_nothing(
    settings: Settings,
    own_broker: OwnBroker,
    workers: Callable[[int], list[ChaosWorker]],
    scale: Scale,
    seed: int,
    figures: dict[str, object],
) -> None:
    started = time.monotonic()
    rng = random.Random(seed)
    events = generate_events(scale.broker_touchpoints, scale.broker_touchpoints // 10, seed, "b")
    records = encode_mixed(events, settings.partitions, rng)
    restart_at = int(rng.uniform(0.2, 0.5) * len(records))
    figures.update(seed=seed, touchpoints=len(events), records=len(records))
    await ensure_topics(settings)
    [worker] = workers(1)
    supervisor = Supervisor([worker])
    worker.start()
    producing = asyncio.create_task(
        produce_paced(settings, records, len(events) / len(records), scale.touchpoints_per_second)
    )
    try:
        async with group_progress(settings) as progress:

            async def past_restart_point() -> bool:
                return (await progress())[0] >= restart_at

            await supervisor.wait_for(past_restart_point, f"{restart_at} records committed", 120)
        own_broker.stop()
        stopped = time.monotonic()
        await asyncio.sleep(DOWN_SECONDS)
        own_broker.start()
        back = time.monotonic()
        figures.update(
            broker_down_seconds=round(back - stopped, 1),
            port_check_bypassed=own_broker.port_check_bypassed,
        )
        await producing
        async with group_progress(settings) as progress:

            async def all_committed() -> bool:
                done, total = await progress()
                return done == total == len(records)

            resumed = await supervisor.wait_for(all_committed, "every record committed", 180)
    finally:
        producing.cancel()
    expected = await oracle(settings)
    verdict = compare([c for _, c in expected.interventions], await emitted_interventions(settings))
    figures.update(
        worker_exits=len(supervisor.exits),
        processed_by_oracle=expected.processed,
        **verdict.figures(),
        caught_up_seconds_after_broker_back=round(resumed, 1),
        tracebacks=len(tracebacks(worker)),
        worker_log_errors=worker.log.read_text(errors="replace").count("[ERROR]"),
        wall_seconds=round(time.monotonic() - started, 1),
    )
    print("worker exits:", supervisor.exits or "none")
    assert expected.processed == len(events), "the oracle did not see every touchpoint"
    assert verdict.exact, f"exits: {supervisor.exits}; {verdict.problems()}\n{short_tail(worker)}"
