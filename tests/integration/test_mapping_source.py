"""The mapping, webhook and WeCom connectors on a real broker, with a real worker and the
service-opportunity pack: equipment alarms followed from an existing Kafka topic (bad
messages to the dlq with their position, offsets committed) and a service ticket over
the signed webhook become exactly one opportunity task each, even when the topic is read
again and the webhook replayed; an encrypted WeCom callback, replayed and retried, is
consumed once."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp.test_utils import TestClient, TestServer
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import GroupCoordinatorNotAvailableError
from pydantic import SecretStr

from connectors.mapping import load_mapping
from connectors.mapping_service import FollowSettings, FollowStats, follow
from connectors.publisher import KafkaTouchpointSink
from connectors.settings import IntakeSettings
from connectors.webhook import WebhookSource, create_webhook_app, signature
from connectors.wecom import WeComCallback, create_wecom_app, encrypt, msg_signature
from schemas.codec import decode_dead_letter, decode_intervention
from schemas.topics import DLQ, TOUCHPOINTS
from streams.rules_push import push_bundle
from streams.settings import Settings
from streams.topics import ensure_topics

from .harness import (
    REPO,
    WorkerProcess,
    read_all,
    read_topic,
    wait_until_committed,
    worker_metrics,
)

SOURCE_PARTITIONS = 6
"""More partitions than the dlq has: dead letters keep their source partition."""
SECRET = "whsec-integration-0123456789"
NOW = datetime.now(UTC).replace(microsecond=0)


def mapping(name: str) -> Any:
    path = REPO / "connectors" / "mappings" / f"{name}.yaml"
    return load_mapping(path.read_text(encoding="utf-8"), str(path))


def alarm(number: int, minutes_ago: int, severity: str = "MAJOR") -> bytes:
    """Alarms within the worker's allowed lateness of each other, so a re-read one is
    dropped as a repeat (an older one would be a late_event dead letter)."""
    at = NOW - timedelta(minutes=minutes_ago)
    return json.dumps(
        {
            "alarmId": f"a-{number}",
            "deviceId": "CH-3-0091",
            "accountId": "acct-it-alarms",
            "code": "E42",
            "severity": severity,
            "state": "RAISED",
            "raisedAt": int(at.timestamp() * 1000),
            "reading": {"value": 87.5, "unit": "C"},
            "site": {"name": "Kunshan DC", "ownerRep": "rep-li"},
        }
    ).encode()


def ticket() -> bytes:
    at = (NOW - timedelta(minutes=20)).isoformat()
    return json.dumps(
        {
            "event": "ticket.created",
            "ticket": {
                "id": 90001,
                "type": "incident",
                "priority": "high",
                "subject": "Chiller leaking",
                "updated_at": at,
                "requester": {"id": "ct-1"},
                "organization": {"external_id": "acct-it-ticket"},
                "custom_fields": {"account_rep": "rep-wang"},
            },
        }
    ).encode()


WECOM_TOKEN, WECOM_CORP = "it-wecom-token", "ww-it-corp"
WECOM_KEY = "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C"


def wecom_callback(callback: WeComCallback, nonce: str) -> tuple[dict[str, str], bytes]:
    """(query, body) of WeCom's POST of one customer message, encrypted for the corp."""
    message = (
        "<xml><ToUserName><![CDATA[ww-it-corp]]></ToUserName>"
        "<FromUserName><![CDATA[wm-it-customer]]></FromUserName>"
        f"<CreateTime>{int(NOW.timestamp())}</CreateTime><MsgType><![CDATA[text]]></MsgType>"
        "<Content><![CDATA[设备又报警了]]></Content><MsgId>7395000000000000001</MsgId>"
        "<UserID><![CDATA[LiWei]]></UserID>"
        "<ExternalUserID><![CDATA[wm-it-customer]]></ExternalUserID></xml>"
    ).encode()
    encrypted = encrypt(callback.key, WECOM_CORP, message)
    stamp = str(int(time.time()))
    query = {
        "msg_signature": msg_signature(WECOM_TOKEN, stamp, nonce, encrypted),
        "timestamp": stamp,
        "nonce": nonce,
    }
    return query, f"<xml><Encrypt><![CDATA[{encrypted}]]></Encrypt></xml>".encode()


async def produce_source(settings: Settings, topic: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, SOURCE_PARTITIONS, 1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, acks="all")
    await producer.start()
    try:
        for value in (alarm(1, 50), alarm(2, 45, "MINOR"), alarm(3, 40), alarm(4, 35, "CRITICAL")):
            await producer.send_and_wait(topic, value, key=b"CH-3-0091", partition=1)
        await producer.send_and_wait(topic, b'{"alarmId": "a-5", "deviceId"', partition=5)
        unmappable = json.loads(alarm(6, 30))
        unmappable["raisedAt"] = "an hour ago"
        await producer.send_and_wait(topic, json.dumps(unmappable).encode(), partition=5)
    finally:
        await producer.stop()


