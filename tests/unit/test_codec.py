"""Avro single-object codec: round trips, golden bytes, evolution, malformed input."""

from __future__ import annotations

import copy
import json
import struct
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from faust.serializers import codecs as faust_codecs
from faust.serializers.registry import Registry
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.codec import (
    HEADER_SIZE,
    SINGLE_OBJECT_MARKER,
    AvroCodec,
    AvroSchema,
    decode_dead_letter,
    decode_intervention,
    decode_touchpoint,
    decode_touchpoints,
    decode_touchpoints_lenient,
    encode_dead_letter,
    encode_intervention,
    encode_touchpoint,
    encode_touchpoint_batch,
    older_writer_schemas,
    packaged_schema,
    touchpoint_batch_codec,
    touchpoint_event_codec,
)
from schemas.errors import (
    CorruptBodyError,
    EncodeError,
    IncompatibleSchemaError,
    InvalidRecordError,
    MarkerError,
    SchemaDefinitionError,
    SchemaError,
    TruncatedMessageError,
    UndecodableError,
    UnknownSchemaError,
)
from schemas.faust_codec import DeadLetterCodec, InterventionCodec, TouchpointCodec
from schemas.models import (
    Channel,
    DeadLetter,
    Direction,
    Experiment,
    Explanation,
    InterventionCommand,
    InterventionKind,
    Match,
    Priority,
    Severity,
    TouchpointBatch,
    TouchpointEvent,
)

DATA = Path(__file__).parent / "data"

# --------------------------------------------------------------------------- strategies

utc_offsets = st.integers(min_value=-14 * 60, max_value=14 * 60).map(
    lambda minutes: timezone(timedelta(minutes=minutes))
)
aware_datetimes = st.datetimes(
    min_value=datetime(1900, 1, 2),
    max_value=datetime(2200, 1, 1),
    timezones=st.one_of(st.just(UTC), utc_offsets),
)
chinese = st.text(st.characters(min_codepoint=0x4E00, max_codepoint=0x9FFF), max_size=50)
any_text = st.one_of(st.text(max_size=200), chinese)
ids = st.text(min_size=1, max_size=128)
short_names = st.text(min_size=1, max_size=64)
codes = st.from_regex(r"[a-z][a-z0-9_]{0,63}", fullmatch=True)
attribute_values = st.one_of(
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    any_text,
)
attributes: st.SearchStrategy[dict[str, Any]] = st.one_of(
    st.just({}),
    st.dictionaries(st.text(min_size=1, max_size=64), attribute_values, max_size=8),
)

touchpoint_events = st.builds(
    TouchpointEvent,
    event_id=ids,
    customer_id=ids,
    occurred_at=aware_datetimes,
    received_at=aware_datetimes,
    channel=st.sampled_from(Channel),
    kind=codes,
    direction=st.sampled_from(Direction),
    rep_id=st.none() | ids,
    contact_id=st.none() | ids,
    text=st.none() | any_text,
    attributes=attributes,
    source=short_names,
    industry=st.none() | short_names,
)

interventions = st.builds(
    InterventionCommand,
    intervention_id=ids,
    customer_id=ids,
    rep_id=st.none() | ids,
    assignee_role=st.none() | short_names,
    rule_id=ids,
    rule_version=st.integers(min_value=0, max_value=2**31 - 1),
    kind=st.sampled_from(InterventionKind),
    severity=st.none() | st.sampled_from(Severity),
    priority=st.sampled_from(Priority),
    title=st.text(min_size=1, max_size=100),
    body=any_text,
    due_at=st.none() | aware_datetimes,
    experiment=st.none() | st.builds(Experiment, experiment_id=ids, variant=short_names),
    explanation=st.builds(
        Explanation,
        matched=st.lists(st.builds(Match, condition=any_text, observed=any_text), max_size=4),
        scores=st.dictionaries(
            st.text(max_size=20), st.floats(allow_nan=False, allow_infinity=False), max_size=4
        ),
        triggering_event_ids=st.lists(ids, max_size=4),
    ),
    created_at=aware_datetimes,
)

dead_letter_models = st.builds(
    DeadLetter,
    source_topic=st.text(min_size=1, max_size=249),
    partition=st.integers(min_value=0, max_value=2**31 - 1),
    offset=st.integers(min_value=0, max_value=2**63 - 1),
    reason=codes,
    detail=any_text,
    raw_key=st.none() | st.binary(max_size=64),
    raw_value=st.binary(max_size=512),
    failed_at=aware_datetimes,
)


