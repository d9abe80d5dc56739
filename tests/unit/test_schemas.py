"""Models validate what the contracts say, and stay in sync with the .avsc files."""

from __future__ import annotations

import json
import subprocess
import sys
import typing
from datetime import UTC, datetime, timedelta, timezone
from enum import StrEnum
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
from fastavro import parse_schema, schemaless_reader, schemaless_writer
from pydantic import BaseModel, ValidationError

from schemas import models
from schemas.models import (
    Channel,
    ComplianceVerdict,
    ConsentChange,
    DeadLetter,
    Direction,
    DraftReview,
    Experiment,
    Explanation,
    GateFinding,
    GateTemplate,
    InterventionCommand,
    InterventionKind,
    Match,
    MessageDraft,
    PolicyOutcome,
    Priority,
    ReviewAction,
    Severity,
    TouchpointBatch,
    TouchpointEvent,
    VerdictKind,
)

AVRO_DIR = Path(models.__file__).parent / "avro"
AVSC_OF: dict[type[BaseModel], str] = {
    TouchpointEvent: "touchpoint_event.avsc",
    TouchpointBatch: "touchpoint_batch.avsc",
    InterventionCommand: "intervention_command.avsc",
    DeadLetter: "dead_letter.avsc",
    ConsentChange: "consent_change.avsc",
    MessageDraft: "message_draft.avsc",
    ComplianceVerdict: "compliance_verdict.avsc",
    DraftReview: "draft_review.avsc",
}
T0 = datetime(2024, 5, 1, 9, 30, 0, 123456, tzinfo=UTC)


def load_avsc(name: str) -> dict[str, Any]:
    return json.loads((AVRO_DIR / name).read_text(encoding="utf-8"))  # type: ignore[no-any-return]


def event(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "event_id": "evt-1",
        "customer_id": "cust-1",
        "occurred_at": T0,
        "received_at": T0 + timedelta(seconds=1),
        "channel": "chat",
        "kind": "message_received",
        "direction": "inbound",
        "source": "chat-http/0.1.0",
    }
    data.update(changes)
    return data


def full_event() -> TouchpointEvent:
    return TouchpointEvent(
        **event(
            rep_id="rep-7",
            contact_id="contact-9",
            text="您好\uff0c想了解价格 ✓",
            attributes={"vip": True, "count": 3, "amount": 12.5, "lang": "zh"},
            industry="pharma",
        )
    )


def full_intervention() -> InterventionCommand:
    return InterventionCommand(
        intervention_id="iv-1",
        customer_id="cust-1",
        rep_id="rep-7",
        assignee_role="pharmacist",
        rule_id="sandbox-struggle",
        rule_version=3,
        kind=InterventionKind.TASK,
        severity=Severity.YELLOW,
        priority=Priority.HIGH,
        title="Call the customer",
        body="Three sandbox errors in 24 h",
        due_at=T0 + timedelta(hours=4),
        experiment=Experiment(experiment_id="exp-1", variant="B"),
        explanation=Explanation(
            matched=[Match(condition="count(sandbox_error, 24h) >= 3", observed="4")],
            scores={"churn_risk": 0.82},
            triggering_event_ids=["evt-1", "evt-2"],
        ),
        created_at=T0,
    )


def minimal_intervention() -> InterventionCommand:
    return InterventionCommand(
        intervention_id="iv-2",
        customer_id="cust-1",
        rule_id="r",
        rule_version=0,
        kind="alert",
        title="t",
        body="",
        explanation=Explanation(matched=[], triggering_event_ids=[]),
        created_at=T0,
    )


def dead_letters() -> list[DeadLetter]:
    return [
        DeadLetter(
            source_topic="touchpoints",
            partition=3,
            offset=12345678901,
            reason="undecodable",
            detail="expected single-object marker C3 01, found 7B 22",
            raw_key=b"cust-1",
            raw_value=b'{"not": "avro"}\x00\xff',
            failed_at=T0,
        ),
        DeadLetter(
            source_topic="touchpoints",
            partition=0,
            offset=0,
            reason="invalid_event",
            detail="kind",
            raw_value=b"",
            failed_at=T0,
        ),
    ]


# --------------------------------------------------------------------------- validation


def test_naive_datetime_is_rejected_naming_field_and_expectation() -> None:
    with pytest.raises(ValidationError) as info:
        TouchpointEvent(**event(occurred_at=datetime(2024, 5, 1, 9, 30)))
    error = info.value.errors()[0]
    assert error["loc"] == ("occurred_at",)
    assert "timezone required" in error["msg"]
    assert "found naive 2024-05-01T09:30:00" in error["msg"]


