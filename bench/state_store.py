#!/usr/bin/env python3
"""Customer state: bytes per customer and restart recovery, memory store against RocksDB.

    .venv/bin/python deploy/kafka/broker.py run -- .venv/bin/python bench/state_store.py
    make bench-state BENCH_ARGS="--customers 100000"

For each customer count it prints:

- the changelog record of a customer's state (key + value bytes, as the worker writes it);
- Python heap per customer with the memory store: tracemalloc over decoding a sample
  of the states into a dict, which is what Faust's memory store holds after recovery;
- the worker's resident memory (VmRSS) once it has recovered and processed a probe
  touchpoint, for each store;
- RocksDB bytes on disk per customer (the worker's data directory after it stopped);
- restart recovery on the real broker: the changelog topic is filled directly with the
  encoded states (no touchpoints go through a worker), then a worker starts and the
  clock runs until it has processed and committed a probe touchpoint written right
  after its start ("probe"), with the time its log said ``Ready`` ("ready"). Cases:
  memory store (every start replays the whole changelog), RocksDB with an empty data
  directory (a new machine: the whole changelog goes to disk), RocksDB restarted on
  its populated data directory (replays only what follows the stored offset).

States are realistic: a few thousand template customers go through the pure engine
(``engine.reducer.apply``, built-in rules and the example packs in rules/examples) with
touchpoints of the kinds those rules read; every customer is a template's encoded state
with its own customer id and fresh event ids, so sizes are the engine's and values do
not compress better than real ones would.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import orjson  # noqa: E402
import zstandard  # noqa: E402
from aiokafka import AIOKafkaProducer  # noqa: E402
from aiokafka.admin import AIOKafkaAdminClient, NewTopic  # noqa: E402
from aiokafka.errors import KafkaError  # noqa: E402

from bench.serving import free_port  # noqa: E402
from engine.builtin import BUILTIN_BUNDLE  # noqa: E402
from engine.bundle import load_bundle  # noqa: E402
from engine.reducer import apply  # noqa: E402
from engine.state import CustomerState  # noqa: E402
from schemas.codec import encode_touchpoint  # noqa: E402
from schemas.models import Channel, Direction, TouchpointEvent  # noqa: E402
from schemas.partitioning import customer_partition  # noqa: E402
from streams.settings import Settings  # noqa: E402
from streams.state_codec import STATE_ZSTD_LEVEL, CustomerStateCodec  # noqa: E402
from streams.topics import ensure_topics  # noqa: E402

BOOTSTRAP_ENV = "WARROOM_BOOTSTRAP_SERVERS"
PACKS = sorted((REPO / "rules" / "examples").glob("*.yaml"))
CODEC = CustomerStateCodec()
COMPRESSOR = zstandard.ZstdCompressor(level=STATE_ZSTD_LEVEL)
"""Compresses a state's JSON as CODEC does (the customer and event ids are swapped in
the JSON first: in compressed bytes they cannot be found)."""
HEAP_SAMPLE = 100_000
# (kind, channel, direction, attributes) of the touchpoints the rules of the packs read.
KINDS: list[tuple[str, str, str, dict[str, Any]]] = [
    ("message_sent", "chat", "outbound", {}),
    ("email_sent", "email", "outbound", {}),
    ("email_received", "email", "inbound", {}),
    ("message_received", "chat", "inbound", {}),
    ("video_watched", "product", "none", {"watched_seconds": 300}),
    ("sandbox_error", "product", "none", {"feature": "api"}),
    ("lead_form_submitted", "web", "inbound", {"path": "/demo"}),
    ("stage_changed", "crm", "none", {"stage": "proposal"}),
    ("prescription_filled", "pos", "none", {"chronic": True}),
    ("purchase", "pos", "none", {"amount": 120.5}),
    ("meeting_held", "meeting", "outbound", {"duration_s": 1800}),
]


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# --------------------------------------------------------------------------- states


@dataclass(frozen=True)
class Template:
    encoded: bytes
    """The state's JSON before compression: ids are swapped in it, then it is compressed
    as the worker's codec compresses it."""
    customer_id: bytes
    event_ids: tuple[bytes, ...]