def assert_same_attribute_types(left: TouchpointEvent, right: TouchpointEvent) -> None:
    assert [type(v) for v in left.attributes.values()] == [
        type(v) for v in right.attributes.values()
    ]


# --------------------------------------------------------------------------- round trips


@given(touchpoint_events)
def test_touchpoint_round_trip(event: TouchpointEvent) -> None:
    data = encode_touchpoint(event)
    assert data[:2] == SINGLE_OBJECT_MARKER
    decoded = decode_touchpoint(data)
    assert decoded == event
    assert_same_attribute_types(decoded, event)
    assert decoded.occurred_at.tzinfo is UTC
    assert decode_touchpoints(data) == [event]


@given(st.lists(touchpoint_events, min_size=1, max_size=20))
def test_touchpoint_batch_round_trip(events: list[TouchpointEvent]) -> None:
    data = encode_touchpoint_batch(events)
    decoded = decode_touchpoints(data)
    assert decoded == events
    for left, right in zip(decoded, events, strict=True):
        assert_same_attribute_types(left, right)
    assert TouchpointBatch(events=decoded) == TouchpointBatch(events=events)


@given(interventions)
def test_intervention_round_trip(command: InterventionCommand) -> None:
    assert decode_intervention(encode_intervention(command)) == command


@given(dead_letter_models)
def test_dead_letter_round_trip(letter: DeadLetter) -> None:
    assert decode_dead_letter(encode_dead_letter(letter)) == letter


def test_microseconds_and_offsets_survive() -> None:
    local = datetime(2024, 2, 29, 23, 59, 59, 999999, tzinfo=timezone(timedelta(hours=-5)))
    event = TouchpointEvent(
        event_id="e",
        customer_id="c",
        occurred_at=local,
        received_at=datetime(1969, 12, 31, 23, 59, 59, 1, tzinfo=UTC),
        channel="pos",
        kind="purchase",
        direction="none",
        source="pos/1",
    )
    decoded = decode_touchpoint(encode_touchpoint(event))
    assert decoded.occurred_at == local
    assert decoded.occurred_at.microsecond == 999999
    assert decoded.received_at == event.received_at


# --------------------------------------------------------------------------- golden bytes


def crc64_avro(data: bytes) -> int:
    """CRC-64-AVRO, bit by bit from the Avro specification (no table, no fastavro)."""
    poly = 0xC15D213AA4D7A795  # also the fingerprint of empty input
    fp = poly
    for byte in data:
        fp ^= byte
        for _ in range(8):
            fp = (fp >> 1) ^ (poly if fp & 1 else 0)
    return fp


@pytest.mark.parametrize(
    ("canonical", "published"),
    [
        ('"null"', 7195948357588979594),
        ('"int"', 8247732601305521295),
        ('"string"', -8142146995180207161),
        (
            '{"name":"foo","type":"record","fields":[{"name":"f1","type":"boolean"}]}',
            7843277075252814651,
        ),
    ],
)
def test_independent_crc64_matches_published_avro_vectors(canonical: str, published: int) -> None:
    # Vectors from the Avro project's schema-tests.txt (signed Java longs).
    assert crc64_avro(canonical.encode()) == published & 0xFFFF_FFFF_FFFF_FFFF


_PCF_KEYS = ("name", "type", "fields", "symbols", "items", "values", "size")


def parsing_canonical_form(schema: Any, namespace: str = "") -> str:
    """The Avro Parsing Canonical Form for the subset our schemas use (independent)."""
    if isinstance(schema, str):
        return json.dumps(schema)
    if isinstance(schema, list):
        return "[" + ",".join(parsing_canonical_form(s, namespace) for s in schema) + "]"
    kind = schema["type"]
    if kind not in ("record", "enum", "array", "map", "fixed"):
        return parsing_canonical_form(kind, namespace)  # drops logicalType
    parts = []
    if "name" in schema:
        namespace = schema.get("namespace", namespace)
        name = schema["name"] if "." in schema["name"] else f"{namespace}.{schema['name']}"
        parts.append(f'"name":{json.dumps(name)}')
    parts.append(f'"type":{json.dumps(kind)}')
    for key in _PCF_KEYS[2:]:
        if key not in schema:
            continue
        if key == "fields":
            fields = [
                f'{{"name":{json.dumps(f["name"])},"type":'
                f"{parsing_canonical_form(f['type'], namespace)}}}"
                for f in schema["fields"]
            ]
            parts.append('"fields":[' + ",".join(fields) + "]")
        elif key == "symbols":
            parts.append('"symbols":' + json.dumps(schema["symbols"], separators=(",", ":")))
        elif key == "size":
            parts.append(f'"size":{schema["size"]}')
        else:
            parts.append(f'"{key}":{parsing_canonical_form(schema[key], namespace)}')
    return "{" + ",".join(parts) + "}"


