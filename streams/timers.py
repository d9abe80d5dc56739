"""Per-customer timers: rules with a deadline fire at it even if the customer goes quiet.

After every batch the worker notes each changed customer's next deadline (from
the engine's ``next_deadline``). A scheduler task wakes every second and, for
each deadline the wall clock has passed, writes a *tick* record to the
``timers`` topic, on the customer's partition. The worker consumes ticks like
touchpoints, in the same batches and transactions, so a deadline's intervention
is emitted exactly once: a repeated tick finds nothing left to fire.

The schedule lives in memory and is rebuilt from the customer-state table
whenever the worker's assignment changes, so deadlines survive restarts and
rebalances.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import orjson
from aiokafka import AIOKafkaProducer

from connectors.kafka_security import PLAINTEXT, KafkaSecurity
from engine.conditions import micros
from engine.reducer import next_deadline
from engine.retention import expired
from engine.rulebook import RuleBook
from engine.state import CustomerState

log = logging.getLogger(__name__)


def encode_tick(customer_id: str, due: int) -> bytes:
    return orjson.dumps({"customer_id": customer_id, "due": due})


def encode_expiry(customer_id: str) -> bytes:
    """A tick asking the customer's owner to remove the customer if it has gone quiet."""
    return orjson.dumps({"customer_id": customer_id, "expire": True})


def decode_tick(value: bytes) -> tuple[str, int | None]:
    """(customer id, due time in µs), or (customer id, None) for an expiry tick; raises
    ValueError naming what is wrong."""
    try:
        data = orjson.loads(value)
        if data.get("expire") is True:
            return str(data["customer_id"]), None
        return str(data["customer_id"]), int(data["due"])
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ValueError(
            'expected a timer tick {"customer_id": ..., "due": µs} or {"customer_id": ..., '
            f'"expire": true}}, found {value[:80]!r}'
        ) from exc


@dataclass
class Schedule:
    """Deadlines of the customers on this worker's partitions, earliest first."""

    rulebook: RuleBook
    _heap: list[tuple[int, str, int]] = field(default_factory=list)
    _due: dict[str, int] = field(default_factory=dict)

    def note(self, customer_id: str, partition: int, state: CustomerState) -> None:
        """Record the customer's next deadline (or that it has none) after a change."""
        rulebook = self.rulebook
        deadline = next_deadline(state, rulebook.rules, rulebook.journeys, rulebook.scores)
        if deadline is None:
            self._due.pop(customer_id, None)
            return
        if self._due.get(customer_id) != deadline:
            self._due[customer_id] = deadline
            heapq.heappush(self._heap, (deadline, customer_id, partition))

    def rebuild(self, states: Iterable[tuple[str, int, CustomerState]]) -> None:
        self._heap.clear()
        self._due.clear()
        for customer_id, partition, state in states:
            self.note(customer_id, partition, state)

    def due(self, now: int) -> list[tuple[str, int, int]]:
        """(customer, partition, deadline) whose deadline has passed; each returned once."""
        found: list[tuple[str, int, int]] = []
        while self._heap and self._heap[0][0] <= now:
            deadline, customer_id, partition = heapq.heappop(self._heap)
            if self._due.get(customer_id) == deadline:
                del self._due[customer_id]
                found.append((customer_id, partition, deadline))
        return found

    def forget(self, customer_id: str) -> None:
        """The customer is gone: a deadline left in the heap no longer counts."""
        self._due.pop(customer_id, None)

    def __len__(self) -> int:
        return len(self._due)


@dataclass(frozen=True)
class ScheduleBasis:
    """What a schedule was built from: a rebuild is due when any of it changes."""

    generation: int
    assignment: frozenset[int]
    rules_id: int


def schedule_basis(
    generation: int | None, assignment: frozenset[int], rules: object
) -> ScheduleBasis | None:
    """The basis to build the schedule on now, or None while states are incomplete."""
    if generation is None:
        return None
    return ScheduleBasis(generation, assignment, id(rules))


@dataclass(frozen=True)
class Expiry:
    """Customers silent for longer than ``ttl`` (event time) are looked for every
    ``every`` seconds; each gets an expiry tick, decided again by the worker."""

    ttl: timedelta
    every: float


async def run_scheduler(
    bootstrap_servers: str,
    topic: str,
    schedule: Schedule,
    assignment: Callable[[], frozenset[int]],
    stored: Callable[[frozenset[int]], Iterable[tuple[str, int, CustomerState]]],
    expiry: Expiry | None = None,
    interval: float = 1.0,
    generation: Callable[[], int | None] = lambda: 0,
    security: KafkaSecurity = PLAINTEXT,
) -> None:
    """Write ticks for passed deadlines, and expiry ticks for silent customers, until
    cancelled.

    ``generation`` is None while the worker rebalances or recovers its tables, and
    otherwise changes with every rebalance: the schedule is rebuilt from the stored
    states only once they are complete (a schedule built during recovery would miss the
    deadlines of customers not yet restored, and nothing would rebuild it later)."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap_servers, acks="all", **security.client_options()
    )
    await producer.start()
    built_for: ScheduleBasis | None = None
    next_sweep = 0.0
    loop = asyncio.get_running_loop()
    try:
        while True:
            await asyncio.sleep(interval)
            current = assignment()
            basis = schedule_basis(generation(), current, schedule.rulebook.rules)
            if basis is None:
                continue  # rebalancing or recovering: states are not complete yet
            if basis != built_for:
                schedule.rebuild(stored(current))
                built_for = basis
                log.info("timer schedule rebuilt: %d customers with a deadline", len(schedule))
            if expiry is not None and loop.time() >= next_sweep:
                next_sweep = loop.time() + expiry.every
                wall = datetime.now(UTC)
                for customer_id, partition, state in stored(current):
                    if expired(state, wall, expiry.ttl):
                        await producer.send(
                            topic,
                            encode_expiry(customer_id),
                            key=customer_id.encode(),
                            partition=partition,
                        )
            now = micros(datetime.now(UTC))
            for customer_id, partition, deadline in schedule.due(now):
                await producer.send(
                    topic,
                    encode_tick(customer_id, deadline),
                    key=customer_id.encode(),
                    partition=partition,
                )
            await producer.flush()
    finally:
        await producer.stop()
