#!/usr/bin/env python3
"""Throughput of Warroom's worker against its peers and a ceiling, on a real Kafka broker.

    make bench                       # the suite below, ~10 minutes on 2 cores
    make bench BENCH_ARGS=--quick    # small counts, one latency rate: checks the harness
    .venv/bin/python deploy/kafka/broker.py run -- .venv/bin/python bench/throughput.py
    make bench BENCH_ARGS="--cases b,c --workload basic --repeat 3 --profile"

For every case the harness creates fresh topics (own topic prefix and app id, 4
partitions), pre-loads the same seeded touchpoint stream with a plain aiokafka
producer, and only then starts a worker subprocess. The worker times itself with
``time.perf_counter`` from the start of its first batch (naive: first event) to
the end of the batch that brings it to N inputs (engine run, state stored,
output queued) and writes a JSON result; the harness waits for it and stops
the worker. Nothing in streams/ is changed: the Warroom worker is built with
``create_app`` and only its ``pipeline`` and ``streams.batches.handle_batch`` are
wrapped, to count and to stop the clock.

The workload (``--workload full``, bench/cases/full_workload.py) has touchpoints of 20
kinds (bench/cases/kinds.py), message texts, the drafts of outbound messages and consent
records; ``--workload basic`` is the 8-kind stream of the earlier runs in RESULTS.md.

Cases (the first five are the default suite, issue 12):

``ceiling``
    A plain aiokafka consumer decoding each one-record-per-event touchpoint with
    fastavro; nothing else (bench/cases/ceiling.py).
``naive``
    A minimal Faust app: ``async for value in stream`` over one Avro record per
    event, ``decode_touchpoint`` + ``engine.reducer.apply``, one table write per
    event, ``await topic.send`` per intervention.
``quix``
    Quix Streams (under .venv-bench, `make bench-venv`) over the same records,
    fastavro decode and a per-customer counter in its RocksDB state, exactly-once
    (bench/cases/quix_counter.py).
``full-envelopes`` / ``full-single``
    ``streams.app.create_app``, exactly-once, running the example packs, the default
    compliance policy, the three scores (lead, win, churn) and 100 generated rules
    (bench/cases/generated_rules.py), over touchpoints published as envelopes / one
    record per event, with the drafts (judged by the worker's compliance gate) and the
    consents on their own topics. The clock stops when every input was counted.
``warroom-envelopes`` / ``warroom-single`` / ``warroom-packs``
    ``create_app`` with the built-in bundle only (packs: plus the example packs).

After the cases: end-to-end latency of the full pipeline at fixed rates
(bench/cases/latency.py) and state bytes per customer (bench/cases/state_bytes.py).

The input is a backlog (pre-loaded), so batch sizes are those of a worker
catching up, not of live traffic; the table shows batches and state writes per
event so the regime is visible. ``--profile`` adds one run of each Warroom case
with ``py-spy record`` attached from the first processed event to the last
(needs ptrace rights, e.g. root). Output lands in bench/out/<run id>/.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import inspect
import io
import itertools
import json
import logging
import os
import platform
import random
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import TopicPartition

if TYPE_CHECKING:
    from schemas.models import TouchpointEvent
    from streams.settings import Settings

# Warroom's own modules are imported inside functions only: the harness first
# snapshots them (see --sources) and re-executes itself to import the snapshot.

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent
# bench.cases is imported from the repo; appended, so that a sources snapshot on
# PYTHONPATH still comes first for Warroom's own packages.
if str(REPO_ROOT) not in sys.path:
    sys.path.append(str(REPO_ROOT))
BOOTSTRAP_ENV = "WARROOM_BOOTSTRAP_SERVERS"
PARTITIONS = 4
EXACTLY_ONCE = "exactly_once"
AT_LEAST_ONCE = "at_least_once"
SNAPSHOT_ENV = "WARROOM_BENCH_SNAPSHOT"
RUN_ID_ENV = "WARROOM_BENCH_RUN_ID"

CEILING = "ceiling"
"""A plain aiokafka consumer + fastavro decode of the one-record-per-event touchpoints."""
NAIVE = "naive"
QUIX = "quix"
"""Quix Streams (under .venv-bench) counting touchpoints per customer in RocksDB state."""
ENVELOPES = "warroom-envelopes"
SINGLE = "warroom-single"
PACKS = "warroom-packs"
"""Envelopes again, with the five example rule packs of rules/examples running."""
FULL_ENVELOPES = "full-envelopes"
"""Warroom's full pipeline (packs, policy, three scores, 100 generated rules, consents,
drafts judged by the compliance gate) over envelopes."""
FULL_SINGLE = "full-single"
"""The full pipeline over one record per event."""
CASES = (CEILING, NAIVE, QUIX, ENVELOPES, SINGLE, PACKS, FULL_ENVELOPES, FULL_SINGLE)
SUITE = (CEILING, NAIVE, QUIX, FULL_ENVELOPES, FULL_SINGLE)
"""What `make bench` runs by default (issue 12)."""
FULL_CASES = (FULL_ENVELOPES, FULL_SINGLE)
WARROOM_CASES = (ENVELOPES, SINGLE, PACKS, *FULL_CASES)
PACK_FILES = sorted((Path(__file__).resolve().parents[1] / "rules" / "examples").glob("*.yaml"))
CASE_ALIASES = {
    "a": NAIVE,
    "b": ENVELOPES,
    "c": SINGLE,
    "d": PACKS,
    "envelopes": ENVELOPES,
    "single": SINGLE,
    "packs": PACKS,
    **{case: case for case in CASES},
}
BENCH_VENV_PYTHON = REPO_ROOT / ".venv-bench" / "bin" / "python"
QUIX_SCRIPT = HERE / "cases" / "quix_counter.py"

Record = tuple[int, bytes | None, bytes]
"""(partition, key, value) of one Kafka record."""


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- workload


@dataclass(frozen=True, slots=True)
class _Kind:
    weight: float
    channel: str  # a schemas.models.Channel value
    kind: str
    direction: str  # a schemas.models.Direction value
    text: str | None  # "chat", "email" or None


_KINDS = (
    _Kind(0.26, "chat", "message_sent", "outbound", "chat"),
    _Kind(0.16, "email", "email_sent", "outbound", "email"),
    _Kind(0.20, "chat", "message_received", "inbound", "chat"),
    _Kind(0.10, "email", "email_received", "inbound", "email"),
    _Kind(0.14, "product", "feature_used", "none", None),
    _Kind(0.04, "product", "login", "none", None),
    _Kind(0.06, "web", "page_view", "none", None),
    _Kind(0.04, "call", "call_made", "outbound", None),
)
_TEXT = (
    "hi thanks quick question about the renewal pricing for our team plan could you send "
    "the updated quote we are comparing options next week invoice seats onboarding demo "
    "integration export dashboard contract discount trial upgrade support ticket follow up "
    "checking in again on my last message happy to hop on a call tomorrow morning"
)
_WORDS = tuple(_TEXT.split())
_INDUSTRIES = ("retail", "saas", "fintech", "healthcare", "logistics", "education", "media")
_FEATURES = ("reports", "export", "dashboards", "alerts", "api", "sso", "billing", "search")
_PAGES = ("/pricing", "/docs/api", "/blog/launch", "/customers", "/security", "/contact")


@dataclass
class Workload:
    """The seeded touchpoint stream, encoded both ways."""

    singles: list[Record]
    envelopes: list[Record]
    events: int
    customers: int
    customers_seen: int
    skew: float
    seed: int
    envelope_chunk: int
    mean_event_bytes: float
    min_event_bytes: int
    max_event_bytes: int
    top_customer_share: float
    kinds: dict[str, int]
    directions: dict[str, int]
    events_per_partition: dict[int, int]
    generate_seconds: float

    def summary(self) -> dict[str, Any]:
        data = asdict(self)
        del data["singles"], data["envelopes"]
        data["single_records"] = len(self.singles)
        data["envelope_records"] = len(self.envelopes)
        data["mean_events_per_envelope"] = round(self.events / max(1, len(self.envelopes)), 1)
        return data


def _text(rng: random.Random, style: str) -> str:
    words = rng.sample(_WORDS, rng.randint(6, 14))
    sentence = " ".join(words).capitalize()
    if style == "email":
        return "Re: " + " ".join(rng.sample(_WORDS, 3)) + " - " + sentence + "."
    return sentence + rng.choice(("?", ".", "!"))


def generate_events(
    n: int, customers: int, skew: float, seed: int, now: datetime
) -> Iterator[TouchpointEvent]:
    """``n`` touchpoints over the last six hours, in time order, customers Zipf-skewed."""
    from schemas.models import Channel, Direction, TouchpointEvent

    rng = random.Random(seed)
    numbers = list(range(customers))
    rng.shuffle(numbers)  # rank -> customer number: the heavy customers land anywhere
    cum_customers = list(
        itertools.accumulate(1.0 / (rank**skew) for rank in range(1, customers + 1))
    )
    cum_kinds = list(itertools.accumulate(k.weight for k in _KINDS))
    reps = [f"rep-{rng.randrange(120):03d}" for _ in range(customers)]
    industries = [rng.choice(_INDUSTRIES) for _ in range(customers)]
    start = now - timedelta(hours=6)
    step = timedelta(hours=6) / max(1, n)
    chunk = 10_000
    for base in range(0, n, chunk):
        size = min(chunk, n - base)
        ranks = rng.choices(range(customers), cum_weights=cum_customers, k=size)
        kinds = rng.choices(_KINDS, cum_weights=cum_kinds, k=size)
        for offset, (rank, kind) in enumerate(zip(ranks, kinds, strict=True)):
            number = numbers[rank]
            occurred = start + step * (base + offset)
            attributes: dict[str, bool | int | float | str]
            if kind.text is not None:
                attributes = {"thread_id": f"th-{number:05d}-{rng.randrange(40):02d}"}
                if kind.channel == "email":
                    attributes["has_attachment"] = rng.random() < 0.15
            elif kind.channel == "product":
                attributes = {"feature": rng.choice(_FEATURES), "duration_s": rng.randrange(1, 900)}
            elif kind.channel == "web":
                attributes = {"path": rng.choice(_PAGES), "session_s": rng.randrange(5, 600)}
            else:
                attributes = {"duration_s": rng.randrange(20, 1800), "answered": rng.random() < 0.6}
            human = kind.text is not None or kind.channel == "call"
            yield TouchpointEvent(
                event_id=str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                customer_id=f"cus-{number:05d}",
                occurred_at=occurred,
                received_at=occurred + timedelta(milliseconds=rng.randrange(20, 1500)),
                channel=Channel(kind.channel),
                kind=kind.kind,
                direction=Direction(kind.direction),
                rep_id=reps[number] if human else None,
                contact_id=f"ct-{number:05d}-{rng.randrange(3)}" if human else None,
                text=_text(rng, kind.text) if kind.text is not None else None,
                attributes=attributes,
                source="chat-http/0.1.0" if kind.channel == "chat" else "bench-gen/1.0",
                industry=industries[number],
            )


def build_workload(n: int, customers: int, skew: float, seed: int, envelope_chunk: int) -> Workload:
    from connectors.publisher import envelopes
    from schemas.codec import encode_touchpoint
    from schemas.partitioning import customer_partition

    started = time.perf_counter()
    now = datetime.now(UTC)
    singles: list[Record] = []
    enveloped: list[Record] = []
    chunk: list[TouchpointEvent] = []
    per_customer: Counter[str] = Counter()
    kinds: Counter[str] = Counter()
    directions: Counter[str] = Counter()
    per_partition: Counter[int] = Counter()
    sizes: list[int] = []

    def flush() -> None:
        enveloped.extend(envelopes(chunk, PARTITIONS))
        chunk.clear()

    for event in generate_events(n, customers, skew, seed, now):
        value = encode_touchpoint(event)
        partition = customer_partition(event.customer_id, PARTITIONS)
        singles.append((partition, event.customer_id.encode(), value))
        sizes.append(len(value))
        per_customer[event.customer_id] += 1
        kinds[event.kind] += 1
        directions[event.direction.value] += 1
        per_partition[partition] += 1
        chunk.append(event)
        if len(chunk) >= envelope_chunk:
            flush()
    if chunk:
        flush()
    return Workload(
        singles=singles,
        envelopes=enveloped,
        events=n,
        customers=customers,
        customers_seen=len(per_customer),
        skew=skew,
        seed=seed,
        envelope_chunk=envelope_chunk,
        mean_event_bytes=round(sum(sizes) / max(1, len(sizes)), 1),
        min_event_bytes=min(sizes, default=0),
        max_event_bytes=max(sizes, default=0),
        top_customer_share=round(per_customer.most_common(1)[0][1] / max(1, n), 4)
        if per_customer
        else 0.0,
        kinds=dict(kinds.most_common()),
        directions=dict(directions.most_common()),
        events_per_partition=dict(sorted(per_partition.items())),
        generate_seconds=round(time.perf_counter() - started, 2),
    )


# --------------------------------------------------------------------------- kafka


def _settings(bootstrap: str, topic_prefix: str, app_id: str, guarantee: str) -> Settings:
    from streams.settings import Guarantee, Settings

    return Settings(
        app_id=app_id,
        bootstrap_servers=bootstrap,
        topic_prefix=topic_prefix,
        partitions=PARTITIONS,
        processing_guarantee=Guarantee(guarantee),
    )


async def _preload(
    bootstrap: str, settings: Settings, records: Sequence[Record], topic_name: str = "touchpoints"
) -> float:
    """Create the case's topics and write ``records`` to ``topic_name``; returns the
    seconds the write took."""
    from streams.topics import ensure_topics

    await ensure_topics(settings)
    topic = settings.topic(topic_name)
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks=1,
        linger_ms=20,
        max_batch_size=512 * 1024,
        enable_idempotence=False,
    )
    await producer.start()
    started = time.perf_counter()
    try:
        by_partition: dict[int, list[tuple[bytes | None, bytes]]] = defaultdict(list)
        for partition, key, value in records:
            by_partition[partition].append((key, value))
        deliveries: list[asyncio.Future[Any]] = []
        for partition, items in sorted(by_partition.items()):
            batch = producer.create_batch()
            for key, value in items:
                if batch.append(key=key, value=value, timestamp=None) is None:
                    deliveries.append(await producer.send_batch(batch, topic, partition=partition))
                    batch = producer.create_batch()
                    if batch.append(key=key, value=value, timestamp=None) is None:
                        raise RuntimeError(f"a {len(value)}-byte record does not fit a batch")
            if batch.record_count():
                deliveries.append(await producer.send_batch(batch, topic, partition=partition))
        await asyncio.gather(*deliveries)
        seconds = time.perf_counter() - started
    finally:
        await producer.stop()
    written = await _log_end(bootstrap, topic)
    if written != len(records):
        raise RuntimeError(f"pre-load wrote {written} records to {topic}, expected {len(records)}")
    return seconds


async def push_bundles(settings: Settings, bundles: Sequence[tuple[str, str]]) -> None:
    """Check ``bundles`` as `warroom rules push` does, against what runs and each other,
    then publish them to the case's rules topic; the worker loads them at start.

    The running bundles are read once for all of them (``push_bundle`` reads them again
    for every bundle, about 2 s each on a fresh topic)."""
    from streams.rules_feed import running_rulebook
    from streams.rules_push import publish_bundle_text

    rulebook = await running_rulebook(settings)
    accepted = []
    for source, text in bundles:
        verdict = rulebook.offer(text, source)
        if not verdict.accepted:
            problems = "; ".join(verdict.problems)
            raise RuntimeError(f"expected bundle {source} to be accepted, refused: {problems}")
        accepted.append((verdict.bundle, text))
    for name, text in accepted:
        await publish_bundle_text(settings, name, text)


async def _push_packs(settings: Settings) -> None:
    """Publish the example packs to the case's rules topic; the worker loads them at start."""
    from streams.rules_push import push_bundle

    for path in PACK_FILES:
        await push_bundle(settings, path.read_text(encoding="utf-8"), str(path))


