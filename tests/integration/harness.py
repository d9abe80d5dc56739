"""Running a real worker process and reading topics the way a CRM consumer would."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError
from pydantic import SecretStr

from schemas.codec import encode_touchpoint
from schemas.models import Channel, Direction, TouchpointEvent
from streams.settings import Settings

REPO = Path(__file__).resolve().parents[2]


def touchpoint_record(
    customer: str,
    event_id: str,
    kind: str,
    at: datetime,
    *,
    channel: Channel,
    direction: Direction | str,
    rep_id: str | None,
    received_at: datetime | None = None,
    **attributes: Any,
) -> tuple[bytes, bytes]:
    """(key, value) of one touchpoint as a producer keyed by customer writes it; received
    when it occurred unless ``received_at`` says otherwise."""
    event = TouchpointEvent(
        event_id=event_id,
        customer_id=customer,
        occurred_at=at,
        received_at=at if received_at is None else received_at,
        channel=channel,
        kind=kind,
        direction=Direction(direction),
        rep_id=rep_id,
        source="it/1",
        attributes=attributes,
    )
    return customer.encode(), encode_touchpoint(event)


def settings_env(settings: Settings) -> dict[str, str]:
    env = dict(os.environ)
    for name, value in settings.model_dump().items():
        if value is None:
            continue
        secret = value.get_secret_value() if isinstance(value, SecretStr) else value
        env[f"WARROOM_{name.upper()}"] = str(secret)
    return env


class WorkerProcess:
    """``warroom worker`` in a child process, as it runs in production."""

    def __init__(self, settings: Settings, log: Path) -> None:
        self.settings = settings
        self.log = log
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        assert self._process is None, "worker already running"
        with self.log.open("ab") as out:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "streams.cli", "worker", "--loglevel", "INFO"],
                cwd=REPO,
                env=settings_env(self.settings),
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def kill(self) -> None:
        """Crash it: SIGKILL, no shutdown, no final commit."""
        if self._process is not None:
            self._process.send_signal(signal.SIGKILL)
            self._process.wait(timeout=30)
            self._process = None

    def stop(self) -> None:
        if self._process is None:
            return
        end_process(self._process, signal.SIGTERM)
        self._process = None

    def assert_alive(self) -> None:
        if self._process is not None and self._process.poll() is not None:
            raise AssertionError(
                f"worker exited with {self._process.returncode}; log:\n{self.tail_log()}"
            )

    def tail_log(self, lines: int = 60) -> str:
        if not self.log.exists():
            return "(no log)"
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


def end_process(process: subprocess.Popen[bytes], how: signal.Signals) -> None:
    """Ask ``process`` to stop with ``how``; SIGKILL if it has not within 30 s."""
    process.send_signal(how)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=30)


async def answers_200(url: str) -> bool:
    """Whether a GET of ``url`` answers 200 within 5 s."""
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session,
            session.get(url) as response,
        ):
            return response.status == 200
    except (aiohttp.ClientError, TimeoutError):
        return False


class ChatProcess:
    """``warroom chat serve`` in a child process: one replica of the chat connector."""

    def __init__(
        self, settings: Settings, log: Path, port: int, instance_id: str | None = None
    ) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log = log
        self._command = [sys.executable, "-m", "streams.cli", "chat", "serve"]
        self._command += ["--port", str(port)]
        if instance_id is not None:
            self._command += ["--instance-id", instance_id]
        self._env = settings_env(settings)
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self._process = subprocess.Popen(
                self._command, cwd=REPO, env=self._env, stdout=out, stderr=subprocess.STDOUT
            )

    def stop(self) -> None:
        if self._process is None:
            return
        end_process(self._process, signal.SIGINT)
        self._process = None

    async def ready(self) -> bool:
        """Whether ``/readyz`` answers 200 now; AssertionError if the process has ended."""
        if self._process is None or self._process.poll() is not None:
            tail = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise AssertionError(f"{self.log.name}: the chat connector exited:\n{tail}")
        return await answers_200(f"{self.url}/readyz")

    async def wait_ready(self, within: float = 30.0) -> None:
        deadline = time.monotonic() + within
        while not await self.ready():
            if time.monotonic() > deadline:
                raise AssertionError(f"chat connector not ready:\n{self.log.read_text()}")
            await asyncio.sleep(0.2)


@contextlib.contextmanager
def cpu_load(processes: int = 2) -> Iterator[None]:
    """Keep ``processes`` cores busy, so startup races that a quiet machine hides show up
    (the worker then takes seconds, not milliseconds, between its startup steps)."""
    burners = [
        subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(processes)
    ]
    try:
        yield
    finally:
        for burner in burners:
            burner.kill()
            burner.wait(timeout=30)


@contextlib.asynccontextmanager
async def committed_reader(
    settings: Settings, name: str
) -> AsyncIterator[tuple[AIOKafkaConsumer, list[TopicPartition]]]:
    """A consumer at the start of every partition of a topic, reading like a CRM would:
    read_committed, so records of aborted transactions stay invisible."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers,
        isolation_level="read_committed",
        enable_auto_commit=False,
        group_id=None,
    )
    await consumer.start()
    try:
        topic = settings.topic(name)
        numbers = None
        for _ in range(50):  # metadata of a just-created topic can lag a moment
            cluster = await consumer._client.fetch_all_metadata()
            numbers = cluster.partitions_for_topic(topic)
            if numbers:
                break
            await asyncio.sleep(0.2)
        assert numbers, f"topic {topic!r} does not exist"
        partitions = [TopicPartition(topic, p) for p in sorted(numbers)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        yield consumer, partitions
    finally:
        await consumer.stop()


async def read_topic(
    settings: Settings,
    name: str,
    until: Callable[[list[Any]], bool],
    decode: Callable[[bytes], Any],
    worker: WorkerProcess | None = None,
    within: float = 90.0,
) -> list[Any]:
    """Committed records of a topic from the beginning, decoded, until ``until`` holds."""
    async with committed_reader(settings, name) as (consumer, _):
        found: list[Any] = []
        deadline = time.monotonic() + within
        while not until(found):
            if worker is not None:
                worker.assert_alive()
            if time.monotonic() > deadline:
                log = worker.tail_log() if worker else ""
                raise AssertionError(f"timed out reading {name}; got {found!r}\n{log}")
            for records in (await consumer.getmany(timeout_ms=500)).values():
                found.extend(decode(r.value or b"") for r in records)
        return found


async def read_to_end(
    settings: Settings, name: str
) -> dict[TopicPartition, list[ConsumerRecord[Any, Any]]]:
    """Every committed record of a topic right now, by partition."""
    async with committed_reader(settings, name) as (consumer, partitions):
        ends = await consumer.end_offsets(partitions)
        found: dict[TopicPartition, list[ConsumerRecord[Any, Any]]] = defaultdict(list)
        while [tp for tp, end in ends.items() if await consumer.position(tp) < end]:
            for tp, records in (await consumer.getmany(timeout_ms=500)).items():
                found[tp].extend(records)
        return found


async def read_all(settings: Settings, name: str, decode: Callable[[bytes], Any]) -> list[Any]:
    """Every committed record of a topic right now, decoded."""
    by_partition = await read_to_end(settings, name)
    return [decode(r.value or b"") for records in by_partition.values() for r in records]


async def produce_raw(settings: Settings, records: list[tuple[bytes | None, bytes]]) -> None:
    """Write records to touchpoints exactly as given, like a foreign producer would."""
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, acks="all")
    await producer.start()
    try:
        for key, value in records:
            await producer.send_and_wait(settings.topic("touchpoints"), value, key=key)
    finally:
        await producer.stop()


