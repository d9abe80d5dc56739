"""Hostile bundles pushed to running workers are refused with a reason (audit:
bundle_rejected) or run without harm, and the workers keep serving touchpoints."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from schemas.codec import decode_intervention, encode_touchpoint
from schemas.models import Channel, Direction, TouchpointEvent
from streams.rules_push import publish_bundle_text
from streams.settings import Settings
from streams.topics import ensure_topics
from tests.integration.harness import (
    forget_exited,
    produce_records,
    read_all,
    worker_exit_code,
    worker_pid,
)

from .conftest import ChaosWorker
from .hostile import HOSTILE, KEYED_WRONG, LONG_KEY, REGEX_PROBE_TEXT
from .workload import customer_on, tracebacks, wait_for

PROBE_DEADLINE = 30.0
"""A probe's interventions must be out within this many seconds of its touchpoints."""
VERDICT_DEADLINE = 30.0
RESTART_WATCH = 12.0


async def probe(settings: Settings, tag: str, workers: list[ChaosWorker]) -> float:
    """Three outbound messages (with a text the hostile pattern chews on) for one new
    customer on every partition, so every worker is asked; returns the seconds until
    the built-in rule's intervention for each is committed."""
    customers = [customer_on(p, settings.partitions, tag) for p in range(settings.partitions)]
    start = datetime.now(UTC) - timedelta(minutes=5)
    records: list[tuple[int | None, bytes | None, bytes | None]] = []
    for customer in customers:
        for n in range(3):
            at = start + timedelta(seconds=n)
            event = TouchpointEvent(
                event_id=f"{customer}-m{n}",
                customer_id=customer,
                occurred_at=at,
                received_at=at,
                channel=Channel.CHAT,
                kind="message_sent",
                direction=Direction.OUTBOUND,
                rep_id="rep-probe",
                source="chaos/1",
                text=REGEX_PROBE_TEXT,
            )
            records.append((None, customer.encode(), encode_touchpoint(event)))
    sent = time.monotonic()
    await produce_records(settings, records)

    async def answered() -> bool:
        found = await read_all(settings, "interventions", decode_intervention)
        return set(customers) <= {c.customer_id for c in found}

    await wait_for(answered, f"probe {tag} interventions", PROBE_DEADLINE, workers, every=0.25)
    return time.monotonic() - sent


async def verdicts(settings: Settings, offset: int) -> list[dict[str, Any]]:
    entries = await read_all(settings, "audit", orjson.loads)
    return [e for e in entries if e.get("rules_offset") == offset]


async def push_hostile(
    settings: Settings,
    bundles: dict[str, str],
    worker_count: int,
    workers: Callable[[int], list[ChaosWorker]],
    figures: dict[str, object],
) -> None:
    """Start the workers, then push each bundle and probe; fail with every harm seen."""
    started = time.monotonic()
    await ensure_topics(settings)
    running = workers(worker_count)
    for worker in running:
        worker.start()
    figures["baseline_probe_seconds"] = round(await probe(settings, "baseline", running), 2)
    pids = [worker_pid(w) for w in running]
    outcomes: dict[str, str] = {}
    failures: list[str] = []
    for number, (name, text) in enumerate(bundles.items()):
        short = name[:24]
        where = await publish_bundle_text(settings, name, text)
        offset = int(where.rsplit("@", 1)[1])

        async def decided(offset: int = offset) -> bool:
            # Every worker decides; the decision is audited once (audit chain 0).
            return len(await verdicts(settings, offset)) >= 1

        try:
            await wait_for(decided, f"the verdict on {short}", VERDICT_DEADLINE, running)
        except AssertionError as exc:
            failures.append(f"{short}: no audited verdict: {str(exc)[:300]}")
        found = await verdicts(settings, offset)
        if len(found) > 1:
            failures.append(f"{short}: audited {len(found)} times, expected once")
        events = sorted({e["event"] for e in found})
        problems = [p for e in found for p in e.get("problems", [])]
        outcomes[short] = "/".join(events) or "none"
        if problems:
            outcomes[short] += f" ({problems[0][:100]})"
        if any(e["event"] == "bundle_rejected" and not e.get("problems") for e in found):
            failures.append(f"{short}: rejected without a reason")
        try:
            took = await probe(settings, f"after{number}", running)
            outcomes[short] += f"; probe {took:.2f} s"
        except AssertionError as exc:
            failures.append(f"{short}: probe not answered: {str(exc)[:1500]}")
            break
    crashed = [w for w in running if worker_exit_code(w) is not None]
    if crashed:
        # A supervisor restarts it: does it come back, or does replaying the rules
        # topic take it down again?
        forget_exited(crashed[0])
        crashed[0].start()
        await asyncio.sleep(RESTART_WATCH)
        code = worker_exit_code(crashed[0])
        figures["restarted_worker"] = (
            f"exited again with {code}" if code is not None else f"running {RESTART_WATCH:.0f} s"
        )
    audit = await read_all(settings, "audit", lambda raw: raw)
    figures.update(
        outcomes=outcomes,
        largest_audit_record_bytes=max((len(entry) for entry in audit), default=0),
        worker_pids_unchanged=[worker_pid(w) for w in running] == pids,
        tracebacks=sum(len(tracebacks(w)) for w in running),
        wall_seconds=round(time.monotonic() - started, 1),
    )
    for short, outcome in outcomes.items():
        print(f"{short}: {outcome}")
    assert not failures, "\n".join(failures)
    assert [worker_pid(w) for w in running] == pids, "a worker restarted"


async def test_hostile_bundles_are_refused_or_harmless_and_workers_keep_serving(
    settings: Settings,
    workers: Callable[[int], list[ChaosWorker]],
    figures: dict[str, object],
) -> None:
    await push_hostile(settings, HOSTILE, 2, workers, figures)


async def test_a_bundle_under_an_oversize_rules_key_is_refused_and_the_worker_keeps_serving(
    settings: Settings,
    workers: Callable[[int], list[ChaosWorker]],
    figures: dict[str, object],
) -> None:
    """The key names the bundle on the compacted rules topic; every worker echoes it into
    its audit record, so a key near the broker's record limit makes an audit record
    over it."""
    await push_hostile(settings, {LONG_KEY: KEYED_WRONG}, 1, workers, figures)
