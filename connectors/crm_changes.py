"""CRM changes: Debezium change events of a deals table -> touchpoints.

A Debezium source connector writes one JSON change event per row change to a Kafka
topic: an envelope with ``before``, ``after``, ``op`` (``c`` create, ``u`` update,
``d`` delete, ``r`` snapshot read), ``source`` (connector, db, schema, table,
``ts_ms``, position such as ``lsn``) and ``ts_ms``, either bare or wrapped as
``{"schema": ..., "payload": ...}`` by Kafka Connect's JsonConverter. After a delete
comes a tombstone: the same key with a null value, for log compaction.

A mapping names, per table, the columns of the deal id, customer, stage, owner,
amount and (optionally) when the deal entered its stage; the stage names that mean
won or lost. A row change becomes:

* ``stage_changed`` when the stage differs (``stage``, ``previous_stage``,
  ``days_in_previous_stage`` when the stage-entered column is mapped), and also
  ``deal_won`` / ``deal_lost`` when the new stage is a won / lost stage;
* ``owner_changed`` when the owner differs (``rep_id`` the new owner,
  ``previous_rep`` the old one);
* for a create, ``stage_changed`` into the first stage; for a snapshot read, with
  ``snapshot: emit``, ``stage_changed`` with ``snapshot: true`` (the deal's current
  stage, not a change; no won/lost since when it closed is not known).

Deletes, tombstones, truncates, logical decoding messages, updates that change neither
stage nor owner and rows of tables the mapping does not name make no touchpoint; they
are counted. An update without
its ``before`` row (the table's REPLICA IDENTITY is not FULL) cannot be compared and
is rejected. ``event_id`` is derived from the change's position in the database log
(connector, table, deal, op, LSN or binlog position, kind), so reading the topic
again yields the same ids and the worker drops them as repeats; a snapshot read's id
comes from the row's stage and owner instead, so a second snapshot of an unchanged
row repeats the first.

:class:`CrmChangeReader` reads the topic in a consumer group, publishes each poll's
touchpoints in one transaction, sends records it cannot use to the dead-letter topic
with their topic, partition and offset, and commits the offsets only after both.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import logging
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

import orjson
import yaml
from aiokafka import TopicPartition
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from schemas.models import Channel, Direction, TouchpointEvent

from .kafka_io import PollingConsumer, commit_poll, read_committed_consumer, started
from .publisher import (
    KafkaTouchpointSink,
    PublishUnavailable,
    TouchpointSink,
    UnpublishableTouchpoints,
)
from .rejects import DeadLetterSink, KafkaDeadLetterSink, record_dead_letter
from .running import stop_on_signals
from .settings import IntakeSettings

log = logging.getLogger(__name__)

SOURCE = "crm-debezium/0.1.0"
SHOWN_MAX = 40
"""A rejected value is shown in a dead letter's detail cut to this many characters."""

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


# --------------------------------------------------------------------------- mapping


class Columns(BaseModel):
    """Column names of the table, as Debezium names the fields of ``before``/``after``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    deal_id: str = Field(min_length=1)
    customer_id: str = Field(min_length=1)
    stage: str = Field(min_length=1)
    owner: str | None = Field(None, min_length=1)
    amount: str | None = Field(None, min_length=1)
    stage_entered_at: str | None = Field(None, min_length=1)
    """When the deal entered its current stage; gives ``days_in_previous_stage``."""


class TableMapping(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    table: str = Field(min_length=1)
    schema_name: str | None = Field(None, alias="schema", min_length=1)
    """The database schema (Postgres) of the table; any schema when left out."""
    columns: Columns
    won_stages: frozenset[str] = frozenset({"closed_won"})
    lost_stages: frozenset[str] = frozenset({"closed_lost"})
    snapshot: Literal["emit", "skip"] = "emit"
    """Snapshot reads (``op: r``): ``emit`` the current stage, or ``skip`` them."""
    timestamp_unit: Literal["micros", "millis", "nanos"] = "micros"
    """Unit of an integer stage-entered value when the event carries no schema
    (Debezium writes Postgres ``timestamp`` columns as microseconds by default)."""
    industry: str | None = Field(None, min_length=1, max_length=64)

    @model_validator(mode="after")
    def _stages_disjoint(self) -> TableMapping:
        both = self.won_stages & self.lost_stages
        if both:
            msg = f"expected won_stages and lost_stages to differ, found both list {sorted(both)}"
            raise ValueError(msg)
        return self

    def matches(self, source: Mapping[str, Any]) -> bool:
        if source.get("table") != self.table:
            return False
        return self.schema_name is None or source.get("schema") == self.schema_name


class CrmMapping(BaseModel):
    """Which tables become touchpoints and how (``tables`` in the mapping YAML)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    tables: list[TableMapping] = Field(min_length=1)

    def for_source(self, source: Mapping[str, Any]) -> TableMapping | None:
        for table in self.tables:
            if table.matches(source):
                return table
        return None


