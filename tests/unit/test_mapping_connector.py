"""The mapping connector: YAML mappings checked at load with the line named, JSON records
mapped to touchpoints, the shipped mappings on real sample files, and the
service-opportunity rule pack fed by them."""

from __future__ import annotations

import json
from collections import abc
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiokafka import TopicPartition
from hypothesis import given, settings
from hypothesis import strategies as st

from connectors.mapping import (
    MISSING,
    InvalidMapping,
    Mapping,
    RecordRejected,
    describe,
    load_mapping,
    parse_path,
)
from connectors.mapping_service import TopicFollower, check_files, dry_run
from connectors.publisher import (
    MemoryTouchpointSink,
    PublishUnavailable,
    UnpublishableTouchpoints,
    envelopes,
)
from connectors.rejects import MemoryDeadLetterSink
from engine.bundle import load_bundle
from engine.reducer import apply
from engine.state import CustomerState
from schemas.codec import decode_touchpoint, encode_touchpoint
from schemas.models import Channel, Direction, InterventionCommand, TouchpointEvent
from streams.tail import format_intervention

ROOT = Path(__file__).resolve().parents[2]
MAPPINGS = ROOT / "connectors" / "mappings"
DATA = ROOT / "tests" / "data" / "connectors" / "mapping"
RECEIVED = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def shipped(name: str) -> Mapping:
    path = MAPPINGS / f"{name}.yaml"
    return load_mapping(path.read_text(encoding="utf-8"), str(path.relative_to(ROOT)))


def data(name: str) -> Any:
    return json.loads((DATA / name).read_text(encoding="utf-8"))


def jsonl(name: str) -> list[bytes]:
    return (DATA / name).read_bytes().splitlines()


MINIMAL = """\
mapping: tickets
version: 3
touchpoint:
  event_id: "t:{$.id}"
  customer_id: $.account
  occurred_at: $.at
  channel: support
  kind: ticket_opened
"""


def minimal(extra: str = "", touchpoint: str = "") -> Mapping:
    return load_mapping(MINIMAL + touchpoint + extra, "m.yaml")


def refused(text: str) -> list[str]:
    with pytest.raises(InvalidMapping) as caught:
        load_mapping(text, "m.yaml")
    return [str(p) for p in caught.value.problems]


# --- paths ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path, expected",
    [
        ("$", {"a": {"b": [1, {"x": "y"}]}, "odd key": 5}),
        ("$.a.b[0]", 1),
        ("$.a.b[1].x", "y"),
        ("$.a.b[-1].x", "y"),
        ("$['odd key']", 5),
        ('$["odd key"]', 5),
    ],
)
def test_paths_select_fields_indexes_and_quoted_keys(path: str, expected: Any) -> None:
    record = {"a": {"b": [1, {"x": "y"}]}, "odd key": 5}
    assert parse_path(path).get(record) == expected


@pytest.mark.parametrize("path", ["$.a.c", "$.a.b[2]", "$.a.b.x", "$.a.b[0].x", "$['no']"])
def test_a_path_that_finds_nothing_is_missing_not_an_error(path: str) -> None:
    record = {"a": {"b": [1, {"x": "y"}]}}
    assert parse_path(path).get(record) is MISSING


@pytest.mark.parametrize("path", ["a.b", "$.", "$..a", "$[x]", "$.a[*]", "$.a b"])
def test_malformed_paths_say_what_was_expected(path: str) -> None:
    with pytest.raises(ValueError, match="expected"):
        parse_path(path)


# --- load-time checks -------------------------------------------------------------------


def test_a_minimal_mapping_maps_a_record() -> None:
    event = minimal().to_touchpoint(
        {"id": 7, "account": "acme", "at": "2026-11-30T08:00:00Z"}, RECEIVED
    )
    assert event == TouchpointEvent(
        event_id="t:7",
        customer_id="acme",
        occurred_at=datetime(2026, 11, 30, 8, tzinfo=UTC),
        received_at=RECEIVED,
        channel=Channel.SUPPORT,
        kind="ticket_opened",
        direction=Direction.NONE,
        source="mapping:tickets/3",
    )


