"""Seeded touchpoint loads, the oracle that says which interventions they must cause,
and the checks every chaos scenario shares."""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError, KafkaError

from connectors.publisher import envelopes
from engine.builtin import BUILTIN_BUNDLE
from engine.bundle import load_bundle
from engine.rulebook import RuleBook
from schemas.codec import decode_intervention, encode_touchpoint
from schemas.models import Channel, Direction, InterventionCommand, TouchpointEvent
from schemas.partitioning import customer_partition
from streams.app import build_pipeline
from streams.pipeline import BatchResult, Pipeline, RawRecord
from streams.settings import Settings
from tests.integration.harness import (
    WorkerProcess,
    forget_exited,
    read_all,
    read_to_end,
    worker_exit_code,
)

SCALE_ENV = "WARROOM_CHAOS_SCALE"

Record = tuple[int | None, bytes | None, bytes | None]
"""(partition, key, value) as produced; partition None: the key decides."""


@dataclass(frozen=True)
class Scale:
    name: str
    kill_touchpoints: int
    kills: int
    broker_touchpoints: int
    scale_touchpoints: int
    malformed: int
    malformed_valid_touchpoints: int
    huge_records: int
    touchpoints_per_second: int
    """How fast the scenarios feed the worker while they disturb it."""
    scale_touchpoints_per_second: int
    """Slower while workers come and go, so that the three workers share live load."""


REDUCED = Scale(
    name="reduced",
    kill_touchpoints=12_000,
    kills=2,
    broker_touchpoints=6_000,
    scale_touchpoints=5_000,
    malformed=1_000,
    malformed_valid_touchpoints=4_000,
    huge_records=4,
    touchpoints_per_second=4_000,
    scale_touchpoints_per_second=1_000,
)
FULL = Scale(
    name="full",
    kill_touchpoints=200_000,
    kills=8,
    broker_touchpoints=60_000,
    scale_touchpoints=100_000,
    malformed=10_000,
    malformed_valid_touchpoints=40_000,
    huge_records=20,
    touchpoints_per_second=5_000,
    scale_touchpoints_per_second=2_000,
)


def scale_from_env() -> Scale:
    name = os.environ.get(SCALE_ENV, "").strip() or REDUCED.name
    for scale in (REDUCED, FULL):
        if scale.name == name:
            return scale
    raise ValueError(f"{SCALE_ENV} must be {REDUCED.name!r} or {FULL.name!r}, found {name!r}")


# --------------------------------------------------------------------------- load

# (weight, channel, kind, direction): outbound-heavy, so the built-in streak rule
# (3 outbound messages without an inbound reply) fires often and depends on counts.
_KINDS = (
    (0.30, Channel.CHAT, "message_sent", Direction.OUTBOUND),
    (0.22, Channel.EMAIL, "email_sent", Direction.OUTBOUND),
    (0.14, Channel.CHAT, "message_received", Direction.INBOUND),
    (0.06, Channel.EMAIL, "email_received", Direction.INBOUND),
    (0.20, Channel.PRODUCT, "feature_used", Direction.NONE),
    (0.08, Channel.WEB, "page_view", Direction.NONE),
)


def generate_events(
    n: int, customers: int, seed: int, tag: str, span: timedelta = timedelta(hours=6)
) -> list[TouchpointEvent]:
    """``n`` touchpoints of ``customers`` customers over the ``span`` before now, in time
    order (so no customer's touchpoint is ever late)."""
    rng = random.Random(seed)
    weights = [k[0] for k in _KINDS]
    start = datetime.now(UTC) - span - timedelta(minutes=1)
    step = span / max(1, n)
    events = []
    for number in range(n):
        _, channel, kind, direction = rng.choices(_KINDS, weights)[0]
        customer = f"{tag}-{rng.randrange(customers):05d}"
        at = start + step * number
        events.append(
            TouchpointEvent(
                event_id=f"{tag}-e{number}",
                customer_id=customer,
                occurred_at=at,
                received_at=at,
                channel=channel,
                kind=kind,
                direction=direction,
                rep_id=f"rep-{rng.randrange(40):02d}",
                source="chaos/1",
                text="checking in on the renewal" if channel is Channel.CHAT else None,
            )
        )
    return events


