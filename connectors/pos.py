"""POS connector: purchase lines and prescription fills -> touchpoints.

Sources: CSV files (a header row; UTF-8 with or without BOM; quoted fields; CRLF or LF)
and JSON-lines files, read once or followed as they grow (:mod:`connectors.tailing`
keeps the position), and ``POST /v1/purchases`` (a JSON object, a JSON array or JSON
lines). Every line becomes one touchpoint whose event id is built from its store, order
id and line id, so a line read twice or posted twice is the same touchpoint.

A file line that is not a valid purchase line becomes a dead letter naming the file and
line, and the lines after it go on; an HTTP request with an invalid line is answered 422
with every problem and publishes nothing. Lines without a member id (walk-in customers)
are counted and not published: a touchpoint needs a customer.
"""

from __future__ import annotations

import asyncio
import csv
import hashlib
import io
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote
from zoneinfo import ZoneInfo

import orjson
from aiohttp import web
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from schemas.models import Channel, Direction, TouchpointEvent

from .http import (
    accepted,
    add_probes,
    dumps_lenient,
    json_items,
    problem_response,
    read_body,
    unavailable,
)
from .problems import describe, found_unless, validation_problems
from .publisher import PublishUnavailable, TouchpointSink, UnpublishableTouchpoints
from .rejects import DeadLetterSink
from .tailing import (
    Convert,
    Counts,
    FileFollower,
    PositionStore,
    RawRecord,
    Rejection,
    Splitter,
    TouchpointBatches,
    read_to_end,
    split_csv,
    split_lines,
)

log = logging.getLogger(__name__)

SOURCE = "pos/0.1.0"
MAX_LINES_PER_REQUEST = 1000
MAX_BODY_BYTES = 4 * 1024 * 1024

Clock = Callable[[], datetime]
FileFormat = Literal["csv", "jsonl"]


def utc_now() -> datetime:
    return datetime.now(UTC)


ALIASES: dict[str, str] = {
    "customer_id": "member_id",
    "member": "member_id",
    "member_no": "member_id",
    "order": "order_id",
    "order_no": "order_id",
    "receipt_id": "order_id",
    "line": "line_id",
    "line_no": "line_id",
    "sku": "product",
    "qty": "quantity",
    "total": "amount",
    "line_total": "amount",
    "store_id": "store",
    "sold_at": "occurred_at",
    "timestamp": "occurred_at",
    "filled_at": "occurred_at",
    "days_of_supply": "days_supply",
    "staff_id": "rep_id",
    "type": "kind",
}
"""Column names other systems use, and the field each one means."""

QUIET_FIELDS = frozenset({"member_id", "rep_id"})
_FOUND = found_unless(QUIET_FIELDS | {"(line)"})
"""Fields whose values are never repeated in problems (they identify people)."""


@dataclass(frozen=True, slots=True)
class PosDefaults:
    """What a source may leave out: its currency, the timezone of times written without
    one, and the industry its touchpoints belong to."""

    currency: str | None = None
    timezone: ZoneInfo | None = None
    industry: str | None = None