@pytest.mark.parametrize(
    "change, expected",
    [
        (
            ("channel: support", "channel: suport"),
            "m.yaml:7: touchpoint.channel: expected one of chat, email, meeting, pos, call, "
            "web, product, support, crm, external, found 'suport' (did you mean 'support'?)",
        ),
        (
            ("kind: ticket_opened", "kind: Ticket Opened"),
            "m.yaml:8: touchpoint.kind: expected a kind in lower_snake_case, found 'Ticket Opened'",
        ),
        (
            ('event_id: "t:{$.id}"', "event_id: ticket-constant"),
            "m.yaml:4: touchpoint.event_id: expected at least one {$.path} placeholder (event "
            "ids must come from the source's own fields so a replay makes the same id), found "
            "none in 'ticket-constant'",
        ),
        (
            ("customer_id: $.account", "customer_id: $.acc..ount"),
            "m.yaml:5: touchpoint.customer_id: expected .name, [index] or ['key'] at character "
            "6 of '$.acc..ount', found '..ount'",
        ),
        (
            ("occurred_at: $.at", "occurred_at: 2026-01-01"),
            "m.yaml:6: touchpoint.occurred_at: expected a path: a constant event time is never "
            "right",
        ),
        (
            ("occurred_at: $.at", "occurred_at: {field: $.at, default: '2026-01-01T00:00:00Z'}"),
            "m.yaml:6: touchpoint.occurred_at: expected no default, map or type: an event "
            "time comes from the record, or the record is refused",
        ),
        (
            ("version: 3", "version: 0"),
            "m.yaml:2: version: expected a whole number from 1 to 2147483647, found 0",
        ),
        (
            ("  kind: ticket_opened\n", ""),
            "m.yaml:4: touchpoint.kind: required, missing",
        ),
    ],
)
def test_a_wrong_field_is_refused_with_its_line(change: tuple[str, str], expected: str) -> None:
    assert refused(MINIMAL.replace(*change)) == [expected]


def test_misspelt_keys_get_a_suggestion_and_every_problem_is_listed() -> None:
    text = MINIMAL.replace("touchpoint:", "descripton: x\ntouchpoint:") + (
        "  diretion: inbound\n"
        "attributes:\n"
        "  priority: {field: $.p, type: integer}\n"
        "  opened: {field: $.o, time: iso8601}\n"
        "filter:\n"
        "  - {field: $.status, equals: new, in: [a]}\n"
        "  - {field: $.status, exist: true}\n"
    )
    problems = refused(text)
    assert problems == [
        "m.yaml:3: descripton: unknown field; expected one of mapping, version, description, "
        "records, filter, touchpoint, attributes (did you mean 'description'?)",
        "m.yaml:10: touchpoint.diretion: unknown field; expected one of event_id, customer_id, "
        "occurred_at, channel, kind, direction, rep_id, contact_id, text, industry "
        "(did you mean 'direction'?)",
        "m.yaml:12: attributes.priority.type: expected one of str, int, float, bool, found "
        "'integer' (did you mean 'int'?)",
        "m.yaml:13: attributes.opened: expected no time: only occurred_at is a time",
        "m.yaml:15: filter[0]: expected exactly one test of equals, not_equals, in, not_in, "
        "exists, found 2",
        "m.yaml:16: filter[1].exist: unknown field; expected one of field, equals, not_equals, "
        "in, not_in, exists (did you mean 'exists'?)",
        "m.yaml:16: filter[1]: expected exactly one test of equals, not_equals, in, not_in, "
        "exists, found 0",
    ]


@pytest.mark.parametrize(
    "text, expected",
    [
        ("mapping: [unclosed\n", "m.yaml:2: (yaml): not valid YAML"),
        (
            MINIMAL + "attributes: &a {x: $.x}\n",
            "m.yaml:9: (yaml): mappings may not use YAML anchors",
        ),
        (
            MINIMAL.replace("channel: support", "channel: support\n  channel: chat"),
            "m.yaml:8: channel: appears twice",
        ),
        ("- a list\n", "m.yaml:1: (mapping): expected a YAML mapping, found a list"),
        (
            MINIMAL.replace("occurred_at: $.at", "occurred_at: {field: $.at, timezone: Mars/Base}"),
            "m.yaml:6: touchpoint.occurred_at.timezone: expected an IANA time zone",
        ),
        (
            MINIMAL.replace("occurred_at: $.at", "occurred_at: {field: $.at, time: dd/mm/yyyy}"),
            "m.yaml:6: touchpoint.occurred_at.time: expected iso8601, epoch_seconds, "
            "epoch_millis or a strftime format",
        ),
        (
            MINIMAL.replace("channel: support", "channel: {field: $.c, map: {web: website}}"),
            "m.yaml:7: touchpoint.channel: expected one of chat, email",
        ),
    ],
)
def test_broken_yaml_and_values_are_refused_with_the_line(text: str, expected: str) -> None:
    [problem] = refused(text)
    assert problem.startswith(expected), problem