async def _log_end(bootstrap: str, topic: str) -> int:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        ends = await consumer.end_offsets(tps)
        return sum(ends.values())
    finally:
        await consumer.stop()


def _git_head() -> str:
    """The checked-out commit (read only; the tree may have uncommitted changes)."""
    try:
        done = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            check=False,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return "?"
    return done.stdout.strip() or "?"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# --------------------------------------------------------------------------- harness


@dataclass
class CaseResult:
    case: str
    events: int
    records: int
    seconds: float
    events_per_s: float
    cpu_seconds: float
    cpu_percent: float
    processed: int
    duplicates: int
    dead_letters: int
    interventions: int
    state_writes: int
    """Table writes (changelog records) the worker made for these events."""
    batches: int
    first_batch_events: int
    max_batch_events: int
    preload_seconds: float
    startup_seconds: float
    """From spawning the worker to its first processed event (not timed)."""
    loadavg_before: tuple[float, float, float]
    loadavg_after: tuple[float, float, float]
    sources: str = ""
    """Fingerprint of streams/ engine/ schemas/ connectors/ as the worker started."""
    inputs: int = 0
    """Everything the worker counted: touchpoints, and drafts and consents in full cases."""
    verdicts: int = 0
    consent_changes: int = 0
    timed_until: str = ""
    repeat: int = 1
    profiled: bool = False
    profile: dict[str, Any] | None = None

    @property
    def writes_per_event(self) -> float:
        return self.state_writes / max(1, self.events)


