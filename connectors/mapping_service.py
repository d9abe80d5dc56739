"""Running the mapping connector against Kafka: following a topic, serving webhooks.

``follow`` reads an existing Kafka topic of JSON messages in a consumer group, maps each
message with a mapping, publishes the touchpoints (one transaction per batch), sends
every message that does not map to the ``dlq`` topic with its topic, partition and
offset, and only then commits the batch's offsets. A batch whose touchpoints or dead
letters Kafka did not take is read again from its first offset after a pause, so
nothing is skipped; what was published before a failure is published again with the
same event ids, which the worker drops as repeats. One batch (at most
``max_records`` messages) is held in memory at a time; stopping finishes the batch in
hand, commits it, and closes.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections import Counter, abc
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import orjson
from aiohttp import web
from aiokafka import TopicPartition

from schemas.models import DeadLetter, TouchpointEvent

from .kafka_io import read_committed_consumer, started
from .mapping import InvalidMapping, MappedBody, Mapping, RecordRejected, describe, load_mapping
from .publisher import (
    KafkaTouchpointSink,
    PublishError,
    PublishUnavailable,
    TouchpointSink,
    UnpublishableTouchpoints,
)
from .rejects import DeadLetterSink, KafkaDeadLetterSink, record_dead_letter
from .running import serve_intake, stop_on_signals
from .settings import IntakeSettings

log = logging.getLogger(__name__)

PUBLISH_CHUNK = 5_000
"""Touchpoints per publish call (one transaction each)."""
RETRY_PAUSE_SECONDS = 1.0
MAX_RETRY_PAUSE_SECONDS = 30.0

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


class Reason:
    NOT_JSON = "not_json"
    UNMAPPABLE = "unmappable"
    UNPUBLISHABLE = "unpublishable"


@dataclass(frozen=True, slots=True)
class FollowSettings:
    """Plain values :func:`follow` needs, handed over by whoever starts it."""

    intake: IntakeSettings
    topic: str
    """The existing topic of JSON messages to read."""
    group_id: str
    dlq_topic: str
    max_records: int = 500
    from_beginning: bool = True
    """Where a group with no committed offsets starts."""


@dataclass
class FollowStats:
    messages: int = 0
    touchpoints: int = 0
    skipped: int = 0
    """Records the mapping's filter left out, and empty messages (tombstones)."""
    dead_letters: Counter[str] = field(default_factory=Counter)
    batches: int = 0
    retries: int = 0


class Consumer(Protocol):
    """The part of AIOKafkaConsumer the follower uses."""

    async def getmany(
        self, *partitions: TopicPartition, timeout_ms: int = 0, max_records: int | None = None
    ) -> dict[TopicPartition, list[Any]]: ...

    async def commit(self, offsets: Any = None) -> None: ...

    def seek(self, partition: TopicPartition, offset: int) -> None: ...


