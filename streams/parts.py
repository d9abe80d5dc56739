"""A worker as the named parts :func:`streams.app.create_app` composes.

``batches`` (streams.batches) runs the engine over each batch and writes its output;
``rep_caps`` (streams.rep_caps) is the assignee-keyed second stage; ``states`` and
``assignees`` give typed access to the two tables' stores (streams.patches.tables);
``web`` (streams.web) serves metrics, health and the admin pages; ``schedule``
(streams.timers) keeps deadlines and expiry.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import Any

import faust
from faust.types import TP

from engine.assignees import Sent
from engine.state import CustomerState
from schemas.topics import TOUCHPOINTS

from .analytics import Analytics
from .audit_chain import BundleDecisions, StoredHead
from .metrics import WorkerMetrics
from .patches.tables import TableStore
from .patches.transactions import BatchCommitLock
from .pipeline import Pipeline
from .scoring import Scoring
from .scoring_leaders import Board, Dirty
from .settings import Settings
from .state_codec import CustomerStateCodec
from .timers import Schedule
from .writer import BatchWriter


@dataclass
class Warroom:
    """One worker: the Faust app and its parts."""

    settings: Settings
    app: faust.App
    touchpoints: faust.TopicT
    states: TableStore[CustomerState]
    assignees: TableStore[Sent]
    metrics: WorkerMetrics
    pipeline: Pipeline
    writer: BatchWriter
    commit_lock: BatchCommitLock
    state_codec: CustomerStateCodec
    schedule: Schedule
    analytics: Analytics
    audit_heads: TableStore[StoredHead]
    bundle_decisions: BundleDecisions
    scoring: Scoring
    """The models this worker predicts with (streams.scoring)."""
    leaders: Dirty
    """Partitions whose score leaders are to be published again (streams.scoring_leaders)."""
    board: Board
    """Every partition's score leaders as read from score-leaders (for /scores/…/top)."""
    models_loaded: asyncio.Event
    """Set once the models topic has been read to where it ended at start (touchpoints
    wait for it, so a restarted worker predicts with the version it had)."""
    rules_loaded: asyncio.Event
    """Set once every bundle on the rules topics has been read (touchpoints wait for it)."""
    progress: dict[tuple[str, int], int] = field(default_factory=dict)
    """(topic, partition) -> the next offset to process, as of the last slice."""

    def stored_state(self, customer_id: str) -> CustomerState | None:
        """The customer's state as of the last slice (in-memory store, no copy)."""
        return self.states.get(customer_id)

    def roll_back(self, partitions: frozenset[int]) -> None:
        """Kept source ``partitions`` had their uncommitted output aborted: every table
        drops what it holds of them beyond the committed changelog, and the recovery
        that follows reads their changelogs again (from the start for the in-memory
        store, from the committed offset on disk for RocksDB)."""
        tables: Any = self.app.tables
        recovery = tables.recovery
        for store in (self.states, self.assignees, self.audit_heads):
            store.roll_back(partitions)
            for partition in partitions:
                recovery.revoke(TP(store.changelog, partition))

    def generation(self) -> int | None:
        """None while the worker rebalances or recovers its tables; otherwise the number
        of rebalances so far (it changes whenever the stored states may have)."""
        app: Any = self.app
        if app.rebalancing or app.in_recovery:
            return None
        count: int = app.rebalancing_count
        return count

    def readiness_problems(self) -> list[str]:
        """Why the worker cannot take its share of the work right now (none: ready)."""
        app: Any = self.app
        problems = []
        if not self.rules_loaded.is_set():
            problems.append("rule bundles are still being read from the rules topics")
        if not self.models_loaded.is_set():
            problems.append("score models are still being read from the models topic")
        if app.rebalancing:
            problems.append("the consumer group is rebalancing")
        if app.in_recovery:
            problems.append("tables are being recovered from their changelogs")
        return problems

    def update_lag(self) -> None:
        """Set the lag gauge of every assigned input partition; forget the others."""
        app: Any = self.app
        gauge = self.metrics.lag
        assigned = set()
        for tp in app.consumer.assignment():
            key = (tp.topic, tp.partition)
            assigned.add(key)
            done = self.progress.get(key)
            end = app.consumer.highwater(tp)
            if done is not None and end is not None:
                gauge.labels(tp.topic, str(tp.partition)).set(max(0, end - done))
        for key in list(self.progress):
            if key not in assigned:
                del self.progress[key]
                with contextlib.suppress(KeyError):
                    gauge.remove(key[0], str(key[1]))

    def learns(self) -> bool:
        """Whether this worker is the learner: it owns partition 0 of the touchpoints
        topic and is not rebalancing (streams.scoring_learner)."""
        return self.generation() is not None and 0 in self.assignment()

    def assignment(self) -> frozenset[int]:
        """Partitions of the touchpoints topic this worker owns right now."""
        source = self.settings.topic(TOUCHPOINTS)
        return frozenset(
            tp.partition for tp in self.app.assignor.assigned_actives() if tp.topic == source
        )