@dataclass
class CaseSpec:
    case: str
    records: list[Record]
    events: int
    """Touchpoints in ``records``."""
    side: dict[str, list[Record]] = field(default_factory=dict)
    """Records of other input topics (by topic name: message-drafts, consents)."""
    bundles: list[tuple[str, str]] = field(default_factory=list)
    """(source, YAML) of the bundles pushed to the rules topic before the worker starts."""

    @property
    def expected(self) -> int:
        """Inputs the worker counts before the clock stops: touchpoints and side records."""
        return self.events + sum(len(records) for records in self.side.values())


@dataclass
class Harness:
    bootstrap: str
    guarantee: str
    out_dir: Path
    run_id: str
    timeout: float
    profile_rate: int
    top: int
    warroom_settings: dict[str, str] = field(default_factory=dict)

    def run_case(self, spec: CaseSpec, *, repeat: int = 1, profile: bool = False) -> CaseResult:
        tag = f"{spec.case}-profiled" if profile else f"{spec.case}-r{repeat}"
        app_id = f"bench-{self.run_id}-{tag}"
        prefix = f"{app_id}."
        settings = _settings(self.bootstrap, prefix, app_id, self.guarantee)
        log(f"{tag}: pre-loading {spec.events} events in {len(spec.records)} records")
        preload = asyncio.run(_preload(self.bootstrap, settings, spec.records))
        for topic_name, side_records in spec.side.items():
            log(f"{tag}: pre-loading {len(side_records)} records to {topic_name}")
            preload += asyncio.run(_preload(self.bootstrap, settings, side_records, topic_name))
        if spec.case == PACKS:
            asyncio.run(_push_packs(settings))
        if spec.bundles:
            pushed = time.perf_counter()
            asyncio.run(push_bundles(settings, spec.bundles))
            log(
                f"{tag}: pushed {len(spec.bundles)} bundles in {time.perf_counter() - pushed:.1f} s"
            )
        log(f"{tag}: pre-loaded in {preload:.1f} s; starting the worker")
        case_dir = self.out_dir / tag
        case_dir.mkdir(parents=True, exist_ok=True)
        result_path = case_dir / "result.json"
        started_path = case_dir / "started"
        for stale in (result_path, started_path):
            stale.unlink(missing_ok=True)
        data_dir = Path(tempfile.mkdtemp(prefix=f"warroom-bench-{tag}-"))
        config = {
            "case": spec.case,
            "app_id": app_id,
            "topic_prefix": prefix,
            "bootstrap": self.bootstrap,
            "guarantee": self.guarantee,
            "expected": spec.expected,
            "partitions": PARTITIONS,
            "result_path": str(result_path),
            "started_path": str(started_path),
            "data_dir": str(data_dir),
            "web_port": _free_port(),
            "warroom_settings": self.warroom_settings,
        }
        config_path = case_dir / "config.json"
        config_path.write_text(json.dumps(config, indent=2))
        load_before = os.getloadavg()
        spawned = time.perf_counter()
        if spec.case == QUIX:
            command = [str(BENCH_VENV_PYTHON), str(QUIX_SCRIPT), str(config_path)]
        else:
            command = [sys.executable, str(Path(__file__).resolve()), "--worker-config"]
            command.append(str(config_path))
        with (case_dir / "worker.log").open("wb") as worker_log:
            worker = subprocess.Popen(
                command,
                stdout=worker_log,
                stderr=subprocess.STDOUT,
                cwd=REPO_ROOT,
                start_new_session=True,
            )
            spy: subprocess.Popen[bytes] | None = None
            profile_path = case_dir / "py-spy.raw.txt"
            first_seen: float | None = None
            try:
                deadline = time.monotonic() + self.timeout
                next_log_check = time.monotonic() + 1.0
                while not result_path.exists():
                    if first_seen is None and started_path.exists():
                        first_seen = time.perf_counter()
                        if profile:
                            spy = self._attach_py_spy(worker.pid, profile_path, case_dir)
                    if time.monotonic() >= next_log_check:
                        next_log_check = time.monotonic() + 1.0
                        crash = _crash_in(case_dir / "worker.log")
                        if crash:
                            raise RuntimeError(f"{tag}: the worker's agent crashed:\n{crash}")
                    if worker.poll() is not None:
                        raise RuntimeError(
                            f"{tag}: worker exited with {worker.returncode} before finishing; "
                            f"see {case_dir / 'worker.log'}:\n{_tail(case_dir / 'worker.log')}"
                        )
                    if time.monotonic() > deadline:
                        raise RuntimeError(
                            f"{tag}: no result after {self.timeout:.0f} s; see "
                            f"{case_dir / 'worker.log'}:\n{_tail(case_dir / 'worker.log')}"
                        )
                    time.sleep(0.02)
                load_after = os.getloadavg()
                if spy is not None:
                    _stop_py_spy(spy)
                    spy = None
            finally:
                if spy is not None:
                    _stop_py_spy(spy)
                _stop_worker(worker)
                shutil.rmtree(data_dir, ignore_errors=True)
        measured = json.loads(result_path.read_text())
        counters = measured.get("metrics")
        if counters is not None:
            by_metrics = counters["processed"] + counters["duplicate"]
            if int(by_metrics) != measured["processed"] + measured["duplicates"]:
                log(
                    f"{tag}: WARNING: the worker's metrics count {by_metrics:.0f} touchpoints, "
                    f"the bench counted {measured['processed'] + measured['duplicates']}"
                )
        seconds = float(measured["seconds"])
        if int(measured["events"]) < spec.expected:
            raise RuntimeError(
                f"{tag}: expected the worker to count {spec.expected} inputs, found "
                f"{measured['events']}"
            )
        result = CaseResult(
            case=spec.case,
            events=spec.events,
            records=len(spec.records),
            seconds=round(seconds, 3),
            events_per_s=round(spec.events / seconds, 1),
            cpu_seconds=round(measured["cpu_seconds"], 2),
            cpu_percent=round(100.0 * measured["cpu_seconds"] / seconds, 1),
            processed=int(measured["processed"]),
            duplicates=int(measured["duplicates"]),
            dead_letters=int(measured["dead_letters"]),
            interventions=int(measured["interventions"]),
            state_writes=int(measured["state_writes"]),
            batches=int(measured["batches"]),
            first_batch_events=int(measured["first_batch_events"]),
            max_batch_events=int(measured["max_batch_events"]),
            preload_seconds=round(preload, 2),
            startup_seconds=round((first_seen or spawned) - spawned, 2),
            loadavg_before=load_before,
            loadavg_after=load_after,
            sources=str(measured.get("sources", "")),
            inputs=int(measured["events"]),
            verdicts=int(measured.get("verdicts", 0)),
            consent_changes=int(measured.get("consent_changes", 0)),
            timed_until=str(measured.get("timed_until", "")),
            repeat=repeat,
            profiled=profile,
        )
        if profile and profile_path.exists():
            result.profile = summarize_profile(profile_path, self.top)
            result.profile["path"] = str(profile_path)
        log(
            f"{tag}: {result.events} events in {result.seconds:.2f} s = "
            f"{result.events_per_s:,.0f} events/s (cpu {result.cpu_percent:.0f}%, "
            f"{result.batches} batches, first {result.first_batch_events} events, "
            f"{result.writes_per_event:.2f} state writes/event)"
        )
        return result

    def _attach_py_spy(self, pid: int, output: Path, case_dir: Path) -> subprocess.Popen[bytes]:
        py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        command = [
            # Blocking mode (the default): py-spy pauses the worker for each sample, so
            # stacks are consistent; --nonblocking gives torn stacks under load.
            py_spy, "record", "--pid", str(pid), "--threads", "--function",
            "--rate", str(self.profile_rate), "--format", "raw", "--output", str(output),
        ]  # fmt: skip
        log("attaching: " + " ".join(command))
        with (case_dir / "py-spy.log").open("wb") as spy_log:
            return subprocess.Popen(command, stdout=spy_log, stderr=subprocess.STDOUT)