class TopicFollower:
    """Maps batches of a topic into touchpoints and dead letters, then commits."""

    def __init__(
        self,
        mapping: Mapping,
        consumer: Consumer,
        sink: TouchpointSink,
        dead_letters: DeadLetterSink,
        max_records: int = 500,
        clock: Clock = utc_now,
    ) -> None:
        self.mapping = mapping
        self.stats = FollowStats()
        self._consumer = consumer
        self._sink = sink
        self._dead_letters = dead_letters
        self._max_records = max_records
        self._clock = clock
        self._pause = RETRY_PAUSE_SECONDS
        self._refused: set[str] = set()

    async def step(self, timeout_ms: int = 1000) -> int:
        """Read, map, publish, dead-letter and commit one batch; the messages handled
        (0 when none arrived, or when the batch must be read again)."""
        batch = await self._consumer.getmany(timeout_ms=timeout_ms, max_records=self._max_records)
        records = [record for part in batch.values() for record in part]
        if not records:
            return 0
        try:
            await self._handle(records)
        except PublishError as exc:
            self.stats.retries += 1
            log.warning(
                "batch of %d message(s) not taken (%s); reading it again", len(records), exc
            )
            for tp, part in batch.items():
                self._consumer.seek(tp, part[0].offset)
            await asyncio.sleep(self._pause)
            self._pause = min(2 * self._pause, MAX_RETRY_PAUSE_SECONDS)
            return 0
        await self._consumer.commit({tp: part[-1].offset + 1 for tp, part in batch.items()})
        self._pause = RETRY_PAUSE_SECONDS
        self.stats.batches += 1
        self.stats.messages += len(records)
        return len(records)

    async def _handle(self, records: list[Any]) -> None:
        received_at = self._clock()
        self._refused.clear()
        owners: dict[str, Any] = {}
        events: list[TouchpointEvent] = []
        letters: list[DeadLetter] = []
        skipped = 0
        for record in records:
            outcome = self._map(record, received_at)
            if isinstance(outcome, MappedBody):
                events.extend(outcome.events)
                owners.update((event.event_id, record) for event in outcome.events)
                skipped += outcome.skipped
            elif outcome is not None:
                letters.append(outcome)
            else:
                skipped += 1
        for start in range(0, len(events), PUBLISH_CHUNK):
            letters += await self._publish(events[start : start + PUBLISH_CHUNK], owners)
        for letter in letters:
            try:
                await self._dead_letters.send(letter)
            except Exception as exc:  # Kafka did not take it: read the batch again
                raise PublishUnavailable(f"dead letter not sent: {exc!r}") from exc
        self.stats.touchpoints += len(events) - len(self._refused)
        self.stats.skipped += skipped
        for letter in letters:
            self.stats.dead_letters[letter.reason] += 1

    async def _publish(
        self, events: list[TouchpointEvent], owners: dict[str, Any]
    ) -> list[DeadLetter]:
        """Publish; a message whose touchpoints can never be published becomes a dead
        letter and the others are published without it."""
        letters: list[DeadLetter] = []
        while events:
            try:
                await self._sink.publish(events)
                return letters
            except UnpublishableTouchpoints as exc:
                culprits = {
                    id(owners[p["event_id"]]) for p in exc.problems if p["event_id"] in owners
                }
                if not culprits:
                    raise
                bad = {
                    id(owners[e.event_id]): owners[e.event_id]
                    for e in events
                    if id(owners[e.event_id]) in culprits
                }
                for record in bad.values():
                    detail = "; ".join(p["message"] for p in exc.problems)
                    letters.append(
                        self._letter(record, Reason.UNPUBLISHABLE, f"does not encode: {detail}")
                    )
                dropped = [e for e in events if id(owners[e.event_id]) in culprits]
                self._refused.update(e.event_id for e in dropped)
                events = [e for e in events if id(owners[e.event_id]) not in culprits]
        return letters

    def _map(self, record: Any, received_at: datetime) -> MappedBody | DeadLetter | None:
        """A MappedBody, a dead letter, or None for an empty message."""
        if record.value is None:
            return None
        try:
            payload = orjson.loads(record.value)
        except orjson.JSONDecodeError as exc:
            return self._letter(record, Reason.NOT_JSON, f"expected a JSON value, found: {exc}")
        try:
            return self.mapping.map_body(payload, received_at)
        except RecordRejected as rejected:
            detail = "; ".join(describe(p) for p in rejected.problems)
            return self._letter(record, Reason.UNMAPPABLE, f"mapping {self.mapping.name}: {detail}")

    def _letter(self, record: Any, reason: str, detail: str) -> DeadLetter:
        # values may carry personal data: the log names the position and reason only
        log.info(
            "dead letter %s at %s[%d]@%d", reason, record.topic, record.partition, record.offset
        )
        return record_dead_letter(record, reason, detail, self._clock())


async def follow(settings: FollowSettings, mapping: Mapping, stop: asyncio.Event) -> FollowStats:
    """Follow the topic until ``stop`` is set; the batch in hand is finished first."""
    consumer = read_committed_consumer(
        settings.intake,
        settings.topic,
        group_id=settings.group_id,
        from_beginning=settings.from_beginning,
    )
    sink = KafkaTouchpointSink(settings.intake)
    dead_letters = KafkaDeadLetterSink(
        settings.intake.bootstrap_servers, settings.dlq_topic, settings.intake.security
    )
    async with started(sink, dead_letters, consumer):
        follower = TopicFollower(mapping, consumer, sink, dead_letters, settings.max_records)
        while not stop.is_set():
            await follower.step(timeout_ms=500)
    return follower.stats


async def serve_http(
    settings: IntakeSettings,
    make_app: Callable[[TouchpointSink], web.Application],
    host: str,
    port: int,
    banner: str,
) -> None:
    """Serve an intake app publishing through a Kafka sink until SIGINT or SIGTERM."""
    await serve_intake(
        settings,
        make_app,
        host,
        port,
        stop_on_signals(),
        lambda producer: f"{banner} on http://{host}:{port} (producer {producer})",
    )


def load_mapping_file(path: str) -> Mapping:
    """A mapping from a file; InvalidMapping names every problem with its line."""
    return load_mapping(Path(path).read_text(encoding="utf-8"), path)


def _loaded_or_reported(path: str) -> Mapping | None:
    """The mapping, or None once every problem with it is on stderr, one a line."""
    try:
        return load_mapping_file(path)
    except InvalidMapping as invalid:
        for problem in invalid.problems:
            print(problem, file=sys.stderr)
        return None


def source_secret_variable(name: str) -> str:
    """The environment variable holding a webhook source's secret."""
    return "WARROOM_WEBHOOK_SECRET_" + "".join(c if c.isalnum() else "_" for c in name).upper()