@pytest.mark.parametrize(
    "value",
    ["2024-05-01T09:30:00", datetime(2024, 5, 1)],
    ids=["naive-iso-string", "naive-datetime"],
)
def test_naive_received_at_is_rejected(value: object) -> None:
    with pytest.raises(ValidationError, match="received_at"):
        TouchpointEvent(**event(received_at=value))


def test_aware_datetimes_are_normalised_to_utc() -> None:
    shanghai = timezone(timedelta(hours=8))
    local = datetime(2024, 5, 1, 17, 30, 0, 5, tzinfo=shanghai)
    parsed = TouchpointEvent(**event(occurred_at=local, received_at="2024-05-01T09:30:01Z"))
    assert parsed.occurred_at == local
    assert parsed.occurred_at.tzinfo is UTC
    assert parsed.occurred_at.hour == 9
    assert parsed.received_at.tzinfo is UTC
    assert parsed.received_at == datetime(2024, 5, 1, 9, 30, 1, tzinfo=UTC)


@pytest.mark.parametrize("kind", ["Message_Sent", "message sent", "1st_touch", "", "x" * 65])
def test_bad_kind_is_rejected_with_the_field_named(kind: str) -> None:
    with pytest.raises(ValidationError) as info:
        TouchpointEvent(**event(kind=kind))
    (error,) = info.value.errors()
    assert error["loc"] == ("kind",)
    assert "^[a-z][a-z0-9_]{0,63}$" in error["msg"]  # what was expected
    assert error["input"] == kind  # what was found


def test_open_kinds_are_accepted() -> None:
    for kind in ["prescription_filled", "video_watched", "a", "x" * 64, "x9_"]:
        assert TouchpointEvent(**event(kind=kind)).kind == kind


def test_attributes_keep_their_types() -> None:
    attrs = {"flag": True, "off": False, "one": 1, "zero": 0, "ratio": 1.0, "s": "1"}
    parsed = TouchpointEvent(**event(attributes=attrs))
    assert parsed.attributes == attrs
    assert {k: type(v) for k, v in parsed.attributes.items()} == {
        "flag": bool,
        "off": bool,
        "one": int,
        "zero": int,
        "ratio": float,
        "s": str,
    }


def test_attributes_keep_their_types_from_json() -> None:
    raw = json.dumps(event(attributes={"b": True, "i": 1, "f": 1.0, "s": "x"}), default=str)
    parsed = TouchpointEvent.model_validate_json(raw)
    assert [type(v) for v in parsed.attributes.values()] == [bool, int, float, str]


@pytest.mark.parametrize(
    "attributes",
    [
        {"x": float("nan")},
        {"x": float("inf")},
        {"x": [1]},
        {"x": None},
        {"x": 2**63},
        {"": 1},
        {"k" * 65: 1},
    ],
    ids=["nan", "inf", "list", "none", "int-overflow", "empty-key", "long-key"],
)
def test_bad_attributes_are_rejected(attributes: dict[str, Any]) -> None:
    with pytest.raises(ValidationError) as info:
        TouchpointEvent(**event(attributes=attributes))
    assert {e["loc"][0] for e in info.value.errors()} == {"attributes"}


def test_out_of_range_int_attribute_is_not_turned_into_a_float() -> None:
    with pytest.raises(
        ValidationError, match=r"expected an integer within .*found 9223372036854775808"
    ):
        TouchpointEvent(**event(attributes={"big": 2**63}))
    assert TouchpointEvent(**event(attributes={"big": 2**63 - 1})).attributes["big"] == 2**63 - 1


def test_length_limits() -> None:
    TouchpointEvent(**event(text="字" * 20_000))
    with pytest.raises(ValidationError, match="text"):
        TouchpointEvent(**event(text="字" * 20_001))
    with pytest.raises(ValidationError, match="event_id"):
        TouchpointEvent(**event(event_id=""))
    with pytest.raises(ValidationError, match="customer_id"):
        TouchpointEvent(**event(customer_id="c" * 129))
    with pytest.raises(ValidationError, match="source"):
        TouchpointEvent(**event(source="s" * 65))


def test_unknown_channel_names_allowed_values() -> None:
    with pytest.raises(ValidationError) as info:
        TouchpointEvent(**event(channel="sms"))
    assert info.value.errors()[0]["loc"] == ("channel",)
    assert "'chat'" in str(info.value)
    assert "'sms'" in str(info.value)


def test_models_are_frozen_and_reject_unknown_fields() -> None:
    parsed = TouchpointEvent(**event())
    with pytest.raises(ValidationError, match="frozen"):
        parsed.kind = "other"  # type: ignore[misc]
    with pytest.raises(ValidationError, match="extra"):
        TouchpointEvent(**event(colour="red"))