def _stop_py_spy(spy: subprocess.Popen[bytes]) -> None:
    if spy.poll() is None:
        spy.send_signal(signal.SIGINT)  # py-spy writes its output on Ctrl-C
    try:
        spy.wait(timeout=60)
    except subprocess.TimeoutExpired:
        spy.kill()
        spy.wait()


def _stop_worker(worker: subprocess.Popen[bytes], grace: float = 5.0) -> None:
    if worker.poll() is not None:
        return
    worker.terminate()
    try:
        worker.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(worker.pid, signal.SIGKILL)  # its own session: only the worker
        worker.wait()


def _crash_in(path: Path) -> str:
    """The lines after Faust's first "Crashed reason=" in a worker log, if any."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    at = text.find("Crashed reason=")
    if at < 0:
        return ""
    return "\n".join(text[text.rfind("\n", 0, at) + 1 :].splitlines()[:25])


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


# --------------------------------------------------------------------------- profiles


def _layer(frame: str) -> str:
    """The package a py-spy frame ``func (path/file.py:line)`` belongs to."""
    _, _, where = frame.rpartition(" (")
    path = where.rsplit(":", 1)[0]
    if not path or path.startswith("<"):
        return path or "?"
    first = path.replace("\\", "/").split("/")
    if "site-packages" in first:
        first = first[first.index("site-packages") + 1 :]
    elif "python3.11" in first:
        return "stdlib:" + (first[first.index("python3.11") + 1] if len(first) > 1 else "")
    top = first[0]
    if top.endswith(".py"):
        top = top[:-3]
    stdlib = {"asyncio", "selectors", "threading", "concurrent", "logging", "json", "weakref"}
    if top in stdlib or top in sys.stdlib_module_names:
        return f"stdlib:{top}"
    return top


_ROOT_FRAMES = (
    "<module> (",
    "main (",
    "worker_main (",
    "Worker.execute_from_commandline (",
    "BaseEventLoop.run_until_complete (",
    "BaseEventLoop.run_forever (",
    "BaseEventLoop._run_once (",
    "Handle._run (",
)
"""On (nearly) every stack: left out of the inclusive list."""

_BATCH_COMPONENTS = (
    ("_write (streams/app.py", "batch: output (state writes + sends)"),
    ("_output (streams/batches.py", "batch: output (state writes + sends)"),
    ("(streams/writer.py", "batch: output (state writes + sends)"),
    ("_observe (streams/batches.py", "batch: metrics (_observe)"),
    # before the engine: these call into engine/ too
    ("encode_states (streams/pipeline.py", "batch: state encoding (to_dict, snapshots, zstd)"),
    ("_process_gate_input (streams/pipeline.py", "batch: compliance gate (drafts)"),
    ("_encode (streams/pipeline.py", "batch: intervention and dead-letter encoding"),
    ("(engine/", "batch: engine (reducer.apply, rules)"),
    ("decode_touchpoint", "batch: decode (fastavro + pydantic)"),
    ("(streams/pipeline.py", "batch: pipeline checks (timestamps, partition)"),
)
_RUNTIME_COMPONENTS = (
    ("ProducerBuffer", "faust ProducerBuffer draining queued sends"),
    ("(aiokafka/producer/", "aiokafka producer (sender, batches)"),
    ("(faust/streams.py", "consumer -> conductor -> stream -> agent"),
    ("(faust/transport/conductor.py", "consumer -> conductor -> stream -> agent"),
    ("(faust/transport/consumer.py", "consumer -> conductor -> stream -> agent"),
    ("(faust/transport/drivers/aiokafka.py", "consumer -> conductor -> stream -> agent"),
    ("(aiokafka/consumer/", "consumer -> conductor -> stream -> agent"),
    ("(faust/agents/", "consumer -> conductor -> stream -> agent"),
    ("(aiokafka/", "aiokafka client / connection"),
)


def _component(funcs: Sequence[str]) -> str:
    """Which part of the worker a sample belongs to (first rule that matches wins)."""
    if any(_is_commit(f) for f in funcs):
        return "offset commit / transaction commit"
    if any("handle_batch (streams/batches.py" in f for f in funcs):
        for pattern, name in _BATCH_COMPONENTS:
            if any(pattern in f for f in funcs):
                return name
        return "batch: assembly (handle_batch)"
    for pattern, name in _RUNTIME_COMPONENTS:
        if any(pattern in f for f in funcs):
            return name
    return "asyncio scheduling (task steps, select) / other"


def _is_commit(frame: str) -> bool:
    name = frame.partition(" (")[0]
    return "commit" in name.lower() and ("faust/" in frame or "streams/" in frame)


def summarize_profile(path: Path, top: int) -> dict[str, Any]:
    """Self and inclusive hot spots of a ``py-spy record --format raw --threads`` file."""
    total = 0
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    layers: Counter[str] = Counter()
    components: Counter[str] = Counter()
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        thread, funcs = frames[0], frames[1:]
        if not funcs:
            continue
        total += count
        threads[thread.partition(": ")[2] or thread] += count
        own[funcs[-1]] += count
        layers[_layer(funcs[-1])] += count
        components[_component(funcs)] += count
        for func in set(funcs):
            if not func.startswith(_ROOT_FRAMES):
                inclusive[func] += count

    def shares(counter: Counter[str], limit: int) -> list[tuple[str, float]]:
        return [
            (name, round(100.0 * n / max(1, total), 1)) for name, n in counter.most_common(limit)
        ]

    return {
        "samples": total,
        "threads": shares(threads, 10),
        "self": shares(own, top),
        "inclusive": shares(inclusive, top),
        "layers_self": shares(layers, 12),
        "components": shares(components, 20),
    }


# --------------------------------------------------------------------------- output


def representative(results: Sequence[CaseResult]) -> dict[str, CaseResult]:
    """Per case, the timed (not profiled) run with the median events/s (lower median)."""
    chosen: dict[str, CaseResult] = {}
    for case in CASES:
        runs = sorted((r for r in results if r.case == case and not r.profiled), key=_rate)
        if runs:
            chosen[case] = runs[(len(runs) - 1) // 2]
    return chosen


def _rate(result: CaseResult) -> float:
    return result.events_per_s


def _ratio(results: dict[str, CaseResult], case: str) -> float | None:
    if case not in results or NAIVE not in results:
        return None
    return round(results[case].events_per_s / results[NAIVE].events_per_s, 2)


def render_table(results: Sequence[CaseResult]) -> str:
    from bench.cases.summary import Row, render

    rows = []
    for case, r in representative(results).items():
        rates = [x.events_per_s for x in results if x.case == case and not x.profiled]
        rows.append(
            Row(
                case=case,
                runs=len(rates),
                events=r.events,
                seconds=r.seconds,
                rate=r.events_per_s,
                rate_range=(min(rates), max(rates)) if len(rates) > 1 else None,
                cpu_percent=r.cpu_percent,
                state_writes_per_event=r.writes_per_event,
                interventions=r.interventions,
                verdicts=r.verdicts,
            )
        )
    return render(rows)


def render_profile(result: CaseResult) -> str:
    profile = result.profile or {}
    out = [
        f"### py-spy: {result.case} ({profile.get('samples', 0)} samples, "
        f"{result.events_per_s:,.0f} events/s while profiled)",
        "",
        "threads: " + ", ".join(f"{name} {pct}%" for name, pct in profile.get("threads", [])),
        "",
        "by package (self): "
        + ", ".join(f"{name} {pct}%" for name, pct in profile.get("layers_self", [])),
        "",
        "| % of samples | component (first match: commit, agent batch part, runtime part) |",
        "|---:|---|",
    ]
    out += [f"| {pct} | {name} |" for name, pct in profile.get("components", [])]
    out += [
        "",
        "| self % | function (leaf) |",
        "|---:|---|",
    ]
    out += [f"| {pct} | `{name}` |" for name, pct in profile.get("self", [])]
    out += ["", "| inclusive % | function (anywhere on the stack) |", "|---:|---|"]
    out += [f"| {pct} | `{name}` |" for name, pct in profile.get("inclusive", [])]
    return "\n".join(out)


# --------------------------------------------------------------------------- worker side


SOURCE_PACKAGES = ("streams", "engine", "schemas", "connectors")


def source_fingerprint(root: Path = REPO_ROOT) -> str:
    """Short hash of the Warroom sources under ``root`` (.py and .avsc files)."""
    digest = hashlib.sha256()
    for package in SOURCE_PACKAGES:
        for path in sorted((root / package).rglob("*")):
            if path.suffix in (".py", ".avsc") and "__pycache__" not in path.parts:
                digest.update(str(path.relative_to(root)).encode() + b"\0")
                digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def imported_sources_root() -> Path:
    """Where this process imports Warroom from (the repo, or a snapshot of it)."""
    import streams

    return Path(streams.__file__).resolve().parent.parent


def snapshot_sources(target: Path, which: str) -> Path:
    """Copy Warroom's packages to ``target``: the working tree, or HEAD (``git archive``)."""
    target.mkdir(parents=True, exist_ok=True)
    if which == "head":
        archive = subprocess.run(
            ["git", "archive", "--format=tar", "HEAD", *SOURCE_PACKAGES],
            cwd=REPO_ROOT,
            capture_output=True,
            check=True,
            timeout=60,
        )
        with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
            tar.extractall(target, filter="data")
        return target
    for package in SOURCE_PACKAGES:
        shutil.copytree(
            REPO_ROOT / package,
            target / package,
            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
        )
    return target