class InvalidMapping(ValueError):
    """A mapping file that does not describe tables; ``problems`` name line and field."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


def load_mapping(text: str, source: str = "<mapping>") -> CrmMapping:
    """Parse and check a mapping YAML; raise :class:`InvalidMapping` naming every problem
    with its line (1-based) and field."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark else 1
        raise InvalidMapping([f"{source}:{line}: (yaml): not valid YAML: {exc.problem}"]) from None
    try:
        return CrmMapping.model_validate(data)
    except ValidationError as exc:
        problems = []
        for item in exc.errors(include_url=False):
            loc = tuple(item["loc"])
            where = ".".join(str(part) for part in loc) or "(mapping)"
            problems.append(f"{source}:{_line_of(root, loc)}: {where}: {item['msg']}")
        raise InvalidMapping(problems) from None


def read_mapping(path: Path) -> CrmMapping:
    return load_mapping(path.read_text(encoding="utf-8"), str(path))


def _line_of(node: yaml.Node | None, loc: tuple[int | str, ...]) -> int:
    """Line of the deepest node of ``loc`` present in the YAML (1 when none is)."""
    line = 1 if node is None else node.start_mark.line + 1
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            found = [value for key, value in node.value if key.value == part]
            if not found:
                return line
            node = found[0]
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if part >= len(node.value):
                return line
            node = node.value[part]
        else:
            return line
        line = node.start_mark.line + 1
    return line


# --------------------------------------------------------------------------- parsing


class Reason(StrEnum):
    """Why a record became a dead letter (the DeadLetter's ``reason``)."""

    NOT_JSON = "not_json"
    NOT_A_CHANGE_EVENT = "not_a_change_event"
    MISSING_COLUMN = "missing_column"
    INVALID_VALUE = "invalid_value"
    NO_BEFORE_IMAGE = "no_before_image"
    UNPUBLISHABLE = "unpublishable"


class Skip(StrEnum):
    """Why a valid record made no touchpoint (counted, never a dead letter)."""

    TOMBSTONE = "tombstone"
    DELETE = "delete"
    UNCHANGED = "unchanged"
    SNAPSHOT = "snapshot"
    UNMAPPED_TABLE = "unmapped_table"
    NOT_A_ROW_CHANGE = "not_a_row_change"


@dataclass(frozen=True, slots=True)
class Rejected:
    reason: Reason
    detail: str


@dataclass(frozen=True, slots=True)
class Changed:
    """What one change event became: touchpoints, or why none (``skipped``)."""

    touchpoints: list[TouchpointEvent]
    skipped: Skip | None = None


class _Invalid(Exception):
    def __init__(self, reason: Reason, detail: str) -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(detail)


_OPS = ("c", "u", "d", "r", "t", "m")
_NOT_ROW_CHANGES = ("t", "m")
"""Truncate and (Postgres) logical decoding message events: valid, but no row changed."""
_POSITION_FIELDS = (
    "lsn",  # Postgres
    "sequence",
    "file",  # MySQL binlog
    "pos",
    "row",
    "event_serial_no",
    "change_lsn",  # SQL Server
    "commit_lsn",
    "scn",  # Oracle
    "ord",  # MongoDB
)
"""Fields of ``source`` that place a change in its database's log, by connector; with
``source.ts_ms`` they identify the change."""


