"""Avro resolution rules as a schema registry applies them before accepting a version."""

from __future__ import annotations

import json
from typing import Any

import pytest

from schemas.codec import older_writer_schemas, packaged_schema
from schemas.registry_compat import Compatibility, incompatibilities, problems_against


def record(*fields: dict[str, Any], name: str = "Touchpoint") -> dict[str, Any]:
    return {"type": "record", "name": name, "namespace": "io.warroom", "fields": list(fields)}


def field(name: str, type_: Any, **extra: Any) -> dict[str, Any]:
    return {"name": name, "type": type_, **extra}


BASE = record(field("event_id", "string"), field("count", "int"))


def test_identical_schemas_are_compatible() -> None:
    assert incompatibilities(reader=BASE, writer=BASE) == []


def test_added_field_needs_a_default() -> None:
    without_default = record(*BASE["fields"], field("channel", "string"))
    with_default = record(*BASE["fields"], field("channel", "string", default="chat"))
    problems = incompatibilities(reader=without_default, writer=BASE)
    assert len(problems) == 1
    assert "channel" in problems[0] and "no default" in problems[0]
    assert incompatibilities(reader=with_default, writer=BASE) == []


def test_removed_field_is_fine_for_the_reader() -> None:
    fewer = record(field("event_id", "string"))
    assert incompatibilities(reader=fewer, writer=BASE) == []


@pytest.mark.parametrize(
    ("writer", "reader"),
    [
        ("int", "long"),
        ("int", "float"),
        ("int", "double"),
        ("long", "float"),
        ("long", "double"),
        ("float", "double"),
        ("string", "bytes"),
        ("bytes", "string"),
    ],
)
def test_promotions(writer: str, reader: str) -> None:
    assert (
        incompatibilities(reader=record(field("v", reader)), writer=record(field("v", writer)))
        == []
    )


@pytest.mark.parametrize(
    ("writer", "reader"),
    [
        ("long", "int"),
        ("double", "float"),
        ("double", "long"),
        ("string", "int"),
        ("boolean", "int"),
    ],
)
def test_narrowing_is_refused_naming_the_field(writer: str, reader: str) -> None:
    problems = incompatibilities(
        reader=record(field("v", reader)), writer=record(field("v", writer))
    )
    assert problems == [f"v: expected {reader} (or a type promoted to it), found {writer}"]


def enum(*symbols: str, **extra: Any) -> dict[str, Any]:
    return {"type": "enum", "name": "Channel", "symbols": list(symbols), **extra}


def test_enum_reader_needs_every_writer_symbol_unless_it_has_a_default() -> None:
    writer = record(field("channel", enum("chat", "email", "pos")))
    fewer = record(field("channel", enum("chat", "email")))
    problems = incompatibilities(reader=fewer, writer=writer)
    assert len(problems) == 1 and "pos" in problems[0] and "channel" in problems[0]
    defaulted = record(field("channel", enum("chat", "email", default="chat")))
    assert incompatibilities(reader=defaulted, writer=writer) == []
    more = record(field("channel", enum("chat", "email", "pos", "web")))
    assert incompatibilities(reader=more, writer=writer) == []


def test_unions() -> None:
    optional_string = record(field("text", ["null", "string"], default=None))
    plain_string = record(field("text", "string"))
    # a reader union reads a writer type one of its branches reads
    assert incompatibilities(reader=optional_string, writer=plain_string) == []
    # a writer union needs every branch readable: null is not a string
    problems = incompatibilities(reader=plain_string, writer=optional_string)
    assert len(problems) == 1 and "null" in problems[0] and "text" in problems[0]
    # union to wider union, with promotion inside
    narrow = record(field("v", ["null", "int"]))
    wide = record(field("v", ["null", "long", "string"]))
    assert incompatibilities(reader=wide, writer=narrow) == []
    assert incompatibilities(reader=narrow, writer=wide) != []