def _reexec_with_snapshot(args: argparse.Namespace, argv: Sequence[str]) -> NoReturn:
    """Snapshot the sources, then run this command again importing only the snapshot."""
    run_id = datetime.now(UTC).strftime("%H%M%S") + uuid.uuid4().hex[:4]
    sources = snapshot_sources(args.out_dir.resolve() / run_id / "src", args.sources)
    env = dict(os.environ)
    env[SNAPSHOT_ENV] = str(sources)
    env[RUN_ID_ENV] = run_id
    # Ahead of the editable install, whose finder only answers after sys.path.
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(sources), env.get("PYTHONPATH")) if p)
    script = str(Path(__file__).resolve())
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, script, *argv], env)


class Probe:
    """Counts what a worker processed and times the first event to the N-th."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.expected = int(config["expected"])
        self.result_path = Path(config["result_path"])
        self.started_path = Path(config["started_path"])
        self.case = str(config["case"])
        self.count = 0
        self.processed = 0
        self.duplicates = 0
        self.dead_letters = 0
        self.interventions = 0
        self.state_writes = 0
        self.verdicts = 0
        self.consent_changes = 0
        self.batches = 0
        self.first_batch_events = 0
        self.max_batch_events = 0
        self.batch_log: list[tuple[float, int, int]] = []
        """(seconds since the first event, events, state writes) of the first batches."""
        self.first: float | None = None
        self.first_cpu = 0.0
        self.done = False
        self.timed_until = "end of the batch that reached N"
        self.cross_check: Callable[[], dict[str, float]] | None = None

    def begin(self) -> None:
        if self.first is None:
            self.first = time.perf_counter()
            self.first_cpu = time.process_time()
            self.started_path.touch()

    def add(
        self,
        events: int,
        processed: int,
        duplicates: int,
        letters: int,
        sent: int,
        writes: int,
        verdicts: int = 0,
        consent_changes: int = 0,
    ) -> None:
        self.count += events
        self.verdicts += verdicts
        self.consent_changes += consent_changes
        self.state_writes += writes
        self.processed += processed
        self.duplicates += duplicates
        self.dead_letters += letters
        self.interventions += sent
        self.batches += 1
        if self.batches == 1:
            self.first_batch_events = events
        self.max_batch_events = max(self.max_batch_events, events)
        if len(self.batch_log) < 200 and self.first is not None:
            self.batch_log.append((round(time.perf_counter() - self.first, 4), events, writes))

    def batch_done(self) -> None:
        """Call when a batch's output is written (or queued); stops the clock at N events."""
        if not self.done and self.count >= self.expected:
            self.done = True
            self.finish()

    def finish(self) -> None:
        ended = time.perf_counter()
        cpu = time.process_time() - self.first_cpu
        result = {
            "case": self.case,
            "sources": source_fingerprint(imported_sources_root()),
            "sources_root": str(imported_sources_root()),
            "timed_until": self.timed_until,
            "events": self.count,
            "seconds": ended - (self.first or ended),
            "cpu_seconds": cpu,
            "processed": self.processed,
            "duplicates": self.duplicates,
            "dead_letters": self.dead_letters,
            "interventions": self.interventions,
            "state_writes": self.state_writes,
            "verdicts": self.verdicts,
            "consent_changes": self.consent_changes,
            "batches": self.batches,
            "first_batch_events": self.first_batch_events,
            "max_batch_events": self.max_batch_events,
            "batch_log": self.batch_log,
        }
        if self.cross_check is not None:
            result["metrics"] = self.cross_check()
        partial = self.result_path.with_suffix(".partial")
        partial.write_text(json.dumps(result))
        partial.replace(self.result_path)


def build_naive_app(config: dict[str, Any], probe: Probe) -> Any:
    """The naive Faust pattern: one record per event, one table write per event."""
    import faust
    from faust.transport.consumer import TransactionManager

    from engine.reducer import apply
    from schemas.codec import decode_touchpoint
    from schemas.faust_codec import InterventionCodec
    from streams.settings import Settings
    from streams.state_codec import CustomerStateCodec, Utf8Codec

    prefix = config["topic_prefix"]
    exactly_once = config["guarantee"] == EXACTLY_ONCE
    app = faust.App(
        config["app_id"],
        broker=f"kafka://{config['bootstrap']}",
        store="memory://",
        datadir=config["data_dir"],
        processing_guarantee=config["guarantee"],
        topic_partitions=PARTITIONS,
        autodiscover=False,
        web_enabled=False,
        # Same commit interval, linger and offset reset as Warroom's worker, so
        # the comparison is about the processing pattern, not the settings.
        broker_commit_interval=Settings.model_fields["commit_interval_seconds"].default,
        consumer_auto_offset_reset="earliest",
        table_standby_replicas=0,
        producer_linger_ms=5,
    )
    source_name = f"{prefix}touchpoints"
    output_name = f"{prefix}interventions"
    if exactly_once:
        # Stock Faust cannot send to a topic it does not consume under exactly-once
        # (it looks for the topic's partition group and finds none). The smallest
        # fix: sends to the output topic join the source partition's transaction.
        class OutputJoinsSource(TransactionManager):
            async def send(
                self, topic: str, key: Any, value: Any, partition: Any, *args: Any, **kw: Any
            ) -> Any:
                if topic != output_name:
                    return await super().send(topic, key, value, partition, *args, **kw)
                group = self.app.assignor.group_for_topic(source_name)
                kw["transactional_id"] = f"{self.app.conf.id}-{group}-{partition}"
                return await self.producer.send(topic, key, value, partition, *args, **kw)

        app.transport.TransactionManager = OutputJoinsSource  # type: ignore[misc]
    source = app.topic(
        source_name, key_serializer="raw", value_serializer="raw", partitions=PARTITIONS
    )
    output = app.topic(
        output_name,
        key_serializer="raw",
        value_serializer=InterventionCodec(),
        partitions=PARTITIONS,
    )
    table = app.Table("customer-state", key_type=str, partitions=PARTITIONS)
    table.key_serializer = Utf8Codec()  # type: ignore[attr-defined]
    table.value_serializer = CustomerStateCodec()  # type: ignore[attr-defined]
    table.changelog_topic = table._new_changelog_topic()  # type: ignore[attr-defined]

    async def naive(stream: Any) -> None:
        async for value in stream:
            probe.begin()
            event = decode_touchpoint(value)
            state = table.get(event.customer_id)
            updated, outputs = apply(state, event, datetime.now(UTC))  # the built-in rules
            changed = updated is not state
            if changed:
                table[event.customer_id] = updated
            partition = stream.current_event.message.partition
            sent = 0
            for output_item in outputs:
                # An InterventionCommand, or a Decision wrapping one (shadow: not sent).
                if getattr(output_item, "shadow", False):
                    continue
                command: Any = getattr(output_item, "intervention", output_item)
                await output.send(
                    key=command.customer_id.encode(), value=command, partition=partition
                )
                sent += 1
            probe.add(1, int(changed), int(not changed), 0, sent, int(changed))
            probe.batch_done()

    app.agent(source, name="bench.naive")(naive)
    return app