async def last_offsets(settings: Settings, name: str) -> dict[TopicPartition, int]:
    """Offset of the last committed record per partition (transaction markers excluded)."""
    by_partition = await read_to_end(settings, name)
    return {tp: records[-1].offset for tp, records in by_partition.items() if records}


async def wait_until_committed(
    settings: Settings, worker: WorkerProcess, within: float = 60.0
) -> None:
    """Block until the worker's group has committed every touchpoint written so far."""
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.errors import GroupCoordinatorNotAvailableError

    last = await last_offsets(settings, "touchpoints")
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
    await admin.start()
    try:
        deadline = time.monotonic() + within
        while True:
            worker.assert_alive()
            try:
                committed = await admin.list_consumer_group_offsets(settings.app_id)
            except GroupCoordinatorNotAvailableError:
                committed = {}  # a fresh broker: the worker has not joined its group yet
            behind = {
                tp: offset
                for tp, offset in last.items()
                if tp not in committed or committed[tp].offset <= offset
            }
            if not behind:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"not committed past {behind}\n{worker.tail_log()}")
            await asyncio.sleep(0.2)
    finally:
        await admin.close()


# --------------------------------------------------------------------------- chaos helpers


def worker_pid(worker: WorkerProcess) -> int | None:
    """Process id of the running worker, or None when it is not running."""
    process = worker._process
    return None if process is None or process.poll() is not None else process.pid


