"""Publishing validated touchpoints to Kafka, all of a request or none of it.

Errors a sink raises::

    PublishError
    ├── UnpublishableTouchpoints   permanent: a touchpoint does not encode; never retry
    └── PublishUnavailable         transient: Kafka did not take the touchpoints; retry

Requests that arrive while a transaction is in flight share the next one (group
commit): one producer runs one transaction at a time, and each request waits for
the transaction that holds its touchpoints. A request's touchpoints are in exactly
one transaction, so each request still lands whole or not at all.

Requests share transactions, never records: every record holds touchpoints of one
call only. With tracing on (connectors.tracing) a call is a PRODUCER span and each of
its records carries that span's W3C ``traceparent`` header.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiokafka import AIOKafkaProducer
from opentelemetry.trace import SpanKind

from schemas.codec import encode_touchpoint, encode_touchpoint_batch
from schemas.errors import EncodeError
from schemas.models import TouchpointEvent
from schemas.partitioning import customer_partition
from schemas.registry import use_registry
from schemas.topics import TOUCHPOINTS

from .settings import IntakeSettings
from .tracing import Headers, inject_kafka, tracer_for

log = logging.getLogger(__name__)

ENVELOPE_MAX_EVENTS = 500
"""At most this many touchpoints share one Kafka record."""
ENVELOPE_MAX_BYTES = 900_000
"""At most this many bytes per record, under Kafka's default 1 MiB message limit."""
MAX_RECOVERY_BACKOFF_SECONDS = 30.0

Record = tuple[int, bytes | None, bytes]
"""(partition, key, value)"""


class PublishError(Exception):
    """Touchpoints were not published."""