@pytest.mark.parametrize(
    "stem", ["touchpoint_event", "touchpoint_batch", "intervention_command", "dead_letter"]
)
def test_fingerprint_and_header_match_an_independent_implementation(stem: str) -> None:
    schema = packaged_schema(stem)
    canonical = parsing_canonical_form(dict(schema.definition))
    assert canonical == schema.canonical_form
    fingerprint = crc64_avro(canonical.encode())
    assert schema.fingerprint == fingerprint
    assert schema.header == b"\xc3\x01" + fingerprint.to_bytes(8, "little")


# Changing a released .avsc changes these. That is a new schema version: copy the old
# file to schemas/avro/<stem>.v<N>.avsc first so its messages stay readable.
PINNED_FINGERPRINTS = {
    "touchpoint_event": 0x8491E09E88D2A107,
    "touchpoint_batch": 0x07BA12CE0FF2EE30,
    "intervention_command": 0x7D1FBC1F61D249E3,
    "dead_letter": 0x4EAA57A9D7C99C29,  # v1 was 0x8C0CD6219C3E1228 (dead_letter.v1.avsc)
}


@pytest.mark.parametrize("stem", list(PINNED_FINGERPRINTS))
def test_released_schema_fingerprints_are_pinned(stem: str) -> None:
    assert packaged_schema(stem).fingerprint == PINNED_FINGERPRINTS[stem], (
        f"{stem}.avsc changed its wire schema; keep the old one as {stem}.v<N>.avsc"
    )


GOLDEN_EVENT = TouchpointEvent(
    event_id="evt-1",
    customer_id="cust-42",
    occurred_at=datetime(2024, 5, 1, 9, 30, 0, 123456, tzinfo=UTC),
    received_at=datetime(2024, 5, 1, 9, 30, 1, tzinfo=UTC),
    channel=Channel.CHAT,
    kind="message_received",
    direction=Direction.INBOUND,
    rep_id="rep-7",
    text="价格?",
    attributes={"vip": True, "n": 3, "score": 0.5, "lang": "zh"},
    source="chat-http/0.1.0",
)
GOLDEN_HEX = (
    "c301"  # single-object marker
    "07a1d2889ee09184"  # CRC-64-AVRO of the canonical form, little-endian
    "0a6576742d31"  # event_id "evt-1"
    "0e637573742d3432"  # customer_id "cust-42"
    "80e1cf96a4d88b06"  # occurred_at 1714555800123456 µs
    "80e1ba97a4d88b06"  # received_at 1714555801000000 µs
    "00"  # channel chat
    "206d6573736167655f7265636569766564"  # kind "message_received"
    "00"  # direction inbound
    "020a7265702d37"  # rep_id: union branch 1, "rep-7"
    "00"  # contact_id: null
    "020ee4bbb7e6a0bc3f"  # text: union branch 1, "价格?"
    "08"  # attributes: block of 4 entries
    "067669700001"  # "vip" -> branch 0 boolean: true
    "026e0206"  # "n" -> branch 1 long: 3
    "0a73636f726504000000000000e03f"  # "score" -> branch 2 double: 0.5
    "086c616e6706047a68"  # "lang" -> branch 3 string: "zh"
    "00"  # end of map
    "1e636861742d687474702f302e312e30"  # source "chat-http/0.1.0"
    "00"  # industry: null
)


def zigzag_varint(value: int) -> bytes:
    n = (value << 1) ^ (value >> 63)
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def avro_string(value: str) -> bytes:
    raw = value.encode()
    return zigzag_varint(len(raw)) + raw


