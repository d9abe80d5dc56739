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
import os
import socket
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import faust
from faust.types import EventT, StreamT
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from engine.assignees import admit, assignee_key
from engine.builtin import BUILTIN_BUNDLE
from engine.conditions import micros
from engine.explain import explain, explain_journeys
from engine.rulebook import RuleBook
from engine.state import CustomerState
from engine.timestamps import TimestampPolicy
from schemas.codec import decode_intervention, encode_dead_letter, encode_intervention
from schemas.partitioning import customer_partition
from schemas.topics import (
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
from .state_codec import CustomerStateCodec, TimesCodec, Utf8Codec
from .timers import Schedule, run_scheduler
from .transactions import BatchCommitLock, install_commit_lock, install_exactly_once_commit
from .writer import BatchWriter, OutRecord

ASSIGNEE_TABLE = "assignee-sent"
STATE_TABLE = "customer-state"
ASSIGNEE_CODEC = TimesCodec()
RECORDS_PER_SLICE = 8
"""A batch is processed this many records at a time, yielding to the event loop between."""


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
    )
    exactly_once = settings.processing_guarantee is Guarantee.EXACTLY_ONCE
    if exactly_once:
        install_exactly_once_commit(app)
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
    )
    schedule = Schedule(rulebook)
    writer = BatchWriter(app, settings.topic(TOUCHPOINTS), exactly_once)
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
            # Under the lock no commit can start; take_events acks the batch's
            # records as soon as this body returns, before anything else runs.
            async with commit_lock.lock:
                await _handle_batch(warroom, events)

    app.agent(touchpoints, name="warroom.touchpoints")(process)

    @app.page("/metrics")
    async def metrics_page(web: Any, request: Any) -> Any:
        return web.bytes(
            generate_latest(metrics.registry), content_type=CONTENT_TYPE_LATEST.split(";")[0]
        )

    @app.page("/rules")
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

    @app.page("/customers/{customer_id}")
    async def customer_page(web: Any, request: Any, customer_id: str) -> Any:
        return web.json(explain_customer(warroom, customer_id, assignment(), datetime.now(UTC)))

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
            settings.bootstrap_servers, settings.topic(TIMERS), schedule, assignment, stored
        )

    app.task(timers)

    return warroom


async def _handle_batch(warroom: Warroom, events: Sequence[EventT[Any]]) -> None:
    started = time.perf_counter()
    candidates = warroom.settings.topic(REP_CANDIDATES)
    records: list[RawRecord] = []
    held: list[EventT[Any]] = []
    for event in events:
        message = event.message
        if message.topic == candidates:
            held.append(event)
        else:
            records.append(
                RawRecord(
                    message.topic, message.partition, message.offset, message.key, message.value
                )
            )
    now = datetime.now(UTC)
    result = BatchResult()
    for start in range(0, len(records), RECORDS_PER_SLICE):
        warroom.pipeline.process(
            records[start : start + RECORDS_PER_SLICE], warroom.stored_state, now, into=result
        )
        await asyncio.sleep(0)  # let the web server, timers and fetching run
    store: Any = warroom.states.data
    schedule = warroom.schedule
    for partition, changed in result.states.items():
        for customer_id, state in changed.items():
            store.data[customer_id] = state
            store._key_partition[customer_id] = partition
            schedule.note(customer_id, partition, state)
    direct = warroom.pipeline.rulebook.per_rep_per_day is None
    output = list(_output(warroom, result, direct))
    if held:
        output.extend(_admit_candidates(warroom, held))
    await warroom.writer.write(output)
    warroom.analytics.record(
        (customer for changed in result.states.values() for customer in changed),
        (c.rule_id for _, c in result.interventions) if direct else (),
        (c.rule_id for _, c in result.shadowed),
        (c.rule_id for _, c in result.capped),
    )
    warroom.analytics.record_signals(result.signals)
    _observe(warroom.metrics, result, events, started, direct)


def _output(warroom: Warroom, result: BatchResult, direct: bool) -> Iterator[OutRecord]:
    """What a batch writes. ``direct``: interventions go straight out; otherwise to the
    assignee-keyed stage that applies per-rep caps."""
    settings = warroom.settings
    changelog = warroom.states.changelog_topic.get_topic_name()
    dumps = warroom.state_codec.dumps
    for partition, changed in result.states.items():
        for customer_id, state in changed.items():
            yield OutRecord(changelog, partition, customer_id.encode(), dumps(state))
    interventions = settings.topic(INTERVENTIONS)
    candidates = settings.topic(REP_CANDIDATES)
    for partition, command in result.interventions:
        if direct:
            yield OutRecord(
                interventions, partition, command.customer_id.encode(), encode_intervention(command)
            )
            continue
        key = assignee_key(command)
        yield OutRecord(
            candidates,
            customer_partition(key, settings.partitions),
            key.encode(),
            encode_intervention(command),
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
    changed: dict[str, tuple[int, tuple[int, ...]]] = {}
    out: list[OutRecord] = []
    fired: list[str] = []
    capped: list[str] = []
    for event in events:
        message = event.message
        command = decode_intervention(message.value or b"")
        key = assignee_key(command)
        admitted = True
        if cap is not None:
            sent = changed[key][1] if key in changed else store.data.get(key, ())
            remembered, admitted = admit(sent, micros(command.created_at), cap)
            changed[key] = (message.partition, remembered)
        if admitted:
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
