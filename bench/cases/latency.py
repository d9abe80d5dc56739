"""End-to-end latency of the full pipeline at a fixed touchpoint rate.

For each rate, on fresh topics: the bundles of the full pipeline are pushed and the
consents pre-loaded, a Warroom worker starts (``create_app``, exactly-once), and once it
has processed a first warm-up touchpoint the harness writes touchpoints (one record per
event, with the drafts of outbound messages) at the rate for the given seconds, each
dated when it is sent. A ``read_committed`` consumer reads the interventions; an
intervention's latency is the time from the moment the last of its triggering
touchpoints was handed to the producer to the moment the consumer returned it (one
clock, this process). After the phase the harness waits for the worker's committed
offsets to reach the end of the touchpoints (at most ``drain_seconds``); if they do not,
the worker fell behind and the percentiles only cover what it did process.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import TopicPartition

from bench.cases import full_workload

if TYPE_CHECKING:
    from streams.settings import Settings

WARM_UP = 20
"""Touchpoints sent (and processed) before the measured phase."""
TICK_SECONDS = 0.005


@dataclass
class LatencyResult:
    rate: int
    seconds: float
    sent: int
    sent_per_s: float
    drafts: int
    interventions: int
    samples: int
    p50_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    behind: int
    """Touchpoints the worker had not committed when sending stopped."""
    backlog: int
    """Touchpoints the worker had not committed when the harness stopped waiting."""
    drain_seconds: float
    """From the end of sending to the worker's commits reaching the end (or the limit)."""

    @property
    def kept_up(self) -> bool:
        return self.backlog == 0


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q`` quantile (0..1) by the nearest-rank method; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-q * len(ordered) // 1))))
    return ordered[rank - 1]


async def _committed(bootstrap: str, group: str, topic: str, partitions: int) -> int:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        total = 0
        for partition in range(partitions):
            offset = await consumer.committed(TopicPartition(topic, partition))
            total += offset or 0
        return total
    finally:
        await consumer.stop()


async def _end(bootstrap: str, topic: str, partitions: int) -> int:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        ends = await consumer.end_offsets([TopicPartition(topic, p) for p in range(partitions)])
        return sum(ends.values())
    finally:
        await consumer.stop()


