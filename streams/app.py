"""The Faust application: topics, the customer-state table and the touchpoint agent.

The agent takes Kafka records in batches, runs the pure engine over every
touchpoint in them, writes each changed customer's state once per batch and
sends interventions and dead letters. Offsets are acknowledged only after the
batch's state writes and sends are queued, so a commit never covers work that
is not in the same commit (or, with exactly-once, the same transaction).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import faust
from faust.types import EventT, StreamT
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from engine.rules import BUILTIN_RULES
from engine.timestamps import TimestampPolicy
from schemas.faust_codec import DeadLetterCodec, InterventionCodec

from .metrics import WorkerMetrics
from .pipeline import BatchResult, Pipeline, RawRecord
from .settings import Guarantee, Settings
from .state_codec import CustomerStateCodec, Utf8Codec
from .transactions import install_copartitioned_transactions

TOUCHPOINTS = "touchpoints"
INTERVENTIONS = "interventions"
DLQ = "dlq"
STATE_TABLE = "customer-state"


@dataclass
class Warroom:
    """One worker: the Faust app and the parts tests and the CLI need to reach."""

    settings: Settings
    app: faust.App
    touchpoints: faust.TopicT
    interventions: faust.TopicT
    dlq: faust.TopicT
    states: faust.Table[str, Any]
    metrics: WorkerMetrics
    pipeline: Pipeline

    def topic_names(self) -> list[str]:
        return [self.settings.topic(name) for name in (TOUCHPOINTS, INTERVENTIONS, DLQ)]


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
        broker_heartbeat_interval=min(3.0, settings.session_timeout_seconds / 3),
    )
    if settings.processing_guarantee is Guarantee.EXACTLY_ONCE:
        source = settings.topic(TOUCHPOINTS)
        install_copartitioned_transactions(
            app, {settings.topic(INTERVENTIONS): source, settings.topic(DLQ): source}
        )
    touchpoints = app.topic(
        settings.topic(TOUCHPOINTS),
        key_serializer="raw",
        value_serializer="raw",
        partitions=settings.partitions,
    )
    interventions = app.topic(
        settings.topic(INTERVENTIONS),
        key_serializer="raw",
        value_serializer=InterventionCodec(),
        partitions=settings.partitions,
    )
    dlq = app.topic(
        settings.topic(DLQ),
        key_serializer="raw",
        value_serializer=DeadLetterCodec(),
        partitions=settings.partitions,
    )
    states = cast(
        faust.Table[str, Any], app.Table(STATE_TABLE, key_type=str, partitions=settings.partitions)
    )
    # Codec instances rather than registry names. Faust picks a table's codecs
    # from its key and value types and builds the changelog topic with them as
    # soon as the table is declared, so set ours and rebuild the topic (same
    # name) before anything subscribes to it.
    states.key_serializer = Utf8Codec()
    states.value_serializer = CustomerStateCodec()
    states.changelog_topic = states._new_changelog_topic()
    metrics = WorkerMetrics.create()
    pipeline = Pipeline(
        rules=BUILTIN_RULES,
        timestamps=TimestampPolicy(
            max_clock_skew=timedelta(seconds=settings.max_clock_skew_seconds)
        ),
        partitions=settings.partitions,
    )
    warroom = Warroom(settings, app, touchpoints, interventions, dlq, states, metrics, pipeline)

    async def process(agent_stream: StreamT[bytes]) -> None:
        stream = cast(faust.Stream[bytes], agent_stream)
        async for events in stream.take_events(
            settings.batch_max_records, settings.batch_within_seconds
        ):
            # Synchronous on purpose: no commit can run between a batch's
            # writes and the acks that take_events gives it afterwards.
            _handle_batch(warroom, stream, events)

    app.agent(touchpoints, name="warroom.touchpoints")(process)

    @app.page("/metrics")
    async def metrics_page(web: Any, request: Any) -> Any:
        return web.bytes(
            generate_latest(metrics.registry), content_type=CONTENT_TYPE_LATEST.split(";")[0]
        )

    return warroom


def _handle_batch(
    warroom: Warroom, stream: faust.Stream[bytes], events: Sequence[EventT[Any]]
) -> None:
    started = time.perf_counter()
    records: list[RawRecord] = []
    last_event_of: dict[int, EventT[Any]] = {}
    for event in events:
        message = event.message
        records.append(
            RawRecord(message.topic, message.partition, message.offset, message.key, message.value)
        )
        last_event_of[message.partition] = event
    states = warroom.states
    result = warroom.pipeline.process(records, states.get, datetime.now(UTC))
    _write(warroom, stream, result, last_event_of)
    _observe(warroom.metrics, result, events, started)


def _write(
    warroom: Warroom,
    stream: faust.Stream[bytes],
    result: BatchResult,
    last_event_of: dict[int, EventT[Any]],
) -> None:
    states = warroom.states
    for partition, changed in result.states.items():
        # Table writes go to the changelog partition of the current event, so
        # point it at an event of the partition these customers live in.
        stream._set_current_event(last_event_of[partition])
        for customer_id, state in changed.items():
            states[customer_id] = state
    stream._set_current_event(None)
    for partition, command in result.interventions:
        warroom.interventions.send_soon(
            key=command.customer_id.encode(), value=command, partition=partition
        )
    for partition, letter in result.dead_letters:
        warroom.dlq.send_soon(key=None, value=letter, partition=partition)


def _observe(
    metrics: WorkerMetrics, result: BatchResult, events: Sequence[EventT[Any]], started: float
) -> None:
    finished = time.perf_counter()
    metrics.batch_duration.observe(finished - started)
    if result.processed:
        metrics.touchpoints.labels("processed").inc(result.processed)
    if result.duplicates:
        metrics.touchpoints.labels("duplicate").inc(result.duplicates)
    for command in (c for _, c in result.interventions):
        metrics.interventions.labels(command.rule_id, command.kind.value).inc()
    for letter in (d for _, d in result.dead_letters):
        metrics.dead_letters.labels(letter.reason).inc()
    now = time.time()
    for event in events:
        appended = event.message.timestamp
        if appended:
            metrics.latency.observe(max(0.0, now - appended))