def test_an_oversized_mapping_is_refused_before_parsing() -> None:
    assert refused("#" * 70_000) == [
        "m.yaml:1: (mapping): expected at most 65,536 bytes, found 70,000"
    ]


def test_every_shipped_mapping_loads() -> None:
    names = sorted(p.stem for p in MAPPINGS.glob("*.yaml"))
    assert names == ["equipment-alarm", "service-ticket", "spare-part-order"]
    for name in names:
        assert shipped(name).name == name


# --- records ----------------------------------------------------------------------------


FULL = minimal(
    touchpoint=(
        "  direction: {field: $.dir, map: {in: inbound, out: outbound}, otherwise: none}\n"
        "  rep_id: $.owner.id\n"
        "  text: $.subject\n"
    ),
    extra=(
        "filter:\n"
        "  - {field: $.status, in: [new, reopened]}\n"
        "  - {field: $.test, exists: false}\n"
        "  - {field: $.kind, not_equals: spam}\n"
        "attributes:\n"
        "  seats: {field: $.seats, type: int}\n"
        "  score: {field: $.score, type: float}\n"
        "  vip: {field: $.vip, type: bool, default: false}\n"
        "  plan: $.plan\n"
        "  code: {field: $.code, type: str}\n"
        "  region: {value: emea}\n"
    ),
)


def record(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": "T-1",
        "account": "acme",
        "at": "2026-11-30T08:00:00+08:00",
        "status": "new",
        "dir": "in",
        "owner": {"id": "rep-1"},
        "subject": "help",
        "seats": "40",
        "score": 3,
        "plan": "pro",
        "code": 17,
    }
    base.update(changes)
    return {k: v for k, v in base.items() if v is not ...}


def test_conversions_constants_maps_and_defaults() -> None:
    event = FULL.to_touchpoint(record(), RECEIVED)
    assert event.occurred_at == datetime(2026, 11, 30, 0, tzinfo=UTC)
    assert (event.direction, event.rep_id, event.text) == (Direction.INBOUND, "rep-1", "help")
    assert event.attributes == {
        "seats": 40,
        "score": 3.0,
        "vip": False,
        "plan": "pro",
        "code": "17",
        "region": "emea",
    }
    assert type(event.attributes["score"]) is float
    other = FULL.to_touchpoint(record(dir="sideways", vip="yes", plan=..., rep=...), RECEIVED)
    assert other.direction is Direction.NONE
    assert other.attributes["vip"] is True and "plan" not in other.attributes


def test_the_filter_keeps_what_it_says_and_counts_the_rest() -> None:
    body = [
        record(id=1),
        record(id=2, status="closed"),
        record(id=3, test=True),
        record(id=4, kind="spam"),
        record(id=5, status="reopened", kind="sale"),
        record(id=6, status=...),
    ]
    mapped = FULL.map_body(body, RECEIVED)
    assert [e.event_id for e in mapped.events] == ["t:1", "t:5"]
    assert mapped.skipped == 4


def test_every_bad_record_and_field_is_named_without_logging_the_value() -> None:
    body = [
        record(),
        record(id=..., seats="forty", at="30/11/2026"),
        record(account={"id": "x"}, score="NaN"),
        "not an object",
    ]
    with pytest.raises(RecordRejected) as caught:
        FULL.map_body(body, RECEIVED)
    problems = caught.value.problems
    assert [(p["index"], p["field"]) for p in problems] == [
        (1, "event_id"),
        (1, "occurred_at"),
        (1, "attributes.seats"),
        (2, "customer_id"),
        (2, "attributes.score"),
        (3, "(record)"),
    ]
    assert problems[1]["message"] == (
        "$.at: expected a time in the format iso8601, found other text"
    )
    assert problems[1]["found"] == "30/11/2026"
    assert (
        problems[2]["message"] == "$.seats: expected a whole number, found text of 5 character(s)"
    )
    assert problems[3]["message"] == "$.account: expected text or a number, found an object"
    assert problems[4]["message"] == "$.score: expected a finite number, found infinity or NaN"
    assert "forty" not in str(caught.value) and "30/11/2026" not in describe(problems[1])


def test_a_missing_required_field_or_a_naive_time_is_refused() -> None:
    with pytest.raises(RecordRejected) as caught:
        FULL.map_body([record(account=...), record(at="2026-11-30T08:00:00")], RECEIVED)
    assert [(p["index"], p["field"], p["message"]) for p in caught.value.problems] == [
        (0, "customer_id", "expected a value at $.account, found none"),
        (
            1,
            "occurred_at",
            "$.at: expected a time with a UTC offset (or a timezone in the mapping), found a "
            "time without one",
        ),
    ]