def convert(value: bytes | None, mapping: CrmMapping, received_at: datetime) -> Changed | Rejected:
    """One Kafka record value of a Debezium topic -> touchpoints (possibly none), or the
    reason it cannot be used: a reason code and a detail naming the field, what was
    expected and what was found."""
    if value is None:
        return Changed([], Skip.TOMBSTONE)
    try:
        return _convert(value, mapping, received_at)
    except _Invalid as invalid:
        return Rejected(invalid.reason, invalid.detail)


def _convert(value: bytes, mapping: CrmMapping, received_at: datetime) -> Changed:
    try:
        document = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise _Invalid(Reason.NOT_JSON, f"expected a JSON change event, found: {exc}") from None
    schema, payload = _unwrapped(document)
    op = payload.get("op")
    if op not in _OPS:
        expected = ", ".join(_OPS)
        raise _Invalid(
            Reason.NOT_A_CHANGE_EVENT, f"op: expected one of {expected}, found {_shown(op)}"
        )
    if op in _NOT_ROW_CHANGES:
        return Changed([], Skip.NOT_A_ROW_CHANGE)
    source = payload.get("source")
    if not isinstance(source, dict):
        raise _Invalid(
            Reason.NOT_A_CHANGE_EVENT,
            f"source: expected an object naming connector, db and table, found {_shown(source)}",
        )
    table = mapping.for_source(source)
    if table is None:
        return Changed([], Skip.UNMAPPED_TABLE)
    before, after = (_row(payload, name) for name in ("before", "after"))
    if op == "d":
        return Changed([], Skip.DELETE)
    if after is None:
        raise _Invalid(
            Reason.NOT_A_CHANGE_EVENT, f"after: expected the row for op {op}, found null"
        )
    if op == "r" and table.snapshot == "skip":
        return Changed([], Skip.SNAPSHOT)
    if op == "u" and before is None:
        detail = (
            f"before: expected the row before the update to compare stage and owner, found "
            f"null (set REPLICA IDENTITY FULL on table {table.table})"
        )
        raise _Invalid(Reason.NO_BEFORE_IMAGE, detail)
    change = _Change(
        table=table,
        fields=_field_schemas(schema),
        source=source,
        op=op,
        occurred_at=_occurred_at(source, payload),
        received_at=received_at,
    )
    now = change.read(after, "after")
    if op == "u":
        assert before is not None
        events = change.updated(change.read(before, "before"), now)
        return Changed(events) if events else Changed([], Skip.UNCHANGED)
    if op == "r":
        return Changed([change.snapshot(now)])
    return Changed(change.created(now))


def _unwrapped(document: Any) -> tuple[Mapping[str, Any] | None, Mapping[str, Any]]:
    """(schema, payload) of an event with or without JsonConverter's schema wrapper."""
    if not isinstance(document, dict):
        found = type(document).__name__
        raise _Invalid(
            Reason.NOT_A_CHANGE_EVENT, f"expected a JSON object (a change event), found {found}"
        )
    if "payload" in document and set(document) <= {"schema", "payload"}:
        schema, payload = document.get("schema"), document["payload"]
        if not isinstance(payload, dict):
            found = type(payload).__name__
            raise _Invalid(
                Reason.NOT_A_CHANGE_EVENT, f"payload: expected a change event object, found {found}"
            )
        return (schema if isinstance(schema, dict) else None), payload
    if "op" not in document:
        keys = ", ".join(sorted(document)[:8])
        detail = (
            "expected a Debezium envelope with op, before, after and source, found an object "
            f"with keys {keys} (is the ExtractNewRecordState transform flattening events?)"
        )
        raise _Invalid(Reason.NOT_A_CHANGE_EVENT, detail)
    return None, document


def _row(payload: Mapping[str, Any], name: str) -> Mapping[str, Any] | None:
    row = payload.get(name)
    if row is None or isinstance(row, dict):
        return row
    raise _Invalid(
        Reason.NOT_A_CHANGE_EVENT, f"{name}: expected a row object or null, found {_shown(row)}"
    )


def _field_schemas(schema: Mapping[str, Any] | None) -> dict[str, dict[str, Mapping[str, Any]]]:
    """Per side (``before``, ``after``): column name -> its Kafka Connect field schema,
    from the envelope's schema; empty without one."""
    sides: dict[str, dict[str, Mapping[str, Any]]] = {"before": {}, "after": {}}
    if schema is None:
        return sides
    for part in schema.get("fields") or ():
        if isinstance(part, dict) and part.get("field") in sides:
            sides[part["field"]] = {
                column["field"]: column
                for column in part.get("fields") or ()
                if isinstance(column, dict) and isinstance(column.get("field"), str)
            }
    return sides


