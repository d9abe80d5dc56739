"""The Faust application: topics, the customer-state table and the touchpoint agent.

The agent takes Kafka records in batches, runs the pure engine over every
touchpoint in them and writes each changed customer's state once per batch,
with the batch's interventions and dead letters, as Kafka record batches
(:mod:`streams.writer`). The batch's records are acknowledged right after, and
a lock keeps the consumer from committing in between, so a commit (with
exactly-once: a transaction) holds a batch's output and its offsets together,
or neither.

State lives in the table's in-memory store, which Faust rebuilds from the
changelog topic when partitions are assigned.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import faust
import orjson
from faust.types import EventT, StreamT
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from engine.assignees import Admission, Sent, admit, assignee_key
from engine.builtin import BUILTIN_BUNDLE
from engine.conditions import micros
from engine.explain import explain, explain_journeys
from engine.rulebook import RuleBook
from engine.state import CustomerState
from engine.timestamps import TimestampPolicy
from schemas.codec import decode_intervention, encode_dead_letter
from schemas.partitioning import customer_partition
from schemas.topics import (
    AUDIT,
    DLQ,
    FEEDBACK,
    INTERVENTIONS,
    METRICS,
    REP_CANDIDATES,
    TIMERS,
    TOUCHPOINTS,
)

from .analytics import Analytics, publish_metrics
from .flow import install_lossless_resume
from .metrics import WorkerMetrics
from .pipeline import BatchResult, Pipeline, RawRecord
from .rules_feed import follow_rules
from .settings import Guarantee, Settings
from .state_codec import CustomerStateCodec, SentCodec, Utf8Codec
from .timers import Expiry, Schedule, run_scheduler
from .transactions import BatchCommitLock, install_commit_lock, install_exactly_once_commit
from .web import admin_only
from .writer import BatchWriter, OutRecord

ASSIGNEE_TABLE = "assignee-sent"
STATE_TABLE = "customer-state"
ASSIGNEE_CODEC = SentCodec()
RECORDS_PER_SLICE = 8
"""The worker yields to the event loop after this many records of a slice."""
EXIT_BUG = 70
"""Exit status when batch handling itself fails (EX_SOFTWARE)."""
log = logging.getLogger(__name__)


@dataclass
class Warroom:
    """One worker: the Faust app and the parts tests and the CLI need to reach."""

    settings: Settings
    app: faust.App
    touchpoints: faust.TopicT
    states: faust.Table[str, Any]
    metrics: WorkerMetrics
    pipeline: Pipeline
    writer: BatchWriter
    commit_lock: BatchCommitLock
    state_codec: CustomerStateCodec
    schedule: Schedule
    analytics: Analytics
    assignees: faust.Table[str, Any]

    def stored_state(self, customer_id: str) -> CustomerState | None:
        """The customer's state as of the last batch (in-memory store, no copy)."""
        store: Any = self.states.data
        found: CustomerState | None = store.data.get(customer_id)
        return found


