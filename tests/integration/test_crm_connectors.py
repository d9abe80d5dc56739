"""CRM connectors on the real broker: Debezium changes in, interventions out to a CRM."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import orjson
from aiohttp import web
from aiohttp.test_utils import TestServer
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError

from connectors.crm_changes import ChangeReaderSettings, follow, read_mapping
from connectors.crm_sink import CrmSinkSettings, run_sink
from connectors.settings import IntakeSettings
from schemas.codec import decode_dead_letter, encode_intervention
from schemas.models import Explanation, InterventionCommand, InterventionKind
from schemas.partitioning import customer_partition
from schemas.topics import DLQ, FEEDBACK, INTERVENTIONS, TOUCHPOINTS
from streams.analytics import Analytics
from streams.settings import Settings
from streams.topics import ensure_topics

from .conftest import free_port
from .harness import WorkerProcess, read_all, worker_metrics

DATA = Path(__file__).parents[1] / "data" / "connectors" / "crm"


async def eventually(check: Callable[[], Awaitable[bool]], what: str, within: float = 60) -> None:
    deadline = time.monotonic() + within
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.2)


async def committed_to(settings: Settings, group: str, topic: str, offset: int) -> bool:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
    await admin.start()
    try:
        committed = await admin.list_consumer_group_offsets(group)
    except KafkaError as exc:
        if not exc.retriable:
            raise
        return False  # e.g. a fresh broker has no group coordinator yet
    finally:
        await admin.close()
    return any(tp.topic == topic and meta.offset >= offset for tp, meta in committed.items())


async def counter(settings: Settings, worker: WorkerProcess, outcome: str) -> float:
    worker.assert_alive()
    try:
        text = await worker_metrics(settings)
    except aiohttp.ClientError:
        return 0.0  # not serving yet
    line = f'warroom_touchpoints_total{{outcome="{outcome}"}} '
    found = [float(row.split()[-1]) for row in text.splitlines() if row.startswith(line)]
    return found[0] if found else 0.0


def recent(value: bytes, minutes_ago: int) -> bytes:
    """A sample change moved to a few minutes ago: a re-read within the worker's allowed
    lateness is dropped as a repeat (an older one would be a late_event dead letter)."""
    try:
        document = orjson.loads(value)
    except orjson.JSONDecodeError:
        return value
    payload = document.get("payload", document)
    at = datetime.now(UTC) - timedelta(minutes=minutes_ago)
    payload["source"]["ts_ms"] = int(at.timestamp() * 1000)
    return orjson.dumps(document)


async def test_debezium_changes_reach_the_worker_once_however_often_they_are_read(
    settings: Settings, worker: WorkerProcess
) -> None:
    await ensure_topics(settings)
    source = f"{settings.topic_prefix}crm.public.deals"
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(source, 1, 1)])
    finally:
        await admin.close()
    files = [
        "pg-snapshot-read.json",
        "pg-create.with-schema.json",
        "pg-update-stage.json",
        "truncated.json",
        "pg-update-won.json",
        "pg-update-owner.json",
        "pg-update-amount-only.json",
        "pg-update-no-before.json",
        "pg-delete.json",
    ]
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, acks="all")
    await producer.start()
    try:
        for number, name in enumerate(files):
            value = recent((DATA / name).read_bytes(), minutes_ago=30 - number)
            await producer.send_and_wait(source, value, key=b'{"id": 1}')
        await producer.send_and_wait(source, None, key=b'{"id": 3003}')  # the tombstone
    finally:
        await producer.stop()
    end = len(files) + 1
    worker.start()

    async def read_once(group: str) -> None:
        reader = ChangeReaderSettings(
            intake=IntakeSettings(
                settings.bootstrap_servers,
                settings.topic(TOUCHPOINTS),
                settings.partitions,
                f"it-crm-{group}",
            ),
            topics=(source,),
            group_id=f"{settings.app_id}-{group}",
            dlq_topic=settings.topic(DLQ),
        )
        stop = asyncio.Event()
        following = asyncio.create_task(follow(reader, read_mapping(DATA / "mapping.yaml"), stop))
        try:
            await eventually(
                lambda: committed_to(settings, reader.group_id, source, end), f"{group} commit"
            )
        finally:
            stop.set()
            await following

    await read_once("crm-changes")
    # snapshot, create, qualification -> proposal, proposal -> closed_won (2), owner change
    await eventually(lambda: _at(counter(settings, worker, "processed"), 6), "6 processed", 90)
    # Read the whole topic again, as a reader that lost its offsets would.
    await read_once("crm-changes-again")
    await eventually(lambda: _at(counter(settings, worker, "duplicate"), 6), "6 duplicates", 60)
    assert await counter(settings, worker, "processed") == 6

    letters = await read_all(settings, "dlq", decode_dead_letter)
    from_source = sorted((d.offset, d.reason) for d in letters if d.source_topic == source)
    # each read sends the records it cannot use to the dead-letter topic
    assert from_source == [(3, "not_json")] * 2 + [(7, "no_before_image")] * 2


async def _at(value: Awaitable[float], expected: float) -> bool:
    return await value >= expected


def intervention(n: int, run: str) -> InterventionCommand:
    now = datetime.now(UTC)
    return InterventionCommand(
        intervention_id=f"{run}-iv-{n}",
        customer_id=f"customer-{n}",
        rep_id="rep-ana",
        rule_id="deal.late-stage-silent-14d",
        rule_version=1,
        kind=InterventionKind.ALERT,
        title=f"Deal with customer-{n} has gone quiet",
        body="Book a next step this week.",
        due_at=now + timedelta(days=1),
        explanation=Explanation(matched=[], triggering_event_ids=[f"crm:{n}"]),
        created_at=now,
    )


class Crm:
    """A CRM webhook: each intervention id is answered 429, then 500, then 200."""

    def __init__(self) -> None:
        self.answers: dict[str, list[int]] = {}

    def app(self) -> web.Application:
        async def webhook(request: web.Request) -> web.Response:
            key = request.headers["Idempotency-Key"]
            body = await request.json()
            assert body["intervention_id"] == key
            given = self.answers.setdefault(key, [])
            status = (429, 500, 200)[min(len(given), 2)]
            given.append(status)
            if status == 429:
                return web.Response(status=429, headers={"Retry-After": "0"})
            if status == 500:
                return web.Response(status=500, text="database is restarting")
            return web.json_response({"status": "accepted"}, status=201)

        app = web.Application()
        app.router.add_post("/hooks/interventions", webhook)
        return app

    def accepted(self) -> Counter[str]:
        return Counter({key: given.count(200) for key, given in self.answers.items()})


async def test_the_crm_sink_retries_and_never_posts_an_accepted_intervention_twice(
    settings: Settings,
) -> None:
    await ensure_topics(settings)
    run = uuid.uuid4().hex[:6]
    crm = Crm()
    server = TestServer(crm.app(), host="127.0.0.1")
    await server.start_server()
    callback_port = free_port()
    commands = [intervention(n, run) for n in range(5)]
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, acks="all")
    await producer.start()

    async def publish(batch: list[InterventionCommand]) -> None:
        for command in batch:
            partition = customer_partition(command.customer_id, settings.partitions)
            await producer.send_and_wait(
                settings.topic(INTERVENTIONS),
                encode_intervention(command),
                key=command.customer_id.encode(),
                partition=partition,
            )

    def sink_settings(group: str) -> CrmSinkSettings:
        return CrmSinkSettings(
            bootstrap_servers=settings.bootstrap_servers,
            interventions_topic=settings.topic(INTERVENTIONS),
            feedback_topic=settings.topic(FEEDBACK),
            dlq_topic=settings.topic(DLQ),
            partitions=settings.partitions,
            group_id=f"{settings.app_id}-{group}",
            webhook_url=str(server.make_url("/hooks/interventions")),
            callback_token="callback-token",
            backoff_base_seconds=0.05,
            max_in_flight=4,
        )

    async def feedback() -> list[dict[str, object]]:
        return await read_all(settings, "intervention-feedback", orjson.loads)

    async def run_until(group: str, done: Callable[[], Awaitable[bool]]) -> None:
        stop = asyncio.Event()
        running = asyncio.create_task(
            run_sink(sink_settings(group), stop, callback=("127.0.0.1", callback_port))
        )
        try:
            await eventually(done, f"the {group} sink", 60)
        finally:
            stop.set()
            await running

    async def all_fed_back(count: int) -> bool:
        return len(await feedback()) >= count

    async def callback_done() -> bool:
        url = f"http://127.0.0.1:{callback_port}/v1/crm/feedback"
        report = {"intervention_id": commands[0].intervention_id, "status": "done"}
        headers = {"Authorization": "Bearer callback-token"}
        try:
            async with (
                aiohttp.ClientSession() as session,
                session.post(url, json=report, headers=headers) as response,
            ):
                assert response.status == 202, await response.text()
        except aiohttp.ClientConnectionError:
            return False  # not listening yet
        return await all_fed_back(len(commands) + 1)

    try:
        await publish(commands)
        await run_until("crm-sink", lambda: all_fed_back(len(commands)))
        await run_until("crm-sink", callback_done)  # the same group: a restart
        # A sink that never committed re-reads everything: a new group, one new command.
        later = intervention(5, run)
        await publish([later])
        await run_until("crm-sink-replay", lambda: all_fed_back(len(commands) + 2))
    finally:
        await producer.stop()
        await server.close()

    ids = [c.intervention_id for c in [*commands, later]]
    assert crm.accepted() == Counter({key: 1 for key in ids})
    assert {key: crm.answers[key] for key in ids} == {key: [429, 500, 200] for key in ids}
    records = await feedback()
    assert sorted((r["intervention_id"], r["status"], r["via"]) for r in records) == sorted(
        [(key, "accepted", "webhook") for key in ids]
        + [(commands[0].intervention_id, "done", "callback")]
    )
    analytics = Analytics(worker="it")
    for record in records:
        analytics.record_feedback(orjson.dumps(record))
    assert analytics.invalid_feedback == 0
    assert analytics.rules["deal.late-stage-silent-14d"].feedback == {"accepted": 6, "done": 1}