def _occurred_at(source: Mapping[str, Any], payload: Mapping[str, Any]) -> datetime:
    """When the database made the change (``source.ts_ms``), else when Debezium saw it."""
    for where, millis in (("source.ts_ms", source.get("ts_ms")), ("ts_ms", payload.get("ts_ms"))):
        if millis is None:
            continue
        if type(millis) is not int:
            raise _Invalid(
                Reason.INVALID_VALUE,
                f"{where}: expected epoch milliseconds, found {_shown(millis)}",
            )
        return _from_epoch(millis, 1_000, where)
    raise _Invalid(
        Reason.NOT_A_CHANGE_EVENT, "source.ts_ms: expected epoch milliseconds, found none"
    )


@dataclass(frozen=True, slots=True)
class _Row:
    deal_id: str
    customer_id: str
    stage: str
    owner: str | None
    amount: float | None
    stage_entered_at: datetime | None


@dataclass(frozen=True, slots=True)
class _Change:
    table: TableMapping
    fields: Mapping[str, Mapping[str, Mapping[str, Any]]]
    """Field schemas by side and column (see _field_schemas)."""
    source: Mapping[str, Any]
    op: str
    occurred_at: datetime
    received_at: datetime

    def read(self, row: Mapping[str, Any], side: str) -> _Row:
        columns = self.table.columns
        return _Row(
            deal_id=self._id(row, side, columns.deal_id),
            customer_id=self._id(row, side, columns.customer_id),
            stage=self._id(row, side, columns.stage),
            owner=self._optional_id(row, side, columns.owner),
            amount=self._amount(row, side, columns.amount),
            stage_entered_at=self._time(row, side, columns.stage_entered_at),
        )

    def _present(self, row: Mapping[str, Any], side: str, column: str) -> Any:
        if column not in row:
            shown = ", ".join(sorted(row)[:12])
            detail = f"{side}.{column}: expected the mapped column, found only columns {shown}"
            raise _Invalid(Reason.MISSING_COLUMN, detail)
        return row[column]

    def _id(self, row: Mapping[str, Any], side: str, column: str) -> str:
        value = self._present(row, side, column)
        text = _as_id(value)
        if text is None:
            detail = f"{side}.{column}: expected a non-empty string or an integer, found "
            raise _Invalid(Reason.INVALID_VALUE, detail + _shown(value))
        return text

    def _optional_id(self, row: Mapping[str, Any], side: str, column: str | None) -> str | None:
        if column is None or self._present(row, side, column) is None:
            return None
        return self._id(row, side, column)

    def _amount(self, row: Mapping[str, Any], side: str, column: str | None) -> float | None:
        if column is None:
            return None
        value = self._present(row, side, column)
        if value is None:
            return None
        amount = _decimal(value, self.fields[side].get(column))
        if amount is None:
            detail = (
                f"{side}.{column}: expected a number, a numeric string (decimal.handling.mode "
                f"double or string) or a Connect Decimal with its schema, found {_shown(value)}"
            )
            raise _Invalid(Reason.INVALID_VALUE, detail)
        return float(amount)

    def _time(self, row: Mapping[str, Any], side: str, column: str | None) -> datetime | None:
        if column is None:
            return None
        value = self._present(row, side, column)
        if value is None:
            return None
        return _timestamp(
            value, self.fields[side].get(column), self.table.timestamp_unit, f"{side}.{column}"
        )

    # -- touchpoints

    def created(self, now: _Row) -> list[TouchpointEvent]:
        events = [self._event("stage_changed", now, {"stage": now.stage})]
        events.extend(self._closed(now))
        return events

    def snapshot(self, now: _Row) -> TouchpointEvent:
        # Identified by what the row says, not where the snapshot read it: a later
        # snapshot of the unchanged row repeats this event id.
        identity = ("r", now.stage, now.owner or "")
        return self._event("stage_changed", now, {"stage": now.stage, "snapshot": True}, identity)

    def updated(self, then: _Row, now: _Row) -> list[TouchpointEvent]:
        events: list[TouchpointEvent] = []
        if then.stage != now.stage:
            attributes: dict[str, str | int | float | bool] = {
                "stage": now.stage,
                "previous_stage": then.stage,
            }
            if then.stage_entered_at is not None:
                days = (self.occurred_at - then.stage_entered_at) / timedelta(days=1)
                if days >= 0:
                    attributes["days_in_previous_stage"] = round(days, 3)
            events.append(self._event("stage_changed", now, attributes))
            events.extend(self._closed(now, then))
        if then.owner != now.owner:
            attributes = {"stage": now.stage}
            if then.owner is not None:
                attributes["previous_rep"] = then.owner
            events.append(self._event("owner_changed", now, attributes))
        return events

    def _closed(self, now: _Row, then: _Row | None = None) -> list[TouchpointEvent]:
        """``deal_won`` / ``deal_lost`` when the deal enters a won / lost stage (moving
        between two won stages is not winning again)."""
        for kind, stages in (
            ("deal_won", self.table.won_stages),
            ("deal_lost", self.table.lost_stages),
        ):
            if now.stage in stages and (then is None or then.stage not in stages):
                return [self._event(kind, now, {"stage": now.stage})]
        return []

    def _event(
        self,
        kind: str,
        row: _Row,
        attributes: dict[str, str | int | float | bool],
        identity: tuple[str, ...] | None = None,
    ) -> TouchpointEvent:
        common: dict[str, str | int | float | bool] = {"deal_id": row.deal_id}
        if row.amount is not None:
            common["amount"] = row.amount
        where = identity if identity is not None else (self.op, *self._position())
        return TouchpointEvent(
            event_id=self._event_id(row.deal_id, kind, where),
            customer_id=row.customer_id,
            occurred_at=self.occurred_at,
            received_at=self.received_at,
            channel=Channel.CRM,
            kind=kind,
            direction=Direction.NONE,
            rep_id=row.owner,
            attributes={**common, **attributes},
            source=SOURCE,
            industry=self.table.industry,
        )

    def _position(self) -> tuple[str, ...]:
        # source.ts_ms too: some positions are unique only within it (MongoDB's ord)
        found = [
            f"{name}={self.source[name]}"
            for name in _POSITION_FIELDS
            if self.source.get(name) is not None
        ]
        return (*found, f"ts_ms={self.source.get('ts_ms')}")

    def _event_id(self, deal_id: str, kind: str, where: tuple[str, ...]) -> str:
        parts = (
            str(self.source.get("name", "")),
            str(self.source.get("db", "")),
            str(self.source.get("schema", "")),
            str(self.source.get("table", "")),
            deal_id,
            kind,
            *where,
        )
        digest = hashlib.sha256("\x1f".join(parts).encode()).hexdigest()
        return f"crm:{digest[:32]}"