def encode_mixed(
    events: Sequence[TouchpointEvent], partitions: int, rng: random.Random
) -> list[Record]:
    """Events as records, in order: runs of single records keyed by customer mixed with
    envelopes of up to 40 events of one partition (key None)."""
    records: list[Record] = []
    for start in range(0, len(events), 200):
        chunk = events[start : start + 200]
        if rng.random() < 0.4:
            for event in chunk:
                records.append((None, event.customer_id.encode(), encode_touchpoint(event)))
        else:
            records.extend(envelopes(chunk, partitions, max_events=40))
    return records


async def produce_paced(
    settings: Settings,
    records: Sequence[Record],
    events_per_record: float,
    per_second: int,
    progress: list[int] | None = None,
    until: asyncio.Event | None = None,
) -> int:
    """Produce ``records`` in slices ten times a second at about ``per_second`` events;
    returns how many were sent. ``progress[0]`` counts the records sent so far; when
    ``until`` is set, stop after the slice being sent."""
    started = time.monotonic()
    per_slice = max(1, int(per_second / 10 / max(events_per_record, 1e-9)))
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.bootstrap_servers,
        acks="all",
        enable_idempotence=True,
        linger_ms=5,
        request_timeout_ms=120_000,
    )
    await producer.start()
    try:
        topic = settings.topic("touchpoints")
        for index, begin in enumerate(range(0, len(records), per_slice)):
            chunk = records[begin : begin + per_slice]
            for attempt in range(30):
                try:
                    sent = [
                        await producer.send(topic, value, key=key, partition=partition)
                        for partition, key, value in chunk
                    ]
                    await asyncio.gather(*sent)
                    break
                except KafkaError:  # the broker is away: send the slice again (the
                    if attempt == 29:  # worker drops repeated event ids)
                        raise
                    await asyncio.sleep(1)
            done = begin + len(sent)
            if progress is not None:
                progress[0] = done
            if until is not None and until.is_set():
                return done
            ahead = started + (index + 1) * 0.1 - time.monotonic()
            if ahead > 0:
                await asyncio.sleep(ahead)
    finally:
        await producer.stop()
    return len(records)


# --------------------------------------------------------------------------- oracle


def oracle_pipeline(settings: Settings, bundles: Sequence[str] = ()) -> Pipeline:
    """A fresh Pipeline configured as the worker configures its own."""
    rulebook = RuleBook(BUILTIN_BUNDLE, *(load_bundle(text, "chaos") for text in bundles))
    return build_pipeline(settings, rulebook)


async def oracle(settings: Settings, bundles: Sequence[str] = ()) -> BatchResult:
    """What the worker must have decided: the touchpoints topic as Kafka holds it (offset
    order per partition), run through a fresh Pipeline without Kafka."""
    by_partition = await read_to_end(settings, "touchpoints")
    records = [
        RawRecord(r.topic, r.partition, r.offset, r.key, r.value)
        for tp in sorted(by_partition, key=lambda tp: tp.partition)
        for r in by_partition[tp]
    ]
    return oracle_pipeline(settings, bundles).process(records, lambda _: None, datetime.now(UTC))


@dataclass
class Verdict:
    expected: int
    emitted: int
    duplicates: dict[str, int] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    described: dict[str, str] = field(default_factory=dict)
    """Rule, customer and triggering events of every intervention id seen."""

    def figures(self) -> dict[str, int]:
        return {
            "interventions_expected": self.expected,
            "interventions_emitted": self.emitted,
            "duplicates": sum(n - 1 for n in self.duplicates.values()),
            "missing": len(self.missing),
            "unexpected": len(self.unexpected),
        }

    def problems(self) -> str:
        def show(ids: Sequence[str]) -> str:
            return "".join(f"\n  {i[:8]} {self.described.get(i, '')}" for i in ids[:10])

        return (
            f"{len(self.missing)} missing:{show(self.missing)}\n"
            f"{len(self.duplicates)} duplicated:{show(sorted(self.duplicates))}\n"
            f"{len(self.unexpected)} unexpected:{show(self.unexpected)}"
        )

    @property
    def exact(self) -> bool:
        return not (self.duplicates or self.missing or self.unexpected)