def test_golden_hex_is_what_the_avro_spec_says() -> None:
    # Build the body from Avro's binary encoding rules, independently of fastavro.
    body = b"".join(
        [
            avro_string("evt-1"),
            avro_string("cust-42"),
            zigzag_varint(1714555800123456),
            zigzag_varint(1714555801000000),
            zigzag_varint(0),
            avro_string("message_received"),
            zigzag_varint(0),
            zigzag_varint(1) + avro_string("rep-7"),
            zigzag_varint(0),
            zigzag_varint(1) + avro_string("价格?"),
            zigzag_varint(4),
            avro_string("vip") + zigzag_varint(0) + b"\x01",
            avro_string("n") + zigzag_varint(1) + zigzag_varint(3),
            avro_string("score") + zigzag_varint(2) + struct.pack("<d", 0.5),
            avro_string("lang") + zigzag_varint(3) + avro_string("zh"),
            zigzag_varint(0),
            avro_string("chat-http/0.1.0"),
            zigzag_varint(0),
        ]
    )
    canonical = packaged_schema("touchpoint_event").canonical_form
    header = b"\xc3\x01" + crc64_avro(canonical.encode()).to_bytes(8, "little")
    assert (header + body).hex() == GOLDEN_HEX


def test_golden_bytes() -> None:
    assert encode_touchpoint(GOLDEN_EVENT).hex() == GOLDEN_HEX
    assert decode_touchpoint(bytes.fromhex(GOLDEN_HEX)) == GOLDEN_EVENT
    assert decode_touchpoints(bytes.fromhex(GOLDEN_HEX)) == [GOLDEN_EVENT]


def test_batch_header_names_the_batch_schema() -> None:
    data = encode_touchpoint_batch([GOLDEN_EVENT, GOLDEN_EVENT])
    assert data[:HEADER_SIZE] == packaged_schema("touchpoint_batch").header
    # block of 2 events, then the same body twice, then the end of the array
    body = bytes.fromhex(GOLDEN_HEX)[HEADER_SIZE:]
    assert data[HEADER_SIZE:] == zigzag_varint(2) + body + body + zigzag_varint(0)


# --------------------------------------------------------------------------- evolution


def v1() -> AvroSchema:
    return packaged_schema("touchpoint_event")


def v1_definition() -> dict[str, Any]:
    return copy.deepcopy(dict(v1().definition))


def test_reader_with_added_defaulted_fields_reads_old_messages() -> None:
    reader = AvroSchema.from_file(DATA / "touchpoint_event_v2_reader.avsc")
    codec = AvroCodec(reader, [v1()])
    record = codec.decode(encode_touchpoint(GOLDEN_EVENT))
    assert record["locale"] == "zh-CN"
    assert record["consent_checked"] is None
    old_fields = {k: v for k, v in record.items() if k not in ("locale", "consent_checked")}
    assert TouchpointEvent.model_validate(old_fields) == GOLDEN_EVENT
    # and the new reader writes with its own fingerprint
    assert codec.encode(record)[:HEADER_SIZE] == reader.header


def test_old_reader_reads_new_writer_it_was_given() -> None:
    new_writer = AvroSchema.from_file(DATA / "touchpoint_event_v2_reader.avsc")
    new_message = AvroCodec(new_writer).encode(
        {**GOLDEN_EVENT.model_dump(), "locale": "en-GB", "consent_checked": True}
    )
    old_reader = AvroCodec(v1(), [new_writer])
    assert TouchpointEvent.model_validate(old_reader.decode(new_message)) == GOLDEN_EVENT
    with pytest.raises(UnknownSchemaError):  # without it, the message is unknown
        AvroCodec(v1()).decode(new_message)


def test_added_field_without_default_fails_when_the_codec_is_built() -> None:
    definition = v1_definition()
    definition["version"] = 3
    definition["fields"].append({"name": "locale", "type": "string"})
    with pytest.raises(IncompatibleSchemaError) as info:
        AvroCodec(AvroSchema.from_dict(definition), [v1()])
    message = str(info.value)
    assert "locale" in message
    assert "TouchpointEvent v1 (0x8491e09e88d2a107)" in message
    assert "TouchpointEvent v3" in message
    assert info.value.reason == "incompatible_schema"
    assert isinstance(info.value, SchemaError)


def test_removed_enum_symbol_fails_when_such_a_message_arrives() -> None:
    definition = v1_definition()
    definition["version"] = 4
    definition["fields"][4]["type"]["symbols"].remove("web")
    codec = AvroCodec(AvroSchema.from_dict(definition), [v1()])
    assert codec.decode(encode_touchpoint(GOLDEN_EVENT))["channel"] == "chat"
    web = GOLDEN_EVENT.model_copy(update={"channel": Channel.WEB})
    with pytest.raises(IncompatibleSchemaError, match="web") as info:
        codec.decode(encode_touchpoint(web))
    assert info.value.reason == "incompatible_schema"


