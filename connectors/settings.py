"""The plain values a connector needs, handed to it by whoever starts it."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from schemas.registry_settings import RegistrySettings

from .kafka_security import PLAINTEXT, KafkaSecurity
from .tracing import TRACING_OFF, TracingSettings


@dataclass(frozen=True, slots=True)
class IntakeSettings:
    """Where a connector publishes touchpoints and how its producer behaves."""

    bootstrap_servers: str
    topic: str
    """Full name of the touchpoints topic (prefix included)."""
    partitions: int
    """Partition count of the touchpoints topic: records go where the worker expects them."""
    instance_id: str
    """Names this connector replica; every producer it creates gets a transactional id of
    ``<instance_id>-<random suffix>`` so no two producers, here or in another replica,
    ever share one."""
    transaction_timeout_ms: int = 10_000
    """How long the broker keeps a transaction of a crashed replica open before aborting
    it; until then read_committed consumers of its partitions wait."""
    publish_timeout_seconds: float = 10.0
    """A transaction not ended within this time fails its requests with 503 and its
    producer is replaced."""
    max_events_per_transaction: int = 10_000
    """Concurrent requests share one transaction up to this many touchpoints."""
    recovery_backoff_seconds: float = 1.0
    """First wait before a fenced or broken producer is recreated (doubles up to 30 s)."""
    security: KafkaSecurity = PLAINTEXT
    """SASL and TLS of the connector's Kafka clients."""
    schema_registry: RegistrySettings | None = None
    """With a registry, touchpoints are written in the Confluent wire format and their
    schemas registered at start (schemas.registry); without, single-object encoding."""
    tracing: TracingSettings = TRACING_OFF
    """Where the spans of its HTTP requests and publishes go (connectors.tracing)."""

    def __post_init__(self) -> None:
        if self.partitions < 1:
            raise ValueError(f"partitions: expected at least 1, found {self.partitions}")
        if not self.instance_id:
            raise ValueError("instance_id: expected a non-empty name, found ''")

    def new_transactional_id(self) -> str:
        return f"{self.instance_id}-{uuid.uuid4().hex[:12]}"