def worker_exit_code(worker: WorkerProcess) -> int | None:
    """Exit code of a worker that has exited by itself; None while it runs (or never ran)."""
    process = worker._process
    return None if process is None else process.poll()


def forget_exited(worker: WorkerProcess) -> None:
    """After the worker exited by itself, make it startable again (a supervisor's restart)."""
    process = worker._process
    assert process is not None and process.poll() is not None, "worker is still running"
    worker._process = None


async def produce_records(
    settings: Settings,
    records: list[tuple[int | None, bytes | None, bytes | None]],
    topic: str = "touchpoints",
    max_request_size: int = 2 * 1024 * 1024,
) -> None:
    """Write (partition, key, value) records fast, pipelined, in order per partition;
    ``partition`` None lets the key decide, as Kafka's default partitioner would."""
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.bootstrap_servers,
        acks="all",
        enable_idempotence=True,
        max_request_size=max_request_size,
        linger_ms=5,
    )
    await producer.start()
    try:
        name = settings.topic(topic)
        pending = []
        for partition, key, value in records:
            pending.append(await producer.send(name, value, key=key, partition=partition))
            if len(pending) >= 2000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()


@contextlib.asynccontextmanager
async def group_progress(
    settings: Settings, topic: str = "touchpoints"
) -> AsyncIterator[Callable[[], Awaitable[tuple[int, int]]]]:
    """A probe returning (records the worker group has committed past, records in the
    topic), summed over the partitions of ``topic``; one connection for many calls."""
    from aiokafka.admin import AIOKafkaAdminClient

    consumer = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap_servers, group_id=None)
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
    await consumer.start()
    await admin.start()
    try:
        name = settings.topic(topic)
        cluster = await consumer._client.fetch_all_metadata()
        numbers = cluster.partitions_for_topic(name) or set()
        assert numbers, f"topic {name!r} does not exist"
        partitions = [TopicPartition(name, p) for p in sorted(numbers)]

        async def probe() -> tuple[int, int]:
            ends = await consumer.end_offsets(partitions)
            try:
                committed = await admin.list_consumer_group_offsets(settings.app_id)
            except KafkaError as exc:
                if not exc.retriable:
                    raise
                committed = {}  # e.g. the group coordinator is not elected yet
            done = sum(
                min(committed[tp].offset, ends[tp])
                for tp in partitions
                if tp in committed and committed[tp].offset >= 0
            )
            return done, sum(ends.values())

        yield probe
    finally:
        await consumer.stop()
        await admin.close()


# --------------------------------------------------------------------------- slow bundles

BACKLOG_KINDS: tuple[tuple[str, Channel, Direction], ...] = (
    ("message_sent", Channel.CHAT, Direction.OUTBOUND),
    ("message_received", Channel.CHAT, Direction.INBOUND),
    ("email_sent", Channel.EMAIL, Direction.OUTBOUND),
    ("email_received", Channel.EMAIL, Direction.INBOUND),
    ("call_made", Channel.CALL, Direction.OUTBOUND),
    ("meeting_held", Channel.MEETING, Direction.NONE),
    ("quote_sent", Channel.EMAIL, Direction.OUTBOUND),
    ("page_viewed", Channel.WEB, Direction.NONE),
    ("document_downloaded", Channel.WEB, Direction.NONE),
    ("video_watched", Channel.WEB, Direction.NONE),
    ("login", Channel.PRODUCT, Direction.NONE),
    ("feature_used", Channel.PRODUCT, Direction.NONE),
    ("sandbox_error", Channel.PRODUCT, Direction.NONE),
    ("trial_started", Channel.PRODUCT, Direction.NONE),
    ("purchase", Channel.POS, Direction.INBOUND),
    ("payment_failed", Channel.POS, Direction.NONE),
    ("payment_succeeded", Channel.POS, Direction.NONE),
    ("support_chat", Channel.SUPPORT, Direction.INBOUND),
    ("ticket_opened", Channel.SUPPORT, Direction.INBOUND),
    ("stage_changed", Channel.CRM, Direction.NONE),
)
"""Twenty touchpoint kinds (with their channel and direction) that slow bundles and
backlogs share."""