def test_batch_bounds() -> None:
    one = TouchpointEvent(**event())
    assert TouchpointBatch(events=[one]).events == [one]
    with pytest.raises(ValidationError, match="events"):
        TouchpointBatch(events=[])
    TouchpointBatch(events=[one] * 10_000)
    with pytest.raises(ValidationError, match="events"):
        TouchpointBatch(events=[one] * 10_001)


def test_intervention_defaults_and_enums() -> None:
    command = minimal_intervention()
    assert command.priority is Priority.NORMAL
    assert command.severity is None
    assert command.kind is InterventionKind.ALERT
    with pytest.raises(ValidationError, match="rule_version"):
        InterventionCommand.model_validate({**command.model_dump(), "rule_version": -1})


def test_dead_letter_reason_is_a_code() -> None:
    data = dead_letters()[0].model_dump()
    with pytest.raises(ValidationError, match="reason"):
        DeadLetter.model_validate({**data, "reason": "Not A Code"})


# --------------------------------------------------------------------------- model <-> avsc


def _nullable(annotation: Any) -> bool:
    return type(None) in typing.get_args(annotation)


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    found: list[type[BaseModel]] = []
    for arg in typing.get_args(annotation):
        found.extend(_models_in(arg))
    return found


def _avro_nullable(field: dict[str, Any]) -> bool:
    avro_type = field["type"]
    return isinstance(avro_type, list) and "null" in avro_type


def _avro_records_in(avro_type: Any) -> list[dict[str, Any]]:
    if isinstance(avro_type, list):
        return [r for branch in avro_type for r in _avro_records_in(branch)]
    if not isinstance(avro_type, dict):
        return []
    if avro_type["type"] == "record":
        return [avro_type]
    if avro_type["type"] == "array":
        return _avro_records_in(avro_type["items"])
    if avro_type["type"] == "map":
        return _avro_records_in(avro_type["values"])
    return []


def _is_datetime(annotation: Any) -> bool:
    if annotation is datetime:
        return True
    return any(_is_datetime(a) for a in typing.get_args(annotation))


def _non_null(avro_type: Any) -> Any:
    if isinstance(avro_type, list):
        (branch,) = [b for b in avro_type if b != "null"]
        return branch
    return avro_type


def _check_record(model: type[BaseModel], record: dict[str, Any]) -> None:
    assert record["name"] == model.__name__
    avro_fields = {f["name"]: f for f in record["fields"]}
    assert list(avro_fields) == list(model.model_fields), model.__name__
    for name, info in model.model_fields.items():
        avro_field = avro_fields[name]
        where = f"{model.__name__}.{name}"
        assert _nullable(info.annotation) == _avro_nullable(avro_field), where
        if _avro_nullable(avro_field):
            assert avro_field["type"][0] == "null", f"{where}: null must come first"
        assert info.is_required() == ("default" not in avro_field), where
        if not info.is_required():
            default = info.get_default(call_default_factory=True)
            assert avro_field["default"] == default, where
        if _is_datetime(info.annotation):
            assert _non_null(avro_field["type"]) == {
                "type": "long",
                "logicalType": "timestamp-micros",
            }, where
        nested_models = _models_in(info.annotation)
        nested_records = _avro_records_in(avro_field["type"])
        assert len(nested_models) == len(nested_records), where
        for nested_model, nested_record in zip(nested_models, nested_records, strict=True):
            _check_record(nested_model, nested_record)


@pytest.mark.parametrize("model", list(AVSC_OF), ids=lambda m: m.__name__)
def test_model_and_avsc_have_the_same_fields_and_optionality(model: type[BaseModel]) -> None:
    schema = load_avsc(AVSC_OF[model])
    assert schema["namespace"] == "io.warroom"
    assert isinstance(schema.get("version"), int)
    _check_record(model, schema)


def _avro_enums(avro_type: Any) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    if isinstance(avro_type, list):
        for branch in avro_type:
            found |= _avro_enums(branch)
    elif isinstance(avro_type, dict):
        if avro_type.get("type") == "enum":
            found[avro_type["name"]] = avro_type["symbols"]
        for key in ("fields",):
            for field in avro_type.get(key, []):
                found |= _avro_enums(field["type"])
        for key in ("items", "values"):
            if key in avro_type:
                found |= _avro_enums(avro_type[key])
    return found