def build_templates(count: int, seed: int) -> list[Template]:
    """``count`` customers' states from the engine, over 6 to 24 touchpoints each."""
    rules = list(BUILTIN_BUNDLE.rules)
    journeys = list(BUILTIN_BUNDLE.journeys)
    for path in PACKS:
        bundle = load_bundle(path.read_text(encoding="utf-8"), str(path))
        rules.extend(bundle.rules)
        journeys.extend(bundle.journeys)
    rng = random.Random(seed)
    now = datetime.now(UTC)
    templates = []
    for number in range(count):
        customer = f"tpl-{number:07d}"
        state: CustomerState | None = None
        ids = []
        touchpoints = rng.randint(6, 24)
        at = now - timedelta(days=rng.uniform(1, 30))
        for _ in range(touchpoints):
            kind, channel, direction, attributes = rng.choice(KINDS)
            event_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
            ids.append(event_id)
            at += timedelta(minutes=rng.randint(5, 600))
            event = TouchpointEvent(
                event_id=event_id,
                customer_id=customer,
                occurred_at=min(at, now),
                received_at=min(at, now),
                channel=Channel(channel),
                kind=kind,
                direction=Direction(direction),
                rep_id=f"rep-{rng.randrange(120):03d}",
                contact_id=f"ct-{number}",
                source="bench-state/1",
                attributes=attributes,
                industry="saas",
            )
            state, _ = apply(state, event, now, rules, journeys=journeys)
        assert state is not None
        templates.append(
            Template(
                orjson.dumps(state.to_dict()), customer.encode(), tuple(i.encode() for i in ids)
            )
        )
    return templates


def customer_states(
    customers: int, templates: list[Template], partitions: int, seed: int
) -> Iterator[tuple[bytes, int, bytes]]:
    """(key, partition, encoded state) of every customer, the same on every call."""
    rng = random.Random(seed)
    for number in range(customers):
        template = templates[number % len(templates)]
        customer = f"cus-{number:07d}"
        value = template.encoded.replace(template.customer_id, customer.encode())
        for event_id in template.event_ids:
            fresh = str(uuid.UUID(int=rng.getrandbits(128), version=4)).encode()
            value = value.replace(event_id, fresh)
        compressed = COMPRESSOR.compress(value)
        yield customer.encode(), customer_partition(customer, partitions), compressed


def record_sizes(states: Iterator[tuple[bytes, int, bytes]]) -> list[int]:
    return [len(key) + len(value) for key, _, value in states]


def heap_per_customer(states: Iterator[tuple[bytes, int, bytes]], sample: int) -> float:
    """Bytes of Python heap per decoded customer held in a dict, as the memory store
    holds them (key str -> CustomerState)."""
    encoded = [(key, value) for key, _, value in _take(states, sample)]
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    store = {key.decode(): CODEC.loads(value) for key, value in encoded}
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    size = (after - before) / len(store)
    del store
    return size


def _take(states: Iterator[Any], n: int) -> Iterator[Any]:
    for index, item in enumerate(states):
        if index >= n:
            return
        yield item


# --------------------------------------------------------------------------- broker


def worker_settings(bootstrap: str, app_id: str, prefix: str, store: str, data: Path) -> Settings:
    port = free_port()
    return Settings(
        app_id=app_id,
        bootstrap_servers=bootstrap,
        topic_prefix=prefix,
        partitions=4,
        data_dir=data,
        web_port=port,
        store=store,
        session_timeout_seconds=30.0,
    )


def settings_env(settings: Settings) -> dict[str, str]:
    env = dict(os.environ)
    for name, value in settings.model_dump().items():
        if value is not None:
            env[f"WARROOM_{name.upper()}"] = str(value)
    return env


