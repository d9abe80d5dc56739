"""The meetings, POS and product-usage connectors feeding a real worker on a real broker:
a POS follower killed mid-file and restarted, a usage file and transcripts read twice,
and each customer's touchpoints and interventions counted once."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from aiokafka import AIOKafkaProducer

from connectors.commands import follower_transactional_id
from connectors.meetings import DEFAULT_KEYWORDS, KeywordGroups, publish_transcripts
from connectors.publisher import KafkaTouchpointSink
from connectors.rejects import KafkaDeadLetterSink
from connectors.sentiment import LexiconSentiment
from connectors.settings import IntakeSettings
from connectors.usage import read_files as read_usage_files
from schemas.codec import (
    decode_dead_letter,
    decode_intervention,
    decode_touchpoints,
    encode_touchpoint,
)
from schemas.models import Channel, Direction, TouchpointEvent
from schemas.topics import DLQ, TOUCHPOINTS
from streams.rules_push import push_bundle
from streams.settings import Settings
from streams.topics import ensure_topics
from streams.web import bearer

from .harness import REPO, WorkerProcess, read_all, read_topic, settings_env, wait_until_committed

DATA = REPO / "tests" / "data" / "connectors"
NOW = datetime.now(UTC).replace(microsecond=0)
HEADER = "order_id,line_id,store,member_id,product,quantity,amount,currency,sold_at,kind,drug,days_supply,chronic\n"  # noqa: E501
SECOND_PART = 400


def pos_line(n: int) -> str:
    at = (NOW - timedelta(days=2) + timedelta(minutes=n)).isoformat()  # in time order
    return f'O-{n},1,S9,member-{n % 20},"Tea, green",1,{n}.5,CNY,{at},purchase,,,\n'


def follow(settings: Settings, path: Path, state: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "streams.cli",
                "pos",
                "follow",
                str(path),
                "--state",
                str(state),
                "--max-batch-bytes",
                "1500",
                "--poll-seconds",
                "0.05",
                "--instance-id",
                "it-pos",
            ],
            cwd=REPO,
            env=settings_env(settings),
            stdout=out,
            stderr=subprocess.STDOUT,
        )


async def open_transaction(settings: Settings, state: Path) -> AIOKafkaProducer:
    """A producer with the follower's transactional id that began a transaction, wrote a
    record to every touchpoints partition and then stopped answering, as a killed
    follower leaves it."""
    intake = IntakeSettings(
        bootstrap_servers=settings.bootstrap_servers,
        topic=settings.topic(TOUCHPOINTS),
        partitions=settings.partitions,
        instance_id="it-pos",
    )
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.bootstrap_servers,
        transactional_id=follower_transactional_id(intake, state),
        transaction_timeout_ms=60_000,
    )
    await producer.start()
    await producer.begin_transaction()
    for partition in range(settings.partitions):
        await producer.send_and_wait(
            intake.topic, pos_record("pos:never-committed"), partition=partition
        )
    return producer


def pos_record(event_id: str) -> bytes:
    return encode_touchpoint(
        TouchpointEvent(
            event_id=event_id,
            customer_id="member-0",
            occurred_at=NOW,
            received_at=NOW,
            channel=Channel.POS,
            kind="purchase",
            direction=Direction.INBOUND,
            source="it/1",
        )
    )


def log_text(log: Path) -> str:
    return log.read_text(errors="replace")


def stored_offset(state: Path) -> int:
    try:
        return int(orjson.loads(state.read_bytes())["offset"])
    except (FileNotFoundError, orjson.JSONDecodeError):
        return -1


async def wait_for_offset(
    state: Path, at_least: int, process: subprocess.Popen[bytes], log: Path, within: float = 60
) -> int:
    deadline = time.monotonic() + within
    while (offset := stored_offset(state)) < at_least:
        assert process.poll() is None, log_text(log)
        assert time.monotonic() < deadline, f"follower stuck at {offset}\n{log_text(log)}"
        await asyncio.sleep(0.005)
    return offset


async def customer(settings: Settings, customer_id: str) -> dict[str, Any]:
    url = f"http://127.0.0.1:{settings.web_port}/customers/{customer_id}"
    async with (
        aiohttp.ClientSession(headers=bearer(settings.admin_token)) as session,
        session.get(url) as response,
    ):
        body: dict[str, Any] = await response.json()
        return body


async def test_file_connectors_reach_the_worker_once_through_a_kill_and_re_reads(
    settings: Settings, worker: WorkerProcess, tmp_path: Path
) -> None:
    await ensure_topics(settings)
    for pack in ("saas-trial-health.yaml", "refill-due.yaml"):
        path = REPO / "rules" / "examples" / pack
        await push_bundle(settings, path.read_text(encoding="utf-8"), str(path))
    worker.start()

    # POS: a follower killed (SIGKILL) in the middle of a file, then restarted
    sales, state, log = tmp_path / "store.csv", tmp_path / "store.position", tmp_path / "pos.log"
    filled = (NOW - timedelta(days=40)).isoformat()
    first = (
        HEADER
        + f"RX-1,1,S9,patient-7,Amlodipine 5 mg,1,36.5,CNY,{filled},prescription_filled,"
        + "amlodipine,30,true\n"
        + "BAD-1,1,S9,member-1,Tea,lots,1,CNY,2026-11-20T10:00:00Z,purchase,,,\n"
        + "".join(pos_line(n) for n in range(20))
    )
    sales.write_text(first)
    process = follow(settings, sales, state, log)
    await wait_for_offset(state, len(first.encode()), process, log)
    with sales.open("a") as more:
        more.write("".join(pos_line(n) for n in range(20, 20 + SECOND_PART)))
    size = sales.stat().st_size
    killed_at = await wait_for_offset(state, len(first.encode()) + 1, process, log)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    assert killed_at < size, "the follower finished before it was killed; kill earlier"
    # Whether or not the kill caught a transaction open, leave one open for certain: the
    # same transactional id, records on every partition, never committed.
    zombie = await open_transaction(settings, tmp_path / "store.position")
    process = follow(settings, sales, state, log)
    await wait_for_offset(state, size, process, log)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 0, log_text(log)

    # Read at once, long before the broker would abort a transaction the killed follower
    # left open (transaction_timeout_ms): the restarted one must have aborted it already.
    # Every POS line is visible, none skipped; a repeat is only ever the same event id.
    landed = [
        e.event_id
        for batch in await read_all(settings, "touchpoints", decode_touchpoints)
        for e in batch
    ]
    pos_ids = [i for i in landed if i.startswith("pos:")]
    expected = {"pos:S9/RX-1/1"} | {f"pos:S9/O-{n}/1" for n in range(20 + SECOND_PART)}
    assert set(pos_ids) == expected  # and the open transaction's records never show
    with contextlib.suppress(Exception):
        await zombie.stop()
    assert len(pos_ids) - len(expected) <= 1500 // len(pos_line(0))  # at most one batch again

    # Usage and meetings: each file read twice (a re-run import)
    intake = IntakeSettings(
        bootstrap_servers=settings.bootstrap_servers,
        topic=settings.topic(TOUCHPOINTS),
        partitions=settings.partitions,
        instance_id="it-files",
    )
    sink = KafkaTouchpointSink(intake)
    letters = KafkaDeadLetterSink(settings.bootstrap_servers, settings.topic(DLQ))
    await sink.start()
    await letters.start()
    try:
        for _ in range(2):
            await read_usage_files(
                [DATA / "usage" / "trial-events.jsonl"], sink, letters, LexiconSentiment()
            )
        await publish_transcripts(
            [DATA / "meetings" / "discovery-call.vtt", DATA / "meetings" / "store-visit.srt"],
            sink,
            letters,
            KeywordGroups(DEFAULT_KEYWORDS),
            NOW,
        )
    finally:
        await letters.stop()
        await sink.stop()
    command = ["meetings", "read", "--instance-id", "it-meet"] + [
        str(DATA / "meetings" / n) for n in ("discovery-call.vtt", "store-visit.srt")
    ]
    again = await asyncio.create_subprocess_exec(  # the same transcripts, via the command
        sys.executable,
        "-m",
        "streams.cli",
        *command,
        cwd=REPO,
        env=settings_env(settings),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(again.communicate(), 60)
    assert again.returncode == 0, err.decode()
    assert "published 2 meeting touchpoint(s); 0 transcript(s)" in out.decode()

    def rules_of(found: list[Any]) -> list[tuple[str, str]]:
        return sorted((c.customer_id, c.rule_id) for c in found)

    wanted = [
        ("globex", "trial.api-video-then-sandbox-error"),
        ("patient-7", "refill.30-day-supply"),
    ]
    await read_topic(
        settings, "interventions", lambda f: set(rules_of(f)) >= set(wanted), decode_intervention,
        worker,
    )  # fmt: skip
    await asyncio.sleep(1)  # room for a wrong second intervention to land
    assert rules_of(await read_all(settings, "interventions", decode_intervention)) == wanted

    # The worker counted each touchpoint once, however often it was published.
    await wait_until_committed(settings, worker)
    globex = await customer(settings, "globex")
    assert globex["state"]["touchpoints"] == 4  # vw-9001, sb-9002, sc-9003, sc-9004
    assert (await customer(settings, "acme-logistics"))["state"]["touchpoints"] == 1
    assert (await customer(settings, "member-10086"))["state"]["touchpoints"] == 1
    member = await customer(settings, "member-3")
    assert member["state"]["touchpoints"] == len([n for n in range(420) if n % 20 == 3])

    letters_found = await read_all(settings, "dlq", decode_dead_letter)
    assert ("file:store.csv", 3, "invalid_purchase") in {
        (d.source_topic, d.offset, d.reason) for d in letters_found
    }