def build_warroom_app(config: dict[str, Any], probe: Probe) -> Any:
    """Warroom's own worker, unchanged; its batch handler and pipeline are wrapped to count.

    The clock stops when the ``streams.batches.handle_batch`` call that brought the
    count to N returns (engine run, state stored, output queued). Events are
    counted from the pipeline's results (one ``BatchResult`` per batch, however
    many slices fill it) and checked against the worker's Prometheus counters.
    """
    import dataclasses

    import streams.batches
    from streams.app import create_app
    from streams.pipeline import Pipeline
    from streams.settings import Guarantee, Settings

    batch_results: dict[int, Any] = {}

    class TimedPipeline(Pipeline):
        def process(self, *args: Any, **kwargs: Any) -> Any:
            probe.begin()
            result = super().process(*args, **kwargs)
            batch_results[id(result)] = result
            return result

    def account() -> None:
        results = list(batch_results.values())
        batch_results.clear()
        # Inputs: touchpoints (processed, duplicate or rejected), drafts judged (and gate
        # answers recorded), consent changes applied; a repeated draft or consent counts
        # as a duplicate. Timer ticks are the worker's own records: not counted.
        probe.add(
            sum(
                r.processed
                + r.duplicates
                + len(r.dead_letters)
                + len(r.verdicts)
                + len(r.reviews)
                + len(r.consent_changes)
                for r in results
            ),
            sum(r.processed for r in results),
            sum(r.duplicates for r in results),
            sum(len(r.dead_letters) for r in results),
            sum(len(r.interventions) for r in results),
            # the worker writes one changelog record per changed customer per batch
            sum(len(changed) for r in results for changed in r.states.values()),
            verdicts=sum(len(r.verdicts) for r in results),
            consent_changes=sum(len(r.consent_changes) for r in results),
        )

    settings = Settings(
        app_id=config["app_id"],
        bootstrap_servers=config["bootstrap"],
        topic_prefix=config["topic_prefix"],
        partitions=PARTITIONS,
        processing_guarantee=Guarantee(config["guarantee"]),
        data_dir=Path(config["data_dir"]),
        web_port=int(config["web_port"]),
        **config.get("warroom_settings", {}),
    )
    warroom = create_app(settings)
    base = warroom.pipeline
    warroom.pipeline = TimedPipeline(
        **{f.name: getattr(base, f.name) for f in dataclasses.fields(base) if f.init}
    )
    registry = warroom.metrics.registry

    def counted_by_metrics() -> dict[str, float]:
        def value(name: str, labels: dict[str, str] | None = None) -> float:
            found = registry.get_sample_value(name, labels or {})
            return float(found) if found is not None else 0.0

        return {
            "processed": value("warroom_touchpoints_total", {"outcome": "processed"}),
            "duplicate": value("warroom_touchpoints_total", {"outcome": "duplicate"}),
        }

    probe.cross_check = counted_by_metrics

    handle_batch = getattr(streams.batches, "handle_batch", None)
    if inspect.iscoroutinefunction(handle_batch):
        original = handle_batch

        async def timed_handle_batch(*args: Any, **kwargs: Any) -> Any:
            probe.begin()
            try:
                return await original(*args, **kwargs)
            finally:
                account()
                probe.batch_done()

        streams.batches.handle_batch = timed_handle_batch
    elif callable(handle_batch):
        sync_original = handle_batch

        def timed_sync_handle_batch(*args: Any, **kwargs: Any) -> Any:
            probe.begin()
            try:
                return sync_original(*args, **kwargs)
            finally:
                account()
                probe.batch_done()

        streams.batches.handle_batch = timed_sync_handle_batch
    else:
        # No batch handler to wrap: watch the worker's counters instead.
        probe.timed_until = "first poll (every 2 ms) that saw N events in the worker's metrics"

        async def watch_metrics() -> None:
            while not probe.done:
                await asyncio.sleep(0.002)
                seen = counted_by_metrics()
                if seen["processed"] + seen["duplicate"] >= probe.expected:
                    account()
                    probe.count = max(probe.count, probe.expected)
                    probe.batch_done()

        warroom.app.task(watch_metrics)
    return warroom.app


def worker_main(config_path: Path) -> int:
    from faust import Worker

    config = json.loads(config_path.read_text())
    if config["case"] == CEILING:
        from bench.cases import ceiling

        return ceiling.main(config)
    probe = Probe(config)
    if config["case"] == NAIVE:
        app = build_naive_app(config, probe)
    else:
        app = build_warroom_app(config, probe)
    Worker(app, loglevel=config.get("loglevel", "WARNING"), quiet=True).execute_from_commandline()
    return 0


# --------------------------------------------------------------------------- main


def _cases(text: str) -> list[str]:
    chosen: list[str] = []
    for part in text.split(","):
        name = part.strip().lower()
        if not name:
            continue
        if name not in CASE_ALIASES:
            raise argparse.ArgumentTypeError(
                f"unknown case {part!r}; expected some of {', '.join(CASES)} (or a, b, c)"
            )
        if CASE_ALIASES[name] not in chosen:
            chosen.append(CASE_ALIASES[name])
    if not chosen:
        raise argparse.ArgumentTypeError("expected at least one case")
    return [c for c in CASES if c in chosen]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bench/throughput.py",
        description="Naive Faust agent vs Warroom's worker on a real broker "
        f"({BOOTSTRAP_ENV}); run it under deploy/kafka/broker.py run -- ...",
    )
    parser.add_argument(
        "--events",
        type=int,
        default=100_000,
        help="touchpoints of the ceiling, quix and warroom-* cases (100000)",
    )
    parser.add_argument(
        "--naive-events",
        type=int,
        default=None,
        help="events for the naive case, a prefix of the same stream (default: 30000 or "
        "--events, the smaller)",
    )
    parser.add_argument(
        "--cases",
        type=_cases,
        default=list(SUITE),
        help=f"comma-separated cases among {', '.join(CASES)} (default: {','.join(SUITE)})",
    )
    parser.add_argument(
        "--workload",
        choices=["full", "basic"],
        default="full",
        help="full: 20 touchpoint kinds with drafts and consents (bench/cases/full_workload.py); "
        "basic: the 8 kinds of the earlier runs in bench/RESULTS.md (no full cases)",
    )
    parser.add_argument(
        "--full-events",
        type=int,
        default=30_000,
        help="touchpoints of the full cases, a prefix of the same stream (30000)",
    )
    parser.add_argument(
        "--generated-rules", type=int, default=100, help="generated rules in the full cases (100)"
    )
    parser.add_argument("--rules-seed", type=int, default=12, help="seed of the generated rules")
    parser.add_argument(
        "--latency-rates",
        type=_rates,
        default=[1_000, 5_000, 10_000],
        help="touchpoints/s of the latency runs (1000,5000,10000; empty: none)",
    )
    parser.add_argument(
        "--latency-seconds", type=float, default=8.0, help="seconds of sending per rate (8)"
    )
    parser.add_argument(
        "--latency-drain",
        type=float,
        default=15.0,
        help="seconds to wait for the worker to catch up after sending (15)",
    )
    parser.add_argument(
        "--state-customers",
        type=int,
        default=100_000,
        help="customers of the state bytes measure (100000; 0: none)",
    )
    parser.add_argument(
        "--state-templates",
        type=int,
        default=1_000,
        help="distinct customer histories run through the full pipeline for it (1000)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="small counts and one latency rate: checks the harness end to end in a few minutes",
    )
    parser.add_argument(
        "--guarantee",
        choices=[EXACTLY_ONCE, AT_LEAST_ONCE],
        default=EXACTLY_ONCE,
        help="processing guarantee of every case (exactly_once)",
    )
    parser.add_argument("--customers", type=int, default=5000)
    parser.add_argument("--skew", type=float, default=0.9, help="Zipf exponent of customers")
    parser.add_argument("--seed", type=int, default=20261122)
    parser.add_argument(
        "--envelope-chunk",
        type=int,
        default=2000,
        help="events handed to connectors.publisher.envelopes() per call (2000)",
    )
    parser.add_argument(
        "--repeat", type=int, default=1, help="timed runs per case, interleaved (1)"
    )
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    parser.add_argument(
        "--markdown", type=Path, default=None, help="write a markdown fragment here"
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="afterwards, run each chosen Warroom case (warroom-*, full-*) once more under py-spy",
    )
    parser.add_argument("--profile-rate", type=int, default=100, help="py-spy samples/s (100)")
    parser.add_argument("--top", type=int, default=15, help="hot spots to list per profile")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per case")
    parser.add_argument(
        "--out-dir", type=Path, default=HERE / "out", help="logs, results and profiles"
    )
    parser.add_argument(
        "--warroom-setting",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="override a streams.settings.Settings field in the Warroom cases, e.g. "
        "batch_max_records=4 (repeatable; the naive case ignores it)",
    )
    parser.add_argument(
        "--sources",
        choices=["tree", "head", "live"],
        default="tree",
        help="the Warroom code to run: a snapshot of the working tree's streams/ engine/ "
        "schemas/ connectors/ taken at the start (tree, default), of the HEAD commit "
        "(head), or the repo as it is whenever a process starts (live)",
    )
    parser.add_argument("--worker-config", type=Path, default=None, help=argparse.SUPPRESS)
    return parser