def test_avro_enum_symbols_equal_python_enum_values() -> None:
    seen: dict[str, list[str]] = {}
    for name in AVSC_OF.values():
        seen |= _avro_enums(load_avsc(name))
    expected: dict[str, type[StrEnum]] = {
        "Channel": Channel,
        "Direction": Direction,
        "InterventionKind": InterventionKind,
        "Severity": Severity,
        "Priority": Priority,
        "VerdictKind": VerdictKind,
        "ReviewAction": ReviewAction,
    }
    assert set(seen) == set(expected)
    for enum_name, symbols in seen.items():
        assert symbols == [member.value for member in expected[enum_name]], enum_name


def test_attributes_are_a_map_of_the_four_scalar_types() -> None:
    fields = {f["name"]: f for f in load_avsc("touchpoint_event.avsc")["fields"]}
    assert fields["attributes"]["type"] == {
        "type": "map",
        "values": ["boolean", "long", "double", "string"],
    }


def test_batch_inlines_exactly_the_touchpoint_event_schema() -> None:
    batch = load_avsc("touchpoint_batch.avsc")
    (events,) = batch["fields"]
    inline = events["type"]["items"]
    standalone = load_avsc("touchpoint_event.avsc")
    standalone.pop("version")
    assert inline == standalone


def _avsc_round_trip(model: BaseModel) -> Any:
    parsed = parse_schema(load_avsc(AVSC_OF[type(model)]))
    buffer = BytesIO()
    schemaless_writer(buffer, parsed, model.model_dump())
    buffer.seek(0)
    return type(model).model_validate(schemaless_reader(buffer, parsed, None))


def gate_records() -> list[BaseModel]:
    finding = GateFinding(
        category="return_promise",
        term="年利率",
        start=3,
        end=6,
        tier="block",
        reason="a promised rate next to a number",
        excerpt="年利率8%",
    )
    outcome = PolicyOutcome(
        policy_id="default-compliance",
        policy_version=3,
        mode="enforce",
        verdict="block",
        reason="return promise",
        findings=[finding],
        missing_topics=["budget"],
        templates=[GateTemplate(template_id="rates", text="Past performance ...")],
    )
    return [
        ConsentChange(
            change_id="c-1",
            customer_id="cust-1",
            purpose="marketing",
            granted=False,
            occurred_at=T0,
            source="crm",
            segment="retail",
        ),
        ConsentChange(
            change_id="c-2",
            customer_id="cust-1",
            purpose="profiling",
            granted=True,
            occurred_at=T0,
            source="crm",
        ),
        MessageDraft(
            draft_id="d-1", customer_id="cust-1", rep_id="rep-1", text="hi", created_at=T0
        ),
        MessageDraft(
            draft_id="d-2",
            customer_id="cust-1",
            rep_id="rep-1",
            text="本产品年利率8%",
            kind="visit_report",
            channel="email",
            created_at=T0,
            sender_contacts=["rep@warroom-demo.com"],
            recipient_contacts=["13800138000"],
        ),
        ComplianceVerdict(
            draft_id="d-2",
            customer_id="cust-1",
            rep_id="rep-1",
            kind="message",
            verdict="block",
            severity="red",
            policies=[outcome],
            masked_text="本产品年利率8%",
            decided_at=T0,
            decided_by="gate:g-1",
        ),
        ComplianceVerdict(
            draft_id="d-1",
            customer_id="cust-1",
            rep_id="rep-1",
            kind="message",
            verdict="allow",
            masked_text="hi",
            decided_at=T0,
            decided_by="worker",
        ),
        DraftReview(
            review_id="r-1",
            draft_id="d-2",
            customer_id="cust-1",
            reviewer_id="mgr-1",
            action="override",
            note="checked with legal",
            reviewed_at=T0,
        ),
    ]


EXAMPLES: list[BaseModel] = [
    TouchpointEvent(**event()),
    full_event(),
    TouchpointBatch(events=[full_event(), TouchpointEvent(**event())]),
    full_intervention(),
    minimal_intervention(),
    *dead_letters(),
    *gate_records(),
]


@pytest.mark.parametrize("instance", EXAMPLES, ids=lambda m: type(m).__name__)
def test_instance_written_with_its_avsc_reads_back_equal(instance: BaseModel) -> None:
    assert _avsc_round_trip(instance) == instance


def test_every_avsc_file_is_covered() -> None:
    released = {p.name for p in AVRO_DIR.glob("*.avsc") if ".v" not in p.stem}
    assert released == set(AVSC_OF.values())


def test_importing_models_pulls_in_no_io_library() -> None:
    # engine/ imports schemas.models; it must not drag fastavro or faust in with it.
    code = "import sys, schemas.models; print(sorted({'fastavro', 'faust'} & set(sys.modules)))"
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=Path(models.__file__).parent.parent,
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.strip() == "[]"
