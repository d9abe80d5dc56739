"""The Faust application, composed of named parts.

``create_app`` builds one worker from one frozen :class:`Settings`: the Faust app
with Warroom's patches (streams.patches), the customer-state and assignee tables,
the touchpoint agent (streams.batches), the rep-cap stage (streams.rep_caps), the
rule feed (streams.rules_feed), timers and expiry (streams.timers), analytics
(streams.analytics) and the web pages (streams.web). Nothing is started or
connected until the worker runs it.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Callable
from datetime import timedelta
from typing import Any, cast

import faust
from faust.types import StreamT

from engine.builtin import BUILTIN_BUNDLE
from engine.rulebook import RuleBook
from engine.timestamps import TimestampPolicy
from schemas.partitioning import customer_partition
from schemas.topics import (
    CONSENTS,
    FEEDBACK,
    MESSAGE_DRAFTS,
    METRICS,
    REP_CANDIDATES,
    TIMERS,
    TOUCHPOINTS,
)

from .analytics import Analytics, publish_metrics
from .audit_chain import BundleDecisions, StoredHeadCodec
from .batches import run_agent
from .kafka_security import faust_credentials
from .metrics import WorkerMetrics
from .parts import Warroom
from .patches import (
    install_commit_lock,
    install_exactly_once_commit,
    install_lossless_resume,
)
from .patches.rocks import ROCKSDB_OPTIONS, RocksStores
from .patches.tables import TableStore, use_codecs
from .patches.transactions import BatchCommitLock
from .pipeline import Pipeline
from .rules_feed import follow_rules
from .scoring import Scoring
from .scoring_leaders import Board, Dirty, follow_board, publish_leaders
from .scoring_learner import follow_models, run_learner
from .settings import Guarantee, Settings
from .state_codec import CustomerStateCodec, SentCodec, Utf8Codec
from .timers import Expiry, Schedule, run_scheduler
from .tracing import worker_tracing
from .web import register_pages
from .writer import BatchWriter

ASSIGNEE_TABLE = "assignee-sent"
LAG_INTERVAL_SECONDS = 5.0
AUDIT_HEADS_TABLE = "audit-heads"
"""Partition -> the head of that partition's audit chain (streams.audit_chain)."""
STATE_TABLE = "customer-state"

__all__ = ["Warroom", "build_pipeline", "create_app"]


def create_app(settings: Settings) -> Warroom:
    """Build a worker from ``settings``; nothing is started or connected yet."""
    app = _faust_app(settings)
    exactly_once = settings.processing_guarantee is Guarantee.EXACTLY_ONCE
    commit_lock = BatchCommitLock()
    if exactly_once:
        install_exactly_once_commit(
            app, settings.transaction_timeout_seconds, commit_lock, settings.topic(TOUCHPOINTS)
        )
    install_commit_lock(app, commit_lock)
    install_lossless_resume(app)
    # Interventions waiting for a per-rep cap come back on rep-candidates, keyed by
    # assignee; the same agent reads them so they share batches and transactions.
    touchpoints = app.topic(
        settings.topic(TOUCHPOINTS),
        settings.topic(TIMERS),
        settings.topic(REP_CANDIDATES),
        settings.topic(CONSENTS),
        settings.topic(MESSAGE_DRAFTS),
        key_serializer="raw",
        value_serializer="raw",
        partitions=settings.partitions,
    )

    def partition_of(key: str) -> int:
        return customer_partition(key, settings.partitions)

    state_codec = CustomerStateCodec()
    sent_codec = SentCodec()
    states = _table(app, STATE_TABLE, settings, state_codec)
    assignees = _table(app, ASSIGNEE_TABLE, settings, sent_codec)
    head_codec = StoredHeadCodec()
    heads = _table(app, AUDIT_HEADS_TABLE, settings, head_codec)
    # rocksdb://: values reach disk after their commit (streams.patches.rocks).
    rocks = RocksStores(app, commit_lock) if settings.store == "rocksdb://" else None
    rulebook = RuleBook(BUILTIN_BUNDLE)
    scoring = Scoring(rulebook)
    warroom = Warroom(
        settings=settings,
        app=app,
        touchpoints=touchpoints,
        states=_store(rocks, states, partition_of, state_codec),
        assignees=_store(rocks, assignees, partition_of, sent_codec),
        metrics=WorkerMetrics.create(),
        pipeline=build_pipeline(settings, rulebook, scoring),
        writer=BatchWriter(
            app,
            settings.topic(TOUCHPOINTS),
            exactly_once,
            settings.max_record_bytes,
            on_delivered=None if rocks is None else rocks.delivered,
            on_written=commit_lock.wrote if exactly_once else None,
        ),
        commit_lock=commit_lock,
        state_codec=state_codec,
        schedule=Schedule(rulebook),
        analytics=Analytics(worker=f"{socket.gethostname()}:{os.getpid()}"),
        audit_heads=_store(rocks, heads, int, head_codec),
        bundle_decisions=BundleDecisions(),
        scoring=scoring,
        leaders=Dirty(),
        board=Board(),
        models_loaded=asyncio.Event(),
        rules_loaded=asyncio.Event(),
    )
    # A kept partition's uncommitted output aborted at an assignment: its tables go
    # back to the committed changelog (streams.patches.transactions).
    commit_lock.after_rollback.append(warroom.roll_back)
    rules_loaded = warroom.rules_loaded
    scoring.ranks = warroom.board.above  # rank conditions read the published standings

    async def touchpoint_agent(stream: StreamT[bytes]) -> None:
        await warroom.models_loaded.wait()
        await run_agent(warroom, stream, rules_loaded)

    app.agent(touchpoints, name="warroom.touchpoints")(touchpoint_agent)
    _background(warroom, rulebook, rules_loaded)
    register_pages(warroom)
    return warroom