def compare(
    expected: Sequence[InterventionCommand], emitted: Sequence[InterventionCommand]
) -> Verdict:
    wanted = Counter(c.intervention_id for c in expected)
    assert all(n == 1 for n in wanted.values()), "the oracle itself repeats an intervention id"
    found = Counter(c.intervention_id for c in emitted)
    described = {
        c.intervention_id: (
            f"{c.rule_id} {c.customer_id} events={list(c.explanation.triggering_event_ids)[-4:]}"
        )
        for c in (*expected, *emitted)
    }
    return Verdict(
        described=described,
        expected=len(wanted),
        emitted=sum(found.values()),
        duplicates={i: n for i, n in found.items() if n > 1},
        missing=sorted(set(wanted) - set(found)),
        unexpected=sorted(set(found) - set(wanted)),
    )


async def emitted_interventions(settings: Settings) -> list[InterventionCommand]:
    """Every committed intervention, read like a CRM would (read_committed)."""
    found: list[InterventionCommand] = await read_all(
        settings, "interventions", decode_intervention
    )
    return found


# --------------------------------------------------------------------------- waiting


async def wait_for(
    condition: Callable[[], Awaitable[bool]],
    what: str,
    within: float,
    workers: Sequence[WorkerProcess] = (),
    every: float = 0.1,
) -> float:
    """Poll until ``condition`` holds; returns the seconds it took."""
    started = time.monotonic()
    while not await condition():
        for worker in workers:
            code = worker_exit_code(worker)
            if code is not None:
                raise AssertionError(f"{worker.log.name} exited with {code}:\n{short_tail(worker)}")
        if time.monotonic() - started > within:
            logs = "\n".join(f"--- {w.log.name}\n{short_tail(w)}" for w in workers)
            raise AssertionError(f"timed out after {within:.0f} s waiting for {what}\n{logs}")
        await asyncio.sleep(every)
    return time.monotonic() - started


def customer_on(partition: int, partitions: int, tag: str) -> str:
    for n in range(100_000):
        name = f"{tag}-{n}"
        if customer_partition(name, partitions) == partition:
            return name
    raise AssertionError(f"no customer name found for partition {partition}")


def tracebacks(worker: WorkerProcess) -> list[str]:
    """Lines of the worker's log that start a Python traceback."""
    if not worker.log.exists():
        return []
    return [
        line for line in worker.log.read_text(errors="replace").splitlines() if "Traceback" in line
    ]


def log_lines(worker: WorkerProcess, text: str) -> int:
    """How many lines of the worker's log contain ``text``."""
    if not worker.log.exists():
        return 0
    return sum(text in line for line in worker.log.read_text(errors="replace").splitlines())


RECOVERY_CUT_SHORT = "Aborted tx until highwater"
"""Faust's log line when it takes the rest of a changelog partition for aborted records
and ends its recovery there: with exact highwaters it should never appear."""
TRANSACTION_KEPT_OPEN = "IN_TRANSACTION -> TransactionState.IN_TRANSACTION"
"""Faust's log line when a producer kept through a rebalance is still in a transaction."""