def create_app(settings: Settings) -> Warroom:
    """Build a worker from ``settings``; nothing is started or connected yet."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        settings.app_id,
        broker=f"kafka://{settings.bootstrap_servers}",
        store=settings.store,
        datadir=str(settings.data_dir / settings.app_id),
        processing_guarantee=settings.processing_guarantee.value,
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        web_host=settings.web_host,
        web_port=settings.web_port,
        web_bind=settings.web_host,
        autodiscover=False,
        broker_commit_interval=settings.commit_interval_seconds,
        consumer_auto_offset_reset="earliest",
        table_standby_replicas=0,
        producer_linger_ms=5,
        broker_session_timeout=settings.session_timeout_seconds,
        # The check compares an on-disk store's persisted changelog offsets with the
        # highwaters; the in-memory store persists nothing, and the offsets Faust
        # keeps from an earlier recovery of a partition it still owns are not a
        # store's.
        recovery_consistency_check=False,
        broker_heartbeat_interval=min(3.0, settings.session_timeout_seconds / 3),
        producer_max_request_size=settings.max_record_bytes + 65_536,
        # Faust's own views would show every table's contents to anyone on the port.
        web_router_enabled=False,
        web_tables_enabled=False,
        web_graph_enabled=False,
        web_stats_enabled=False,
    )
    exactly_once = settings.processing_guarantee is Guarantee.EXACTLY_ONCE
    if exactly_once:
        install_exactly_once_commit(app, settings.transaction_timeout_seconds)
    commit_lock = BatchCommitLock()
    install_commit_lock(app, commit_lock)
    install_lossless_resume(app)
    # Interventions waiting for a per-rep cap come back on rep-candidates, keyed by
    # assignee; the same agent reads them so they share batches and transactions.
    touchpoints = app.topic(
        settings.topic(TOUCHPOINTS),
        settings.topic(TIMERS),
        settings.topic(REP_CANDIDATES),
        key_serializer="raw",
        value_serializer="raw",
        partitions=settings.partitions,
    )
    states = cast(
        faust.Table[str, Any], app.Table(STATE_TABLE, key_type=str, partitions=settings.partitions)
    )
    # Codec instances rather than registry names. Faust picks a table's codecs
    # from its key and value types and builds the changelog topic with them as
    # soon as the table is declared, so set ours and rebuild the topic (same
    # name) before anything subscribes to it.
    state_codec = CustomerStateCodec()
    states.key_serializer = Utf8Codec()
    states.value_serializer = state_codec
    states.changelog_topic = states._new_changelog_topic()
    assignees = cast(
        faust.Table[str, Any],
        app.Table(ASSIGNEE_TABLE, key_type=str, partitions=settings.partitions),
    )
    assignees.key_serializer = Utf8Codec()
    assignees.value_serializer = ASSIGNEE_CODEC
    assignees.changelog_topic = assignees._new_changelog_topic()
    metrics = WorkerMetrics.create()
    rulebook = RuleBook(BUILTIN_BUNDLE)
    pipeline = Pipeline(
        rulebook=rulebook,
        timestamps=TimestampPolicy(
            max_clock_skew=timedelta(seconds=settings.max_clock_skew_seconds)
        ),
        partitions=settings.partitions,
        allowed_lateness=timedelta(seconds=settings.allowed_lateness_seconds),
        timers_topic=settings.topic(TIMERS),
        max_record_bytes=settings.max_record_bytes,
        dead_letter_raw_bytes=settings.dead_letter_raw_bytes,
        state_max_bytes=settings.state_max_bytes,
        customer_ttl=timedelta(days=settings.customer_ttl_days),
    )
    schedule = Schedule(rulebook)
    writer = BatchWriter(app, settings.topic(TOUCHPOINTS), exactly_once, settings.max_record_bytes)
    warroom = Warroom(
        settings,
        app,
        touchpoints,
        states,
        metrics,
        pipeline,
        writer,
        commit_lock,
        state_codec,
        schedule,
        Analytics(worker=f"{socket.gethostname()}:{os.getpid()}"),
        assignees,
    )

    rules_loaded = asyncio.Event()

    async def process(agent_stream: StreamT[bytes]) -> None:
        stream = cast(faust.Stream[bytes], agent_stream)
        # Touchpoints wait until every bundle on the rules topic has been read.
        await rules_loaded.wait()
        async for events in stream.take_events(
            settings.batch_max_records, settings.batch_within_seconds
        ):
            try:
                await _handle_batch(warroom, stream, events)
            except asyncio.CancelledError:
                raise
            except BaseException as exc:
                _stop_without_acking(exc)

    app.agent(touchpoints, name="warroom.touchpoints")(process)

    @app.page("/metrics")
    async def metrics_page(web: Any, request: Any) -> Any:
        return web.bytes(
            generate_latest(metrics.registry), content_type=CONTENT_TYPE_LATEST.split(";")[0]
        )

    @app.page("/healthz")
    async def health_page(web: Any, request: Any) -> Any:
        return web.json({"status": "ok"})

    async def rules_page(web: Any, request: Any) -> Any:
        return web.json(
            {
                name: {
                    "version": bundle.version,
                    "source": bundle.source,
                    "rules": [rule.rule_id for rule in bundle.rules],
                }
                for name, bundle in sorted(rulebook.bundles.items())
            }
        )

    async def rules() -> None:
        await follow_rules(settings, rulebook, metrics.bundles, rules_loaded)

    async def customer_page(web: Any, request: Any, customer_id: str) -> Any:
        return web.json(explain_customer(warroom, customer_id, assignment(), datetime.now(UTC)))

    token = settings.admin_token
    app.page("/rules")(admin_only(token, rules_page))
    app.page("/customers/{customer_id}")(admin_only(token, customer_page))

    app.task(rules)

    source = settings.topic(TOUCHPOINTS)

    def assignment() -> frozenset[int]:
        return frozenset(
            tp.partition for tp in app.assignor.assigned_actives() if tp.topic == source
        )

    def stored(partitions: frozenset[int]) -> Iterator[tuple[str, int, CustomerState]]:
        store: Any = states.data
        for customer_id, state in list(store.data.items()):
            partition = store._key_partition.get(customer_id)
            if partition is None:
                partition = customer_partition(customer_id, settings.partitions)
            if partition in partitions:
                yield customer_id, partition, state

    feedback = app.topic(
        settings.topic(FEEDBACK),
        key_serializer="raw",
        value_serializer="raw",
        partitions=settings.partitions,
    )

    async def count_feedback(stream: StreamT[bytes]) -> None:
        async for value in stream:
            warroom.analytics.record_feedback(value)

    app.agent(feedback, name="warroom.feedback")(count_feedback)

    async def analytics() -> None:
        await publish_metrics(
            settings.bootstrap_servers,
            settings.topic(METRICS),
            warroom.analytics,
            lambda: [rule.rule_id for rule in rulebook.rules],
            settings.metrics_interval_seconds,
        )

    app.task(analytics)

    async def timers() -> None:
        await run_scheduler(
            settings.bootstrap_servers,
            settings.topic(TIMERS),
            schedule,
            assignment,
            stored,
            Expiry(timedelta(days=settings.customer_ttl_days), settings.expiry_check_seconds),
        )

    app.task(timers)

    return warroom


async def _handle_batch(
    warroom: Warroom, stream: faust.Stream[bytes], events: Sequence[EventT[Any]]
) -> None:
    """Process a batch in slices bounded by touchpoints and time; each slice's output is
    written and its records acknowledged under the commit lock, and the lock is let go
    between slices, so a transaction never holds more than about one slice and a commit
    interval, whatever the backlog.

    Records of the batch not yet processed when the task is cancelled (the worker is
    stopping) are never acknowledged: they are read again after the restart."""
    start = 0
    try:
        while start < len(events):
            async with warroom.commit_lock.lock:
                start = await _handle_slice(warroom, stream, events, start)
            await asyncio.sleep(0)  # a commit waiting for the lock goes first
    except asyncio.CancelledError:
        _never_ack(events[start:])
        raise


async def _handle_slice(
    warroom: Warroom, stream: faust.Stream[bytes], events: Sequence[EventT[Any]], first: int
) -> int:
    """Process events from ``first`` on until the slice's budget is used; returns where the
    next slice starts. Runs under the commit lock."""
    started = time.perf_counter()
    settings = warroom.settings
    candidates = settings.topic(REP_CANDIDATES)
    pipeline = warroom.pipeline
    now = datetime.now(UTC)
    result = BatchResult()
    held: list[EventT[Any]] = []
    deadline = started + settings.slice_max_seconds
    index = first
    try:
        while index < len(events):
            message = events[index].message
            index += 1
            if message.topic == candidates:
                held.append(events[index - 1])
            else:
                record = RawRecord(
                    message.topic, message.partition, message.offset, message.key, message.value
                )
                pipeline.process((record,), warroom.stored_state, now, into=result)
            taken = result.processed + result.duplicates + len(result.dead_letters) + len(held)
            if taken >= settings.slice_max_events or time.perf_counter() >= deadline:
                break
            if (index - first) % RECORDS_PER_SLICE == 0:
                await asyncio.sleep(0)  # let the web server, timers and fetching run
    except asyncio.CancelledError:
        # Nothing of this slice is written; none of its records may be acknowledged.
        _never_ack(events[first:])
        raise
    await _finish_slice(warroom, stream, events[first:index], result, held, started)
    return index


async def _finish_slice(
    warroom: Warroom,
    stream: faust.Stream[bytes],
    events: Sequence[EventT[Any]],
    result: BatchResult,
    held: list[EventT[Any]],
    started: float,
) -> None:
    """Write a slice's output and acknowledge its records, as one step a cancellation
    cannot cut in two."""
    encoded = warroom.pipeline.encode_states(result, warroom.state_codec.dumps)
    store: Any = warroom.states.data
    schedule = warroom.schedule
    removed = _forget_expired(warroom, result)
    for partition, changed in result.states.items():
        for customer_id, state in changed.items():
            store.data[customer_id] = state
            store._key_partition[customer_id] = partition
            schedule.note(customer_id, partition, state)
    direct = warroom.pipeline.rulebook.per_rep_per_day is None
    output = removed + list(_output(warroom, result, encoded, direct))
    if held:
        output.extend(_admit_candidates(warroom, held))

    async def write_and_ack() -> None:
        await warroom.writer.write(output)
        for event in events:
            await stream.ack(event)

    step = asyncio.ensure_future(write_and_ack())
    while True:
        try:
            await asyncio.shield(step)
            break
        except asyncio.CancelledError:
            if step.done():
                raise
            # Stopping: let the write and its acks finish, then stop.
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(step)
            raise
    warroom.analytics.record(
        (customer for changed in result.states.values() for customer in changed),
        (c.rule_id for _, c in result.interventions) if direct else (),
        (c.rule_id for _, c in result.shadowed),
        (c.rule_id for _, c in result.capped),
    )
    warroom.analytics.record_signals(result.signals)
    _observe(warroom.metrics, result, events, started, direct)


def _forget_expired(warroom: Warroom, result: BatchResult) -> list[OutRecord]:
    """Drop customers removed for silence from the store; their changelog tombstones and
    audit records. A customer who came back later in the same slice keeps its new state."""
    store: Any = warroom.states.data
    changelog = warroom.states.changelog_topic.get_topic_name()
    audit = warroom.settings.topic(AUDIT)
    now = datetime.now(UTC)
    out: list[OutRecord] = []
    for partition, customer_id, last in result.expired:
        if customer_id in result.states.get(partition, {}):
            continue
        store.data.pop(customer_id, None)
        store._key_partition.pop(customer_id, None)
        warroom.schedule.forget(customer_id)
        key = customer_id.encode()
        out.append(OutRecord(changelog, partition, key, None))
        entry = {
            "event": "customer_expired",
            "customer_id": customer_id,
            "last_touchpoint_at": None if last is None else last.isoformat(),
            "ttl_days": warroom.settings.customer_ttl_days,
            "at": now.isoformat(),
        }
        out.append(OutRecord(audit, 0, key, orjson.dumps(entry), source_partition=partition))
        warroom.metrics.expired.inc()
    return out


def _never_ack(events: Sequence[EventT[Any]]) -> None:
    """Keep ``events`` from ever being acknowledged (take_events acks its whole batch when
    the batch ends, however it ends): their offsets are not committed and they are read
    again by whoever owns their partition next."""
    for event in events:
        event.message.acked = True


def _stop_without_acking(exc: BaseException) -> None:
    """A bug outside per-touchpoint processing: stop the process now, before the batch's
    records are acknowledged or anything is committed. The open transaction is aborted by
    the broker (or fenced by the next worker) and processing restarts from the last
    commit: crash-only, never a silent skip."""
    log.critical("batch handling failed, stopping the worker without committing", exc_info=exc)
    logging.shutdown()
    os._exit(EXIT_BUG)


def _output(
    warroom: Warroom, result: BatchResult, states: list[tuple[int, str, bytes]], direct: bool
) -> Iterator[OutRecord]:
    """What a slice writes. ``direct``: interventions go straight out; otherwise to the
    assignee-keyed stage that applies per-rep caps."""
    settings = warroom.settings
    changelog = warroom.states.changelog_topic.get_topic_name()
    for partition, customer_id, value in states:
        yield OutRecord(changelog, partition, customer_id.encode(), value)
    interventions = settings.topic(INTERVENTIONS)
    candidates = settings.topic(REP_CANDIDATES)
    encoded = result.encoded
    for partition, command in result.interventions:
        value = encoded[command.intervention_id]
        if direct:
            yield OutRecord(interventions, partition, command.customer_id.encode(), value)
            continue
        key = assignee_key(command)
        yield OutRecord(
            candidates,
            customer_partition(key, settings.partitions),
            key.encode(),
            value,
            source_partition=partition,
        )
    dlq = settings.topic(DLQ)
    for partition, letter in result.dead_letters:
        yield OutRecord(dlq, partition, letter.raw_key, encode_dead_letter(letter))


def _observe(
    metrics: WorkerMetrics,
    result: BatchResult,
    events: Sequence[EventT[Any]],
    started: float,
    direct: bool,
) -> None:
    finished = time.perf_counter()
    metrics.batch_duration.observe(finished - started)
    if result.processed:
        metrics.touchpoints.labels("processed").inc(result.processed)
    if result.ticks:
        metrics.ticks.inc(result.ticks)
    if result.duplicates:
        metrics.touchpoints.labels("duplicate").inc(result.duplicates)
    for command in (c for _, c in result.interventions if direct):
        metrics.interventions.labels(command.rule_id, command.kind.value).inc()
    for command in (c for _, c in result.shadowed):
        metrics.shadowed.labels(command.rule_id).inc()
    for command in (c for _, c in result.capped):
        metrics.capped.labels(command.rule_id).inc()
    for letter in (d for _, d in result.dead_letters):
        metrics.dead_letters.labels(letter.reason).inc()
    if result.trimmed_entries:
        metrics.trimmed.labels("window_entries").inc(result.trimmed_entries)
    if result.trimmed_memories:
        metrics.trimmed.labels("rule_memories").inc(result.trimmed_memories)
    now = time.time()
    for event in events:
        appended = event.message.timestamp
        if appended:
            metrics.latency.observe(max(0.0, now - appended))


def explain_customer(
    warroom: Warroom, customer_id: str, owned: frozenset[int], now: datetime
) -> dict[str, Any]:
    """A customer's state and, for every running rule, why it did or did not fire."""
    partition = customer_partition(customer_id, warroom.settings.partitions)
    state = warroom.stored_state(customer_id)
    rules = warroom.pipeline.rulebook.rules
    return {
        "customer_id": customer_id,
        "partition": partition,
        "owned_here": partition in owned,
        "known": state is not None,
        "state": None if state is None else _readable(state),
        "rules": [
            {
                "rule_id": s.rule_id,
                "version": s.version,
                "mode": s.mode,
                "progress": s.progress,
                "last_fired_at": _iso(s.last_fired_at),
                "cooldown_until": _iso(s.cooldown_until),
                "deadline": _iso(s.deadline),
            }
            for s in explain(state, rules, now)
        ],
        "journeys": [
            {
                "journey_id": j.journey_id,
                "mode": j.mode,
                "variant": j.variant,
                "inside": j.inside,
                "progress": j.progress,
                "deadline": _iso(j.deadline),
            }
            for j in explain_journeys(state, warroom.pipeline.rulebook.journeys, now)
        ],
    }


