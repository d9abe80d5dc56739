"""Avro single-object encoding for the event, intervention and dead-letter topics.

Each message is ``C3 01`` + the 8-byte little-endian CRC-64-AVRO fingerprint of the
writer schema's Parsing Canonical Form + the Avro binary body, as the Avro
specification defines it. The fingerprint names the writer schema, so a reader that
knows older writer schemas resolves their messages into its own schema.

With a schema registry configured (``schemas.registry.use_registry``), records are
written in the Confluent wire format instead: ``00`` + the 4-byte big-endian schema id
+ the Avro body; decoding accepts both framings, fetching an unknown schema id from the
registry once. The single-object path stays as it was: one dict look-up and a marker
check per record.

``AvroCodec`` works on plain dicts. The typed helpers below it (``encode_touchpoint``,
``decode_touchpoints`` ...) convert between the pydantic models and Avro dicts; that
conversion lives only in ``ModelCodec`` and the touchpoint helpers of this module.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from functools import cache
from importlib import resources
from io import BytesIO
from pathlib import Path
from typing import Any, Generic, NamedTuple, Protocol, TypeVar

from fastavro import parse_schema, schemaless_reader, schemaless_writer
from fastavro.read import SchemaResolutionError
from fastavro.schema import fingerprint as _fastavro_fingerprint
from fastavro.schema import to_parsing_canonical_form
from pydantic import BaseModel, ValidationError

from schemas.errors import (
    CorruptBodyError,
    EncodeError,
    IncompatibleSchemaError,
    InvalidRecordError,
    MarkerError,
    SchemaDefinitionError,
    SchemaError,
    TruncatedMessageError,
    UnknownSchemaError,
    UnknownSchemaIdError,
)
from schemas.models import (
    MAX_BATCH_EVENTS,
    ComplianceVerdict,
    ConsentChange,
    DeadLetter,
    DraftReview,
    InterventionCommand,
    MessageDraft,
    TouchpointBatch,
    TouchpointEvent,
    touchpoint_from_avro,
)

__all__ = [
    "CONFLUENT_HEADER_SIZE",
    "CONFLUENT_MAGIC",
    "HEADER_SIZE",
    "SINGLE_OBJECT_MARKER",
    "AvroCodec",
    "AvroSchema",
    "ModelCodec",
    "RejectedTouchpoint",
    "SchemaIds",
    "compliance_verdict_codec",
    "consent_change_codec",
    "dead_letter_codec",
    "decode_dead_letter",
    "decode_gate_input",
    "decode_intervention",
    "decode_touchpoint",
    "decode_touchpoints",
    "decode_touchpoints_lenient",
    "draft_review_codec",
    "encode_dead_letter",
    "encode_intervention",
    "encode_touchpoint",
    "encode_touchpoint_batch",
    "intervention_codec",
    "message_draft_codec",
    "older_writer_schemas",
    "packaged_schema",
    "touchpoint_batch_codec",
    "touchpoint_event_codec",
    "use_registry",
    "use_single_object",
]

SINGLE_OBJECT_MARKER = b"\xc3\x01"
HEADER_SIZE = 10  # marker (2) + fingerprint (8)
CONFLUENT_MAGIC = b"\x00"
CONFLUENT_HEADER_SIZE = 5  # magic byte (1) + big-endian schema id (4)

AvroRecord = dict[str, Any]
M = TypeVar("M", bound=BaseModel)


def _hex(data: bytes, limit: int = 16) -> str:
    shown = " ".join(f"{b:02X}" for b in data[:limit])
    return shown + (" ..." if len(data) > limit else "")


# --------------------------------------------------------------------------- schemas


@dataclass(frozen=True, eq=False)
class AvroSchema:
    """A parsed Avro schema with its single-object header, parsed once and cached."""

    definition: Mapping[str, Any]
    parsed: Any = field(repr=False)
    name: str
    version: int | None
    canonical_form: str = field(repr=False)
    fingerprint: int
    header: bytes = field(repr=False)

    @classmethod
    def from_dict(cls, definition: Mapping[str, Any]) -> AvroSchema:
        try:
            parsed = parse_schema(dict(definition))
            canonical = to_parsing_canonical_form(parsed)
        except Exception as exc:  # fastavro raises several unrelated types here
            name = definition.get("name", "?")
            msg = f"schema {name!r} is not valid Avro: {type(exc).__name__}: {exc}"
            raise SchemaDefinitionError(msg) from exc
        fp_bytes = bytes.fromhex(_fastavro_fingerprint(canonical, "CRC-64-AVRO"))
        version = definition.get("version")
        full_name = parsed["name"] if isinstance(parsed, dict) else str(parsed)
        return cls(
            definition=definition,
            parsed=parsed,
            name=full_name.rpartition(".")[2],
            version=version if isinstance(version, int) else None,
            canonical_form=canonical,
            fingerprint=int.from_bytes(fp_bytes, "little"),
            header=SINGLE_OBJECT_MARKER + fp_bytes,
        )

    @classmethod
    def from_file(cls, path: str | Path) -> AvroSchema:
        text = Path(path).read_text(encoding="utf-8")
        try:
            definition = json.loads(text)
        except json.JSONDecodeError as exc:
            msg = f"{path}: expected a JSON Avro schema, found invalid JSON: {exc}"
            raise SchemaDefinitionError(msg) from exc
        return cls.from_dict(definition)

    @property
    def fingerprint_bytes(self) -> bytes:
        return self.header[2:]

    @property
    def label(self) -> str:
        version = f" v{self.version}" if self.version is not None else ""
        return f"{self.name}{version} (0x{self.fingerprint:016x})"


@cache
def packaged_schema(stem: str) -> AvroSchema:
    """Load ``schemas/avro/<stem>.avsc`` shipped with this package."""
    resource = resources.files("schemas").joinpath("avro", f"{stem}.avsc")
    if not resource.is_file():
        msg = f"expected schemas/avro/{stem}.avsc to exist, found no such file"
        raise SchemaDefinitionError(msg)
    return AvroSchema.from_dict(json.loads(resource.read_text(encoding="utf-8")))


# --------------------------------------------------------------------------- codec


class _Plan(NamedTuple):
    writer: AvroSchema
    reader_parsed: Any  # None when the writer is the reader schema (no resolution)
    offset: int = HEADER_SIZE  # where the Avro body starts


class SchemaIds(Protocol):
    """Writer schemas by schema registry id (``schemas.registry.RegistrySchemas``)."""

    def schema_of(self, schema_id: int) -> AvroSchema:
        """Raises UnknownSchemaIdError when the registry has no such id."""
        ...


def confluent_header(schema_id: int) -> bytes:
    if not 0 <= schema_id < 2**31:
        msg = f"expected a schema id in 0..2^31-1, found {schema_id}"
        raise SchemaDefinitionError(msg)
    return CONFLUENT_MAGIC + schema_id.to_bytes(4, "big")


class AvroCodec:
    """Encode dicts with ``reader_schema``; decode messages of any known writer schema.

    Decoding resolves the writer schema into the reader schema by Avro's rules. The
    constructor probes every known writer schema against the reader schema with a
    synthetic record, so most incompatibilities fail here, not on the first message.
    """

    __slots__ = ("_by_id", "_header", "_ids", "_plans", "reader_schema", "writer_schemas")

    def __init__(
        self, reader_schema: AvroSchema, known_writer_schemas: Iterable[AvroSchema] = ()
    ) -> None:
        self.reader_schema = reader_schema
        plans: dict[bytes, _Plan] = {reader_schema.fingerprint_bytes: _Plan(reader_schema, None)}
        for writer in known_writer_schemas:
            if writer.fingerprint_bytes not in plans:
                plans[writer.fingerprint_bytes] = _Plan(writer, reader_schema.parsed)
                _probe_resolution(writer, reader_schema)
        self._plans = plans
        self.writer_schemas: tuple[AvroSchema, ...] = tuple(p.writer for p in plans.values())
        self._header = reader_schema.header
        self._ids: SchemaIds | None = None
        self._by_id: dict[int, _Plan | SchemaError] = {}

    def use_registry(self, ids: SchemaIds | None, schema_id: int | None) -> None:
        """Read Confluent-framed messages, resolving their ids with ``ids`` (None: refuse
        them); write with ``schema_id`` in the Confluent header (None: single-object)."""
        self._ids = ids
        self._by_id = {}
        header = self.reader_schema.header
        self._header = header if schema_id is None else confluent_header(schema_id)

    @property
    def schema_id(self) -> int | None:
        """The registry id records are written with; None for single-object encoding."""
        if self._header[:1] != CONFLUENT_MAGIC:
            return None
        return int.from_bytes(self._header[1:], "big")

    def __repr__(self) -> str:
        known = ", ".join(w.label for w in self.writer_schemas)
        return f"AvroCodec(reader={self.reader_schema.label}, known=[{known}])"

    def encode(self, record: Mapping[str, Any]) -> bytes:
        schema = self.reader_schema
        buffer = BytesIO()
        buffer.write(self._header)
        try:
            schemaless_writer(buffer, schema.parsed, record)
        except Exception as exc:  # fastavro raises ValueError, TypeError, AttributeError...
            msg = f"record does not fit {schema.label}: {type(exc).__name__}: {exc}"
            raise EncodeError(msg) from exc
        return buffer.getvalue()

    def knows(self, data: bytes) -> bool:
        """True if ``data`` has a well-formed header naming a writer schema known here
        (with a registry, a schema id of this codec's record type, fetched if need be)."""
        if data[:2] == SINGLE_OBJECT_MARKER and data[2:HEADER_SIZE] in self._plans:
            return True
        if self._ids is None or data[:1] != CONFLUENT_MAGIC:
            return False
        return len(data) >= CONFLUENT_HEADER_SIZE and isinstance(self._by_id_plan(data), _Plan)

    def writer_schema_of(self, data: bytes) -> AvroSchema:
        """The writer schema ``data`` names; raises if the header is bad or unknown."""
        return self._plan(data).writer

    def decode(self, data: bytes) -> AvroRecord:
        plan = self._plan(data)
        buffer = BytesIO(data)
        buffer.seek(plan.offset)
        try:
            record = schemaless_reader(buffer, plan.writer.parsed, plan.reader_parsed)
        except SchemaResolutionError as exc:
            msg = (
                f"writer schema {plan.writer.label} does not resolve into reader schema "
                f"{self.reader_schema.label}: {exc}"
            )
            raise IncompatibleSchemaError(msg) from exc
        except Exception as exc:  # untrusted bytes: EOFError, IndexError, UnicodeDecodeError...
            msg = (
                f"expected an Avro body of {plan.writer.label} ({len(data) - plan.offset} "
                f"bytes after the header), found one that does not parse: "
                f"{type(exc).__name__}: {exc}"
            )
            raise CorruptBodyError(msg) from exc
        end = buffer.tell()
        if end != len(data):
            msg = (
                f"expected the Avro body of {plan.writer.label} to end the message, "
                f"found {len(data) - end} trailing bytes after offset {end}"
            )
            raise CorruptBodyError(msg)
        return record  # type: ignore[return-value]  # a record schema reads as a dict

    def _plan(self, data: bytes) -> _Plan:
        plan = self._plans.get(data[2:HEADER_SIZE])
        if plan is not None and data[:2] == SINGLE_OBJECT_MARKER:
            return plan
        if self._ids is not None and data[:1] == CONFLUENT_MAGIC:
            return self._confluent_plan(data)
        _check_header(data)
        found = int.from_bytes(data[2:HEADER_SIZE], "little")
        known = ", ".join(w.label for w in self.writer_schemas)
        msg = f"unknown writer schema fingerprint 0x{found:016x}; known: {known}"
        raise UnknownSchemaError(msg, found)

    def _confluent_plan(self, data: bytes) -> _Plan:
        if len(data) < CONFLUENT_HEADER_SIZE:
            msg = (
                f"expected at least {CONFLUENT_HEADER_SIZE} bytes (magic byte 00 + 4-byte "
                f"schema id), found {len(data)} bytes: {_hex(bytes(data))}"
            )
            raise TruncatedMessageError(msg)
        plan = self._by_id_plan(data)
        if isinstance(plan, UnknownSchemaIdError):
            raise UnknownSchemaIdError(str(plan), plan.schema_id)  # a fresh traceback
        if isinstance(plan, SchemaError):
            raise type(plan)(*plan.args)
        return plan

    def _by_id_plan(self, data: bytes) -> _Plan | SchemaError:
        schema_id = int.from_bytes(data[1:CONFLUENT_HEADER_SIZE], "big")
        plan = self._by_id.get(schema_id)
        if plan is None:
            plan = self._by_id[schema_id] = self._plan_for_id(schema_id)
        return plan

    def _plan_for_id(self, schema_id: int) -> _Plan | SchemaError:
        """The plan for a registry id, or the error it always gives (both cached; a
        registry that cannot be asked raises and nothing is cached)."""
        assert self._ids is not None
        try:
            writer = self._ids.schema_of(schema_id)
        except UnknownSchemaIdError as exc:
            return exc
        reader = self.reader_schema
        if _full_name(writer) != _full_name(reader):
            msg = (
                f"schema id {schema_id}: expected a {_full_name(reader)} writer schema, "
                f"found {_full_name(writer)} ({writer.label})"
            )
            return UnknownSchemaIdError(msg, schema_id)
        if writer.canonical_form == reader.canonical_form:
            return _Plan(writer, None, CONFLUENT_HEADER_SIZE)
        try:
            _probe_resolution(writer, reader)
        except (IncompatibleSchemaError, SchemaDefinitionError) as exc:
            return IncompatibleSchemaError(f"schema id {schema_id}: {exc}")
        return _Plan(writer, reader.parsed, CONFLUENT_HEADER_SIZE)


def _full_name(schema: AvroSchema) -> str:
    parsed = schema.parsed
    return str(parsed["name"]) if isinstance(parsed, dict) else str(parsed)


def _check_header(data: bytes) -> None:
    head = bytes(data[:2])
    if not SINGLE_OBJECT_MARKER.startswith(head):
        hint = ""
        if head[:1] in (b"{", b"["):
            hint = " (looks like JSON)"
        elif head[:1] == b"\x00" and len(data) >= 5:
            schema_id = int.from_bytes(data[1:5], "big")
            hint = (
                f" (looks like Confluent wire format, schema id {schema_id}: set "
                "WARROOM_SCHEMA_REGISTRY_URL to read it)"
            )
        msg = f"expected single-object marker C3 01, found {_hex(head)}{hint}"
        raise MarkerError(msg)
    if len(data) < HEADER_SIZE:
        msg = (
            f"expected at least {HEADER_SIZE} bytes (marker C3 01 + 8-byte schema "
            f"fingerprint), found {len(data)} bytes: {_hex(bytes(data)) or '(empty)'}"
        )
        raise TruncatedMessageError(msg)


def _probe_resolution(writer: AvroSchema, reader: AvroSchema) -> None:
    datum = _synthetic_datum(writer.parsed, writer.parsed.get("__named_schemas", {}), ())
    buffer = BytesIO()
    try:
        schemaless_writer(buffer, writer.parsed, datum)
    except Exception as exc:
        msg = f"could not write a probe record for {writer.label}: {type(exc).__name__}: {exc}"
        raise SchemaDefinitionError(msg) from exc
    buffer.seek(0)
    try:
        schemaless_reader(buffer, writer.parsed, reader.parsed)
    except SchemaResolutionError as exc:
        msg = f"writer schema {writer.label} does not resolve into {reader.label}: {exc}"
        raise IncompatibleSchemaError(msg) from exc


_PRIMITIVE_SAMPLES: dict[str, Any] = {
    "null": None,
    "boolean": False,
    "int": 0,
    "long": 0,
    "float": 0.0,
    "double": 0.0,
    "bytes": b"",
    "string": "",
}


def _synthetic_datum(schema: Any, named: Mapping[str, Any], stack: tuple[str, ...]) -> Any:
    """A small datum reaching every record field, array item and map value of ``schema``."""
    if isinstance(schema, str):
        if schema in _PRIMITIVE_SAMPLES:
            return _PRIMITIVE_SAMPLES[schema]
        return _synthetic_datum(named[schema], named, stack)
    if isinstance(schema, list):  # union: prefer a branch that goes deeper, avoid cycles

        def depth_first(branch: Any) -> int:
            return 2 if _on_stack(branch, stack) else (1 if branch == "null" else 0)

        return _synthetic_datum(min(schema, key=depth_first), named, stack)
    kind = schema["type"]
    logical = schema.get("logicalType")
    if logical == "decimal":
        return Decimal(0)
    if logical == "uuid":
        return "00000000-0000-0000-0000-000000000000"
    if kind == "record" or kind == "error":
        inner = (*stack, schema["name"])
        return {f["name"]: _synthetic_datum(f["type"], named, inner) for f in schema["fields"]}
    if kind == "enum":
        return schema["symbols"][0]
    if kind == "array":
        items = schema["items"]
        return [] if _on_stack(items, stack) else [_synthetic_datum(items, named, stack)]
    if kind == "map":
        values = schema["values"]
        return {} if _on_stack(values, stack) else {"k": _synthetic_datum(values, named, stack)}
    if kind == "fixed":
        return bytes(schema["size"])
    return _synthetic_datum(kind, named, stack)


def _on_stack(schema: Any, stack: tuple[str, ...]) -> bool:
    name = schema if isinstance(schema, str) else None
    if isinstance(schema, dict):
        name = schema.get("name")
    return name in stack


# --------------------------------------------------------------------------- models


class ModelCodec(Generic[M]):
    """A pydantic model on the wire: ``model -> Avro dict -> bytes`` and back."""

    __slots__ = ("avro", "model")

    def __init__(self, model: type[M], avro: AvroCodec) -> None:
        self.model = model
        self.avro = avro

    def encode(self, obj: M) -> bytes:
        return self.avro.encode(obj.model_dump())

    def decode(self, data: bytes) -> M:
        return _validate(self.model, self.avro.decode(data), self.avro)


def _validate(model: type[M], record: AvroRecord, avro: AvroCodec) -> M:
    try:
        return model.model_validate(record)
    except ValidationError as exc:
        msg = f"decoded {avro.reader_schema.label} is not a valid {model.__name__}: {exc}"
        raise InvalidRecordError(msg) from exc


def older_writer_schemas(stem: str) -> list[AvroSchema]:
    """Earlier versions of a packaged schema, still read: ``avro/<stem>.v<N>.avsc``.

    When a schema evolves, copy the released file to ``<stem>.v<N>.avsc`` before editing
    it, so messages already on the topics (and producers not yet upgraded) stay readable.
    """
    folder = resources.files("schemas").joinpath("avro")
    prefix = f"{stem}.v"
    return [
        AvroSchema.from_dict(json.loads(entry.read_text(encoding="utf-8")))
        for entry in sorted(folder.iterdir(), key=lambda e: e.name)
        if entry.name.startswith(prefix) and entry.name.endswith(".avsc")
    ]


@cache
def _packaged_codec(stem: str) -> AvroCodec:
    codec = AvroCodec(packaged_schema(stem), older_writer_schemas(stem))
    if _registry is not None:
        codec.use_registry(_registry.ids, _registry.schema_ids.get(stem))
    return codec


class _Registry(NamedTuple):
    ids: SchemaIds
    schema_ids: Mapping[str, int]


_registry: _Registry | None = None


def use_registry(ids: SchemaIds, schema_ids: Mapping[str, int]) -> None:
    """Frame this process's packaged codecs the Confluent way: those of the stems in
    ``schema_ids`` write with that id, every codec reads ids through ``ids``.

    Called once at start by ``schemas.registry.use_registry`` (which registers the
    schemas first); codecs created later follow it too.
    """
    global _registry
    _registry = _Registry(ids, dict(schema_ids))
    for stem in _packaged_stems():
        _packaged_codec(stem).use_registry(ids, schema_ids.get(stem))


def use_single_object() -> None:
    """Back to the default framing: single-object encoding, Confluent framing refused."""
    global _registry
    _registry = None
    for stem in _packaged_stems():
        _packaged_codec(stem).use_registry(None, None)


def _packaged_stems() -> list[str]:
    folder = resources.files("schemas").joinpath("avro")
    return sorted(
        entry.name.removesuffix(".avsc")
        for entry in folder.iterdir()
        if entry.name.endswith(".avsc") and ".v" not in entry.name
    )


@cache
def touchpoint_event_codec() -> AvroCodec:
    return _packaged_codec("touchpoint_event")


@cache
def touchpoint_batch_codec() -> AvroCodec:
    return _packaged_codec("touchpoint_batch")


@cache
def intervention_codec() -> ModelCodec[InterventionCommand]:
    return ModelCodec(InterventionCommand, _packaged_codec("intervention_command"))


@cache
def dead_letter_codec() -> ModelCodec[DeadLetter]:
    return ModelCodec(DeadLetter, _packaged_codec("dead_letter"))


# Touchpoints are the hot path: a TouchpointEvent is flat and its field values are
# already Avro-ready (StrEnum is str, datetimes are UTC), so its __dict__ is written
# as is instead of paying for model_dump().


def _touchpoint_to_avro(event: TouchpointEvent) -> AvroRecord:
    return event.__dict__


def encode_touchpoint(event: TouchpointEvent) -> bytes:
    return touchpoint_event_codec().encode(_touchpoint_to_avro(event))


def encode_touchpoint_batch(events: Sequence[TouchpointEvent]) -> bytes:
    """One record holding 1..10000 events (put only events of one partition in it)."""
    try:
        batch = TouchpointBatch(events=list(events))
    except ValidationError as exc:
        raise EncodeError(f"not a valid TouchpointBatch: {exc}") from exc
    return touchpoint_batch_codec().encode(
        {"events": [_touchpoint_to_avro(e) for e in batch.events]}
    )


def decode_touchpoint(data: bytes) -> TouchpointEvent:
    codec = touchpoint_event_codec()
    return _validate(TouchpointEvent, codec.decode(data), codec)


def decode_touchpoints(data: bytes) -> list[TouchpointEvent]:
    """Events of one record, written either as a TouchpointEvent or a TouchpointBatch.

    Raises ``InvalidRecordError`` if any event fails validation; use
    ``decode_touchpoints_lenient`` to keep the valid events of a batch.
    """
    batch_codec = touchpoint_batch_codec()
    if batch_codec.knows(data):
        record = batch_codec.decode(data)
        items = record["events"]
        if len(record) == 1 and 1 <= len(items) <= MAX_BATCH_EVENTS:
            events = _fast_events(items)
            if events is not None:
                return events
        return _validate(TouchpointBatch, record, batch_codec).events
    return [_decode_one_of_touchpoints(data)]


# The decoders' fast path: an event whose Avro record already satisfies every rule of
# TouchpointEvent is built without pydantic (schemas.models.TouchpointChecks); any other
# goes through model_validate, which gives the same event or the reason it is refused.


def _fast_events(items: list[AvroRecord]) -> list[TouchpointEvent] | None:
    """The events of a batch's records, or None if one of them needs the validator."""
    build = touchpoint_from_avro
    events: list[TouchpointEvent] = []
    append = events.append
    for item in items:
        event = build(item)
        if event is None:
            return None
        append(event)
    return events


def _decode_one_of_touchpoints(data: bytes) -> TouchpointEvent:
    codec = touchpoint_event_codec()
    try:
        record = codec.decode(data)
    except UnknownSchemaIdError:
        raise
    except UnknownSchemaError as exc:
        known = ", ".join(
            w.label for w in (*codec.writer_schemas, *touchpoint_batch_codec().writer_schemas)
        )
        msg = f"unknown writer schema fingerprint 0x{exc.fingerprint:016x}; known: {known}"
        raise UnknownSchemaError(msg, exc.fingerprint) from None
    event = touchpoint_from_avro(record)
    if event is not None:
        return event
    return _validate(TouchpointEvent, record, codec)


@dataclass(frozen=True, slots=True)
class RejectedTouchpoint:
    """An event of a batch that decoded but failed validation.

    ``raw`` is that event alone in single-object encoding, ready for a DeadLetter.
    """

    index: int
    raw: bytes
    error: InvalidRecordError


def decode_touchpoints_lenient(
    data: bytes,
) -> tuple[list[TouchpointEvent], list[RejectedTouchpoint]]:
    """Like ``decode_touchpoints``, but one invalid event does not reject its batch.

    Header and body errors still raise: without a parsed body there are no events.
    The batch-level bounds (1..10000 events) are a producer contract, not checked here.
    """
    batch_codec = touchpoint_batch_codec()
    if not batch_codec.knows(data):
        return [_decode_one_of_touchpoints(data)], []
    record = batch_codec.decode(data)
    # Each event on its own, so that only the invalid ones are rejected: what validating
    # the whole batch, and each event when that fails, would give.
    build = touchpoint_from_avro
    event_codec = touchpoint_event_codec()
    events: list[TouchpointEvent] = []
    rejected: list[RejectedTouchpoint] = []
    for index, item in enumerate(record["events"]):
        event = build(item)
        if event is not None:
            events.append(event)
            continue
        try:
            events.append(TouchpointEvent.model_validate(item))
        except ValidationError as exc:
            msg = f"event {index} of a TouchpointBatch is not a valid TouchpointEvent: {exc}"
            error = InvalidRecordError(msg)
            error.__cause__ = exc
            rejected.append(RejectedTouchpoint(index, event_codec.encode(item), error))
    return events, rejected


def encode_intervention(command: InterventionCommand) -> bytes:
    return intervention_codec().encode(command)


def decode_intervention(data: bytes) -> InterventionCommand:
    return intervention_codec().decode(data)


def encode_dead_letter(letter: DeadLetter) -> bytes:
    return dead_letter_codec().encode(letter)


def decode_dead_letter(data: bytes) -> DeadLetter:
    return dead_letter_codec().decode(data)


# --- consent and the compliance gate ------------------------------------------------


@cache
def consent_change_codec() -> ModelCodec[ConsentChange]:
    return ModelCodec(ConsentChange, _packaged_codec("consent_change"))


@cache
def message_draft_codec() -> ModelCodec[MessageDraft]:
    return ModelCodec(MessageDraft, _packaged_codec("message_draft"))


@cache
def compliance_verdict_codec() -> ModelCodec[ComplianceVerdict]:
    return ModelCodec(ComplianceVerdict, _packaged_codec("compliance_verdict"))


@cache
def draft_review_codec() -> ModelCodec[DraftReview]:
    return ModelCodec(DraftReview, _packaged_codec("draft_review"))


def decode_gate_input(data: bytes) -> MessageDraft | ComplianceVerdict | DraftReview:
    """A record of the message-drafts topic: a draft to judge, a verdict the HTTP gate
    already gave, or a manager's review; told apart by the writer schema's fingerprint.
    Raises SchemaError (reason ``unknown_schema`` for any other writer schema)."""
    for codec in (message_draft_codec(), compliance_verdict_codec(), draft_review_codec()):
        if codec.avro.knows(data):
            return codec.decode(data)
    return message_draft_codec().decode(data)  # raises, naming what was found
