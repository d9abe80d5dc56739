"""Analysts' metrics on the real broker: per-rule activity and CRM feedback on `metrics`."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import orjson
from aiokafka import AIOKafkaProducer

from schemas.codec import decode_intervention
from schemas.models import Channel
from streams.settings import Settings
from streams.topics import ensure_topics
from streams.web import bearer

from .harness import WorkerProcess, produce_raw, read_topic, touchpoint_record

RULE = "builtin.unanswered-outbound"


def message(customer: str, n: int, direction: str) -> tuple[bytes, bytes]:
    at = datetime.now(UTC) - timedelta(minutes=10 - n)
    kind = "message_sent" if direction == "outbound" else "message_received"
    return touchpoint_record(
        customer,
        f"{customer}-{n}",
        kind,
        at,
        channel=Channel.CHAT,
        direction=direction,
        rep_id="rep-fay",
    )


def totals(records: list[dict[str, Any]]) -> dict[str, int]:
    mine = [r for r in records if r["rule_id"] == RULE]
    return {
        "fired": sum(r["fired"] for r in mine),
        "done": sum(r["feedback"]["done"] for r in mine),
        "customers": sum(r["customers_evaluated"] for r in mine),
    }


async def test_rule_activity_and_feedback_reach_the_metrics_topic(
    settings: Settings, tmp_path: Any
) -> None:
    settings = settings.model_copy(update={"metrics_interval_seconds": 1.0})
    worker = WorkerProcess(settings, tmp_path / "metrics-worker.log")
    await ensure_topics(settings)
    worker.start()
    try:
        await produce_raw(
            settings,
            [message("quiet", n, "outbound") for n in (1, 2, 3)]
            + [message("chatty", 1, "outbound"), message("chatty", 2, "inbound")],
        )
        [command] = await read_topic(
            settings, "interventions", lambda f: len(f) >= 1, decode_intervention, worker
        )
        producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers)
        await producer.start()
        try:
            feedback = {
                "intervention_id": command.intervention_id,
                "customer_id": "quiet",
                "rule_id": RULE,
                "status": "done",
            }
            await producer.send_and_wait(
                settings.topic("intervention-feedback"), orjson.dumps(feedback), key=b"quiet"
            )
        finally:
            await producer.stop()
        records = await read_topic(
            settings,
            "metrics",
            lambda found: totals(found)["done"] >= 1 and totals(found)["fired"] >= 1,
            orjson.loads,
            worker,
        )
    finally:
        worker.stop()
    summed = totals(records)
    assert (summed["fired"], summed["done"]) == (1, 1)
    # Each interval counts distinct customers; one split across intervals counts twice.
    assert 2 <= summed["customers"] <= 5
    done = next(r for r in records if r["rule_id"] == RULE and r["feedback"]["done"])
    assert done["closed_loop_rate"] == 1.0


async def test_admin_pages_need_the_token_and_faust_views_are_off(
    settings: Settings, worker: WorkerProcess
) -> None:
    await ensure_topics(settings)
    worker.start()
    await produce_raw(settings, [message("quiet", 1, "outbound")])
    base = f"http://127.0.0.1:{settings.web_port}"
    async with aiohttp.ClientSession() as session:
        deadline = asyncio.get_running_loop().time() + 60
        while True:  # the web server starts once the worker is ready
            try:
                async with session.get(f"{base}/healthz") as response:
                    if response.status == 200:
                        break
            except aiohttp.ClientConnectionError:
                pass
            assert asyncio.get_running_loop().time() < deadline, worker.tail_log()
            await asyncio.sleep(0.5)
        async with session.get(f"{base}/metrics") as response:
            assert response.status == 200
        for page in ("/customers/quiet", "/rules"):
            async with session.get(base + page) as response:
                assert response.status == 401, page
                assert "Authorization: Bearer" in (await response.json())["error"]
            wrong = {"Authorization": "Bearer not-the-token-at-all"}
            async with session.get(base + page, headers=wrong) as response:
                assert response.status == 401, page
            async with session.get(base + page, headers=bearer(settings.admin_token)) as response:
                assert response.status == 200, page
        for page in ("/table/customer-state/", "/router/", "/graph/", "/stats/"):
            async with session.get(base + page) as response:
                assert response.status == 404, page
    log = worker.log.read_text(errors="replace")
    assert settings.admin_token is not None
    assert settings.admin_token.get_secret_value() not in log
