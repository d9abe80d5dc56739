"""A cap per rep per day holds across partitions: one rep's customers live on several."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import aiohttp
import pytest
from aiokafka import AIOKafkaProducer

from schemas.codec import decode_intervention
from schemas.models import Channel
from schemas.partitioning import customer_partition
from streams.rules_push import push_bundle
from streams.settings import Settings
from streams.topics import ensure_topics

from .harness import WorkerProcess, produce_raw, read_all, read_topic, touchpoint_record

BUNDLE = """\
bundle: demo-requests
version: 1
caps: {per_rep_per_day: 2}
rules:
  - id: demo.requested
    when: {event: {kind: demo_requested}}
    then: {kind: task, title: "Book the demo for {customer_id}", due_in: 4h}
"""


def request(customer: str, rep: str, n: int = 0) -> tuple[bytes, bytes]:
    at = datetime.now(UTC) - timedelta(seconds=5)
    return touchpoint_record(
        customer,
        f"{customer}-demo-{n}",
        "demo_requested",
        at,
        channel=Channel.WEB,
        direction="inbound",
        rep_id=rep,
    )


# `make chaos`; make test keeps the rep stage's read-twice test
@pytest.mark.long
async def test_a_rep_gets_at_most_the_cap_however_their_customers_are_spread_and_after_a_crash(
    settings: Settings, worker: WorkerProcess
) -> None:
    ivy = [f"ivy-cust-{n}" for n in range(5)]
    assert len({customer_partition(c, settings.partitions) for c in ivy}) > 1
    await ensure_topics(settings)
    await push_bundle(settings, BUNDLE, "demo.yaml")
    worker.start()
    await produce_raw(
        settings, [request(c, "rep-ivy") for c in ivy] + [request("jon-cust", "rep-jon")]
    )
    await read_topic(settings, "interventions", lambda f: len(f) >= 3, decode_intervention, worker)
    await asyncio.sleep(3)
    everything = await read_all(settings, "interventions", decode_intervention)
    by_rep = sorted(c.rep_id or "" for c in everything)
    assert by_rep == ["rep-ivy", "rep-ivy", "rep-jon"]
    url = f"http://127.0.0.1:{settings.web_port}/metrics"
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        metrics = await response.text()
    assert 'warroom_capped_interventions_total{rule_id="demo.requested"} 3.0' in metrics
    assert 'warroom_interventions_total{kind="task",rule_id="demo.requested"} 3.0' in metrics

    # What each rep was sent survives a crash: Ivy stays at her cap, Jon gets his second.
    worker.kill()
    worker.start()
    await produce_raw(
        settings, [request(c, "rep-ivy", 1) for c in ivy[:2]] + [request("jon-cust", "rep-jon", 1)]
    )
    await read_topic(settings, "interventions", lambda f: len(f) >= 4, decode_intervention, worker)
    await asyncio.sleep(3)
    everything = await read_all(settings, "interventions", decode_intervention)
    assert sorted(c.rep_id or "" for c in everything) == [
        "rep-ivy",
        "rep-ivy",
        "rep-jon",
        "rep-jon",
    ]


async def test_a_rep_candidate_read_twice_is_admitted_once(
    settings: Settings, worker: WorkerProcess
) -> None:
    # A cap of 5 leaves room for both copies; only the intervention id says they are one.
    await ensure_topics(settings)
    await push_bundle(
        settings, BUNDLE.replace("per_rep_per_day: 2", "per_rep_per_day: 5"), "d.yaml"
    )
    worker.start()
    await produce_raw(settings, [request("kim-cust", "rep-kim")])
    [first] = await read_topic(
        settings, "interventions", lambda f: len(f) >= 1, decode_intervention, worker
    )
    # The same candidate again, as a re-read of the rep-candidates topic would deliver it.
    [candidate] = [
        r for r in await read_all(settings, "rep-candidates", lambda v: v) if r is not None
    ]
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers)
    await producer.start()
    try:
        await producer.send_and_wait(
            settings.topic("rep-candidates"),
            candidate,
            key=b"rep:rep-kim",
            partition=customer_partition("rep:rep-kim", settings.partitions),
        )
    finally:
        await producer.stop()
    await produce_raw(settings, [request("kim-cust-2", "rep-kim")])  # a later, distinct one
    await read_topic(settings, "interventions", lambda f: len(f) >= 2, decode_intervention, worker)
    await asyncio.sleep(3)
    everything = await read_all(settings, "interventions", decode_intervention)
    assert sorted(c.customer_id for c in everything) == ["kim-cust", "kim-cust-2"]
    assert first.customer_id == "kim-cust"
