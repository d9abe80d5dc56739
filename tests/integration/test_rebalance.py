"""Two workers, a rebalance and a crash in the middle of the stream: every customer's
intervention exactly once."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from schemas.codec import decode_intervention
from schemas.models import Channel
from streams.settings import Settings
from streams.topics import ensure_topics

from .conftest import free_port
from .harness import WorkerProcess, produce_raw, read_all, read_topic, touchpoint_record

CUSTOMERS = [f"acct-{n:02d}" for n in range(40)]


@pytest.fixture
def second_worker(settings: Settings, tmp_path: Path) -> Iterator[WorkerProcess]:
    other = settings.model_copy(update={"web_port": free_port(), "data_dir": tmp_path / "worker-b"})
    process = WorkerProcess(other, tmp_path / "worker-b.log")
    try:
        yield process
    finally:
        process.stop()


def wave(n: int) -> list[tuple[bytes, bytes]]:
    start = datetime.now(UTC) - timedelta(minutes=30)
    records = []
    for customer in CUSTOMERS:
        at = start + timedelta(minutes=n)
        records.append(
            touchpoint_record(
                customer,
                f"{customer}-{n}",
                "email_sent",
                at,
                channel=Channel.EMAIL,
                direction="outbound",
                rep_id="rep-eve",
            )
        )
    return records


@pytest.mark.long  # test_rebalance_eos, test_health and the chaos kills cover the quick forms
async def test_a_rebalance_and_a_crash_lose_nothing_and_repeat_nothing(
    settings: Settings, worker: WorkerProcess, second_worker: WorkerProcess
) -> None:
    await ensure_topics(settings)
    worker.start()
    await produce_raw(settings, wave(1))
    second_worker.start()  # the group rebalances: partitions move to the new worker
    await asyncio.sleep(8)
    await produce_raw(settings, wave(2))
    await asyncio.sleep(1)
    worker.kill()  # crash: its partitions move once its session times out
    await produce_raw(settings, wave(3))

    await read_topic(
        settings,
        "interventions",
        lambda found: {c.customer_id for c in found} >= set(CUSTOMERS),
        decode_intervention,
        second_worker,
        within=120,
    )
    await asyncio.sleep(3)
    everything = await read_all(settings, "interventions", decode_intervention)
    assert sorted(c.customer_id for c in everything) == CUSTOMERS
    for command in everything:
        customer = command.customer_id
        expected = [f"{customer}-1", f"{customer}-2", f"{customer}-3"]
        assert command.explanation.triggering_event_ids == expected