def _as_id(value: Any) -> str | None:
    if isinstance(value, str) and value.strip():
        return value
    if type(value) is int:
        return str(value)
    return None


_DECIMAL = "org.apache.kafka.connect.data.Decimal"
_VARIABLE_DECIMAL = "io.debezium.data.VariableScaleDecimal"


def _decimal(value: Any, field_schema: Mapping[str, Any] | None) -> Decimal | None:
    name = (field_schema or {}).get("name")
    if type(value) is int or type(value) is float:
        return Decimal(str(value))
    if name == _VARIABLE_DECIMAL and isinstance(value, dict):
        return _unscaled(value.get("value"), value.get("scale"))
    if name == _DECIMAL and isinstance(value, str):
        parameters = (field_schema or {}).get("parameters") or {}
        return _unscaled(value, parameters.get("scale"))
    if isinstance(value, str):
        try:
            number = Decimal(value)
        except InvalidOperation:
            return None
        return number if number.is_finite() else None
    return None


def _unscaled(encoded: Any, scale: Any) -> Decimal | None:
    """Connect's Decimal: base64 of the big-endian two's-complement unscaled integer."""
    try:
        digits = int.from_bytes(base64.b64decode(str(encoded), validate=True), "big", signed=True)
        return Decimal(digits).scaleb(-int(scale))
    except (binascii.Error, ValueError, TypeError):
        return None


