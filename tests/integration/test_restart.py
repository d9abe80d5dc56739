"""Graceful restarts lose no touchpoint and repeat no intervention, also for partitions
the worker's group had never committed before the restart."""

from __future__ import annotations

import contextlib
import time
from datetime import UTC, datetime

import pytest

from schemas.codec import decode_intervention
from schemas.models import Channel
from schemas.partitioning import customer_partition
from streams.rules_push import push_bundle
from streams.settings import Settings
from streams.topics import ensure_topics

from .harness import (
    WorkerProcess,
    cpu_load,
    produce_raw,
    read_all,
    touchpoint_record,
    wait_until_committed,
)

BUNDLE = """\
bundle: demos
version: 1
rules:
  - id: demos.requested
    when:
      event: {kind: demo_requested}
    then:
      kind: task
      assignee: owner
      due_in: 1h
      title: "{customer_id} asked for a demo"
"""
PARTITIONS = 8


@pytest.fixture
def settings(settings: Settings) -> Settings:
    # More partitions than restarts, so every restart meets a partition never committed.
    return settings.model_copy(update={"partitions": PARTITIONS})


def customer_on(partition: int, tag: str) -> str:
    for n in range(10_000):
        name = f"{tag}-{n}"
        if customer_partition(name, PARTITIONS) == partition:
            return name
    raise AssertionError(f"no customer name found for partition {partition}")


def demo_request(customer: str) -> tuple[bytes, bytes]:
    return touchpoint_record(
        customer,
        f"{customer}-demo",
        "demo_requested",
        datetime.now(UTC),
        channel=Channel.WEB,
        direction="inbound",
        rep_id="rep-ada",
    )


@pytest.mark.parametrize(
    "loaded",
    # `make chaos` runs both; make test sees crashes and restarts in test_flow,
    # test_compliance_flow, test_scoring_flow and the chaos kills
    [pytest.param(False, marks=pytest.mark.long), pytest.param(True, marks=pytest.mark.long)],
    ids=["quiet", "under-cpu-load"],
)
async def test_graceful_restarts_lose_no_touchpoint_and_repeat_no_intervention(
    settings: Settings, worker: WorkerProcess, loaded: bool
) -> None:
    await ensure_topics(settings)
    await push_bundle(settings, BUNDLE, "demos.yaml")
    worker.start()
    expected = [customer_on(0, "first")]
    await produce_raw(settings, [demo_request(c) for c in expected])
    await wait_until_committed(settings, worker)

    # Under load the worker's startup steps are far apart, which opens the window
    # where records read during recovery were dropped (streams/patches/flow.py).
    with cpu_load() if loaded else contextlib.nullcontext():
        for restart in range(1, 4):
            worker.stop()
            restarted = time.monotonic()
            worker.start()
            # Written while the worker starts: one customer on a partition committed
            # before, one on a partition this group has never committed.
            arriving = [customer_on(0, f"again{restart}"), customer_on(restart, f"new{restart}")]
            await produce_raw(settings, [demo_request(c) for c in arriving])
            expected += arriving
            await wait_until_committed(settings, worker)
            took = time.monotonic() - restarted
            print(f"restart {restart}: new touchpoints committed {took:.1f} s after")

    found = await read_all(settings, "interventions", decode_intervention)
    assert sorted(c.customer_id for c in found) == sorted(expected)
    assert {c.rule_id for c in found} == {"demos.requested"}