def _readable(state: CustomerState) -> dict[str, Any]:
    return {
        "owner_rep_id": state.owner_rep_id,
        "touchpoints": state.touchpoints,
        "first_seen_at": _iso(state.first_seen_at),
        "last_event_at": _iso(state.last_event_at),
        "last_inbound_at": _iso(state.last_inbound_at),
        "last_outbound_at": _iso(state.last_outbound_at),
        "kind_counts": dict(state.kind_counts),
    }


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def _admit_candidates(warroom: Warroom, events: Sequence[EventT[Any]]) -> list[OutRecord]:
    """The assignee-keyed stage: admit each intervention under its assignee's daily cap."""
    settings = warroom.settings
    interventions = settings.topic(INTERVENTIONS)
    cap = warroom.pipeline.rulebook.per_rep_per_day
    store: Any = warroom.assignees.data
    changed: dict[str, tuple[int, Sent]] = {}
    out: list[OutRecord] = []
    fired: list[str] = []
    capped: list[str] = []
    for event in events:
        message = event.message
        command = decode_intervention(message.value or b"")
        key = assignee_key(command)
        sent = changed[key][1] if key in changed else store.data.get(key, ())
        remembered, admission = admit(
            sent, micros(command.created_at), command.intervention_id, cap
        )
        changed[key] = (message.partition, remembered)
        if admission is Admission.REPEATED:
            warroom.metrics.repeated.inc()
        elif admission is Admission.ADMITTED:
            fired.append(command.rule_id)
            warroom.metrics.interventions.labels(command.rule_id, command.kind.value).inc()
            out.append(
                OutRecord(
                    interventions,
                    customer_partition(command.customer_id, settings.partitions),
                    command.customer_id.encode(),
                    message.value,
                    source_partition=message.partition,
                )
            )
        else:
            capped.append(command.rule_id)
            warroom.metrics.capped.labels(command.rule_id).inc()
    changelog = warroom.assignees.changelog_topic.get_topic_name()
    dumps = ASSIGNEE_CODEC.dumps
    for key, (partition, remembered) in changed.items():
        store.data[key] = remembered
        store._key_partition[key] = partition
        out.append(OutRecord(changelog, partition, key.encode(), dumps(remembered)))
    warroom.analytics.record((), fired, (), capped)
    return out