@pytest.mark.parametrize(
    "spec, value, expected",
    [
        ("{field: $.at, time: epoch_seconds}", 1764460800, datetime(2025, 11, 30, tzinfo=UTC)),
        ("{field: $.at, time: epoch_seconds}", "1764460800", datetime(2025, 11, 30, tzinfo=UTC)),
        (
            "{field: $.at, time: epoch_millis}",
            1764460800123,
            datetime(2025, 11, 30, 0, 0, 0, 123000, tzinfo=UTC),
        ),
        (
            "{field: $.at, time: '%Y%m%d %H%M%S', timezone: Asia/Shanghai}",
            "20261130 080000",
            datetime(2026, 11, 30, 0, tzinfo=UTC),
        ),
        (
            "{field: $.at, time: '%d/%m/%Y %H:%M %z'}",
            "30/11/2026 08:00 +0100",
            datetime(2026, 11, 30, 7, tzinfo=UTC),
        ),
        (
            "{field: $.at, timezone: UTC}",
            "2026-11-30T08:00:00",
            datetime(2026, 11, 30, 8, tzinfo=UTC),
        ),
        ("$.at", "2026-11-30T08:00:00.5z", datetime(2026, 11, 30, 8, 0, 0, 500000, tzinfo=UTC)),
    ],
)
def test_time_formats(spec: str, value: Any, expected: datetime) -> None:
    mapping = load_mapping(MINIMAL.replace("occurred_at: $.at", f"occurred_at: {spec}"), "m")
    event = mapping.to_touchpoint({"id": 1, "account": "a", "at": value}, RECEIVED)
    assert event.occurred_at == expected


@pytest.mark.parametrize("value", [-5, 10**15, True, "soon", [1]])
def test_epoch_times_out_of_range_or_not_numbers_are_refused(value: Any) -> None:
    mapping = load_mapping(
        MINIMAL.replace("occurred_at: $.at", "occurred_at: {field: $.at, time: epoch_seconds}"), "m"
    )
    with pytest.raises(RecordRejected, match="expected epoch_seconds"):
        mapping.to_touchpoint({"id": 1, "account": "a", "at": value}, RECEIVED)


def test_an_event_id_longer_than_the_contract_is_refused_not_cut() -> None:
    with pytest.raises(RecordRejected) as caught:
        minimal().to_touchpoint(
            {"id": "x" * 200, "account": "a", "at": "2026-11-30T08:00:00Z"}, RECEIVED
        )
    [problem] = caught.value.problems
    assert problem["field"] == "event_id"
    assert "at most 128 characters" in problem["message"]


# --- the shipped mappings on their sample files -----------------------------------------


def test_service_tickets_opened_and_reopened_become_touchpoints() -> None:
    mapped = shipped("service-ticket").map_body(data("service-tickets.json"), RECEIVED)
    assert mapped.skipped == 1  # the comment
    opened, reopened = mapped.events
    assert opened.event_id == "ticket:48213:ticket.created:2026-11-30T08:15:22+08:00"
    assert (opened.customer_id, opened.rep_id, opened.contact_id) == (
        "acct-huadong-cold",
        "rep-li",
        "ct-7781",
    )
    assert opened.occurred_at == datetime(2026, 11, 30, 0, 15, 22, tzinfo=UTC)
    assert (opened.channel, opened.kind, opened.direction) == (
        Channel.SUPPORT,
        "ticket_opened",
        Direction.INBOUND,
    )
    assert opened.text is not None and opened.text.startswith("3号冷水机组")
    assert opened.attributes == {
        "ticket_id": "48213",
        "priority": "high",
        "ticket_type": "incident",
        "asset_serial": "CH-3-0091",
        "product_line": "chillers",
    }
    assert reopened.kind == "ticket_reopened" and reopened.attributes["priority"] == "normal"
    assert opened.source == "mapping:service-ticket/1"


def test_invalid_service_tickets_are_each_named() -> None:
    with pytest.raises(RecordRejected) as caught:
        shipped("service-ticket").map_body(data("service-ticket-invalid.json"), RECEIVED)
    assert [(p["index"], p["field"]) for p in caught.value.problems] == [
        (0, "customer_id"),
        (1, "occurred_at"),
        (2, "event_id"),
        (2, "attributes.ticket_id"),
    ]