def _faust_app(settings: Settings) -> faust.App:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    return faust.App(
        settings.app_id,
        broker=f"kafka://{settings.bootstrap_servers}",
        broker_credentials=faust_credentials(settings),
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
        consumer_group_instance_id=settings.group_instance_id,
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


def _table(app: faust.App, name: str, settings: Settings, codec: Any) -> faust.Table[str, Any]:
    # Faust's RocksDB store takes its options out of the dict it is given: one each.
    options = dict(ROCKSDB_OPTIONS) if settings.store == "rocksdb://" else None
    table = cast(
        faust.Table[str, Any],
        app.Table(name, key_type=str, partitions=settings.partitions, options=options),
    )
    use_codecs(table, Utf8Codec(), codec)
    return table


def _store(
    rocks: RocksStores | None,
    table: faust.Table[str, Any],
    partition_of: Callable[[str], int],
    codec: Any,
) -> TableStore[Any]:
    if rocks is None:
        return TableStore(table, partition_of)
    return rocks.table_store(table, partition_of, codec)


def build_pipeline(
    settings: Settings, rulebook: RuleBook, scoring: Scoring | None = None
) -> Pipeline:
    """The worker's batch pipeline over ``rulebook``, configured from ``settings``."""
    return Pipeline(
        rulebook=rulebook,
        timestamps=TimestampPolicy(
            max_clock_skew=timedelta(seconds=settings.max_clock_skew_seconds)
        ),
        partitions=settings.partitions,
        allowed_lateness=timedelta(seconds=settings.allowed_lateness_seconds),
        timers_topic=settings.topic(TIMERS),
        consents_topic=settings.topic(CONSENTS),
        drafts_topic=settings.topic(MESSAGE_DRAFTS),
        max_record_bytes=settings.max_record_bytes,
        dead_letter_raw_bytes=settings.dead_letter_raw_bytes,
        state_max_bytes=settings.state_max_bytes,
        customer_ttl=timedelta(days=settings.customer_ttl_days),
        scoring=scoring,
        tracing=worker_tracing(settings),
    )


def _background(warroom: Warroom, rulebook: RuleBook, rules_loaded: asyncio.Event) -> None:
    """The rule feed, the feedback counter, business metrics and the timer scheduler."""
    app = warroom.app
    settings = warroom.settings

    async def rules() -> None:
        await follow_rules(
            settings, rulebook, warroom.metrics.bundles, rules_loaded, warroom.bundle_decisions
        )

    feedback = app.topic(
        settings.topic(FEEDBACK),
        key_serializer="raw",
        value_serializer="raw",
        partitions=settings.partitions,
    )

    async def count_feedback(stream: StreamT[bytes]) -> None:
        async for value in stream:
            warroom.analytics.record_feedback(value)

    async def analytics() -> None:
        await publish_metrics(
            settings.bootstrap_servers,
            settings.topic(METRICS),
            warroom.analytics,
            lambda: [rule.rule_id for rule in rulebook.rules],
            settings.metrics_interval_seconds,
            security=settings.kafka_security(),
        )

    async def timers() -> None:
        await run_scheduler(
            settings.bootstrap_servers,
            settings.topic(TIMERS),
            warroom.schedule,
            warroom.assignment,
            warroom.states.owned,
            Expiry(timedelta(days=settings.customer_ttl_days), settings.expiry_check_seconds),
            generation=warroom.generation,
            security=settings.kafka_security(),
        )

    async def lag() -> None:
        while True:
            await asyncio.sleep(LAG_INTERVAL_SECONDS)
            if warroom.generation() is not None:
                warroom.update_lag()

    async def models() -> None:
        await follow_models(settings, warroom.scoring, warroom.metrics, warroom.models_loaded)

    async def learner() -> None:
        await run_learner(settings, rulebook, warroom.learns, warroom.metrics, rules_loaded)

    async def leaders() -> None:
        await publish_leaders(
            settings,
            rulebook,
            warroom.states.owned,
            warroom.assignment,
            warroom.generation,
            warroom.leaders,
        )

    async def board() -> None:
        await follow_board(settings, warroom.board)

    app.task(rules)
    app.task(models)
    app.task(learner)
    app.task(leaders)
    app.task(board)
    app.task(lag)
    app.agent(feedback, name="warroom.feedback")(count_feedback)
    app.task(analytics)
    app.task(timers)
