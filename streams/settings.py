"""The one settings object a Warroom process is built from."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from schemas.topics import Topic, by_name


class Guarantee(StrEnum):
    EXACTLY_ONCE = "exactly_once"
    AT_LEAST_ONCE = "at_least_once"


class Settings(BaseSettings):
    """Read from ``WARROOM_*`` environment variables when built, never at import."""

    model_config = SettingsConfigDict(env_prefix="WARROOM_", frozen=True, extra="forbid")

    app_id: str = Field("warroom", pattern=r"^[A-Za-z0-9._-]{1,64}$")
    bootstrap_servers: str = "127.0.0.1:9092"
    topic_prefix: str = Field("", pattern=r"^[A-Za-z0-9._-]{0,64}$")
    partitions: int = Field(4, ge=1, le=1024)
    replication_factor: int = Field(1, ge=1)
    processing_guarantee: Guarantee = Guarantee.EXACTLY_ONCE
    store: Literal["memory://"] = "memory://"
    """Where live customer state is kept; the changelog topic makes it durable.
    Only the in-memory store is supported: the worker writes state straight into it."""
    data_dir: Path = Path(".cache/worker")
    web_host: str = "127.0.0.1"
    web_port: int = Field(6066, ge=0, le=65535)
    batch_max_records: int = Field(500, ge=1)
    """At most this many Kafka records are processed (and their state written) together."""
    batch_within_seconds: float = Field(0.05, gt=0)
    """Longest wait for a batch to fill before it is processed anyway."""
    commit_interval_seconds: float = Field(0.5, gt=0)
    """How often offsets (and, with exactly-once, the transaction) are committed."""
    session_timeout_seconds: float = Field(10.0, ge=1)
    """How long the group waits for a silent worker (e.g. one that crashed) before
    moving its partitions to another; also bounds how fast a restarted worker resumes."""
    allowed_lateness_seconds: float = Field(3600.0, ge=0)
    """Touchpoints further behind the customer's newest one go to the DLQ as late_event."""
    metrics_interval_seconds: float = Field(60.0, gt=0)
    """How often business metrics are published to the metrics topic."""
    max_clock_skew_seconds: float = Field(300.0, ge=0)
    """How far in the future an ``occurred_at`` may be before the event is rejected."""

    def topic(self, topic: Topic | str) -> str:
        """Full Kafka topic name of one of Warroom's registered topics."""
        found = by_name(topic) if isinstance(topic, str) else topic
        return found.full_name(self.topic_prefix)
