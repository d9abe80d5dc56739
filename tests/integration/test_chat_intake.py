"""The chat intake on a real broker: concurrent clients, replicas, fencing, 4xx answers."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiohttp.test_utils import TestClient, TestServer
from aiokafka import AIOKafkaProducer

from bench.chat_load import check, consumed_ids, drive, report
from connectors.chat import create_http_app
from connectors.publisher import KafkaTouchpointSink
from connectors.settings import IntakeSettings
from schemas.codec import decode_touchpoints
from schemas.topics import TOUCHPOINTS
from streams.settings import Settings
from streams.topics import ensure_topics

from .harness import read_all


def intake(settings: Settings, instance_id: str = "it-chat", **changes: float) -> IntakeSettings:
    return IntakeSettings(
        bootstrap_servers=settings.bootstrap_servers,
        topic=settings.topic(TOUCHPOINTS),
        partitions=settings.partitions,
        instance_id=instance_id,
        **changes,  # type: ignore[arg-type]
    )


@asynccontextmanager
async def endpoint(
    settings: IntakeSettings,
) -> AsyncIterator[tuple[TestClient[object, object], KafkaTouchpointSink]]:
    sink = KafkaTouchpointSink(settings)
    await sink.start()
    try:
        async with TestClient(TestServer(create_http_app(sink))) as client:
            yield client, sink
    finally:
        await sink.stop()


def chat(message_id: str, customer: str, **changes: object) -> dict[str, object]:
    return {
        "message_id": message_id,
        "customer_id": customer,
        "sent_at": "2026-11-22T09:59:00Z",
        "sender": "customer",
        "text": "hello",
        **changes,
    }


async def landed(settings: Settings) -> list[str]:
    batches = await read_all(settings, "touchpoints", decode_touchpoints)
    return [e.event_id for batch in batches for e in batch]


async def test_simultaneous_requests_are_all_accepted_and_land_once(settings: Settings) -> None:
    await ensure_topics(settings)
    run = uuid.uuid4().hex[:6]
    async with endpoint(intake(settings)) as (client, sink):
        responses = await asyncio.gather(
            *(client.post("/v1/messages", json=chat(f"{run}-{n}", f"c{n}")) for n in range(40))
        )
        statuses = [r.status for r in responses]
        transactions = sink.transactions
    assert statuses == [202] * 40
    assert transactions < 40  # simultaneous requests shared transactions
    assert sorted(await landed(settings)) == sorted(f"chat:{run}-{n}" for n in range(40))


async def test_fifty_clients_for_five_seconds_no_5xx_and_every_event_once(
    settings: Settings,
) -> None:
    await ensure_topics(settings)
    async with endpoint(intake(settings)) as (client, _):
        url = str(client.make_url("")).rstrip("/")
        result = await drive(url, clients=50, seconds=5, run=uuid.uuid4().hex[:6])
    consumed = await consumed_ids(settings.bootstrap_servers, settings.topic(TOUCHPOINTS), "chat:")
    verdict = check(result, consumed)
    print(report(result, verdict))
    assert result.server_errors == 0 and not result.errors, report(result, verdict)
    assert result.statuses[202] > 50
    assert verdict.exactly_once, report(result, verdict)
    assert verdict.consumed == verdict.accepted


async def test_two_replicas_with_the_same_settings_never_fence_each_other(
    settings: Settings,
) -> None:
    await ensure_topics(settings)
    same = intake(settings, instance_id="replica")  # one deployment, two copies
    async with endpoint(same) as (first, first_sink), endpoint(same) as (second, second_sink):
        runs = await asyncio.gather(
            drive(str(first.make_url("")).rstrip("/"), 10, 3, run="a" + uuid.uuid4().hex[:5]),
            drive(str(second.make_url("")).rstrip("/"), 10, 3, run="b" + uuid.uuid4().hex[:5]),
        )
        states = [first_sink.readiness(), second_sink.readiness()]
    assert [r.statuses[202] > 10 and r.server_errors == 0 and not r.errors for r in runs] == [
        True,
        True,
    ]
    assert all(s.ready and s.recoveries == 0 for s in states)
    assert states[0].transactional_id != states[1].transactional_id
    consumed = await consumed_ids(settings.bootstrap_servers, settings.topic(TOUCHPOINTS), "chat:")
    for result in runs:
        assert check(result, consumed).exactly_once


async def test_a_fenced_producer_is_reported_not_ready_and_replaced(settings: Settings) -> None:
    await ensure_topics(settings)
    run = uuid.uuid4().hex[:6]
    async with endpoint(intake(settings, recovery_backoff_seconds=2.0)) as (client, sink):
        assert (await client.post("/v1/messages", json=chat(f"{run}-1", "acme"))).status == 202
        fenced_id = sink.readiness().transactional_id
        intruder = AIOKafkaProducer(
            bootstrap_servers=settings.bootstrap_servers, transactional_id=fenced_id
        )
        await intruder.start()  # takes the transactional id: the sink's producer is fenced
        await intruder.stop()
        refused = await client.post("/v1/messages", json=chat(f"{run}-2", "acme"))
        assert refused.status == 503 and "Retry-After" in refused.headers
        readiness = await client.get("/readyz")
        body = await readiness.json()
        assert readiness.status == 503, body
        assert "ProducerFenced" in body["reason"]
        assert (await client.get("/healthz")).status == 200
        for _ in range(100):
            readiness = await client.get("/readyz")
            if readiness.status == 200:
                break
            await asyncio.sleep(0.1)
        body = await readiness.json()
        assert readiness.status == 200, body
        assert body["recoveries"] == 1 and body["transactional_id"] != fenced_id
        assert "ProducerFenced" in body["last_error"]
        assert (await client.post("/v1/messages", json=chat(f"{run}-3", "acme"))).status == 202
    assert sorted(await landed(settings)) == [f"chat:{run}-1", f"chat:{run}-3"]


async def test_messages_that_cannot_become_records_are_4xx_and_nothing_lands(
    settings: Settings,
) -> None:
    await ensure_topics(settings)
    run = uuid.uuid4().hex[:6]
    huge = {f"a{i}": "x" * 1000 for i in range(1200)}  # ~1.2 MB: over Kafka's record limit
    async with endpoint(intake(settings)) as (client, sink):
        too_large = await client.post(
            "/v1/messages",
            json=[chat(f"{run}-1", "acme"), chat(f"{run}-2", "acme", attributes=huge)],
        )
        bad_key = await client.post(
            "/v1/messages", json=chat(f"{run}-3", "acme", attributes={"k" * 65: 1})
        )
        assert (too_large.status, bad_key.status) == (422, 422)
        assert (await too_large.json())["problems"][0]["index"] == 1
        assert (await bad_key.json())["problems"][0]["field"].startswith("attributes.")
        assert (await client.post("/v1/messages", json=chat(f"{run}-4", "acme"))).status == 202
        assert sink.readiness().ready
    assert await landed(settings) == [f"chat:{run}-4"]