def test_equipment_alarms_line_by_line() -> None:
    mapping = shipped("equipment-alarm")
    outcomes: list[str] = []
    events: list[TouchpointEvent] = []
    for line in jsonl("equipment-alarms.jsonl"):
        try:
            mapped = mapping.map_body(json.loads(line), RECEIVED)
        except json.JSONDecodeError:
            outcomes.append("not json")
            continue
        except RecordRejected as rejected:
            outcomes.append("rejected: " + ", ".join(p["field"] for p in rejected.problems))
            continue
        events.extend(mapped.events)
        outcomes.append("skipped" if mapped.skipped else "ok")
    assert outcomes == [
        "ok",
        "ok",
        "skipped",  # cleared
        "ok",
        "ok",
        "skipped",  # no account
        "rejected: occurred_at",
        "not json",
    ]
    first = events[0]
    assert first.event_id == "alarm:CH-3-0091:a-1001"
    assert first.occurred_at == datetime(2025, 11, 30, tzinfo=UTC)
    assert first.attributes == {
        "device_id": "CH-3-0091",
        "code": "E42",
        "severity": "major",
        "reading": 87.5,
        "unit": "C",
        "site": "Kunshan DC",
    }
    assert events[1].attributes["reading"] == 88.1  # written as text by the platform
    assert events[2].attributes["code"] == "7" and events[2].attributes["severity"] == "critical"
    assert events[3].attributes["severity"] == "unknown" and "reading" not in events[3].attributes
    assert events[3].occurred_at.microsecond == 123_000


def test_spare_part_orders_from_an_erp_export() -> None:
    mapped = shipped("spare-part-order").map_body(data("spare-part-orders.json"), RECEIVED)
    assert mapped.skipped == 2  # a sales order and a cancelled one
    china, sweden = mapped.events
    assert china.event_id == "erp-order:CN10:0004500123"
    assert china.occurred_at == datetime(2026, 11, 28, 6, 30, 5, tzinfo=UTC)  # 14:30:05 CST
    assert china.attributes == {
        "order_number": "0004500123",
        "amount": 12450.5,
        "currency": "CNY",
        "lines": 3,
        "first_part": "CH-SEAL-KIT-3",
        "rush": True,
    }
    assert (china.industry, china.channel, china.kind) == (
        "manufacturing",
        Channel.EXTERNAL,
        "spare_part_ordered",
    )
    assert sweden.attributes["amount"] == 8800.0 and sweden.attributes["rush"] is False


def test_a_body_without_the_records_list_is_refused() -> None:
    with pytest.raises(RecordRejected) as caught:
        shipped("spare-part-order").map_body({"export": {}}, RECEIVED)
    assert caught.value.problems == [
        {
            "index": None,
            "field": "(records)",
            "message": "expected a list of records at $.orders, found nothing",
        }
    ]


def test_reading_the_same_files_again_makes_the_same_touchpoints() -> None:
    later = RECEIVED + timedelta(hours=5)
    for name, sample in (
        ("service-ticket", "service-tickets.json"),
        ("spare-part-order", "spare-part-orders.json"),
    ):
        first = shipped(name).map_body(data(sample), RECEIVED).events
        again = shipped(name).map_body(data(sample), later).events
        assert [e.event_id for e in first] == [e.event_id for e in again]
        assert [e.model_copy(update={"received_at": later}) for e in first] == again


def test_mapped_touchpoints_encode_and_decode() -> None:
    events = shipped("spare-part-order").map_body(data("spare-part-orders.json"), RECEIVED).events
    for event in events:
        assert decode_touchpoint(encode_touchpoint(event)) == event


# --- the service-opportunity pack, fed by the mappings ------------------------------------


def run_pack(events: list[TouchpointEvent]) -> list[InterventionCommand]:
    path = ROOT / "rules" / "examples" / "service-opportunity.yaml"
    bundle = load_bundle(path.read_text(encoding="utf-8"), str(path))
    states: dict[str, CustomerState | None] = {}
    emitted: list[InterventionCommand] = []
    for event in sorted(events, key=lambda e: e.occurred_at):
        state, decisions = apply(
            states.get(event.customer_id), event, RECEIVED + timedelta(days=30), bundle.rules
        )
        states[event.customer_id] = state
        emitted.extend(d.intervention for d in decisions if not d.shadow)
    return emitted


def test_a_service_ticket_becomes_an_opportunity_task_for_the_account_rep() -> None:
    events = shipped("service-ticket").map_body(data("service-tickets.json"), RECEIVED).events
    tasks = run_pack(events)
    assert [(t.customer_id, t.rule_id, t.rep_id) for t in tasks] == [
        ("acct-huadong-cold", "service.ticket-opportunity", "rep-li"),
        ("acct-nordic-foods", "service.ticket-opportunity", "rep-sven"),
    ]
    assert tasks[0].title == "Service ticket at acct-huadong-cold: a sales opportunity"


