"""The one settings object a Warroom process is built from."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from connectors.kafka_security import KafkaSecurity, SaslMechanism, SecurityProtocol
from connectors.tracing import TracingSettings
from schemas.registry_settings import RegistrySettings
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
    store: Literal["memory://", "rocksdb://"] = "memory://"
    """Where live customer state is kept; the changelog topic makes it durable.
    ``memory://``: in the worker's heap (about 4 KB a customer), rebuilt from the whole
    changelog on every start. ``rocksdb://``: in RocksDB (rocksdict) under ``data_dir``,
    one database per partition; a start replays only the changelog records written
    since the database's offset, and state reaches disk only after its Kafka commit
    (streams.patches.rocks). Give every worker on a machine its own ``data_dir``."""
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
    admin_token: SecretStr | None = Field(None, min_length=16)
    """Bearer token for the worker's admin pages (/customers, /rules); without it they are
    off. Never logged or shown."""
    group_instance_id: str | None = Field(None, min_length=1, max_length=249)
    """Static group membership (KIP-345): a stable name per worker (a StatefulSet pod's
    name), so a restart within the session timeout keeps its partitions without a
    rebalance. Unset: dynamic membership."""
    gate_token: SecretStr | None = Field(None, min_length=16)
    """Bearer token the compliance gate (``warroom gate serve``) requires on its POSTs;
    without it the gate answers anyone who reaches its port. Never logged or shown."""
    max_record_bytes: int = Field(1_000_000, ge=10_000, le=100_000_000)
    """Largest record the worker writes; keep it at or below the broker's
    ``message.max.bytes`` (default 1 MiB). An intervention that would be larger sends
    its touchpoint to the DLQ as ``too_large``."""
    state_max_bytes: int = Field(512_000, ge=4_096)
    """Byte budget of one customer's encoded state; above it the oldest window entries
    are dropped (and counted), see engine.retention. Must be below max_record_bytes."""
    dead_letter_raw_bytes: int = Field(65_536, ge=0)
    """A dead letter keeps at most this many bytes of the rejected record's key and value,
    with the length and SHA-256 of the whole."""
    customer_ttl_days: float = Field(400.0, gt=0)
    """Customers with no touchpoint (by event time) for this many days are removed: their
    state is tombstoned in the changelog and the removal audited."""
    expiry_check_seconds: float = Field(3600.0, gt=0)
    """How often each worker looks for customers past customer_ttl_days."""
    slice_max_events: int = Field(2_000, ge=1)
    """Touchpoints processed before the worker lets a commit (a transaction) in."""
    slice_max_seconds: float = Field(1.0, gt=0)
    """Processing time after which the worker lets a commit in, whatever the count."""
    transaction_timeout_seconds: float = Field(120.0, ge=10, le=900)
    """Kafka transaction timeout of the worker's producers. A transaction lasts at most
    about commit_interval + slice_max_seconds + one record's processing, far below it."""

    security_protocol: SecurityProtocol = "PLAINTEXT"
    """How every Kafka client connects: PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL."""
    sasl_mechanism: SaslMechanism | None = None
    """PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512; required with SASL_*."""
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    """Never logged or shown."""
    ssl_cafile: Path | None = None
    """PEM file of the CA that signed the brokers' certificates; required with SSL and
    SASL_SSL (host names are checked)."""
    ssl_certfile: Path | None = None
    """Client certificate (PEM) for mutual TLS, with ssl_keyfile (unencrypted PEM key)."""
    ssl_keyfile: Path | None = None

    tracing: str = "off"
    """OpenTelemetry tracing from connector request to intervention: ``off``,
    ``console`` (spans as JSON lines on stdout), ``otlp`` (OTLP/HTTP, configured by the
    standard OTEL_EXPORTER_OTLP_* variables) or ``file:PATH`` (spans as JSON lines
    appended to PATH). See connectors.tracing."""
    tracing_service_name: str | None = Field(None, min_length=1, max_length=128)
    """The ``service.name`` of this process's spans; default ``warroom-<role>`` (e.g.
    warroom-worker, warroom-chat-http)."""

    @field_validator("tracing")
    @classmethod
    def _tracing_names_an_exporter(cls, value: str) -> str:
        TracingSettings.parse(value, "warroom")
        return value

    schema_registry_url: str | None = None
    """A schema registry with Confluent's REST API (e.g. ``http://registry:8081``). Set:
    the Avro topics use the Confluent wire format and every process registers (after a
    compatibility check) the schemas it writes, see schemas.registry. Unset: Avro
    single-object encoding, no registry."""
    schema_registry_username: str | None = None
    """HTTP basic authentication to the registry, with schema_registry_password."""
    schema_registry_password: SecretStr | None = None
    """Never logged or shown."""
    schema_registry_timeout_seconds: float = Field(5.0, gt=0, le=60)
    """Longest wait for one answer of the registry."""

    @model_validator(mode="after")
    def _security_fits_together(self) -> Settings:
        self.kafka_security()
        return self

    @model_validator(mode="after")
    def _registry_is_usable(self) -> Settings:
        self.schema_registry()
        return self

    def schema_registry(self) -> RegistrySettings | None:
        """The schema registry these settings name, or None for single-object encoding."""
        if self.schema_registry_url is None:
            return None
        return RegistrySettings(
            self.schema_registry_url,
            self.schema_registry_username,
            self.schema_registry_password,
            self.schema_registry_timeout_seconds,
        )

    def kafka_security(self) -> KafkaSecurity:
        """The Kafka client security these settings ask for (see streams.kafka_security)."""
        return KafkaSecurity(
            self.security_protocol,
            self.sasl_mechanism,
            self.sasl_username,
            self.sasl_password,
            self.ssl_cafile,
            self.ssl_certfile,
            self.ssl_keyfile,
        )

    def tracing_settings(self, role: str) -> TracingSettings:
        """Tracing of a process of ``role`` (worker, chat-http, ...)."""
        return TracingSettings.parse(self.tracing, self.tracing_service_name or f"warroom-{role}")

    def topic(self, topic: Topic | str) -> str:
        """Full Kafka topic name of one of Warroom's registered topics."""
        found = by_name(topic) if isinstance(topic, str) else topic
        return found.full_name(self.topic_prefix)