def parse_sources(specs: Sequence[str]) -> list[tuple[str, str]]:
    """``NAME=MAPPING.yaml`` pairs, or ValueError saying what was expected."""
    pairs = []
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise ValueError(f"--source: expected NAME=MAPPING.yaml, found {spec!r}")
        pairs.append((name, path))
    return pairs


# --- command-line entry points (``warroom mapping``, ``warroom webhook``) ---------------


def check_files(paths: Sequence[str]) -> int:
    """``warroom mapping check``: 0 when every mapping loads, else 2 with every problem."""
    failed = 0
    for path in paths:
        try:
            mapping = _loaded_or_reported(path)
        except OSError as exc:
            failed += 1
            print(f"{path}: cannot read: {exc.strerror}", file=sys.stderr)
            continue
        if mapping is None:
            failed += 1
            continue
        print(f"{path}: mapping {mapping.name} v{mapping.version}: ok")
    return 2 if failed else 0


@dataclass(frozen=True, slots=True)
class _Unparsed:
    message: str


def dry_run(mapping_path: str, input_path: str, now: datetime | None = None) -> int:
    """``warroom mapping map``: the touchpoints a JSON or JSON Lines file maps to, one JSON
    object a line on stdout; every problem on stderr with its line and record."""
    mapping = _loaded_or_reported(mapping_path)
    if mapping is None:
        return 2
    text = Path(input_path).read_bytes()
    documents: list[tuple[int, Any]] = []
    try:
        documents.append((0, orjson.loads(text)))
    except orjson.JSONDecodeError:
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                documents.append((number, orjson.loads(line)))
            except orjson.JSONDecodeError as exc:
                documents.append((number, _Unparsed(f"(record): expected JSON, found: {exc}")))
    problems = skipped = mapped = 0
    for number, document in documents:
        where = f"{input_path}:{number}" if number else input_path
        if isinstance(document, _Unparsed):
            print(f"{where}: {document.message}", file=sys.stderr)
            problems += 1
            continue
        try:
            result = mapping.map_body(document, now or utc_now())
        except RecordRejected as rejected:
            for item in rejected.problems:
                print(f"{where}: {describe(item)}", file=sys.stderr)
            problems += 1
            continue
        skipped += result.skipped
        for event in result.events:
            mapped += 1
            print(event.model_dump_json())
    print(f"{mapped} touchpoint(s), {skipped} left out by the filter, {problems} refused",
          file=sys.stderr)  # fmt: skip
    return 2 if problems else 0


def run_follow(settings: FollowSettings, mapping_path: str) -> int:
    """``warroom mapping follow``: follow the topic until SIGINT or SIGTERM."""
    mapping = _loaded_or_reported(mapping_path)
    if mapping is None:
        return 2

    async def main() -> FollowStats:
        print(
            f"following {settings.topic} with mapping {mapping.name} v{mapping.version} "
            f"(group {settings.group_id})",
            flush=True,
        )
        return await follow(settings, mapping, stop_on_signals())

    stats = asyncio.run(main())
    print(
        f"{stats.messages} message(s): {stats.touchpoints} touchpoint(s), {stats.skipped} "
        f"left out, dead letters {dict(stats.dead_letters)}"
    )
    return 0


def run_webhooks(
    settings: IntakeSettings,
    specs: Sequence[str],
    host: str,
    port: int,
    environ: abc.Mapping[str, str],
) -> int:
    """``warroom webhook serve``: each ``NAME=MAPPING.yaml`` source with its secret from
    ``WARROOM_WEBHOOK_SECRET_<NAME>``."""
    from pydantic import SecretStr

    from .webhook import WebhookSource, create_webhook_app

    sources = []
    try:
        for name, path in parse_sources(specs):
            variable = source_secret_variable(name)
            secret = environ.get(variable, "")
            if not secret:
                raise ValueError(f"source {name}: expected its secret in {variable}, found none")
            sources.append(WebhookSource(name, SecretStr(secret), load_mapping_file(path)))
    except InvalidMapping as invalid:
        for problem in invalid.problems:
            print(problem, file=sys.stderr)
        return 2
    except (ValueError, OSError) as exc:
        print(f"warroom webhook serve: {exc}", file=sys.stderr)
        return 2
    if not sources:
        print(
            "warroom webhook serve: expected at least one --source NAME=MAPPING.yaml",
            file=sys.stderr,
        )
        return 2
    names = ", ".join(f"/v1/webhooks/{s.name}" for s in sources)
    asyncio.run(
        serve_http(
            settings,
            lambda sink: create_webhook_app(sources, sink),
            host,
            port,
            f"webhooks {names} listening",
        )
    )
    return 0