def test_a_question_ticket_is_not_an_opportunity() -> None:
    body = data("service-tickets.json")[0]
    body["ticket"]["type"] = "question"
    events = shipped("service-ticket").map_body(body, RECEIVED).events
    assert run_pack(events) == []


def alarm(n: int, hours: float, severity: str = "MAJOR") -> dict[str, Any]:
    at = datetime(2026, 11, 30, tzinfo=UTC) + timedelta(hours=hours)
    return {
        "alarmId": f"a-{n}",
        "deviceId": "CH-3-0091",
        "accountId": "acct-huadong-cold",
        "code": "E42",
        "severity": severity,
        "state": "RAISED",
        "raisedAt": int(at.timestamp() * 1000),
        "site": {"ownerRep": "rep-li"},
    }


def test_three_major_alarms_within_24h_become_one_opportunity_task() -> None:
    mapping = shipped("equipment-alarm")
    alarms = [alarm(1, 0), alarm(2, 5, "MINOR"), alarm(3, 10), alarm(4, 23.5, "CRITICAL")]
    tasks = run_pack(mapping.map_body(alarms, RECEIVED).events)
    assert [(t.rule_id, t.rep_id, t.explanation.triggering_event_ids) for t in tasks] == [
        (
            "service.alarm-run-opportunity",
            "rep-li",
            ["alarm:CH-3-0091:a-1", "alarm:CH-3-0091:a-3", "alarm:CH-3-0091:a-4"],
        )
    ]
    assert tasks[0].title.startswith("3 equipment alarms at acct-huadong-cold within 24 hours")


def test_three_major_alarms_spread_over_more_than_24h_do_not_fire() -> None:
    alarms = [alarm(1, 0), alarm(2, 12), alarm(3, 24.01)]
    assert run_pack(shipped("equipment-alarm").map_body(alarms, RECEIVED).events) == []


def test_spare_part_spend_over_90_days_becomes_a_replacement_task() -> None:
    export = data("spare-part-orders.json")
    order = export["orders"][0]
    again = dict(order, OrderNumber="0004500999", CreatedAt="15.12.2026 10:00:00", NetValue="9000")
    export["orders"].append(again)
    events = shipped("spare-part-order").map_body(export, RECEIVED).events
    [task] = run_pack(events)
    assert task.rule_id == "service.spare-parts-spend"
    assert task.customer_id == "acct-huadong-cold" and task.rep_id == "rep-li"


# --- following a Kafka topic (with in-memory twins) ----------------------------------------


@dataclass
class FakeRecord:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


class FakeConsumer:
    """Partitions of records; getmany hands out what is past each position."""

    def __init__(
        self, partitions: abc.Mapping[int, abc.Sequence[bytes | None]], topic: str = "alarms"
    ) -> None:
        self.records = {
            TopicPartition(topic, p): [
                FakeRecord(topic, p, offset, f"k{offset}".encode(), value)
                for offset, value in enumerate(values)
            ]
            for p, values in partitions.items()
        }
        self.position = dict.fromkeys(self.records, 0)
        self.committed: dict[TopicPartition, int] = {}

    async def getmany(self, *partitions: Any, timeout_ms: int = 0, max_records: Any = None):
        batch = {}
        for tp, records in self.records.items():
            part = records[self.position[tp] : self.position[tp] + (max_records or 10**6)]
            if part:
                batch[tp] = part
                self.position[tp] += len(part)
        return batch

    async def commit(self, offsets: Any = None) -> None:
        self.committed.update(offsets)

    def seek(self, partition: TopicPartition, offset: int) -> None:
        self.position[partition] = offset


class FailingOnceSink(MemoryTouchpointSink):
    def __init__(self) -> None:
        super().__init__()
        self.failures = 1

    async def publish(self, events: Any) -> None:
        if self.failures:
            self.failures -= 1
            raise PublishUnavailable("not published: broker away; retry")
        await super().publish(events)


def follower(consumer: FakeConsumer, sink: MemoryTouchpointSink) -> tuple[Any, Any]:
    letters = MemoryDeadLetterSink()
    follow = TopicFollower(
        shipped("equipment-alarm"), consumer, sink, letters, clock=lambda: RECEIVED
    )
    return follow, letters