async def fill_changelog(settings: Settings, states: Iterator[tuple[bytes, int, bytes]]) -> int:
    """Write every encoded state to the state table's changelog, as workers would have."""
    topic = f"{settings.app_id}-customer-state-changelog"
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
    await admin.start()
    try:
        await admin.create_topics(
            [
                NewTopic(
                    topic,
                    num_partitions=settings.partitions,
                    replication_factor=1,
                    topic_configs={"cleanup.policy": "compact"},
                )
            ]
        )
    finally:
        await admin.close()
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.bootstrap_servers,
        acks="all",
        linger_ms=20,
        max_batch_size=1_000_000,
        max_request_size=settings.max_record_bytes + 65_536,
    )
    await producer.start()
    await producer.partitions_for(topic)  # waits for the new topic's metadata
    written = 0
    try:
        pending = []
        for key, partition, value in states:
            pending.append(await producer.send(topic, value, key=key, partition=partition))
            written += 1
            if len(pending) >= 20_000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return written


@dataclass
class Start:
    case: str
    ready_s: float
    probe_s: float
    rss_bytes: int
    replayed: int
    """Changelog offsets recovery read of the state table (highwater - start offset)."""


async def start_worker(settings: Settings, case: str, log_path: Path, probe: str) -> Start:
    """Start a worker, write a probe touchpoint, wait until it is committed; stop it."""
    started = time.monotonic()
    worker = _spawn(settings, log_path)
    try:
        offset, partition = await _write_probe(settings, probe)
        ready = None
        admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
        await admin.start()
        try:
            while True:
                if worker.poll() is not None:
                    raise RuntimeError(f"{case}: worker exited with {worker.returncode}")
                if ready is None and _logged(log_path, b"[^Worker]: Ready"):
                    ready = time.monotonic() - started
                if await _committed_past(admin, settings, partition, offset):
                    break
                if time.monotonic() - started > 3600:
                    raise RuntimeError(f"{case}: probe not committed within an hour")
                await asyncio.sleep(0.2)
        finally:
            await admin.close()
        probe_s = time.monotonic() - started
        rss = _rss(worker.pid)
        text = _read(log_path)
        starts = _log_table(text, "Reading Starts At - Active", "customer-state")
        highwaters = _log_table(text, "Highwater - Active", "customer-state")
        replayed = sum(max(0, end - starts.get(p, -1)) for p, end in highwaters.items())
        return Start(case, ready if ready is not None else probe_s, probe_s, rss, replayed)
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(timeout=120)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()


def _spawn(settings: Settings, log_path: Path) -> subprocess.Popen[bytes]:
    with log_path.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "streams.cli", "worker", "--loglevel", "INFO"],
            cwd=REPO,
            env=settings_env(settings),
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def _read(log_path: Path) -> str:
    return log_path.read_text(errors="replace")


def _logged(log_path: Path, line: bytes) -> bool:
    return line in log_path.read_bytes()


async def _write_probe(settings: Settings, customer: str) -> tuple[int, int]:
    at = datetime.now(UTC)
    event = TouchpointEvent(
        event_id=f"{customer}-probe",
        customer_id=customer,
        occurred_at=at,
        received_at=at,
        channel=Channel.WEB,
        kind="page_viewed",
        direction=Direction.INBOUND,
        source="bench-state/1",
    )
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, acks="all")
    await producer.start()
    try:
        partition = customer_partition(customer, settings.partitions)
        sent = await producer.send_and_wait(
            settings.topic("touchpoints"),
            encode_touchpoint(event),
            key=customer.encode(),
            partition=partition,
        )
        return sent.offset, partition
    finally:
        await producer.stop()


async def _committed_past(
    admin: AIOKafkaAdminClient, settings: Settings, partition: int, offset: int
) -> bool:
    from aiokafka import TopicPartition

    try:
        committed = await admin.list_consumer_group_offsets(settings.app_id)
    except KafkaError as exc:
        if exc.retriable:
            return False
        raise
    found = committed.get(TopicPartition(settings.topic("touchpoints"), partition))
    return found is not None and found.offset > offset


def _log_table(text: str, title: str, table: str) -> dict[int, int]:
    """partition -> offset of ``table``'s changelog in the last Faust log table ``title``."""
    last = text.rfind(title)
    found: dict[int, int] = {}
    if last < 0:
        return found
    topic = ""
    for line in text[last:].splitlines()[1:]:
        if not line.startswith(("|", "│", "+", "├", "└")):
            break
        cells = [cell.strip() for cell in re.split(r"[|│]", line)[1:-1]]
        if len(cells) != 3 or not cells[1].isdigit():
            continue
        topic = topic if cells[0] == "〃" else cells[0]
        if topic.endswith(f"-{table}-changelog"):
            found[int(cells[1])] = int(cells[2])
    return found


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def disk_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


