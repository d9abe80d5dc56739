"""A customer view for store staff: POS lines through the connector, the worker's state,
and ``GET /customers/{id}/profile`` behind the admin token."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import aiohttp

from connectors.pos import PosDefaults, read_files
from connectors.publisher import KafkaTouchpointSink
from connectors.rejects import KafkaDeadLetterSink
from connectors.settings import IntakeSettings
from schemas.models import Channel
from schemas.topics import DLQ, TOUCHPOINTS
from streams.rules_push import push_bundle
from streams.settings import Settings
from streams.topics import ensure_topics
from streams.web import bearer

from .harness import WorkerProcess, produce_raw, touchpoint_record

CSV = Path(__file__).resolve().parents[1] / "data/connectors/pos/store-0042.csv"
TIERS = """\
bundle: store-tiers
version: 1
tiers:
  gold: {benefits: ["10% off everything", "free delivery"]}
"""


async def test_store_staff_see_purchases_totals_tier_and_benefits(
    settings: Settings, worker: WorkerProcess
) -> None:
    await ensure_topics(settings)
    await push_bundle(settings, TIERS, "tiers.yaml")
    worker.start()
    intake = IntakeSettings(
        bootstrap_servers=settings.bootstrap_servers,
        topic=settings.topic(TOUCHPOINTS),
        partitions=settings.partitions,
        instance_id="it-profile",
    )
    sink = KafkaTouchpointSink(intake)
    letters = KafkaDeadLetterSink(settings.bootstrap_servers, settings.topic(DLQ))
    await sink.start()
    await letters.start()
    try:
        for _ in range(2):  # the same file read twice counts once
            await read_files([CSV], sink, letters, PosDefaults())
    finally:
        await letters.stop()
        await sink.stop()
    await produce_raw(
        settings,
        [
            touchpoint_record(
                "M-10086",
                "crm-tier-1",
                "member_updated",
                datetime(2026, 11, 20, 3, 0, tzinfo=UTC),
                channel=Channel.CRM,
                direction="none",
                rep_id=None,
                membership_tier="gold",
            )
        ],
    )
    url = f"http://127.0.0.1:{settings.web_port}/customers/M-10086/profile"
    async with aiohttp.ClientSession() as session:
        for _ in range(300):
            try:
                async with session.get(url) as refused:
                    assert refused.status == 401  # no token, no customer data
                    break
            except aiohttp.ClientConnectionError:
                await asyncio.sleep(0.2)  # the worker's web server is starting
        for _ in range(300):
            async with session.get(url, headers=bearer(settings.admin_token)) as response:
                if response.status == 200:
                    profile = await response.json()
                    if profile["tier"] == "gold" and profile["purchases"] >= 2:
                        break
            worker.assert_alive()
            await asyncio.sleep(0.2)
        else:
            raise AssertionError(f"no profile: {worker.tail_log()}")
    assert profile["owned_here"] and profile["purchases"] == 2
    assert profile["totals"] == {"CNY": 458.8}
    assert profile["benefits"] == ["10% off everything", "free delivery"]
    assert sorted(p["product"] for p in profile["recent"]) == [
        'Blood pressure monitor "Pro"',
        "Vitamin C, 1000 mg",
    ]
    assert all(p["store"] == "S042" and p["currency"] == "CNY" for p in profile["recent"])