async def test_a_topic_batch_publishes_dead_letters_with_positions_then_commits() -> None:
    lines: list[bytes | None] = list(jsonl("equipment-alarms.jsonl"))
    consumer = FakeConsumer({0: lines[:4], 3: [*lines[4:], None]})
    sink = MemoryTouchpointSink()
    follow, letters = follower(consumer, sink)
    assert await follow.step() == 9
    assert [e.event_id for batch in sink.published for e in batch] == [
        "alarm:CH-3-0091:a-1001",
        "alarm:CH-3-0091:a-1002",
        "alarm:CH-3-0091:a-1003",
        "alarm:GW-17:a-1004",
    ]
    assert [(d.source_topic, d.partition, d.offset, d.reason) for d in letters.letters] == [
        ("alarms", 3, 2, "unmappable"),
        ("alarms", 3, 3, "not_json"),
    ]
    assert letters.letters[0].detail == (
        "mapping equipment-alarm: record 0: occurred_at: $.raisedAt: expected epoch_millis as "
        "a number, found text of 9 character(s)"
    )
    assert letters.letters[0].raw_value == lines[6] and letters.letters[0].raw_key == b"k2"
    assert consumer.committed == {TopicPartition("alarms", 0): 4, TopicPartition("alarms", 3): 5}
    assert (follow.stats.touchpoints, follow.stats.skipped) == (4, 3)  # 2 filtered, 1 empty
    assert await follow.step() == 0


async def test_a_batch_kafka_did_not_take_is_read_again_and_committed_once_published() -> None:
    lines = jsonl("equipment-alarms.jsonl")
    consumer = FakeConsumer({0: lines[:2]})
    sink = FailingOnceSink()
    follow, _ = follower(consumer, sink)
    follow._pause = 0.0
    assert await follow.step() == 0
    assert consumer.committed == {} and sink.published == []
    assert await follow.step() == 2
    assert consumer.committed == {TopicPartition("alarms", 0): 2}
    assert [len(batch) for batch in sink.published] == [2]
    assert follow.stats.retries == 1


async def test_a_message_whose_touchpoint_cannot_encode_is_dead_lettered_alone() -> None:
    good = jsonl("equipment-alarms.jsonl")[0]
    huge = json.loads(good)
    huge["alarmId"] = "a-huge"
    huge["site"]["name"] = "x" * 1_000_000  # over Kafka's record limit once encoded
    consumer = FakeConsumer({0: [good, json.dumps(huge).encode()]})
    sink = MemoryTouchpointSink()
    follow, letters = follower(consumer, sink)
    assert await follow.step() == 2
    assert [e.event_id for batch in sink.published for e in batch] == ["alarm:CH-3-0091:a-1001"]
    [letter] = letters.letters
    assert (letter.offset, letter.reason) == (1, "unpublishable")
    assert consumer.committed == {TopicPartition("alarms", 0): 2}


async def test_reading_the_topic_again_makes_the_same_event_ids() -> None:
    lines = jsonl("equipment-alarms.jsonl")
    first, again = MemoryTouchpointSink(), MemoryTouchpointSink()
    await follower(FakeConsumer({0: lines}), first)[0].step()
    await follower(FakeConsumer({0: lines}), again)[0].step()
    ids = [[e.event_id for e in batch] for batch in first.published]
    assert ids == [[e.event_id for e in batch] for batch in again.published] and ids[0]


# --- the command line and the reference ----------------------------------------------------


def test_mapping_check_names_every_problem_and_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(MINIMAL.replace("channel: support", "channel: suport"), encoding="utf-8")
    good = str(MAPPINGS / "service-ticket.yaml")
    assert check_files([good, str(bad)]) == 2
    out, err = capsys.readouterr()
    assert out == f"{good}: mapping service-ticket v1: ok\n"
    assert err.startswith(f"{bad}:7: touchpoint.channel: expected one of chat")
    assert check_files([good]) == 0