def test_unknown_fingerprint_is_named_with_the_known_ones() -> None:
    data = b"\xc3\x01" + (0x0123456789ABCDEF).to_bytes(8, "little") + b"\x00"
    with pytest.raises(UnknownSchemaError) as info:
        decode_touchpoints(data)
    assert info.value.fingerprint == 0x0123456789ABCDEF
    assert info.value.reason == "unknown_schema"
    assert str(info.value) == (
        "unknown writer schema fingerprint 0x0123456789abcdef; known: "
        "TouchpointEvent v1 (0x8491e09e88d2a107), TouchpointBatch v1 (0x07ba12ce0ff2ee30)"
    )


def test_a_batch_is_not_a_single_touchpoint() -> None:
    with pytest.raises(UnknownSchemaError, match="0x07ba12ce0ff2ee30"):
        decode_touchpoint(encode_touchpoint_batch([GOLDEN_EVENT]))


def test_no_older_versions_are_released_yet() -> None:
    assert older_writer_schemas("touchpoint_event") == []
    assert touchpoint_event_codec().writer_schemas == (v1(),)


def test_invalid_schema_definition() -> None:
    with pytest.raises(SchemaDefinitionError, match="Broken"):
        AvroSchema.from_dict({"type": "record", "name": "Broken", "fields": [{"name": "x"}]})


# --------------------------------------------------------------------------- malformed input

GOLDEN = bytes.fromhex(GOLDEN_HEX)


@pytest.mark.parametrize(
    ("data", "error", "message"),
    [
        (b"", TruncatedMessageError, "expected at least 10 bytes .* found 0 bytes"),
        (b"\xc3", TruncatedMessageError, "found 1 bytes: C3"),
        (GOLDEN[:9], TruncatedMessageError, "found 9 bytes"),
        (b'{"event_id": "e"}', MarkerError, "expected single-object marker C3 01, found 7B 22"),
        (b"\x00\x00\x00\x00\x07" + GOLDEN[10:], MarkerError, "Confluent wire format"),
        (b"\xc3\x02" + GOLDEN[2:], MarkerError, "found C3 02"),
        (GOLDEN[:-3], CorruptBodyError, "does not parse"),
        (GOLDEN[:HEADER_SIZE], CorruptBodyError, "does not parse"),
        (GOLDEN + b"\x00", CorruptBodyError, "1 trailing bytes"),
    ],
    ids=[
        "empty",
        "one-byte",
        "short-header",
        "json",
        "confluent",
        "wrong-marker",
        "truncated-body",
        "header-only",
        "trailing-bytes",
    ],
)
def test_malformed_input(data: bytes, error: type[SchemaError], message: str) -> None:
    for decode in (decode_touchpoint, decode_touchpoints, decode_touchpoints_lenient):
        with pytest.raises(error, match=message) as info:
            decode(data)
        assert info.value.reason == "undecodable"
        assert isinstance(info.value, UndecodableError)


def test_corrupt_string_is_undecodable() -> None:
    corrupt = bytearray(GOLDEN)
    corrupt[11:13] = b"\xff\xfe"  # inside "evt-1": not UTF-8
    with pytest.raises(CorruptBodyError, match="UnicodeDecodeError"):
        decode_touchpoint(bytes(corrupt))


@settings(max_examples=300)
@given(st.binary(max_size=200), st.sampled_from(["event", "batch"]))
def test_random_body_raises_only_schema_errors(body: bytes, which: str) -> None:
    header = packaged_schema("touchpoint_event" if which == "event" else "touchpoint_batch").header
    try:
        decode_touchpoints(header + body)
    except SchemaError as exc:
        assert exc.reason in {"undecodable", "invalid_event"}


@given(st.binary(max_size=64))
def test_random_bytes_raise_only_schema_errors(data: bytes) -> None:
    with pytest.raises(SchemaError):
        decode_touchpoints(data)


def test_decoded_but_invalid_event_names_the_field() -> None:
    record = {**GOLDEN_EVENT.model_dump(), "kind": "Not A Kind"}
    data = touchpoint_event_codec().encode(record)
    with pytest.raises(InvalidRecordError) as info:
        decode_touchpoints(data)
    assert info.value.reason == "invalid_event"
    assert "kind" in str(info.value)
    assert "Not A Kind" in str(info.value)