def _make_quick(args: argparse.Namespace) -> None:
    """--quick: small counts and one rate, to check the harness end to end."""
    args.events = min(args.events, 4_000)
    args.naive_events = min(args.naive_events or 2_000, 2_000)
    args.full_events = min(args.full_events, 2_000)
    args.customers = min(args.customers, 500)
    args.latency_rates = args.latency_rates[:1]
    args.latency_seconds = min(args.latency_seconds, 3.0)
    args.state_customers = min(args.state_customers, 5_000)
    args.state_templates = min(args.state_templates, 50)


def run_latency(
    args: argparse.Namespace,
    bootstrap: str,
    run_id: str,
    out_dir: Path,
    overrides: dict[str, str],
    full: Any,
    bundles: list[tuple[str, str]],
) -> list[Any]:
    from bench.cases import latency

    def settings_for(app_id: str, prefix: str) -> Settings:
        return _settings(bootstrap, prefix, app_id, EXACTLY_ONCE)

    def preload(settings: Settings, records: Sequence[Record], topic: str) -> None:
        asyncio.run(_preload(bootstrap, settings, records, topic))

    def push(settings: Settings, items: Sequence[tuple[str, str]]) -> None:
        asyncio.run(push_bundles(settings, items))

    results = []
    for rate in args.latency_rates:
        log(f"latency: {rate} touchpoints/s for {args.latency_seconds:.0f} s")
        results.append(
            latency.run_rate(
                bootstrap=bootstrap,
                run_id=run_id,
                rate=rate,
                seconds=args.latency_seconds,
                seed=args.seed + rate,
                customers=args.customers,
                out_dir=out_dir,
                bundles=bundles,
                consents=full.consents,
                settings_for=settings_for,
                preload=preload,
                push=push,
                worker_command=latency.worker_command(Path(__file__).resolve()),
                warroom_settings=overrides,
                free_port=_free_port,
                stop_worker=_stop_worker,
                drain_limit=args.latency_drain,
                log=log,
            )
        )
    return results