_EPOCH_UNITS = {
    "io.debezium.time.Timestamp": 1_000,
    "org.apache.kafka.connect.data.Timestamp": 1_000,
    "io.debezium.time.MicroTimestamp": 1_000_000,
    "io.debezium.time.NanoTimestamp": 1_000_000_000,
}
_UNITS = {"millis": 1_000, "micros": 1_000_000, "nanos": 1_000_000_000}


def _timestamp(
    value: Any, field_schema: Mapping[str, Any] | None, unit: str, where: str
) -> datetime:
    name = (field_schema or {}).get("name")
    if type(value) is int:
        if name == "io.debezium.time.Date" or name == "org.apache.kafka.connect.data.Date":
            return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(days=value)
        return _from_epoch(value, _EPOCH_UNITS.get(str(name), _UNITS[unit]), where)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            parsed = None
        if parsed is not None:
            # Debezium writes zoned values with an offset; a naive one is taken as UTC.
            return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    detail = (
        f"{where}: expected an epoch integer ({unit} without a schema) or an ISO-8601 "
        f"timestamp, found {_shown(value)}"
    )
    raise _Invalid(Reason.INVALID_VALUE, detail)


def _from_epoch(value: int, per_second: int, where: str) -> datetime:
    try:
        return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(seconds=value / per_second)
    except OverflowError:
        detail = f"{where}: expected a timestamp between years 1 and 9999, found {value}"
        raise _Invalid(Reason.INVALID_VALUE, detail) from None


def _shown(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool | int | float):
        return f"{type(value).__name__} {value}"
    if isinstance(value, str):
        cut = value if len(value) <= SHOWN_MAX else value[:SHOWN_MAX] + "..."
        return f"string {cut!r}"
    return type(value).__name__


# --------------------------------------------------------------------------- reading


ChangeConsumer = PollingConsumer
"""The part of :class:`aiokafka.AIOKafkaConsumer` the reader uses."""


@dataclass
class ReaderStats:
    records: int = 0
    touchpoints: int = 0
    dead_letters: Counter[str] = field(default_factory=Counter)
    skipped: Counter[str] = field(default_factory=Counter)
    commits: int = 0
    publish_retries: int = 0


@dataclass(frozen=True, slots=True)
class _Converted:
    record: Any
    touchpoints: list[TouchpointEvent]