def test_lenient_batch_keeps_valid_events_and_returns_the_bad_one_as_bytes() -> None:
    good = GOLDEN_EVENT.model_dump()
    bad = {**good, "event_id": "evt-2", "kind": "Not A Kind"}
    data = touchpoint_batch_codec().encode({"events": [good, bad, good]})
    with pytest.raises(InvalidRecordError, match=r"events\.1\.kind"):
        decode_touchpoints(data)
    events, rejected = decode_touchpoints_lenient(data)
    assert events == [GOLDEN_EVENT, GOLDEN_EVENT]
    (rejection,) = rejected
    assert rejection.index == 1
    assert rejection.error.reason == "invalid_event"
    assert "kind" in str(rejection.error)
    assert touchpoint_event_codec().decode(rejection.raw)["event_id"] == "evt-2"


def test_lenient_decode_of_valid_input() -> None:
    assert decode_touchpoints_lenient(GOLDEN) == ([GOLDEN_EVENT], [])
    batch = encode_touchpoint_batch([GOLDEN_EVENT] * 3)
    assert decode_touchpoints_lenient(batch) == ([GOLDEN_EVENT] * 3, [])


def test_encode_errors() -> None:
    with pytest.raises(EncodeError, match="TouchpointBatch"):
        encode_touchpoint_batch([])
    with pytest.raises(EncodeError, match="TouchpointEvent v1") as info:
        touchpoint_event_codec().encode({"event_id": 5})
    assert info.value.reason == "unencodable"
    lone_surrogate = GOLDEN_EVENT.model_copy(update={"text": "\ud800"})
    with pytest.raises(EncodeError, match="surrogate"):
        encode_touchpoint(lone_surrogate)


# --------------------------------------------------------------------------- faust codecs


def test_faust_intervention_codec_instance_round_trip() -> None:
    command = InterventionCommand(
        intervention_id="iv-1",
        customer_id="cust-1",
        rule_id="r",
        rule_version=1,
        kind=InterventionKind.ESCALATION,
        severity=Severity.RED,
        title="Stop",
        body="合规风险",
        explanation=Explanation(
            matched=[Match(condition="term", observed="保本")], triggering_event_ids=["e1"]
        ),
        created_at=datetime(2024, 5, 1, tzinfo=UTC),
    )
    codec = InterventionCodec()
    data = codec.dumps(command)
    assert data == encode_intervention(command)
    assert codec.loads(data) == command
    # as Faust uses it: a codec instance given as the serializer, value_type unset
    registry = Registry()
    wire = registry.dumps_value(None, command, serializer=codec)
    assert registry.loads_value(None, wire, serializer=codec) == command
    # chaining clones the instance
    chained = codec | faust_codecs.binary()
    assert chained.loads(chained.dumps(command)) == command
    with pytest.raises(EncodeError, match="expected a InterventionCommand"):
        codec.dumps(GOLDEN_EVENT)


def test_faust_touchpoint_codec_accepts_events_and_batches() -> None:
    codec = TouchpointCodec()
    assert codec.loads(codec.dumps(GOLDEN_EVENT)) == [GOLDEN_EVENT]
    assert codec.dumps(GOLDEN_EVENT) == GOLDEN
    assert codec.loads(codec.dumps([GOLDEN_EVENT, GOLDEN_EVENT])) == [GOLDEN_EVENT] * 2
    with pytest.raises(EncodeError):
        codec.dumps("not an event")


def test_faust_decode_error_keeps_the_reason_code() -> None:
    registry = Registry()
    with pytest.raises(Exception) as info:
        registry.loads_value(None, b'{"a": 1}', serializer=TouchpointCodec())
    cause = info.value.__cause__
    assert isinstance(cause, MarkerError)
    assert cause.reason == "undecodable"


def test_faust_dead_letter_codec_round_trip() -> None:
    letter = DeadLetter(
        source_topic="touchpoints",
        partition=1,
        offset=42,
        reason="undecodable",
        detail="expected single-object marker C3 01, found 7B 22",
        raw_key=None,
        raw_value=b'{"a": 1}',
        failed_at=datetime(2024, 5, 1, tzinfo=UTC),
    )
    codec = DeadLetterCodec()
    assert codec.loads(codec.dumps(letter)) == letter