class PurchaseLine(BaseModel):
    """One line of a sale (or one prescription fill) at a store."""

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        str_strip_whitespace=True,
        allow_inf_nan=False,
        coerce_numbers_to_str=True,  # JSON sources often write ids as numbers
    )

    order_id: str = Field(min_length=1, max_length=48)
    line_id: str = Field(min_length=1, max_length=16)
    store: str = Field(min_length=1, max_length=32)
    member_id: str | None = Field(None, min_length=1, max_length=128)
    product: str = Field(min_length=1, max_length=128)
    quantity: float = Field(gt=0, le=1_000_000)
    amount: float = Field(ge=0, le=1e12)
    currency: str = Field(pattern=r"^[A-Z]{3}$")
    occurred_at: datetime
    kind: Literal["purchase", "prescription_filled"] = "purchase"
    drug: str | None = Field(None, min_length=1, max_length=128)
    days_supply: int | None = Field(None, ge=1, le=366)
    chronic: bool | None = None
    rep_id: str | None = Field(None, min_length=1, max_length=128)

    @field_validator("occurred_at", mode="before")
    @classmethod
    def _time(cls, value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, str):
            try:
                value = datetime.fromisoformat(value.strip())
            except ValueError:
                raise ValueError(
                    f"expected an ISO 8601 time (e.g. 2026-11-20T14:03:00+08:00), found {value!r}"
                ) from None
        if isinstance(value, datetime) and value.tzinfo is None:
            zone = (info.context or {}).get("timezone")
            if zone is None:
                raise ValueError(
                    "expected a time with a timezone (e.g. 2026-11-20T14:03:00+08:00) or a "
                    f"configured default timezone, found {value.isoformat()}"
                )
            value = value.replace(tzinfo=zone)
        return value

    @model_validator(mode="after")
    def _prescription_complete(self) -> PurchaseLine:
        if self.kind == "prescription_filled" and (self.drug is None or self.days_supply is None):
            missing = " and ".join(
                n for n, v in (("drug", self.drug), ("days_supply", self.days_supply)) if v is None
            )
            raise ValueError(f"a prescription_filled line needs {missing}, found none")
        return self

    @property
    def event_id(self) -> str:
        """``pos:<store>/<order>/<line>`` (each part URL-quoted), or ``pos:`` and a SHA-256
        prefix of the three when that would be longer than an event id may be."""
        parts = [quote(p, safe="") for p in (self.store, self.order_id, self.line_id)]
        readable = "pos:" + "/".join(parts)
        if len(readable) <= 128:
            return readable
        digest = hashlib.sha256("\x1f".join((self.store, self.order_id, self.line_id)).encode())
        return f"pos:{digest.hexdigest()[:32]}"

    def to_touchpoint(
        self, received_at: datetime, industry: str | None = None
    ) -> TouchpointEvent | None:
        """The line as a touchpoint, or None for a line without a member (no customer)."""
        if self.member_id is None:
            return None
        attributes: dict[str, str | int | float | bool] = {
            "product": self.product,
            "quantity": int(self.quantity) if self.quantity.is_integer() else self.quantity,
            "amount": round(self.amount, 4),
            "currency": self.currency,
            "store": self.store,
            "order_id": self.order_id,
            "line_id": self.line_id,
        }
        if self.drug is not None:
            attributes["drug"] = self.drug
        if self.days_supply is not None:
            attributes["days_supply"] = self.days_supply
        if self.chronic is not None:
            attributes["chronic"] = self.chronic
        return TouchpointEvent(
            event_id=self.event_id,
            customer_id=self.member_id,
            occurred_at=self.occurred_at,
            received_at=received_at,
            channel=Channel.POS,
            kind=self.kind,
            direction=Direction.INBOUND,
            rep_id=self.rep_id,
            attributes=attributes,
            source=SOURCE,
            industry=industry,
        )


class InvalidPurchase(ValueError):
    """A purchase line (or request) that cannot be read; ``problems`` name line and field."""

    def __init__(self, problems: list[dict[str, Any]]) -> None:
        self.problems = problems
        super().__init__(
            "; ".join(describe(p, "item {} of the request", found=True) for p in problems)
        )


def _canonical(raw: dict[str, Any]) -> dict[str, Any]:
    """Field names as :class:`PurchaseLine` calls them; empty values left out."""
    fields: dict[str, Any] = {}
    for name, value in raw.items():
        key = str(name).strip().lower().replace(" ", "_").replace("-", "_").lstrip("\ufeff")
        key = ALIASES.get(key, key)
        if value is None or (isinstance(value, str) and not value.strip()):
            continue
        fields[key] = value
    return fields


def validate_line(
    raw: dict[str, Any], defaults: PosDefaults, **where: int
) -> PurchaseLine | list[dict[str, Any]]:
    """A purchase line, or the problems with it (located by ``where``)."""
    fields = _canonical(raw)
    if defaults.currency is not None:
        fields.setdefault("currency", defaults.currency)
    if isinstance(fields.get("currency"), str):
        fields["currency"] = fields["currency"].strip().upper()
    try:
        return PurchaseLine.model_validate(fields, context={"timezone": defaults.timezone})
    except ValidationError as exc:
        return validation_problems(exc, "(line)", where, found=_FOUND)


