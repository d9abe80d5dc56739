"""The worker's pipeline with the Confluent wire format: touchpoints in either framing are
processed alike, interventions come out framed with their schema id, and a registry that
does not answer stops the batch instead of dead-lettering good records."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from schemas.codec import (
    AvroSchema,
    decode_intervention,
    encode_touchpoint,
    packaged_schema,
    use_registry,
    use_single_object,
)
from schemas.errors import UnknownSchemaIdError
from schemas.partitioning import customer_partition
from schemas.registry import RegistryUnavailable
from streams.pipeline import RawRecord

from .test_pipeline import NOW, PARTITIONS, TOPIC, nothing_stored, pipeline, touchpoint

IDS = {"touchpoint_event": 5, "touchpoint_batch": 6, "intervention_command": 7, "dead_letter": 8}


class MemoryIds:
    def __init__(self) -> None:
        self.schemas = {number: packaged_schema(stem) for stem, number in IDS.items()}
        self.down = False

    def schema_of(self, schema_id: int) -> AvroSchema:
        if self.down:
            raise RegistryUnavailable(f"schema registry: GET /schemas/ids/{schema_id}: down")
        found = self.schemas.get(schema_id)
        if found is None:
            raise UnknownSchemaIdError(f"no schema {schema_id}", schema_id)
        return found


@pytest.fixture
def ids() -> Iterator[MemoryIds]:
    registry = MemoryIds()
    use_registry(registry, IDS)
    try:
        yield registry
    finally:
        use_single_object()


def record(value: bytes, customer: str, offset: int) -> RawRecord:
    partition = customer_partition(customer, PARTITIONS)
    return RawRecord(TOPIC, partition, offset, customer.encode(), value)


def test_both_framings_raise_the_same_intervention_framed_with_its_id(ids: MemoryIds) -> None:
    events = [touchpoint(n, "acme") for n in range(3)]
    framed = [record(encode_touchpoint(e), "acme", n) for n, e in enumerate(events)]
    assert all(r.value is not None and r.value[:1] == b"\x00" for r in framed)
    use_single_object()
    plain = [record(encode_touchpoint(e), "acme", n) for n, e in enumerate(events)]
    expected = pipeline().process(plain, nothing_stored, NOW)
    use_registry(ids, IDS)
    mixed = [framed[0], plain[1], framed[2]]  # producers moving over, one record at a time
    result = pipeline().process(mixed, nothing_stored, NOW)
    assert result.dead_letters == []
    [(_, command)] = result.interventions
    [(_, expected_command)] = expected.interventions
    assert command == expected_command
    [value] = result.encoded.values()
    assert value[:5] == b"\x00" + (7).to_bytes(4, "big")
    assert decode_intervention(value) == command


def test_an_unknown_schema_id_is_a_dead_letter(ids: MemoryIds) -> None:
    value = b"\x00" + (404).to_bytes(4, "big") + b"\x00"
    result = pipeline().process([record(value, "acme", 0)], nothing_stored, NOW)
    [(_, letter)] = result.dead_letters
    assert letter.reason == "unknown_schema"
    assert letter.detail == "no schema 404"


def test_a_registry_that_does_not_answer_stops_the_batch(ids: MemoryIds) -> None:
    ids.down = True
    value = b"\x00" + (5).to_bytes(4, "big") + encode_touchpoint(touchpoint(0, "acme"))[5:]
    with pytest.raises(RegistryUnavailable):
        pipeline().process([record(value, "acme", 0)], nothing_stored, NOW)