def _rates(text: str) -> list[int]:
    try:
        rates = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated touchpoints/s such as 1000,5000, found {text!r}"
        ) from None
    if any(rate < 1 for rate in rates):
        raise argparse.ArgumentTypeError(f"expected rates of 1 or more, found {text!r}")
    return rates


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.worker_config is not None:
        return worker_main(args.worker_config)
    # aiokafka logs a retried NotLeaderForPartition while a fresh topic elects leaders.
    logging.getLogger("aiokafka").setLevel(logging.ERROR)
    bootstrap = os.environ.get(BOOTSTRAP_ENV, "").strip()
    if not bootstrap:
        print(
            f"{BOOTSTRAP_ENV} is not set; run: .venv/bin/python deploy/kafka/broker.py run -- "
            ".venv/bin/python bench/throughput.py",
            file=sys.stderr,
        )
        return 2
    if args.quick:
        _make_quick(args)
    naive_events = args.naive_events if args.naive_events is not None else min(30_000, args.events)
    if args.events < 1 or not 1 <= naive_events <= args.events:
        print("expected 1 <= --naive-events <= --events", file=sys.stderr)
        return 2
    full_events = min(args.full_events, args.events)
    if full_events < 1:
        print("expected --full-events >= 1", file=sys.stderr)
        return 2
    if args.workload == "basic" and set(args.cases) & set(FULL_CASES):
        print(
            f"--workload basic has no drafts, consents or 20 kinds: expected none of "
            f"{', '.join(FULL_CASES)} in --cases",
            file=sys.stderr,
        )
        return 2
    if QUIX in args.cases and not BENCH_VENV_PYTHON.exists():
        print(
            f"the quix case runs under {BENCH_VENV_PYTHON}, which is missing: run `make "
            "bench-venv` (make bench does it)",
            file=sys.stderr,
        )
        return 2
    arguments = list(argv if argv is not None else sys.argv[1:])
    command = " ".join(["bench/throughput.py", *arguments])
    snapshot = os.environ.get(SNAPSHOT_ENV)
    if args.sources != "live" and not snapshot:
        _reexec_with_snapshot(args, arguments)
    run_id = os.environ.get(RUN_ID_ENV) or (
        datetime.now(UTC).strftime("%H%M%S") + uuid.uuid4().hex[:4]
    )
    out_dir: Path = args.out_dir / run_id
    imported = imported_sources_root()
    if snapshot and imported != Path(snapshot).resolve():
        print(f"expected to import Warroom from {snapshot}, found {imported}", file=sys.stderr)
        return 2
    sources_at_start = source_fingerprint(imported)
    sources_label = {
        "tree": "a snapshot of the working tree taken at the start",
        "head": f"git HEAD {_git_head()} (git archive)",
        "live": "the live tree (may change between cases)",
    }[args.sources]
    log(f"Warroom sources: {sources_label}: {imported} ({sources_at_start})")
    from bench.cases import full_workload
    from connectors.publisher import ENVELOPE_MAX_EVENTS
    from streams.settings import Settings

    log(
        f"generating {args.events} events ({args.workload} workload, {args.customers} "
        f"customers, seed {args.seed})"
    )
    full: full_workload.FullWorkload | None = None
    if args.workload == "full":
        full = full_workload.build(
            args.events,
            args.customers,
            args.skew,
            args.seed,
            datetime.now(UTC),
            PARTITIONS,
            args.envelope_chunk,
            cuts=(naive_events, full_events),
        )
        summary = full.summary()
        singles, envelopes_all = full.singles, full.envelopes
        log(
            f"workload: {len(full.singles)} single records, {len(full.envelopes)} envelopes, "
            f"{len(full.drafts)} drafts, {len(full.consents)} consents, "
            f"{full.mean_event_bytes} bytes/event on average, built in {full.seconds} s"
        )
        mean_bytes = f"{full.mean_event_bytes} B/event"
    else:
        workload = build_workload(
            args.events, args.customers, args.skew, args.seed, args.envelope_chunk
        )
        summary = workload.summary()
        singles, envelopes_all = workload.singles, workload.envelopes
        log(
            f"workload: {summary['single_records']} single records, "
            f"{summary['envelope_records']} envelopes (~{summary['mean_events_per_envelope']} "
            f"events each, <= {ENVELOPE_MAX_EVENTS}), {workload.mean_event_bytes} bytes/event "
            f"on average, top customer {100 * workload.top_customer_share:.1f}% of events, "
            f"built in {workload.generate_seconds} s"
        )
        mean_bytes = (
            f"{workload.mean_event_bytes} B/event (min {workload.min_event_bytes}, max "
            f"{workload.max_event_bytes})"
        )
    specs = {
        CEILING: CaseSpec(CEILING, singles, args.events),
        NAIVE: CaseSpec(NAIVE, singles[:naive_events], naive_events),
        QUIX: CaseSpec(QUIX, singles, args.events),
        ENVELOPES: CaseSpec(ENVELOPES, envelopes_all, args.events),
        SINGLE: CaseSpec(SINGLE, singles, args.events),
        PACKS: CaseSpec(PACKS, envelopes_all, args.events),
    }
    bundles: list[tuple[str, str]] = []
    if full is not None:
        bundles = full_workload.bundles(args.generated_rules, args.rules_seed)
        prefix = full.prefix(full_events)
        side = {"message-drafts": prefix.drafts, "consents": full.consents}
        specs[FULL_ENVELOPES] = CaseSpec(
            FULL_ENVELOPES, prefix.envelopes, full_events, side, bundles
        )
        specs[FULL_SINGLE] = CaseSpec(FULL_SINGLE, prefix.singles, full_events, side, bundles)
    overrides: dict[str, str] = {}
    for item in args.warroom_setting:
        name, sep, value = item.partition("=")
        if not sep or name not in Settings.model_fields:
            print(
                f"--warroom-setting {item!r}: expected NAME=VALUE with a Settings field name",
                file=sys.stderr,
            )
            return 2
        overrides[name] = value
    reserved = {
        "app_id",
        "bootstrap_servers",
        "topic_prefix",
        "partitions",
        "data_dir",
        "web_port",
        "processing_guarantee",
    }
    if reserved & overrides.keys():
        print(f"--warroom-setting cannot set {', '.join(sorted(reserved))}", file=sys.stderr)
        return 2
    harness = Harness(
        bootstrap,
        args.guarantee,
        out_dir,
        run_id,
        args.timeout,
        args.profile_rate,
        args.top,
        overrides,
    )
    results: list[CaseResult] = []
    for repeat in range(1, args.repeat + 1):
        # Cases interleaved, so a change in background load hits all of them alike.
        results += [harness.run_case(specs[case], repeat=repeat) for case in args.cases]
    if args.profile:
        for case in args.cases:
            if case in WARROOM_CASES:
                results.append(harness.run_case(specs[case], profile=True))

    by_case = representative(results)
    table = render_table(results)
    notes = [
        f"guarantee: {args.guarantee}; {PARTITIONS} partitions; memory store; "
        f"{os.cpu_count()} CPUs shared with the broker (and anything else running)",
        f"workload ({args.workload}): seed {args.seed}, {args.customers} customers (Zipf "
        f"{args.skew}), {mean_bytes}; envelopes: {summary['envelope_records']} records",
    ]
    if overrides:
        shown = ", ".join(f"{k}={v}" for k, v in overrides.items())
        notes.append(f"Warroom settings overridden: {shown}")
    if naive_events != args.events:
        notes.append(
            f"naive ran over the first {naive_events:,} events of the same stream "
            f"(--naive-events); the Warroom cases over {args.events:,}"
        )
    if args.repeat > 1:
        notes.append(
            f"{args.repeat} runs per case, interleaved; the row is the run with the median "
            "events/s, ratios are between those rows"
        )
    if set(FULL_CASES) & by_case.keys():
        notes.append(
            f"full cases: the first {full_events:,} touchpoints of the same stream, with "
            f"{len(specs[FULL_SINGLE].side['message-drafts']):,} drafts judged by the "
            f"compliance gate and {len(specs[FULL_SINGLE].side['consents']):,} consent records; "
            "touchpoints/s counts touchpoints only, over the time to process all of them; "
            f"bundles: {', '.join(Path(source).stem for source, _ in bundles)}"
        )
    for case in WARROOM_CASES:
        ratio = _ratio(by_case, case)
        if ratio is not None:
            notes.append(f"{case} / naive = {ratio:.2f}x (events/s, same invocation)")
        if args.repeat > 1 and NAIVE in by_case:
            per_run = []
            for repeat in range(1, args.repeat + 1):
                pair = {r.case: r for r in results if r.repeat == repeat and not r.profiled}
                if case in pair and NAIVE in pair:
                    per_run.append(f"{pair[case].events_per_s / pair[NAIVE].events_per_s:.2f}x")
            notes.append(f"{case} / naive per repeat: {', '.join(per_run)}")
    if PACKS in by_case and ENVELOPES in by_case:
        packs = by_case[PACKS].events_per_s / by_case[ENVELOPES].events_per_s
        notes.append(
            f"{PACKS} / {ENVELOPES} = {packs:.2f}x: throughput with the {len(PACK_FILES)} "
            "example rule packs running, against the built-in rule alone (same invocation)"
        )
    short = sorted({r.case for r in results if not r.profiled and r.seconds < 10})
    if short:
        notes.append(f"under 10 s of work: {', '.join(short)}; raise --events for steadier numbers")
    sources = {r.sources for r in results if r.sources} | {sources_at_start}
    if len(sources) > 1:
        notes.append(
            "WARNING: the Warroom sources changed while this ran (fingerprints "
            f"{', '.join(sorted(sources))}); the cases did not all run the same code"
        )
    else:
        notes.append(f"sources: {sources_label}, fingerprint {sources_at_start}")
    if len({by_case[c].interventions for c in (ENVELOPES, SINGLE) if c in by_case}) > 1:
        notes.append(
            f"WARNING: intervention counts differ between {ENVELOPES} and {SINGLE} over the "
            "same events"
        )
    if all(c in by_case for c in FULL_CASES):
        notes.append(
            "interventions of the full cases: "
            + ", ".join(f"{c} {by_case[c].interventions:,}" for c in FULL_CASES)
            + " (they may differ: nothing orders consents, drafts and touchpoints across "
            "topics, and scores follow the models the learner has published so far)"
        )
    latencies: list[Any] = []
    if args.latency_rates and full is not None:
        latencies = run_latency(args, bootstrap, run_id, out_dir, overrides, full, bundles)
    state: Any = None
    if args.state_customers > 0 and full is not None:
        from bench.cases import state_bytes

        log(
            f"state bytes: {args.state_templates:,} customer histories through the full "
            f"pipeline, {args.state_customers:,} customers"
        )
        state = state_bytes.measure(args.state_customers, args.state_templates, args.seed, bundles)
    print()
    print(f"command: {command}")
    print(table)
    for note in notes:
        print(f"- {note}")
    if latencies:
        from bench.cases import latency

        print()
        print(
            "End-to-end latency, full pipeline, one record per event (produced -> "
            "intervention read by a read_committed consumer):"
        )
        print(latency.render(latencies))
    if state is not None:
        from bench.cases import state_bytes

        print()
        print("State per customer, full pipeline:")
        print(state_bytes.render(state))
    for result in results:
        if result.profiled and result.profile:
            print()
            print(render_profile(result))
    if args.json is not None:
        payload = {
            "command": command,
            "run_id": run_id,
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "host": {
                "cpus": os.cpu_count(),
                "python": platform.python_version(),
                "platform": platform.platform(),
            },
            "guarantee": args.guarantee,
            "sources": sources_label,
            "warroom_settings": overrides,
            "git_head": _git_head(),
            "sources_at_start": sources_at_start,
            "workload": summary,
            "results": [asdict(r) for r in results],
            "latency": [asdict(r) for r in latencies],
            "state": None if state is None else asdict(state),
            "ratios": {case: _ratio(by_case, case) for case in (ENVELOPES, SINGLE, PACKS)},
            "notes": notes,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(payload, indent=2))
    if args.markdown is not None:
        parts = [f"`{command}`", "", table, "", *[f"- {n}" for n in notes]]
        if latencies:
            from bench.cases import latency

            parts += ["", latency.render(latencies)]
        if state is not None:
            from bench.cases import state_bytes

            parts += ["", state_bytes.render(state)]
        for result in results:
            if result.profiled and result.profile:
                parts += ["", render_profile(result)]
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text("\n".join(parts) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
