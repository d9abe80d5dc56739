"""The top customers by score, across all workers: ``warroom top`` and ``/scores/{name}/top``.

Every worker publishes, per owned partition and score, the partition's leaders to the
compacted ``score-leaders`` topic (key ``<score>/<partition>``): the best
:data:`PER_REP` customers of each owner rep (unowned customers count as one rep), each
with its value, rep, the rep's manager (the running bundles' ``managers``) and the model
version. A partition is published again when a slice changed one of its customers, at
most every :data:`PUBLISH_EVERY_SECONDS`, and whenever the worker is given it.

The global top k (k ≤ PER_REP), a rep's and a team's (the reps one manager manages) are
all inside the union of the per-rep lists, so merging the partitions' records answers
each exactly, as of their publication.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from engine import CustomerState, RuleBook
from schemas.topics import SCORE_LEADERS

from .kafka_security import client_options
from .settings import Settings
from .topic_reader import records_to_end

log = logging.getLogger(__name__)

PER_REP = 50
"""Customers kept per rep, partition and score: the largest k a query may ask for."""
ENTRIES_MAX = 8_000
"""Entries in one record at most (the best of all reps' lists beyond it are kept)."""
PUBLISH_EVERY_SECONDS = 2.0
STATES_BEFORE_YIELD = 2_000
FORMAT = "warroom.score-leaders"


class LeadersError(ValueError):
    """A score-leaders record or a query that cannot be used; the message names the field
    (or argument), what was expected and what was found."""


class Leader(NamedTuple):
    """One customer among its rep's leaders (a tuple: thousands are read per record)."""

    customer_id: str
    value: float
    rep: str | None
    manager: str | None
    model_version: int
    partition: int

    def to_json(self) -> dict[str, Any]:
        return {
            "customer_id": self.customer_id,
            "score": self.value,
            "rep": self.rep,
            "manager": self.manager,
            "model_version": self.model_version,
            "partition": self.partition,
        }


@dataclass(frozen=True, slots=True)
class Leaders:
    """One partition's leaders of one score."""

    score: str
    partition: int
    at: datetime
    entries: tuple[Leader, ...]

    @property
    def key(self) -> bytes:
        return f"{self.score}/{self.partition}".encode()

    def to_bytes(self) -> bytes:
        return orjson.dumps(
            {
                "format": FORMAT,
                "score": self.score,
                "partition": self.partition,
                "at": self.at.isoformat(),
                "entries": [
                    [e.customer_id, e.value, e.rep, e.manager, e.model_version]
                    for e in self.entries
                ],
            }
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> Leaders:
        try:
            document = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise LeadersError(f"score leaders: expected JSON, found ({exc})") from None
        expected = {"format", "score", "partition", "at", "entries"}
        if not isinstance(document, dict) or set(document) != expected:
            found = sorted(document) if isinstance(document, dict) else type(document).__name__
            raise LeadersError(
                f"score leaders: expected the fields {sorted(expected)}, found {found}"
            )
        if document["format"] != FORMAT:
            raise LeadersError(
                f"score leaders.format: expected {FORMAT!r}, found {document['format']!r}"
            )
        partition = document["partition"]
        if isinstance(partition, bool) or not isinstance(partition, int) or partition < 0:
            raise LeadersError(
                f"score leaders.partition: expected a partition, found {partition!r}"
            )
        entries = []
        for index, row in enumerate(document["entries"]):
            if (
                not isinstance(row, list)
                or len(row) != 5
                or not isinstance(row[0], str)
                or not isinstance(row[1], int | float)
                or not isinstance(row[4], int)
            ):
                raise LeadersError(
                    f"score leaders.entries[{index}]: expected [customer, score, rep, manager, "
                    f"version], found {row!r}"
                )
            entries.append(Leader(row[0], float(row[1]), row[2], row[3], row[4], partition))
        return cls(
            str(document["score"]),
            partition,
            datetime.fromisoformat(document["at"]),
            tuple(entries),
        )


def managers(rulebook: RuleBook) -> dict[str, str]:
    """Rep -> manager over the running bundles (the first bundle by name wins)."""
    out: dict[str, str] = {}
    bundles = rulebook.bundles
    for name in sorted(bundles):
        for rep, manager in bundles[name].managers.items():
            out.setdefault(rep, manager)
    return out


def partition_leaders(
    states: Iterable[tuple[str, int, CustomerState]],
    scores: Iterable[str],
    manager_of: Mapping[str, str],
    at: datetime,
    partitions: Iterable[int] = (),
    per_rep: int = PER_REP,
) -> list[Leaders]:
    """Each (score, partition)'s leaders among ``states``, for the partitions of
    ``states`` and ``partitions``: one with no scored customer gets an empty record (it
    replaces an older one)."""
    names = tuple(scores)
    # (score, partition) -> rep -> [(-value, customer id, version)]: sorted, the first
    # per_rep are the rep's leaders (equal values: the smaller customer id first)
    groups: dict[tuple[str, int], dict[str | None, list[tuple[float, str, int]]]] = {}
    reported = set(partitions)
    for customer_id, partition, state in states:
        reported.add(partition)
        scored = state.scores
        if not scored:
            continue
        for name in names:
            score = scored.get(name)
            if score is not None:
                per = groups.get((name, partition))
                if per is None:
                    per = groups[(name, partition)] = {}
                rep = state.owner_rep_id
                candidates = per.get(rep)
                if candidates is None:
                    candidates = per[rep] = []
                candidates.append((-score.value, customer_id, score.model_version))
    out = []
    for name in names:
        for partition in sorted(reported):
            entries: list[Leader] = []
            for rep, candidates in groups.get((name, partition), {}).items():
                manager = None if rep is None else manager_of.get(rep)
                candidates.sort()
                entries.extend(
                    Leader(customer_id, -negated, rep, manager, version, partition)
                    for negated, customer_id, version in candidates[:per_rep]
                )
            entries.sort(key=_rank)
            out.append(Leaders(name, partition, at, tuple(entries[:ENTRIES_MAX])))
    return out


def _rank(leader: Leader) -> tuple[float, str]:
    return (-leader.value, leader.customer_id)


def top(
    records: Iterable[Leaders],
    score: str,
    k: int,
    rep: str | None = None,
    team: str | None = None,
) -> list[Leader]:
    """The ``k`` customers with the highest ``score`` over every partition's record, of
    one rep or one team (a manager's reps) when asked."""
    if not 1 <= k <= PER_REP:
        raise LeadersError(f"k: expected 1 to {PER_REP}, found {k}")
    chosen = [
        leader
        for record in records
        if record.score == score
        for leader in record.entries
        if (rep is None or leader.rep == rep) and (team is None or leader.manager == team)
    ]
    return sorted(chosen, key=_rank)[:k]


class Board:
    """The newest record of every (score, partition) read from ``score-leaders``."""

    def __init__(self) -> None:
        self.records: dict[bytes, Leaders] = {}
        self._index: dict[tuple[str, str | None], list[tuple[float, str]]] | None = None
        self._scores: set[str] = set()

    def take(self, key: bytes | None, value: bytes | None) -> None:
        if key is None:
            return
        self._index = None
        if value is None:
            self.records.pop(key, None)
            return
        try:
            self.records[key] = Leaders.from_bytes(value)
        except LeadersError as exc:
            log.warning("score-leaders %r: %s; ignored", key, exc)

    def above(self, score: str, rep: str | None, customer_id: str, value: float) -> int | None:
        """How many of ``rep``'s other customers rank above a customer with ``value``
        (engine.conditions.Ranks); None when no partition published ``score`` yet."""
        index = self._index
        if index is None:
            built: dict[tuple[str, str | None], list[tuple[float, str]]] = {}
            for record in self.records.values():
                for leader in record.entries:
                    key = (record.score, leader.rep)
                    built.setdefault(key, []).append((-leader.value, leader.customer_id))
            for standings in built.values():
                standings.sort()
            index = self._index = built
            self._scores = {r.score for r in self.records.values()}
        if score not in self._scores:
            return None
        standings = index.get((score, rep), [])
        position = bisect.bisect_left(standings, (-value, customer_id))
        # the customer's own published entry (an older value) does not count
        mine = sum(1 for _, c in standings[:position] if c == customer_id)
        return position - mine

    def top(
        self, score: str, k: int, rep: str | None = None, team: str | None = None
    ) -> list[Leader]:
        return top(self.records.values(), score, k, rep, team)

    def scores(self) -> list[str]:
        return sorted({r.score for r in self.records.values()})


async def read_board(settings: Settings) -> Board:
    """Every partition's leaders as the topic holds them now."""
    board = Board()
    async for message in records_to_end(settings, settings.topic(SCORE_LEADERS)):
        board.take(message.key, message.value)
    return board


async def follow_board(settings: Settings, board: Board) -> None:
    """Keep ``board`` up to date with ``score-leaders`` until cancelled."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers,
        enable_auto_commit=False,
        **client_options(settings),
    )
    await consumer.start()
    try:
        tp = TopicPartition(settings.topic(SCORE_LEADERS), 0)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        while True:
            for message in (await consumer.getmany(tp, timeout_ms=500)).get(tp, []):
                board.take(message.key, message.value)
    finally:
        await consumer.stop()


class Dirty:
    """Partitions whose customers changed since their leaders were last published."""

    def __init__(self) -> None:
        self.partitions: set[int] = set()
        self.generation: int | None = None

    def note(self, partitions: Iterable[int]) -> None:
        self.partitions.update(partitions)

    def take(self, owned: frozenset[int], generation: int | None) -> frozenset[int]:
        """What to publish now: the changed partitions still owned, or all owned ones
        after a rebalance (they may be new here)."""
        if generation != self.generation:
            self.generation = generation
            self.partitions.clear()
            return owned
        chosen = frozenset(self.partitions) & owned
        self.partitions.clear()
        return chosen


async def publish_leaders(
    settings: Settings,
    rulebook: RuleBook,
    states: Callable[[frozenset[int]], Iterable[tuple[str, int, CustomerState]]],
    owned: Callable[[], frozenset[int]],
    generation: Callable[[], int | None],
    dirty: Dirty,
    interval: float = PUBLISH_EVERY_SECONDS,
) -> None:
    """Publish the leaders of changed owned partitions every ``interval`` seconds."""
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.bootstrap_servers, acks="all", **client_options(settings)
    )
    await producer.start()
    topic = settings.topic(SCORE_LEADERS)
    try:
        while True:
            await asyncio.sleep(interval)
            current = generation()
            if current is None or not rulebook.scores:
                continue
            chosen = dirty.take(owned(), current)
            if not chosen:
                continue
            by_partition: dict[int, list[tuple[str, int, CustomerState]]] = {p: [] for p in chosen}
            for index, item in enumerate(states(chosen)):
                by_partition[item[1]].append(item)
                if index % STATES_BEFORE_YIELD == STATES_BEFORE_YIELD - 1:
                    await asyncio.sleep(0)
            manager_of = managers(rulebook)
            records: list[Leaders] = []
            for partition, items in sorted(by_partition.items()):
                # one partition at a time, yielding between: the event loop keeps going
                records.extend(
                    partition_leaders(
                        items, rulebook.scores, manager_of, datetime.now(UTC), [partition]
                    )
                )
                await asyncio.sleep(0)
            for record in records:
                await producer.send(topic, record.to_bytes(), key=record.key)
            await producer.flush()
    finally:
        await producer.stop()


def format_top(score: str, leaders: list[Leader], rep: str | None, team: str | None) -> str:
    """``warroom top`` as people read it: rank, customer, score, rep, model version."""
    whose = f" of rep {rep}" if rep else ""
    whose += f" in team {team}" if team else ""
    lines = [f"top {len(leaders)} by {score}{whose}"]
    if not leaders:
        lines.append("  no scored customers (yet): is a bundle declaring the score running?")
    for rank, leader in enumerate(leaders, 1):
        lines.append(
            f"  {rank:>2}. {leader.customer_id}  {leader.value:.3f}  rep {leader.rep or '-'}"
            f"  model v{leader.model_version}  (partition {leader.partition})"
        )
    return "\n".join(lines)


async def show_top(
    settings: Settings, score: str, k: int, rep: str | None = None, team: str | None = None
) -> int:
    """Print the top ``k`` by ``score`` across all partitions; 2 for a bad ``k``."""
    board = await read_board(settings)
    try:
        leaders = board.top(score, k, rep, team)
    except LeadersError as exc:
        print(exc, file=sys.stderr)
        return 2
    print(format_top(score, leaders, rep, team))
    return 0