def parse_header(record: RawRecord) -> list[str]:
    text = record.data.decode("utf-8", errors="replace").lstrip("\ufeff")
    return next(csv.reader(io.StringIO(text, newline="")), [])


def parse_csv_record(
    header: Sequence[str], record: RawRecord, defaults: PosDefaults
) -> PurchaseLine | list[dict[str, Any]]:
    where = {"line": record.first_line}
    try:
        text = record.data.decode("utf-8")
    except UnicodeDecodeError as exc:
        message = f"expected UTF-8, found byte 0x{record.data[exc.start]:02x} at {exc.start}"
        return [{**where, "field": "(line)", "message": message}]
    try:
        values = next(csv.reader(io.StringIO(text, newline="")), [])
    except csv.Error as exc:
        return [{**where, "field": "(line)", "message": f"expected a CSV record, found: {exc}"}]
    if len(values) > len(header):
        message = f"expected at most {len(header)} columns as in the header, found {len(values)}"
        return [{**where, "field": "(line)", "message": message}]
    return validate_line(dict(zip(header, values, strict=False)), defaults, **where)


def parse_json_record(
    record: RawRecord, defaults: PosDefaults
) -> PurchaseLine | list[dict[str, Any]]:
    where = {"line": record.first_line}
    try:
        value = orjson.loads(record.data)
    except orjson.JSONDecodeError as exc:
        return [{**where, "field": "(line)", "message": f"expected a JSON object, found: {exc}"}]
    if not isinstance(value, dict):
        message = f"expected a JSON object, found {type(value).__name__}"
        return [{**where, "field": "(line)", "message": message}]
    return validate_line(value, defaults, **where)


def file_format(path: Path) -> FileFormat:
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return "csv"
    if suffix in (".jsonl", ".ndjson"):
        return "jsonl"
    raise ValueError(f"{path.name}: expected a name ending in .csv, .jsonl or .ndjson")


def converter(
    fmt: FileFormat, defaults: PosDefaults, header: Callable[[], RawRecord | None]
) -> Convert:
    """Converts a file record of ``fmt``; a CSV record is read with the file's header."""

    def convert(record: RawRecord, received_at: datetime) -> TouchpointEvent | Rejection | None:
        if fmt == "csv":
            first = header()
            parsed = parse_csv_record(parse_header(first) if first else [], record, defaults)
        else:
            parsed = parse_json_record(record, defaults)
        if isinstance(parsed, list):
            return Rejection("invalid_purchase", str(InvalidPurchase(parsed)))
        return parsed.to_touchpoint(received_at, defaults.industry)

    return convert


def _splitter(fmt: FileFormat) -> Splitter:
    return split_csv if fmt == "csv" else split_lines


def follower(
    path: Path,
    state: Path | None,
    sink: TouchpointSink,
    dead_letters: DeadLetterSink,
    defaults: PosDefaults,
    clock: Clock = utc_now,
    keep_ids: bool = False,
    poll_seconds: float = 0.5,
    max_batch_bytes: int | None = None,
) -> tuple[FileFollower, TouchpointBatches]:
    """A follower of one POS file and the handler that publishes its batches."""
    fmt = file_format(path)
    holder: list[FileFollower] = []
    convert = converter(fmt, defaults, lambda: holder[0].header_record)
    batches = TouchpointBatches(convert, sink, dead_letters, clock, keep_ids)
    options: dict[str, Any] = {"poll_seconds": poll_seconds}
    if max_batch_bytes is not None:
        options["max_batch_bytes"] = max_batch_bytes
    follow = FileFollower(
        path,
        PositionStore(state) if state is not None else None,
        _splitter(fmt),
        batches,
        header=fmt == "csv",
        **options,
    )
    holder.append(follow)
    return follow, batches