def test_mapping_map_prints_touchpoints_and_problems_in_line_order(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = dry_run(
        str(MAPPINGS / "equipment-alarm.yaml"), str(DATA / "equipment-alarms.jsonl"), RECEIVED
    )
    out, err = capsys.readouterr()
    assert code == 2
    printed = [TouchpointEvent.model_validate_json(line) for line in out.splitlines()]
    assert [e.event_id for e in printed] == [
        "alarm:CH-3-0091:a-1001",
        "alarm:CH-3-0091:a-1002",
        "alarm:CH-3-0091:a-1003",
        "alarm:GW-17:a-1004",
    ]
    lines = err.splitlines()
    assert lines[0].endswith(
        "equipment-alarms.jsonl:7: record 0: occurred_at: $.raisedAt: expected epoch_millis "
        "as a number, found text of 9 character(s)"
    )
    assert "equipment-alarms.jsonl:8: (record): expected JSON, found: " in lines[1]
    assert lines[2] == "4 touchpoint(s), 2 left out by the filter, 2 refused"
    assert "yesterday" not in err  # the value found is not printed


def test_the_mapping_in_the_connectors_reference_loads() -> None:
    doc = (ROOT / "docs" / "connectors.md").read_text(encoding="utf-8")
    blocks = [b for b in doc.split("```yaml\n")[1:] if b.startswith("mapping:")]
    assert blocks
    for block in blocks:
        load_mapping(block.split("```", 1)[0], "docs/connectors.md")
    shown = "m.yaml:7: touchpoint.channel: expected one of chat, email, meeting, pos, call, "
    assert shown in doc
    assert refused(MINIMAL.replace("channel: support", "channel: suport"))[0].startswith(shown)


# --- whatever the record, a mapping answers with touchpoints or named problems ---------------

TRICKY = st.sampled_from(
    [
        "0001-01-01T00:00:00+01:00",
        "9999-12-31T23:59:59-01:00",
        "2026-11-30T08:00:00",
        "31.12.9999 23:59:59",
        "01.01.0001 00:00:00",
        "1e400",
        "NaN",
        2**64,
        -1,
        1e300,
        "",
        "RAISED",
        "ZSP",
        "ticket.created",
    ]
)
JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40)
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)


def sample_records() -> list[tuple[str, dict[str, Any]]]:
    alarm_record = json.loads(jsonl("equipment-alarms.jsonl")[0])
    return [
        ("service-ticket", data("service-tickets.json")[0]),
        ("equipment-alarm", alarm_record),
        ("spare-part-order", {"orders": [data("spare-part-orders.json")["orders"][0]]}),
    ]


def _replace(document: Any, path: list[str | int], value: Any) -> Any:
    if not path:
        return value
    head, rest = path[0], path[1:]
    if isinstance(document, dict) and head in document:
        return {**document, head: _replace(document[head], rest, value)}
    if isinstance(document, list) and isinstance(head, int) and head < len(document):
        return [_replace(v, rest, value) if i == head else v for i, v in enumerate(document)]
    return document


def _paths(document: Any, prefix: list[str | int]) -> list[list[str | int]]:
    found = [prefix]
    if isinstance(document, dict):
        for key, value in document.items():
            found += _paths(value, [*prefix, key])
    elif isinstance(document, list):
        for index, value in enumerate(document):
            found += _paths(value, [*prefix, index])
    return found


@settings(max_examples=400, deadline=None)
@given(data=st.data())
def test_any_value_anywhere_maps_or_is_refused_with_problems(data: st.DataObject) -> None:
    name, record = data.draw(st.sampled_from(sample_records()))
    paths = _paths(record, [])
    for _ in range(data.draw(st.integers(1, 3))):
        path = data.draw(st.sampled_from(paths))
        record = _replace(record, path, data.draw(TRICKY | JSON_VALUES))
    try:
        mapped = shipped(name).map_body(record, RECEIVED)
    except RecordRejected as rejected:
        assert rejected.problems and all(p["field"] and p["message"] for p in rejected.problems)
        return
    for event in mapped.events:
        assert event.occurred_at.tzinfo is UTC
    try:
        envelopes(mapped.events, 4)  # as the publisher encodes them
    except UnpublishableTouchpoints as refused:
        assert refused.problems


@pytest.mark.parametrize("value", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"])
def test_a_time_that_leaves_the_calendar_in_utc_is_refused(value: str) -> None:
    with pytest.raises(RecordRejected) as caught:
        minimal().to_touchpoint({"id": 1, "account": "a", "at": value}, RECEIVED)
    [problem] = caught.value.problems
    assert problem["message"] == (
        "$.at: expected a time within years 1 to 9999 once in UTC, found one outside"
    )


def test_the_reference_shows_the_task_the_captured_ticket_makes() -> None:
    request = ROOT / "tests" / "data" / "connectors" / "webhook" / "helpdesk-ticket-created.http"
    body = json.loads(request.read_bytes().split(b"\r\n\r\n", 1)[1])
    [task] = run_pack(shipped("service-ticket").map_body(body, RECEIVED).events)
    shown = format_intervention(task)
    doc = (ROOT / "docs" / "connectors.md").read_text(encoding="utf-8")
    assert shown in doc