def test_record_names_must_match_or_be_aliased() -> None:
    other = record(*BASE["fields"], name="Purchase")
    problems = incompatibilities(reader=other, writer=BASE)
    assert problems == [
        "the schema: expected a type named io.warroom.Purchase, found io.warroom.Touchpoint"
    ]
    aliased = {**other, "aliases": ["Touchpoint"]}
    assert incompatibilities(reader=aliased, writer=BASE) == []


def test_field_alias_reads_a_renamed_field() -> None:
    renamed = record(field("id", "string", aliases=["event_id"]), field("count", "int"))
    assert incompatibilities(reader=renamed, writer=BASE) == []


def test_nested_arrays_maps_and_fixed() -> None:
    writer = record(
        field("tags", {"type": "array", "items": "int"}),
        field("attrs", {"type": "map", "values": "string"}),
        field("hash", {"type": "fixed", "name": "Hash", "size": 16}),
    )
    reader = record(
        field("tags", {"type": "array", "items": "long"}),
        field("attrs", {"type": "map", "values": "bytes"}),
        field("hash", {"type": "fixed", "name": "Hash", "size": 16}),
    )
    assert incompatibilities(reader=reader, writer=writer) == []
    wrong = record(
        field("tags", {"type": "array", "items": "boolean"}),
        field("attrs", {"type": "map", "values": "int"}),
        field("hash", {"type": "fixed", "name": "Hash", "size": 32}),
    )
    problems = incompatibilities(reader=wrong, writer=writer)
    assert [p.split(":")[0] for p in problems] == ["tags[]", "attrs{}", "hash"]


def test_recursive_types_terminate() -> None:
    node = {
        "type": "record",
        "name": "Node",
        "fields": [field("value", "int"), field("next", ["null", "Node"], default=None)],
    }
    wider = {
        "type": "record",
        "name": "Node",
        "fields": [field("value", "long"), field("next", ["null", "Node"], default=None)],
    }
    assert incompatibilities(reader=wider, writer=node) == []


def test_named_type_referenced_by_name_later() -> None:
    writer = record(field("a", enum("x", "y")), field("b", "Channel"))
    reader = record(field("a", enum("x", "y")), field("b", "io.warroom.Channel"))
    assert incompatibilities(reader=reader, writer=writer) == []
    narrower = record(field("a", enum("x", "y", "z")), field("b", "Channel"))
    assert (
        incompatibilities(
            reader=narrower, writer=record(field("a", enum("x", "y", "z")), field("b", "Channel"))
        )
        == []
    )


def test_levels() -> None:
    v1 = record(field("event_id", "string"))
    v2 = record(field("event_id", "string"), field("n", "int", default=0))
    v3_drops_default = record(field("event_id", "string"), field("n", "int"))
    assert problems_against(Compatibility.BACKWARD, v2, [v1]) == []
    assert problems_against(Compatibility.FORWARD, v2, [v1]) == []  # v1 skips n
    assert problems_against(Compatibility.FULL, v2, [v1]) == []
    # v3 reads v2 (n present), not v1 (n missing, no default)
    assert problems_against(Compatibility.BACKWARD, v3_drops_default, [v1, v2]) == []
    transitive = problems_against(Compatibility.BACKWARD_TRANSITIVE, v3_drops_default, [v1, v2])
    assert transitive and "version 1" in transitive[0]
    needs_default = record(field("event_id", "string"), field("m", "int"))
    assert problems_against(Compatibility.NONE, needs_default, [v1]) == []
    assert problems_against(Compatibility.FORWARD, v1, [needs_default]) != []


@pytest.mark.parametrize(
    "stem",
    [
        "touchpoint_event",
        "touchpoint_batch",
        "intervention_command",
        "dead_letter",
        "consent_change",
        "message_draft",
        "compliance_verdict",
        "draft_review",
    ],
)
def test_every_packaged_schema_reads_its_older_versions(stem: str) -> None:
    current = packaged_schema(stem).definition
    for older in older_writer_schemas(stem):
        assert incompatibilities(reader=current, writer=older.definition) == []
    assert incompatibilities(reader=current, writer=json.loads(json.dumps(current))) == []