async def _phase(
    settings: Settings,
    rate: int,
    seconds: float,
    seed: int,
    customers: int,
    started: Callable[[], bool],
    drain_limit: float,
    log: Callable[[str], None],
) -> LatencyResult:
    from connectors.publisher import envelopes
    from schemas.codec import decode_intervention, message_draft_codec

    bootstrap = settings.bootstrap_servers
    partitions = settings.partitions
    touchpoints_topic = settings.topic("touchpoints")
    drafts_topic = settings.topic("message-drafts")
    total = WARM_UP + int(rate * seconds)
    step = timedelta(seconds=1.0 / rate)
    begin = datetime.now(UTC) + timedelta(seconds=1)
    population = full_workload.Customers(customers, 0.9, seed)
    events = list(full_workload.touchpoints(total, population, seed, begin, step))
    draft_codec = message_draft_codec()
    encoded: list[tuple[str, int, bytes, bytes, bytes | None]] = []
    for event in events:
        ((partition, key, value),) = envelopes([event], partitions)
        draft = full_workload.draft_of(event)
        assert key is not None
        encoded.append(
            (
                event.event_id,
                partition,
                key,
                value,
                None if draft is None else draft_codec.encode(draft),
            )
        )
    sent_at: dict[str, float] = {}
    latencies: list[float] = []
    interventions = 0
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks=1, linger_ms=2)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        isolation_level="read_committed",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await producer.start()
    await consumer.start()
    reading = True

    async def read() -> None:
        nonlocal interventions
        consumer.assign(
            [TopicPartition(settings.topic("interventions"), p) for p in range(partitions)]
        )
        while reading:
            batches = await consumer.getmany(timeout_ms=20, max_records=5_000)
            now = time.perf_counter()
            for records in batches.values():
                for record in records:
                    if record.value is None:
                        continue
                    command = decode_intervention(record.value)
                    interventions += 1
                    times = [
                        sent_at[i] for i in command.explanation.triggering_event_ids if i in sent_at
                    ]
                    if times:
                        latencies.append(1000.0 * (now - max(times)))

    async def send(index: int) -> None:
        event_id, partition, key, value, draft = encoded[index]
        if draft is not None:
            await producer.send(drafts_topic, draft, key=key, partition=partition)
        sent_at[event_id] = time.perf_counter()
        await producer.send(touchpoints_topic, value, key=key, partition=partition)

    reader = asyncio.create_task(read())
    drafts = sum(1 for item in encoded if item[4] is not None)
    try:
        for index in range(WARM_UP):
            await send(index)
        await producer.flush()
        deadline = time.monotonic() + 180
        while not started():
            if time.monotonic() > deadline:
                raise RuntimeError(
                    "expected the worker to process a warm-up touchpoint, none in 180 s"
                )
            await asyncio.sleep(0.05)
        await asyncio.sleep(1.0)
        latencies.clear()
        measured_from = len(sent_at)
        first_sent = time.perf_counter()
        index = WARM_UP
        while index < total:
            due = WARM_UP + int((time.perf_counter() - first_sent) * rate)
            while index < min(due, total):
                await send(index)
                index += 1
            await asyncio.sleep(TICK_SECONDS)
        await producer.flush()
        send_seconds = time.perf_counter() - first_sent
        sent = len(sent_at) - measured_from
        end = await _end(bootstrap, touchpoints_topic, partitions)
        behind = max(
            0, end - await _committed(bootstrap, settings.app_id, touchpoints_topic, partitions)
        )
        drain_started = time.perf_counter()
        committed = 0
        while time.perf_counter() - drain_started < drain_limit:
            committed = await _committed(bootstrap, settings.app_id, touchpoints_topic, partitions)
            if committed >= end:
                break
            await asyncio.sleep(0.25)
        drain = time.perf_counter() - drain_started
        await asyncio.sleep(0.5)  # interventions of the last commit reach the reader
    finally:
        reading = False
        with contextlib.suppress(asyncio.CancelledError):
            await reader
        await consumer.stop()
        await producer.stop()
    log(
        f"rate {rate}/s: sent {sent} in {send_seconds:.1f} s, {len(latencies)} latency samples, "
        f"backlog {max(0, end - committed)}"
    )
    return LatencyResult(
        rate=rate,
        seconds=round(send_seconds, 2),
        sent=sent,
        sent_per_s=round(sent / send_seconds, 1) if send_seconds else 0.0,
        drafts=drafts,
        interventions=interventions,
        samples=len(latencies),
        p50_ms=_round(percentile(latencies, 0.50)),
        p99_ms=_round(percentile(latencies, 0.99)),
        max_ms=_round(max(latencies) if latencies else None),
        behind=behind,
        backlog=max(0, end - committed),
        drain_seconds=round(drain, 2),
    )


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def run_rate(
    *,
    bootstrap: str,
    run_id: str,
    rate: int,
    seconds: float,
    seed: int,
    customers: int,
    out_dir: Path,
    bundles: Sequence[tuple[str, str]],
    consents: Sequence[tuple[int, bytes | None, bytes]],
    settings_for: Callable[[str, str], Settings],
    preload: Callable[[Settings, Sequence[tuple[int, bytes | None, bytes]], str], None],
    push: Callable[[Settings, Sequence[tuple[str, str]]], None],
    worker_command: Callable[[Path], list[str]],
    warroom_settings: dict[str, str],
    free_port: Callable[[], int],
    stop_worker: Callable[[subprocess.Popen[bytes]], None],
    drain_limit: float,
    log: Callable[[str], None],
) -> LatencyResult:
    """One rate on fresh topics with a fresh worker; the worker is stopped afterwards."""
    tag = f"latency-{rate}"
    app_id = f"bench-{run_id}-{tag}"
    settings = settings_for(app_id, f"{app_id}.")
    preload(settings, consents, "consents")
    push(settings, bundles)
    case_dir = out_dir / tag
    case_dir.mkdir(parents=True, exist_ok=True)
    started_path = case_dir / "started"
    started_path.unlink(missing_ok=True)
    data_dir = Path(tempfile.mkdtemp(prefix=f"warroom-bench-{tag}-"))
    config = {
        "case": tag,
        "app_id": app_id,
        "topic_prefix": f"{app_id}.",
        "bootstrap": bootstrap,
        "guarantee": "exactly_once",
        "expected": 10**15,  # never reached: the probe only marks the first batch
        "partitions": settings.partitions,
        "result_path": str(case_dir / "result.json"),
        "started_path": str(started_path),
        "data_dir": str(data_dir),
        "web_port": free_port(),
        "warroom_settings": warroom_settings,
    }
    config_path = case_dir / "config.json"
    config_path.write_text(json.dumps(config, indent=2))
    with (case_dir / "worker.log").open("wb") as worker_log:
        worker = subprocess.Popen(
            worker_command(config_path),
            stdout=worker_log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

        def started() -> bool:
            if worker.poll() is not None:
                raise RuntimeError(
                    f"{tag}: worker exited with {worker.returncode}; see {case_dir / 'worker.log'}"
                )
            return started_path.exists()

        try:
            return asyncio.run(
                _phase(settings, rate, seconds, seed, customers, started, drain_limit, log)
            )
        finally:
            stop_worker(worker)


def render(results: Sequence[LatencyResult]) -> str:
    lines = [
        "| rate (touchpoints/s) | sent | sent/s | interventions | samples | p50 ms | p99 ms "
        "| max ms | behind when sending stopped | caught up |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in results:

        def ms(value: float | None) -> str:
            return "-" if value is None else f"{value:,.1f}"

        kept = (
            f"in {r.drain_seconds:.1f} s"
            if r.kept_up
            else f"no: {r.backlog:,} behind after {r.drain_seconds:.0f} s"
        )
        lines.append(
            f"| {r.rate:,} | {r.sent:,} | {r.sent_per_s:,.0f} | {r.interventions:,} | "
            f"{r.samples:,} | {ms(r.p50_ms)} | {ms(r.p99_ms)} | {ms(r.max_ms)} | "
            f"{r.behind:,} | {kept} |"
        )
    return "\n".join(lines)


def worker_command(script: Path) -> Callable[[Path], list[str]]:
    def command(config_path: Path) -> list[str]:
        return [sys.executable, str(script), "--worker-config", str(config_path)]

    return command