@dataclass
class Supervisor:
    """Restarts workers that exit by themselves, as systemd or Kubernetes would, and
    remembers each exit."""

    workers: Sequence[WorkerProcess]
    exits: list[str] = field(default_factory=list)
    max_restarts: int = 10
    """More exits than this end the scenario: the worker cannot start at all."""

    def check(self) -> None:
        for worker in self.workers:
            code = worker_exit_code(worker)
            if code is None:
                continue
            last = [line for line in worker.tail_log(400).splitlines() if line.strip()]
            cause = next(
                (line for line in reversed(last) if "Error" in line or "error" in line),
                last[-1] if last else "(empty log)",
            )
            self.exits.append(f"{worker.log.name}: exit {code} ({cause.strip()[:300]})")
            forget_exited(worker)
            if len(self.exits) > self.max_restarts:
                raise AssertionError(f"workers keep exiting: {self.exits}")
            worker.start()

    async def wait_for(
        self, condition: Callable[[], Awaitable[bool]], what: str, within: float
    ) -> float:
        """Like :func:`wait_for`, restarting exited workers instead of failing."""
        started = time.monotonic()
        while True:
            try:
                if await condition():
                    return time.monotonic() - started
            except KafkaError as exc:  # the broker is away: keep waiting
                if not exc.retriable and not isinstance(exc, KafkaConnectionError):
                    raise
            self.check()
            if time.monotonic() - started > within:
                logs = "\n".join(f"--- {w.log.name}\n{short_tail(w)}" for w in self.workers)
                raise AssertionError(
                    f"timed out after {within:.0f} s waiting for {what}; exits: {self.exits}\n"
                    f"{logs}"
                )
            await asyncio.sleep(0.2)


async def touchpoints_processed(worker: WorkerProcess) -> float | None:
    """The worker's own count of touchpoints processed (its /metrics page), or None when
    it does not answer."""
    import aiohttp

    url = f"http://{worker.settings.web_host}:{worker.settings.web_port}/metrics"
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session,
            session.get(url) as response,
        ):
            text = await response.text()
    except (aiohttp.ClientError, TimeoutError):
        return None
    total = 0.0
    for line in text.splitlines():
        if line.startswith("warroom_touchpoints_total{") and 'outcome="processed"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


async def where_emitted(settings: Settings, ids: Sequence[str], limit: int = 10) -> list[str]:
    """Where each copy of the given intervention ids sits on the interventions topic:
    partition, offset, append time and rule, to line them up with the worker logs."""
    wanted = set(list(ids)[:limit])
    found: list[str] = []
    for tp, records in (await read_to_end(settings, "interventions")).items():
        for record in records:
            command = decode_intervention(record.value or b"")
            if command.intervention_id in wanted:
                at = datetime.fromtimestamp(record.timestamp / 1000, UTC).strftime("%H:%M:%S.%f")
                found.append(
                    f"{command.intervention_id[:8]} p{tp.partition}@{record.offset} {at[:-3]} "
                    f"{command.rule_id} {command.customer_id} "
                    f"events={list(command.explanation.triggering_event_ids)[-3:]}"
                )
    return sorted(found)


async def state_history(settings: Settings, customers: set[str], limit: int = 6) -> list[str]:
    """Each committed changelog record of the customers' states: where, when, how many
    touchpoints and the last event ids, to see a state that went back in time."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from streams.state_codec import CustomerStateCodec

    codec = CustomerStateCodec()
    topic = f"{settings.app_id}-customer-state-changelog"
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers,
        isolation_level="read_committed",
        enable_auto_commit=False,
        group_id=None,
    )
    await consumer.start()
    lines: list[str] = []
    try:
        partitions = {customer_partition(c, settings.partitions) for c in customers}
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)

        async def behind() -> bool:
            return any([await consumer.position(tp) < end for tp, end in ends.items()])

        while await behind():
            for tp, records in (await consumer.getmany(timeout_ms=500)).items():
                for record in records:
                    key = (record.key or b"").decode()
                    if key not in customers or record.value is None:
                        continue
                    state = codec.loads(record.value)
                    at = datetime.fromtimestamp(record.timestamp / 1000, UTC)
                    last = list(state.recent_event_ids)[-limit:]
                    lines.append(
                        f"{key} p{tp.partition}@{record.offset} {at:%H:%M:%S.%f} "
                        f"touchpoints={state.touchpoints} last={last}"
                    )
    finally:
        await consumer.stop()
    return lines


def short_tail(worker: WorkerProcess, lines: int = 40, width: int = 300) -> str:
    """The end of a worker's log with each line cut to ``width`` characters (hostile
    bundles put very long names in log lines)."""
    return "\n".join(line[:width] for line in worker.tail_log(lines).splitlines())