# --------------------------------------------------------------------------- run


@dataclass
class Result:
    customers: int
    record_mean: float
    record_p50: int
    record_p99: int
    heap_per_customer: float
    heap_sample: int
    rocks_disk_per_customer: float
    starts: list[Start]


async def run(customers: int, templates: list[Template], bootstrap: str, seed: int) -> Result:
    run_id = uuid.uuid4().hex[:8]
    settings = worker_settings(
        bootstrap, f"bench-state-{run_id}", f"bs-{run_id}.", "memory://", Path(".")
    )
    partitions = settings.partitions

    def states() -> Iterator[tuple[bytes, int, bytes]]:
        return customer_states(customers, templates, partitions, seed)

    log(f"{customers:,} customers: record sizes")
    sizes = record_sizes(states())
    quantiles = statistics.quantiles(sizes, n=100)
    sample = min(customers, HEAP_SAMPLE)
    log(f"heap of {sample:,} decoded states")
    heap = heap_per_customer(states(), sample)
    await ensure_topics(settings)
    started = time.monotonic()
    written = await fill_changelog(settings, states())
    log(f"changelog filled: {written:,} records in {time.monotonic() - started:.1f} s")
    work = Path(tempfile.mkdtemp(prefix=f"bench-state-{run_id}-"))
    starts = []
    try:
        cases = [
            ("memory", "memory://", work / "memory"),
            ("rocksdb, empty data dir", "rocksdb://", work / "rocks"),
            ("rocksdb, restart", "rocksdb://", work / "rocks"),
        ]
        for number, (case, store, data) in enumerate(cases):
            case_settings = settings.model_copy(update={"store": store, "data_dir": data})
            log(f"start: {case}")
            result = await start_worker(
                case_settings, case, work / f"worker-{number}.log", f"probe-{run_id}-{number}"
            )
            log(
                f"  ready {result.ready_s:.1f} s, probe committed {result.probe_s:.1f} s, "
                f"RSS {result.rss_bytes / 2**20:.0f} MiB, changelog read {result.replayed:,}"
            )
            starts.append(result)
        rocks_disk = disk_bytes(work / "rocks")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return Result(
        customers,
        statistics.fmean(sizes),
        int(quantiles[49]),
        int(quantiles[98]),
        heap,
        sample,
        rocks_disk / customers,
        starts,
    )


def render(results: list[Result]) -> str:
    lines = [
        "| customers | changelog record B/customer (mean, p50, p99) | heap B/customer, "
        "memory store | RocksDB disk B/customer | start | changelog read | ready s | probe s "
        "| worker RSS MiB |",
        "|---:|---|---:|---:|---|---:|---:|---:|---:|",
    ]
    for r in results:
        for index, start in enumerate(r.starts):
            head = (
                f"| {r.customers:,} | {r.record_mean:,.0f} ({r.record_p50:,}, {r.record_p99:,}) "
                f"| {r.heap_per_customer:,.0f} | {r.rocks_disk_per_customer:,.0f} "
                if index == 0
                else "| | | | "
            )
            lines.append(
                f"{head}| {start.case} | {start.replayed:,} | {start.ready_s:.1f} "
                f"| {start.probe_s:.1f} "
                f"| {start.rss_bytes / 2**20:,.0f} |"
            )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--customers", type=int, nargs="+", default=[100_000, 1_000_000], metavar="N"
    )
    parser.add_argument("--templates", type=int, default=2_000)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    bootstrap = os.environ.get(BOOTSTRAP_ENV, "").strip()
    if not bootstrap:
        print(f"{BOOTSTRAP_ENV} is not set: run under deploy/kafka/broker.py run", file=sys.stderr)
        return 2
    log(f"engine: {args.templates:,} template customers")
    templates = build_templates(args.templates, args.seed)
    results = [
        asyncio.run(run(customers, templates, bootstrap, args.seed)) for customers in args.customers
    ]
    print()
    print(render(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