class UnpublishableTouchpoints(PublishError):
    """Touchpoints that can never be published as they are; ``problems`` name each one."""

    def __init__(self, problems: list[dict[str, Any]]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{p['event_id']}: {p['message']}" for p in problems))


class PublishUnavailable(PublishError):
    """Kafka did not take the touchpoints now; the same request may be retried."""

    def __init__(self, message: str, retry_after_seconds: float = 1.0) -> None:
        self.retry_after_seconds = retry_after_seconds
        super().__init__(message)


@dataclass(frozen=True, slots=True)
class Readiness:
    ready: bool
    reason: str
    transactional_id: str | None = None
    recoveries: int = 0
    """How many times the producer was replaced after it broke."""
    last_error: str | None = None


class TouchpointSink(Protocol):
    """Where connectors put validated touchpoints."""

    async def publish(self, events: Sequence[TouchpointEvent]) -> None: ...

    def readiness(self) -> Readiness: ...


def envelopes(
    events: Sequence[TouchpointEvent],
    partitions: int,
    max_events: int = ENVELOPE_MAX_EVENTS,
    max_bytes: int = ENVELOPE_MAX_BYTES,
) -> list[Record]:
    """Group events into records: (partition, key, value), customer order preserved.

    One event becomes a plain TouchpointEvent record keyed by its customer, as
    any external producer would write it. Several events of one partition
    share TouchpointBatch records, so the worker pays Kafka's per-record cost
    once per envelope rather than once per event. An envelope larger than
    ``max_bytes`` is split. Raises :class:`UnpublishableTouchpoints` naming every
    event that does not encode, before any record is returned.
    """
    if len(events) == 1:
        event = events[0]
        value = _encoded([event], lambda chunk: encode_touchpoint(chunk[0]), max_bytes)
        key = event.customer_id.encode()
        return [(customer_partition(event.customer_id, partitions), key, value)]
    by_partition: dict[int, list[TouchpointEvent]] = defaultdict(list)
    for event in events:
        by_partition[customer_partition(event.customer_id, partitions)].append(event)
    records: list[Record] = []
    for partition, group in sorted(by_partition.items()):
        for start in range(0, len(group), max_events):
            records.extend(_sized(partition, group[start : start + max_events], max_bytes))
    return records


def _sized(partition: int, chunk: list[TouchpointEvent], max_bytes: int) -> list[Record]:
    value = _encoded(chunk, encode_touchpoint_batch, max_bytes=None)
    if len(value) <= max_bytes:
        return [(partition, None, value)]
    if len(chunk) == 1:
        raise _too_large(chunk[0], len(value), max_bytes)
    half = len(chunk) // 2
    return _sized(partition, chunk[:half], max_bytes) + _sized(partition, chunk[half:], max_bytes)


def _encoded(
    chunk: list[TouchpointEvent],
    encode: Callable[[list[TouchpointEvent]], bytes],
    max_bytes: int | None,
) -> bytes:
    try:
        value = encode(chunk)
    except EncodeError:
        raise UnpublishableTouchpoints(_encode_problems(chunk)) from None
    if max_bytes is not None and len(value) > max_bytes:
        raise _too_large(chunk[0], len(value), max_bytes)
    return value


def _too_large(event: TouchpointEvent, size: int, max_bytes: int) -> UnpublishableTouchpoints:
    message = f"expected at most {max_bytes} bytes once encoded, found {size} bytes"
    return UnpublishableTouchpoints([{"event_id": event.event_id, "message": message}])


def _encode_problems(chunk: list[TouchpointEvent]) -> list[dict[str, Any]]:
    problems: list[dict[str, Any]] = []
    for event in chunk:
        try:
            encode_touchpoint(event)
        except EncodeError as exc:
            problems.append({"event_id": event.event_id, "message": str(exc)})
    if not problems:  # each alone encodes, together they do not (e.g. too many)
        problems.append({"event_id": chunk[0].event_id, "message": "the batch does not encode"})
    return problems


class TransactionalProducer(Protocol):
    """The part of :class:`aiokafka.AIOKafkaProducer` the sink uses."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def begin_transaction(self) -> None: ...

    async def commit_transaction(self) -> None: ...

    async def abort_transaction(self) -> None: ...

    async def send(
        self,
        topic: str,
        value: bytes,
        key: bytes | None = None,
        partition: int | None = None,
        headers: Headers | None = None,
    ) -> asyncio.Future[Any]: ...


ProducerFactory = Callable[[str], TransactionalProducer]
"""Builds a producer for a transactional id."""


class ProducerBroken(Exception):
    """The producer's transaction did not end cleanly; the producer must be replaced."""

    def __init__(self, cause: BaseException) -> None:
        self.cause = cause
        super().__init__(f"producer unusable after {cause!r}")


@dataclass(slots=True)
class _Request:
    records: list[Record]
    events: int
    headers: Headers | None = None
    """Headers of every record of the request (its trace context), if any."""
    answer: asyncio.Future[None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


@dataclass(slots=True)
class _Progress:
    commit_requested: bool = False


class KafkaTouchpointSink:
    """Publishes each call's events in one Kafka transaction: all land, or none do.

    Concurrent calls share transactions (group commit). A producer that is fenced or
    whose transaction does not end cleanly is replaced by one with a new
    transactional id; until then :meth:`readiness` says why it is not ready and
    calls fail fast with :class:`PublishUnavailable`.
    """

    def __init__(
        self, settings: IntakeSettings, producer_factory: ProducerFactory | None = None
    ) -> None:
        self._settings = settings
        self._factory = producer_factory or self._aiokafka_producer
        self._producer: TransactionalProducer | None = None
        self._transactional_id: str | None = None
        self._reason = "not started"
        self._last_error: str | None = None
        self._recoveries = 0
        self._queue: deque[_Request] = deque()
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._closing = False
        self._committer: asyncio.Task[None] | None = None
        self._recovery: asyncio.Task[None] | None = None
        self.tracer = tracer_for(settings.tracing)
        """None when tracing is off."""
        self.transactions = 0
        """Transactions committed so far (requests share them under load)."""

    def _aiokafka_producer(self, transactional_id: str) -> TransactionalProducer:
        producer: TransactionalProducer = AIOKafkaProducer(
            bootstrap_servers=self._settings.bootstrap_servers,
            **self._settings.security.client_options(),
            client_id=self._settings.instance_id,
            transactional_id=transactional_id,
            transaction_timeout_ms=self._settings.transaction_timeout_ms,
            enable_idempotence=True,
            acks="all",
            linger_ms=2,
        )
        return producer

    async def start(self) -> None:
        """Start a producer (raises if Kafka cannot be reached) and the committer.

        With a schema registry configured, first registers the touchpoint schemas
        (raises schemas.registry.RegistryError if the registry refuses them) and
        switches this process to the Confluent wire format."""
        if self._settings.schema_registry is not None:
            await asyncio.to_thread(
                use_registry, self._settings.schema_registry, {self._settings.topic: TOUCHPOINTS}
            )
        self._install(*await self._new_producer())
        self._committer = asyncio.create_task(self._commit_loop(), name="touchpoint-commits")

    async def stop(self) -> None:
        """Finish the transactions already asked for, then close the producer."""
        self._closing = True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), self._settings.publish_timeout_seconds)
        for task in (self._committer, self._recovery):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._fail(list(self._queue), PublishUnavailable("not published: shutting down; retry"))
        self._queue.clear()
        producer, self._producer = self._producer, None
        self._reason = "stopped"
        if producer is not None:
            await self._quietly_stop(producer)

    def readiness(self) -> Readiness:
        ready = self._producer is not None and not self._closing
        return Readiness(
            ready=ready,
            reason="producer ready" if ready else self._reason,
            transactional_id=self._transactional_id,
            recoveries=self._recoveries,
            last_error=self._last_error,
        )

    async def publish(self, events: Sequence[TouchpointEvent]) -> None:
        if not events:
            return
        records = envelopes(events, self._settings.partitions)
        if self._producer is None or self._closing:
            raise PublishUnavailable(f"not published: producer not ready ({self._reason}); retry")
        if self.tracer is None:
            await self._enqueue(_Request(records, len(events)))
            return
        with self.tracer.start_as_current_span(
            "send touchpoints",
            kind=SpanKind.PRODUCER,
            attributes={
                "messaging.system": "kafka",
                "messaging.operation.type": "send",
                "messaging.destination.name": self._settings.topic,
                "messaging.batch.message_count": len(records),
                "warroom.touchpoints": len(events),
            },
        ):
            await self._enqueue(_Request(records, len(events), inject_kafka()))

    async def _enqueue(self, request: _Request) -> None:
        self._queue.append(request)
        self._idle.clear()
        self._wake.set()
        await request.answer

    async def _new_producer(self) -> tuple[TransactionalProducer, str]:
        transactional_id = self._settings.new_transactional_id()
        producer = self._factory(transactional_id)
        try:
            # aiokafka waits for a producer id as long as no coordinator answers
            await asyncio.wait_for(producer.start(), 3 * self._settings.publish_timeout_seconds)
        except BaseException:
            await self._quietly_stop(producer)
            raise
        return producer, transactional_id

    def _install(self, producer: TransactionalProducer, transactional_id: str) -> None:
        self._producer = producer
        self._transactional_id = transactional_id

    async def _commit_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                await self._commit_next()
            self._idle.set()

    def _take(self) -> list[_Request]:
        group = [self._queue.popleft()]
        events = group[0].events
        limit = self._settings.max_events_per_transaction
        while self._queue and events + self._queue[0].events <= limit:
            events += self._queue[0].events
            group.append(self._queue.popleft())
        return group

    async def _commit_next(self) -> None:
        group = self._take()
        producer = self._producer
        if producer is None:
            reason = f"not published: producer not ready ({self._reason}); retry"
            self._fail(group, PublishUnavailable(reason))
            return
        progress = _Progress()
        attempt = asyncio.create_task(self._transaction(producer, group, progress))
        done, _ = await asyncio.wait({attempt}, timeout=self._settings.publish_timeout_seconds)
        if not done:
            # Cancelled before its commit was asked for, it never commits (the broker
            # aborts it after transaction_timeout_ms); asked for, the outcome is unknown.
            attempt.cancel()
            attempt.add_done_callback(_ignore_outcome)
            reason = f"transaction did not end within {self._settings.publish_timeout_seconds} s"
            self._replace(producer, reason)
            if progress.commit_requested:
                message = f"not known to be published: {reason}; retry (event ids deduplicate)"
            else:
                message = f"not published: {reason}; retry"
            self._fail(group, PublishUnavailable(message))
            return
        error = attempt.exception()
        if error is None:
            self.transactions += 1
            for request in group:
                if not request.answer.done():
                    request.answer.set_result(None)
            return
        if isinstance(error, ProducerBroken):
            self._replace(producer, str(error))
            error = error.cause
        log.warning("transaction of %d request(s) aborted: %r", len(group), error)
        self._fail(group, PublishUnavailable(f"not published: {error!r}; retry"))

    async def _transaction(
        self, producer: TransactionalProducer, group: list[_Request], progress: _Progress
    ) -> None:
        try:
            await producer.begin_transaction()
        except Exception as exc:
            raise ProducerBroken(exc) from exc
        topic = self._settings.topic
        try:
            deliveries = [
                await (
                    producer.send(topic, value, key=key, partition=partition)
                    if request.headers is None
                    else producer.send(
                        topic, value, key=key, partition=partition, headers=request.headers
                    )
                )
                for request in group
                for partition, key, value in request.records
            ]
            await asyncio.gather(*deliveries)
            progress.commit_requested = True
            await producer.commit_transaction()
        except Exception as exc:
            try:
                await producer.abort_transaction()
            except Exception:
                raise ProducerBroken(exc) from exc
            raise

    def _fail(self, group: list[_Request], error: PublishUnavailable) -> None:
        for request in group:
            if not request.answer.done():
                request.answer.set_exception(error)

    def _replace(self, producer: TransactionalProducer, reason: str) -> None:
        if self._producer is not producer:
            return
        log.warning("producer %s replaced: %s", self._transactional_id, reason)
        self._producer = None
        self._reason = reason
        self._last_error = reason
        self._recovery = asyncio.create_task(self._recover(producer), name="producer-recovery")

    async def _recover(self, broken: TransactionalProducer) -> None:
        await self._quietly_stop(broken)
        delay = self._settings.recovery_backoff_seconds
        first_reason = self._reason
        while not self._closing:
            await asyncio.sleep(delay)
            try:
                producer, transactional_id = await self._new_producer()
            except Exception as exc:
                self._reason = f"{first_reason}; recreating the producer failed: {exc!r}"
                log.warning("%s", self._reason)
                delay = min(2 * delay, MAX_RECOVERY_BACKOFF_SECONDS)
                continue
            self._install(producer, transactional_id)
            self._recoveries += 1
            log.warning("producer recreated as %s", transactional_id)
            return

    async def _quietly_stop(self, producer: TransactionalProducer) -> None:
        try:
            await asyncio.wait_for(producer.stop(), self._settings.publish_timeout_seconds)
        except Exception as exc:  # a broken producer may not stop cleanly; it is dropped
            log.info("stopping a producer failed: %r", exc)


def _ignore_outcome(task: asyncio.Task[None]) -> None:
    if not task.cancelled():
        task.exception()


class MemoryTouchpointSink:
    """In-memory twin of :class:`KafkaTouchpointSink` for tests: encodes, then keeps."""

    def __init__(self, partitions: int = 4) -> None:
        self.partitions = partitions
        self.published: list[list[TouchpointEvent]] = []

    async def publish(self, events: Sequence[TouchpointEvent]) -> None:
        if events:
            envelopes(events, self.partitions)
            self.published.append(list(events))

    def readiness(self) -> Readiness:
        return Readiness(ready=True, reason="in memory")
