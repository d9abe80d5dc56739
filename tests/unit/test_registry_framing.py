"""Confluent wire format: framing, reading both framings, ids resolved through a
registry (an in-memory one here; the HTTP client is tested in test_registry_client)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings

from schemas.codec import (
    CONFLUENT_HEADER_SIZE,
    HEADER_SIZE,
    AvroSchema,
    consent_change_codec,
    decode_dead_letter,
    decode_gate_input,
    decode_intervention,
    decode_touchpoint,
    decode_touchpoints,
    decode_touchpoints_lenient,
    encode_dead_letter,
    encode_intervention,
    encode_touchpoint,
    encode_touchpoint_batch,
    intervention_codec,
    message_draft_codec,
    older_writer_schemas,
    packaged_schema,
    touchpoint_event_codec,
    use_registry,
    use_single_object,
)
from schemas.errors import (
    IncompatibleSchemaError,
    MarkerError,
    SchemaError,
    TruncatedMessageError,
    UnknownSchemaError,
    UnknownSchemaIdError,
)
from schemas.faust_codec import InterventionCodec, TouchpointCodec
from schemas.models import (
    Channel,
    DeadLetter,
    Direction,
    Explanation,
    InterventionCommand,
    InterventionKind,
    TouchpointEvent,
)
from schemas.registry import RegistryUnavailable

from .test_codec import touchpoint_events

EVENT = TouchpointEvent(
    event_id="evt-1",
    customer_id="cust-42",
    occurred_at=datetime(2024, 5, 1, 9, 30, tzinfo=UTC),
    received_at=datetime(2024, 5, 1, 9, 30, 1, tzinfo=UTC),
    channel=Channel.CHAT,
    kind="message_received",
    direction=Direction.INBOUND,
    rep_id="rep-7",
    source="chat-http/0.1.0",
    attributes={"words": 3},
)
COMMAND = InterventionCommand(
    intervention_id="iv-1",
    customer_id="cust-42",
    rule_id="r",
    rule_version=1,
    kind=InterventionKind.TASK,
    title="Call back",
    body="soon",
    explanation=Explanation(matched=[], triggering_event_ids=["evt-1"]),
    created_at=datetime(2024, 5, 1, tzinfo=UTC),
)


class MemoryIds:
    """Schema ids -> schemas, counting look-ups (the registry's in-memory twin)."""

    def __init__(self, schemas: dict[int, AvroSchema]) -> None:
        self.schemas = schemas
        self.asked: list[int] = []

    def schema_of(self, schema_id: int) -> AvroSchema:
        self.asked.append(schema_id)
        found = self.schemas.get(schema_id)
        if found is None:
            raise UnknownSchemaIdError(f"no schema {schema_id}", schema_id)
        return found


IDS = {
    "touchpoint_event": 11,
    "touchpoint_batch": 12,
    "intervention_command": 21,
    "dead_letter": 31,
    "message_draft": 41,
    "compliance_verdict": 42,
    "draft_review": 43,
    "consent_change": 51,
}


@pytest.fixture
def registry() -> Iterator[MemoryIds]:
    ids = MemoryIds({number: packaged_schema(stem) for stem, number in IDS.items()})
    use_registry(ids, IDS)
    try:
        yield ids
    finally:
        use_single_object()


def confluent(schema_id: int, single_object: bytes) -> bytes:
    """The same record in Confluent framing: 00 + big-endian id + the same Avro body."""
    return b"\x00" + schema_id.to_bytes(4, "big") + single_object[HEADER_SIZE:]


def test_registry_framing_is_magic_byte_big_endian_id_and_the_same_body(
    registry: MemoryIds,
) -> None:
    use_single_object()
    single = encode_intervention(COMMAND)
    use_registry(registry, IDS)
    framed = encode_intervention(COMMAND)
    assert framed[:CONFLUENT_HEADER_SIZE] == bytes.fromhex("0000000015")  # id 21
    assert framed == confluent(21, single)
    assert decode_intervention(framed) == COMMAND
    assert intervention_codec().avro.schema_id == 21


def test_both_framings_decode_and_ids_are_fetched_once(registry: MemoryIds) -> None:
    use_single_object()
    single = encode_touchpoint(EVENT)
    use_registry(registry, {})  # a reader: ids resolve, writes stay single-object
    registry.asked.clear()
    assert encode_touchpoint(EVENT) == single
    framed = confluent(11, single)
    for _ in range(3):
        assert decode_touchpoint(framed) == EVENT
        assert decode_touchpoint(single) == EVENT
        assert decode_touchpoints(framed) == [EVENT]
    # each codec asks once (the batch codec too, to learn 11 is not a batch);
    # RegistrySchemas keeps what it fetched for all of them (test_registry_client)
    assert registry.asked.count(11) == 2


def test_default_path_refuses_confluent_framing_with_a_hint() -> None:
    data = confluent(11, encode_touchpoint(EVENT))
    with pytest.raises(MarkerError) as info:
        decode_touchpoint(data)
    assert str(info.value) == (
        "expected single-object marker C3 01, found 00 00 (looks like Confluent wire "
        "format, schema id 11: set WARROOM_SCHEMA_REGISTRY_URL to read it)"
    )
    assert encode_touchpoint(EVENT)[:2] == b"\xc3\x01"
    assert touchpoint_event_codec().schema_id is None


def test_batches_and_events_are_told_apart_by_schema_id(registry: MemoryIds) -> None:
    batch = encode_touchpoint_batch([EVENT, EVENT])
    assert batch[:CONFLUENT_HEADER_SIZE] == b"\x00" + (12).to_bytes(4, "big")
    assert decode_touchpoints(batch) == [EVENT, EVENT]
    assert decode_touchpoints_lenient(batch) == ([EVENT, EVENT], [])
    single = encode_touchpoint(EVENT)
    assert decode_touchpoints_lenient(single) == ([EVENT], [])
    with pytest.raises(UnknownSchemaIdError) as info:
        decode_touchpoint(batch)
    assert str(info.value) == (
        "schema id 12: expected a io.warroom.TouchpointEvent writer schema, found "
        "io.warroom.TouchpointBatch (TouchpointBatch v1 (0x07ba12ce0ff2ee30))"
    )
    assert info.value.reason == "unknown_schema"


def test_gate_input_is_told_apart_by_schema_id(registry: MemoryIds) -> None:
    draft_bytes = message_draft_codec().encode(
        message_draft_codec().model.model_validate(
            {
                "draft_id": "d-1",
                "customer_id": "cust-42",
                "rep_id": "rep-7",
                "channel": "chat",
                "text": "hello",
                "created_at": datetime(2024, 5, 1, tzinfo=UTC),
            }
        )
    )
    assert draft_bytes[:5] == b"\x00" + (41).to_bytes(4, "big")
    assert decode_gate_input(draft_bytes).draft_id == "d-1"


def test_unknown_id_is_unknown_schema_and_asked_once(registry: MemoryIds) -> None:
    data = b"\x00" + (999).to_bytes(4, "big") + b"\x02"
    for _ in range(2):
        with pytest.raises(UnknownSchemaIdError) as info:
            decode_intervention(data)
        assert info.value.schema_id == 999
        assert info.value.reason == "unknown_schema"
        assert isinstance(info.value, UnknownSchemaError)
    assert registry.asked.count(999) == 1


def test_truncated_confluent_header(registry: MemoryIds) -> None:
    with pytest.raises(TruncatedMessageError) as info:
        decode_intervention(b"\x00\x00\x15")
    assert str(info.value) == (
        "expected at least 5 bytes (magic byte 00 + 4-byte schema id), found 3 bytes: 00 00 15"
    )


def test_older_writer_schema_under_an_id_resolves_into_the_reader(registry: MemoryIds) -> None:
    (old,) = older_writer_schemas("dead_letter")
    registry.schemas[30] = old
    letter = DeadLetter(
        source_topic="touchpoints",
        partition=1,
        offset=7,
        reason="undecodable",
        detail="bad",
        raw_key=b"k",
        raw_value=b"v",
        failed_at=datetime(2024, 5, 1, tzinfo=UTC),
    )
    from schemas.codec import AvroCodec

    old_single = AvroCodec(old).encode(
        {
            k: v
            for k, v in letter.model_dump().items()
            if k in {f["name"] for f in old.definition["fields"]}
        }
    )
    decoded = decode_dead_letter(confluent(30, old_single))
    assert decoded.source_topic == "touchpoints" and decoded.offset == 7
    assert encode_dead_letter(letter)[:5] == b"\x00" + (31).to_bytes(4, "big")


def test_an_id_whose_schema_does_not_resolve_is_incompatible(registry: MemoryIds) -> None:
    definition = json.loads(json.dumps(packaged_schema("touchpoint_event").definition))
    definition["version"] = 9
    definition["fields"][0]["type"] = "long"  # event_id written as a long: no string reads it
    registry.schemas[77] = AvroSchema.from_dict(definition)
    data = b"\x00" + (77).to_bytes(4, "big") + b"\x02"
    with pytest.raises(IncompatibleSchemaError) as info:
        decode_touchpoint(data)
    assert str(info.value).startswith("schema id 77: writer schema TouchpointEvent v9")
    assert info.value.reason == "incompatible_schema"


def test_faust_codecs_follow_the_registry_framing(registry: MemoryIds) -> None:
    assert InterventionCodec().dumps(COMMAND)[:5] == b"\x00" + (21).to_bytes(4, "big")
    codec = TouchpointCodec()
    assert codec.dumps(EVENT)[:5] == b"\x00" + (11).to_bytes(4, "big")
    assert codec.loads(codec.dumps([EVENT])) == [EVENT]
    use_single_object()
    assert InterventionCodec().dumps(COMMAND)[:2] == b"\xc3\x01"


def test_codecs_created_after_the_switch_follow_it(registry: MemoryIds) -> None:
    # consent_change_codec may be first built now; it still writes with its id
    assert consent_change_codec().avro.schema_id == 51


@settings(max_examples=50, deadline=None)
@given(touchpoint_events)
def test_confluent_round_trip_has_the_single_object_body(event: TouchpointEvent) -> None:
    ids = MemoryIds({number: packaged_schema(stem) for stem, number in IDS.items()})
    use_single_object()
    single = encode_touchpoint(event)
    use_registry(ids, IDS)
    try:
        framed = encode_touchpoint(event)
        assert framed == confluent(11, single)
        assert decode_touchpoint(framed) == decode_touchpoint(single)
    finally:
        use_single_object()


class DownIds:
    """A registry that does not answer."""

    def __init__(self) -> None:
        self.asked = 0

    def schema_of(self, schema_id: int) -> AvroSchema:
        self.asked += 1
        raise RegistryUnavailable("schema registry: GET /schemas/ids/21: no answer")


def test_a_registry_that_does_not_answer_is_not_the_records_fault() -> None:
    down = DownIds()
    use_registry(down, {})
    try:
        data = b"\x00" + (21).to_bytes(4, "big") + b"\x00"
        for attempt in (1, 2):
            with pytest.raises(RegistryUnavailable) as info:
                decode_intervention(data)
            # not a SchemaError: the worker must not dead-letter the record for it
            assert not isinstance(info.value, SchemaError)
            assert down.asked == attempt  # nothing cached: asked again next time
    finally:
        use_single_object()