_SLOW_CONDITIONS = (
    "{{event: {{kind: {k}, attributes.score: {{eq: {v}}}}}}}",
    "{{count: {{of: {{kind: {k}, attributes.tier: t{t}}}, within: 2h, at_least: 3}}}}",
    "{{streak: {{of: {{kind: {k}, attributes.tier: t{t}}}, reset_by: {{kind: {k2}}}, "
    "length: {n}}}}}",
    "{{sequence: {{within: 1h, steps: [{{kind: {k}, attributes.tier: t{t}}}, "
    "{{kind: {k2}, attributes.score: {{gte: {w}}}}}]}}}}",
    "{{sum: {{of: {{kind: {k}}}, field: attributes.score, within: 30m, at_least: {s}}}}}",
    "{{all: [{{event: {{kind: {k}, channel: {c}}}}}, {{not: {{event: {{attributes.tier: "
    "t{t}}}}}}}, {{state: {{count.{k}: {{gte: {g}}}}}}}]}}",
    "{{any: [{{event: {{kind: {k}, text: {{matches: 'renew.*r{i}$'}}}}}}, "
    "{{count: {{of: {{kind: {k2}, attributes.score: {{lt: {m}}}}}, within: 1h, "
    "at_least: 2}}}}]}}",
)


def slow_bundle(rules: int, name: str = "slow", seed: int = 11) -> str:
    """YAML of a bundle of ``rules`` generated rules over :data:`BACKLOG_KINDS`: event
    predicates, count and sum windows, streaks, sequences and all/any/not, each narrowed
    by attributes so that few of them fire, all of them evaluated at every touchpoint."""
    rng = random.Random(seed)
    lines = [f"bundle: {name}", "version: 1", "rules:"]
    for i in range(rules):
        kind = BACKLOG_KINDS[rng.randrange(len(BACKLOG_KINDS))]
        other = BACKLOG_KINDS[rng.randrange(len(BACKLOG_KINDS))]
        condition = _SLOW_CONDITIONS[i % len(_SLOW_CONDITIONS)].format(
            i=i,
            k=kind[0],
            k2=other[0] if other[0] != kind[0] else BACKLOG_KINDS[0][0],
            c=kind[1].value,
            v=rng.randrange(1000),
            t=rng.randrange(5),
            n=rng.randrange(2, 6),
            w=rng.randrange(900, 1000),
            s=rng.randrange(2500, 4000),
            m=rng.randrange(10, 60),
            g=rng.randrange(4, 9),
        )
        lines.append(
            f"  - {{id: {name}.r{i}, cooldown: 1d, when: {condition}, "
            f"then: {{kind: task, title: 'r{i} for {{customer_id}}', due_in: 1h}}}}"
        )
    return "\n".join(lines) + "\n"


def backlog_events(
    count: int, customers: int, seed: int, tag: str, span: timedelta = timedelta(hours=4)
) -> list[TouchpointEvent]:
    """``count`` touchpoints of ``customers`` customers over the ``span`` before now, in
    time order, of the kinds a :func:`slow_bundle` tests."""
    rng = random.Random(seed)
    start = datetime.now(UTC) - span - timedelta(minutes=1)
    step = span / max(1, count)
    events = []
    for number in range(count):
        kind, channel, direction = BACKLOG_KINDS[rng.randrange(len(BACKLOG_KINDS))]
        at = start + step * number
        events.append(
            TouchpointEvent(
                event_id=f"{tag}-e{number}",
                customer_id=f"{tag}-{rng.randrange(customers):04d}",
                occurred_at=at,
                received_at=at,
                channel=channel,
                kind=kind,
                direction=direction,
                rep_id=f"rep-{rng.randrange(20):02d}",
                source="backlog/1",
                text=f"about the renewal r{rng.randrange(1000)}"
                if channel is Channel.CHAT
                else None,
                attributes={"score": rng.randrange(1000), "tier": f"t{rng.randrange(5)}"},
            )
        )
    return events


async def worker_metrics(settings: Settings) -> str:
    """The worker's /metrics page (Prometheus text)."""
    import aiohttp

    url = f"http://{settings.web_host}:{settings.web_port}/metrics"
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session,
        session.get(url) as response,
    ):
        return await response.text()


def histogram_summary(text: str, name: str) -> tuple[int, float, float]:
    """(observations, sum, upper bound of the longest one) of a Prometheus histogram in
    ``text``: the smallest bucket bound that holds every observation (inf when only the
    +Inf bucket does)."""
    count, total = 0, 0.0
    buckets: list[tuple[float, float]] = []
    for line in text.splitlines():
        if line.startswith(f"{name}_count"):
            count = int(float(line.rsplit(" ", 1)[1]))
        elif line.startswith(f"{name}_sum"):
            total = float(line.rsplit(" ", 1)[1])
        elif line.startswith(f"{name}_bucket{{"):
            bound = line.split('le="', 1)[1].split('"', 1)[0]
            buckets.append((float(bound), float(line.rsplit(" ", 1)[1])))
    longest = min((bound for bound, n in buckets if n >= count), default=float("inf"))
    return count, total, longest