async def follow_to_end(settings: FollowSettings, group_offsets: dict[int, int]) -> FollowStats:
    """Run the follower until its group has committed ``group_offsets``, then stop it."""
    stop = asyncio.Event()
    task = asyncio.create_task(follow(settings, mapping("equipment-alarm"), stop))
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.intake.bootstrap_servers)
    await admin.start()
    try:
        deadline = time.monotonic() + 60
        while True:
            assert not task.done(), task.exception()
            try:
                committed = await admin.list_consumer_group_offsets(settings.group_id)
            except GroupCoordinatorNotAvailableError:
                committed = {}  # the group has not joined yet
            found = {tp.partition: meta.offset for tp, meta in committed.items()}
            if all(found.get(p) == offset for p, offset in group_offsets.items()):
                break
            assert time.monotonic() < deadline, f"committed {found}, expected {group_offsets}"
            await asyncio.sleep(0.2)
    finally:
        await admin.close()
        stop.set()
    return await task


async def test_alarms_from_a_topic_and_a_signed_ticket_become_one_task_each(
    settings: Settings, worker: WorkerProcess
) -> None:
    await ensure_topics(settings)
    source_topic = f"{settings.topic_prefix}iot.alarms"  # a foreign topic, not in the registry
    await produce_source(settings, source_topic)
    pack = REPO / "rules" / "examples" / "service-opportunity.yaml"
    await push_bundle(settings, pack.read_text(encoding="utf-8"), str(pack))
    worker.start()

    intake = IntakeSettings(
        bootstrap_servers=settings.bootstrap_servers,
        topic=settings.topic(TOUCHPOINTS),
        partitions=settings.partitions,
        instance_id="it-mapping",
    )
    following = FollowSettings(
        intake, source_topic, f"{settings.app_id}-alarms", settings.topic(DLQ)
    )
    stats = await follow_to_end(following, {1: 4, 5: 2})
    assert (stats.touchpoints, stats.skipped, dict(stats.dead_letters)) == (
        4,
        0,
        {"not_json": 1, "unmappable": 1},
    )

    sink = KafkaTouchpointSink(intake)
    await sink.start()
    source = WebhookSource("helpdesk", SecretStr(SECRET), mapping("service-ticket"))
    try:
        async with TestClient(TestServer(create_webhook_app([source], sink))) as client:
            body = ticket()
            for _ in range(2):  # the sender retries with a new signature: same event id
                stamp = str(int(time.time()))
                headers = {
                    "X-Warroom-Timestamp": stamp,
                    "X-Warroom-Signature": signature(SECRET, stamp, body),
                }
                response = await client.post("/v1/webhooks/helpdesk", data=body, headers=headers)
                assert response.status == 202, await response.text()
                await asyncio.sleep(1.1)
        wecom = WeComCallback(SecretStr(WECOM_TOKEN), SecretStr(WECOM_KEY), WECOM_CORP)
        async with TestClient(TestServer(create_wecom_app(wecom, sink))) as client:
            for nonce in ("1", "1", "2"):  # a replay, then WeCom's retry: published once
                query, envelope = wecom_callback(wecom, nonce)
                response = await client.post("/v1/wecom/callback", params=query, data=envelope)
                assert response.status == 200, await response.text()
    finally:
        await sink.stop()

    expected = {
        ("acct-it-alarms", "service.alarm-run-opportunity", "rep-li"),
        ("acct-it-ticket", "service.ticket-opportunity", "rep-wang"),
    }

    def summary(found: list[Any]) -> set[tuple[str, str, str | None]]:
        return {(c.customer_id, c.rule_id, c.rep_id) for c in found}

    await read_topic(
        settings,
        "interventions",
        lambda found: summary(found) >= expected,
        decode_intervention,
        worker,
    )

    # the whole topic again, under a new group: the same event ids, dropped by the worker
    again = FollowSettings(intake, source_topic, f"{settings.app_id}-again", settings.topic(DLQ))
    await follow_to_end(again, {1: 4, 5: 2})
    await wait_until_committed(settings, worker)
    text = await worker_metrics(settings)
    taken = {
        outcome: sum(
            float(row.split()[-1])
            for row in text.splitlines()
            if row.startswith(f'warroom_touchpoints_total{{outcome="{outcome}"}} ')
        )
        for outcome in ("processed", "duplicate")
    }
    # 4 alarms, the ticket and the WeCom message; the alarms and the ticket came twice
    assert taken == {"processed": 6.0, "duplicate": 5.0}
    interventions = await read_all(settings, "interventions", decode_intervention)
    assert sorted(summary(interventions)) == sorted(expected)
    assert len(interventions) == 2, [(c.customer_id, c.rule_id) for c in interventions]
    [run] = [c for c in interventions if c.customer_id == "acct-it-alarms"]
    assert run.explanation.triggering_event_ids == [
        "alarm:CH-3-0091:a-1",
        "alarm:CH-3-0091:a-3",
        "alarm:CH-3-0091:a-4",
    ]

    letters = [
        letter
        for letter in await read_all(settings, "dlq", decode_dead_letter)
        if letter.source_topic == source_topic
    ]
    assert sorted({(d.partition, d.offset, d.reason) for d in letters}) == [
        (5, 0, "not_json"),
        (5, 1, "unmappable"),
    ]