async def read_files(
    paths: Iterable[Path],
    sink: TouchpointSink,
    dead_letters: DeadLetterSink,
    defaults: PosDefaults,
    clock: Clock = utc_now,
    keep_ids: bool = False,
) -> Counts:
    """Read whole files once (their last line too), publishing as it goes; ``skipped``
    counts lines without a member."""
    return await read_to_end(
        follower(path, None, sink, dead_letters, defaults, clock, keep_ids) for path in paths
    )


async def follow_file(
    path: Path,
    state: Path,
    sink: TouchpointSink,
    dead_letters: DeadLetterSink,
    defaults: PosDefaults,
    stop: asyncio.Event,
    poll_seconds: float = 0.5,
) -> Counts:
    """Follow ``path`` until ``stop`` is set, keeping the position in ``state``."""
    follow, batches = follower(path, state, sink, dead_letters, defaults, poll_seconds=poll_seconds)
    await follow.run(stop)
    return batches.counts


# --------------------------------------------------------------------------- HTTP


def parse_request(body: bytes, defaults: PosDefaults) -> list[PurchaseLine]:
    """A JSON object, a JSON array of them, or JSON lines -> purchase lines, or raise
    :class:`InvalidPurchase` naming every problem."""
    items, problems = json_items(body, "(line)")
    if problems:
        raise InvalidPurchase(problems)
    if not items:
        raise InvalidPurchase(
            [{"field": "(body)", "message": "expected purchase lines, found none"}]
        )
    if len(items) > MAX_LINES_PER_REQUEST:
        message = f"expected at most {MAX_LINES_PER_REQUEST} lines, found {len(items)}"
        raise InvalidPurchase([{"field": "(body)", "message": message}])
    parsed: list[PurchaseLine] = []
    for item, where in items:
        if not isinstance(item, dict):
            message = f"expected a JSON object, found {type(item).__name__}"
            problems.append({**where, "field": "(line)", "message": message})
            continue
        result = validate_line(item, defaults, **where)
        if isinstance(result, list):
            problems.extend(result)
        else:
            parsed.append(result)
    if problems:
        raise InvalidPurchase(problems)
    return parsed


def create_http_app(
    sink: TouchpointSink, defaults: PosDefaults = PosDefaults(), clock: Clock = utc_now
) -> web.Application:
    """``POST /v1/purchases``: 202 published (lines without a member counted as
    ``anonymous``); 400 not JSON; 413 too large; 422 a line is invalid (nothing published;
    each problem names the line and field); 503 with Retry-After when Kafka did not take
    them now. ``GET /healthz`` and ``GET /readyz`` as for the chat connector."""

    async def post_purchases(request: web.Request) -> web.Response:
        body = await read_body(request, MAX_BODY_BYTES, _error)
        if isinstance(body, web.Response):
            return body
        try:
            lines = parse_request(body, defaults)
        except InvalidPurchase as exc:
            status = 400 if any(p["field"] == "(body)" for p in exc.problems) else 422
            return _error(status, exc.problems)
        now = clock()
        events: list[TouchpointEvent] = []
        anonymous = 0
        problems: list[dict[str, Any]] = []
        for index, line in enumerate(lines):
            try:
                event = line.to_touchpoint(now, defaults.industry)
            except ValidationError as exc:
                problems.append(
                    {"index": index, "field": "(line)", "message": f"does not convert: {exc}"}
                )
                continue
            if event is None:
                anonymous += 1
            else:
                events.append(event)
        if problems:
            return _error(422, problems)
        try:
            await sink.publish(events)
        except UnpublishableTouchpoints as exc:
            return _error(422, [{"field": "(line)", **p} for p in exc.problems])
        except PublishUnavailable as exc:
            return unavailable(_error, exc)
        return accepted([e.event_id for e in events], dumps_lenient, anonymous=anonymous)

    app = web.Application(client_max_size=MAX_BODY_BYTES)
    app.router.add_post("/v1/purchases", post_purchases)
    add_probes(app, sink.readiness, encode=dumps_lenient)
    return app


def _error(status: int, problems: list[dict[str, Any]]) -> web.Response:
    return problem_response(status, problems, str(InvalidPurchase(problems)), dumps_lenient)