class CrmChangeReader:
    """Reads Debezium topics in a consumer group and publishes touchpoints.

    Each poll (at most ``max_records`` records: the in-memory bound) is handled as a
    unit: its records that cannot be used go to the dead-letter sink, its touchpoints
    are published in one transaction, then its offsets are committed. When Kafka does
    not take the touchpoints the same touchpoints are tried again (after a backoff)
    and nothing is committed meanwhile; a crash in between makes the next reader read
    the poll again, and its touchpoints carry the same event ids.
    """

    def __init__(
        self,
        mapping: CrmMapping,
        consumer: ChangeConsumer,
        sink: TouchpointSink,
        dead_letters: DeadLetterSink,
        clock: Clock = utc_now,
        max_records: int = 500,
        poll_timeout_ms: int = 500,
        retry_backoff_seconds: float = 1.0,
        sleep: Callable[[float], Any] = asyncio.sleep,
    ) -> None:
        self.mapping = mapping
        self.stats = ReaderStats()
        self._consumer = consumer
        self._sink = sink
        self._dead_letters = dead_letters
        self._clock = clock
        self._max_records = max_records
        self._poll_timeout_ms = poll_timeout_ms
        self._backoff = retry_backoff_seconds
        self._sleep = sleep

    async def run(self, stop: asyncio.Event) -> None:
        """Poll and handle until ``stop`` is set; the poll in hand is finished first."""
        while not stop.is_set():
            batch = await self._consumer.getmany(
                timeout_ms=self._poll_timeout_ms, max_records=self._max_records
            )
            if batch:
                await self.handle(batch, stop)

    async def handle(
        self, batch: Mapping[TopicPartition, Sequence[Any]], stop: asyncio.Event | None = None
    ) -> bool:
        """Handle one poll; True when its offsets were committed. Returns False, without
        committing, when stopping while Kafka keeps refusing the touchpoints."""
        received_at = self._clock()
        converted: list[_Converted] = []
        for records in batch.values():
            for record in records:
                self.stats.records += 1
                outcome = convert(record.value, self.mapping, received_at)
                if isinstance(outcome, Rejected):
                    await self._reject(record, outcome.reason, outcome.detail)
                    continue
                if outcome.skipped is not None:
                    self.stats.skipped[outcome.skipped.value] += 1
                converted.append(_Converted(record, outcome.touchpoints))
        if not await self._publish(converted, stop):
            return False
        # When the group moved the partitions, their next owner reads the poll again and
        # its touchpoints repeat these event ids.
        if not await commit_poll(self._consumer, batch, "the records", log):
            return False
        self.stats.commits += 1
        return True

    async def _publish(self, converted: list[_Converted], stop: asyncio.Event | None) -> bool:
        while True:
            events = [event for item in converted for event in item.touchpoints]
            try:
                await self._sink.publish(events)
            except UnpublishableTouchpoints as exc:
                converted = await self._drop_unpublishable(converted, exc)
                continue
            except PublishUnavailable as exc:
                self.stats.publish_retries += 1
                log.warning("touchpoints not published, retrying: %s", exc)
                if stop is not None and stop.is_set():
                    return False
                await self._sleep(self._backoff)
                continue
            self.stats.touchpoints += len(events)
            return True

    async def _drop_unpublishable(
        self, converted: list[_Converted], exc: UnpublishableTouchpoints
    ) -> list[_Converted]:
        bad = {problem["event_id"]: problem["message"] for problem in exc.problems}
        kept: list[_Converted] = []
        for item in converted:
            messages = [bad[e.event_id] for e in item.touchpoints if e.event_id in bad]
            if messages:
                detail = f"a touchpoint of this change does not encode: {messages[0]}"
                await self._reject(item.record, Reason.UNPUBLISHABLE, detail)
            else:
                kept.append(item)
        return kept

    async def _reject(self, record: Any, reason: Reason, detail: str) -> None:
        self.stats.dead_letters[reason.value] += 1
        # Values may carry personal data: the log names the position and reason only.
        log.info(
            "dead letter %s at %s[%d]@%d",
            reason.value,
            record.topic,
            record.partition,
            record.offset,
        )
        await self._dead_letters.send(
            record_dead_letter(record, reason.value, detail, self._clock())
        )


@dataclass(frozen=True, slots=True)
class ChangeReaderSettings:
    """Plain values :func:`follow` needs, handed over by whoever starts it."""

    intake: IntakeSettings
    topics: tuple[str, ...]
    """Debezium topics to read (e.g. ``crm.public.deals``)."""
    group_id: str
    dlq_topic: str
    max_records: int = 500
    from_beginning: bool = True
    """Where a group with no committed offsets starts."""


async def follow(
    settings: ChangeReaderSettings, mapping: CrmMapping, stop: asyncio.Event
) -> ReaderStats:
    """Read the topics until ``stop`` is set: publish, dead-letter, commit."""
    consumer = read_committed_consumer(
        settings.intake,
        *settings.topics,
        group_id=settings.group_id,
        from_beginning=settings.from_beginning,
    )
    sink = KafkaTouchpointSink(settings.intake)
    dead_letters = KafkaDeadLetterSink(
        settings.intake.bootstrap_servers, settings.dlq_topic, settings.intake.security
    )
    async with started(sink, dead_letters, consumer):
        reader = CrmChangeReader(
            mapping, consumer, sink, dead_letters, max_records=settings.max_records
        )
        await reader.run(stop)
        return reader.stats


async def serve(settings: ChangeReaderSettings, mapping: CrmMapping) -> ReaderStats:
    """:func:`follow` until SIGINT or SIGTERM, then finish the poll in hand and report."""
    stop = stop_on_signals()
    print(
        f"crm changes: reading {', '.join(settings.topics)} as group {settings.group_id}",
        flush=True,
    )
    stats = await follow(settings, mapping, stop)
    print(
        f"crm changes: {stats.records} record(s), {stats.touchpoints} touchpoint(s), "
        f"skipped {dict(stats.skipped)}, dead letters {dict(stats.dead_letters)}",
        flush=True,
    )
    return stats
