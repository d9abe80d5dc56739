"""What a worker accepted stays accepted after the ``rules`` topic compacts and the worker
restarts: a refused record (an older version, a broken text) left as the only record of
its bundle never replaces the version that was running. And ``warroom rules push`` refuses
a version that is not above the running one before publishing anything."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from engine.bundle import InvalidBundle
from schemas.codec import decode_intervention
from schemas.models import Channel
from streams.rules_feed import MissingTopics
from streams.rules_push import delete_bundle, publish_bundle_text, push_bundle
from streams.settings import Settings
from streams.topics import ensure_topics

from .harness import (
    REPO,
    WorkerProcess,
    produce_raw,
    read_to_end,
    read_topic,
    settings_env,
    touchpoint_record,
)

BUNDLE = """\
bundle: {name}
version: {version}
rules:
  - id: {name}.signal
    when:
      event: {{kind: {kind}}}
    then:
      kind: alert
      due_in: 1h
      title: "{name} v{version}: {{customer_id}}"
"""
KINDS = {"team": "demo_requested", "deals": "trial_started"}

COMPACT_FAST = {
    "cleanup.policy": "compact",
    "segment.ms": "100",
    "min.cleanable.dirty.ratio": "0.001",
    "delete.retention.ms": "100",
    "min.compaction.lag.ms": "0",
}
"""Compaction within seconds: segments roll after 100 ms (on the next append) and the
broker's cleaner (log.cleaner.backoff.ms=1000 in deploy/kafka/broker.py) takes any
dirty segment."""


def bundle(name: str, version: int) -> str:
    return BUNDLE.format(name=name, version=version, kind=KINDS[name])


def broken(name: str, version: int) -> str:
    return bundle(name, version).replace("event:", "evnt:")


def touchpoint(customer: str, kind: str) -> tuple[bytes, bytes]:
    at = datetime.now(UTC)
    return touchpoint_record(
        customer,
        f"{customer}-{kind}",
        kind,
        at - timedelta(seconds=1),
        channel=Channel.WEB,
        direction="inbound",
        rep_id="rep-cy",
        received_at=at,
    )


async def create_compacting_topics(settings: Settings) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
    await admin.start()
    try:
        await admin.create_topics(
            [
                NewTopic(
                    settings.topic(name),
                    1,
                    settings.replication_factor,
                    topic_configs=dict(COMPACT_FAST),
                )
                for name in ("rules", "rules-accepted")
            ]
        )
    finally:
        await admin.close()
    await ensure_topics(settings)


async def rules_by_bundle(settings: Settings, topic: str) -> dict[str, list[bytes | None]]:
    found: dict[str, list[bytes | None]] = defaultdict(list)
    for records in (await read_to_end(settings, topic)).values():
        for record in records:
            found[(record.key or b"").decode()].append(record.value)
    return found


async def audit_until(
    settings: Settings, worker: WorkerProcess, event: str, wanted: list[tuple[str, int | None]]
) -> Any:
    """The audit topic once it says ``event`` about every (bundle, version) in ``wanted``."""
    return await read_topic(
        settings,
        "audit",
        lambda found: all(
            any((a["event"], a.get("bundle"), a.get("version")) == (event, *w) for a in found)
            for w in wanted
        ),
        orjson.loads,
        worker,
        within=60.0,
    )


async def wait_for_compaction(settings: Settings, within: float = 60.0) -> None:
    """Until the rules topic holds only the last record of ``team`` and ``deals``. Each
    round appends a deletion of a bundle that never existed, so the segment holding the
    pushes rolls and becomes cleanable."""
    deadline = time.monotonic() + within
    while True:
        await asyncio.sleep(1.0)
        await delete_bundle(settings, "compaction-probe")
        left = await rules_by_bundle(settings, "rules")
        if len(left["team"]) == 1 and len(left["deals"]) == 1:
            assert left["team"] == [broken("team", 3).encode()]
            assert left["deals"] == [bundle("deals", 1).encode()]
            return
        assert time.monotonic() < deadline, f"rules not compacted within {within} s: {left}"


def interventions_for(*customers: str) -> Any:
    return lambda found: {c.customer_id for c in found} >= set(customers)


def push_with_cli(settings: Settings, path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streams.cli", "rules", "push", str(path)],
        cwd=REPO,
        env=settings_env(settings),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


# `make chaos`: waits for the broker to compact; the ledger it tests has unit tests
@pytest.mark.long
async def test_refused_records_left_by_compaction_never_replace_what_ran(
    settings: Settings, worker: WorkerProcess, tmp_path: Path
) -> None:
    await create_compacting_topics(settings)
    worker.start()
    for name in ("team", "deals"):
        for version in (1, 2):
            await push_bundle(settings, bundle(name, version), f"{name}.yaml")
    # (the worker may start after compaction removed the v1s: wait for the v2s only)
    await audit_until(settings, worker, "bundle_activated", [("team", 2), ("deals", 2)])

    # Written past the CLI check, as any producer can: an older version of both bundles,
    # then a broken v3 of ``team``. Each is refused; v2 keeps running.
    await publish_bundle_text(settings, "team", bundle("team", 1))
    await publish_bundle_text(settings, "team", broken("team", 3))
    await publish_bundle_text(settings, "deals", bundle("deals", 1))
    await audit_until(
        settings, worker, "bundle_rejected", [("team", 1), ("team", None), ("deals", 1)]
    )

    # Compaction leaves only the refused records of both bundles on the rules topic.
    await wait_for_compaction(settings)

    worker.stop()
    worker.start()
    await produce_raw(settings, [touchpoint("r1", KINDS["team"]), touchpoint("r2", KINDS["deals"])])
    found = await read_topic(
        settings, "interventions", interventions_for("r1", "r2"), decode_intervention, worker
    )
    titles = sorted(c.title for c in found)
    assert titles == ["deals v2: r2", "team v2: r1"]

    # The CLI refuses a version that is not above the running one, naming both.
    path = tmp_path / "deals.yaml"
    path.write_text(bundle("deals", 2), encoding="utf-8")
    before = await rules_by_bundle(settings, "rules")
    done = push_with_cli(settings, path)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "deals.yaml:2: version: expected a version above the running 2, found 2" in done.stderr
    assert "nothing pushed" in done.stderr
    with pytest.raises(InvalidBundle, match="expected a version above the running 2, found 1"):
        await push_bundle(settings, bundle("deals", 1), "deals.yaml")
    after = await rules_by_bundle(settings, "rules")
    assert after["deals"] == before["deals"], "a refused push must publish nothing"

    # A deletion reaches the accepted topic too, and frees the name: v1 may run again.
    await delete_bundle(settings, "deals")
    await audit_until(settings, worker, "bundle_deleted", [("deals", 2)])
    accepted = await rules_by_bundle(settings, "rules-accepted")
    assert accepted["deals"][-1] is None, accepted["deals"]
    path.write_text(bundle("deals", 1), encoding="utf-8")
    done = push_with_cli(settings, path)
    assert done.returncode == 0, done.stdout + done.stderr
    await produce_raw(settings, [touchpoint("r3", KINDS["deals"])])
    found = await read_topic(
        settings, "interventions", interventions_for("r3"), decode_intervention, worker
    )
    assert [c.title for c in found if c.customer_id == "r3"] == ["deals v1: r3"]


async def test_a_push_before_the_topics_exist_publishes_nothing_and_says_what_to_run(
    settings: Settings,
) -> None:
    with pytest.raises(MissingTopics, match=r"create them with `warroom topics`"):
        await push_bundle(settings, bundle("team", 1), "team.yaml")
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
    await admin.start()
    try:
        assert settings.topic("rules") not in await admin.list_topics()
    finally:
        await admin.close()
