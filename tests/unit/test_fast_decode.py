"""The touchpoint decoders' fast path gives exactly what validation gives, or defers to it.

``schemas.models.TouchpointChecks`` builds a TouchpointEvent from a decoded Avro record
without pydantic when the record satisfies every rule of the model. For every record it
must return exactly what ``TouchpointEvent.model_validate`` returns (same field values of
the same types, same fields set), or None, so that the validator accepts the record or
gives the reason it goes to the dead-letter topic. The weakened copies below each drop
one rule: the same properties must find a record they get wrong.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, find, given, settings
from hypothesis import strategies as st
from hypothesis.errors import NoSuchExample
from pydantic import BaseModel, ValidationError

import schemas.codec as codec_module
from schemas.codec import (
    AvroRecord,
    decode_touchpoint,
    decode_touchpoints,
    decode_touchpoints_lenient,
    touchpoint_batch_codec,
    touchpoint_event_codec,
)
from schemas.errors import InvalidRecordError, SchemaError
from schemas.models import (
    Channel,
    Direction,
    TouchpointBatch,
    TouchpointChecks,
    TouchpointEvent,
    touchpoint_from_avro,
)

Build = Callable[[dict[str, Any]], TouchpointEvent | None]

# --------------------------------------------------------------------------- records


def _sized(lengths: list[int], min_size: int = 0) -> st.SearchStrategy[str]:
    """Strings of exactly the edge lengths, or short random ones."""
    return st.one_of(
        st.builds(lambda n, c: c * n, st.sampled_from(lengths), st.sampled_from("xé中")),
        st.text(min_size=min_size, max_size=6),
    )


VALID_KINDS = st.one_of(
    st.sampled_from(["message_sent", "purchase", "a", "a" * 64, "deal_won_2"]),
    st.from_regex(r"[a-z][a-z0-9_]{0,63}", fullmatch=True),
)
INVALID_KINDS = st.one_of(
    st.sampled_from(
        [
            "a" * 65,
            "",
            "A",
            "1a",
            "_a",
            "a-b",
            "a b",
            "a\n",
            "\na",
            "é",
            "a٣",  # an Arabic-Indic digit: not [0-9]
        ]
    ),
    st.from_regex(r"[a-z][a-z0-9_]{64,70}", fullmatch=True),
)
LONGS = st.one_of(
    st.sampled_from([0, 1, -1, 2**63 - 1, -(2**63)]),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
)
VALID_ATTRIBUTE_VALUES = st.one_of(
    st.booleans(), LONGS, st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=8)
)
INVALID_FLOATS = st.sampled_from([math.nan, math.inf, -math.inf])
UTC_TIMES = st.datetimes(
    min_value=datetime(1900, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)
)


def _optional(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(st.none(), strategy)


FIELDS: dict[str, tuple[st.SearchStrategy[Any], st.SearchStrategy[Any] | None]] = {
    "event_id": (_sized([1, 127, 128], min_size=1), _sized([0, 129])),
    "customer_id": (_sized([1, 127, 128], min_size=1), _sized([0, 129])),
    "occurred_at": (UTC_TIMES, None),
    "received_at": (UTC_TIMES, None),
    "channel": (st.sampled_from([c.value for c in Channel]), None),
    "kind": (VALID_KINDS, INVALID_KINDS),
    "direction": (st.sampled_from([d.value for d in Direction]), None),
    "rep_id": (_optional(_sized([1, 128], min_size=1)), _sized([0, 129])),
    "contact_id": (_optional(_sized([1, 128], min_size=1)), _sized([0, 129])),
    "text": (_optional(st.text(max_size=8)), st.nothing()),
    "attributes": (
        st.dictionaries(_sized([1, 64], min_size=1), VALID_ATTRIBUTE_VALUES, max_size=3),
        st.one_of(
            st.dictionaries(_sized([0, 65]), VALID_ATTRIBUTE_VALUES, min_size=1, max_size=2),
            st.dictionaries(_sized([1, 64], min_size=1), INVALID_FLOATS, min_size=1, max_size=2),
        ),
    ),
    "source": (_sized([1, 63, 64], min_size=1), _sized([0, 65])),
    "industry": (_optional(_sized([1, 64], min_size=1)), _sized([0, 65])),
}
"""Per field of the touchpoint schema: values the model accepts, and values of the
schema's type it refuses (None: the schema's type holds no such value)."""
BREAKABLE = sorted(
    name for name, (_, invalid) in FIELDS.items() if invalid not in (None, st.nothing())
)


@st.composite
def avro_records(draw: st.DrawFn) -> dict[str, Any]:
    """Records of the touchpoint schema's types: valid ones, and valid ones but for one
    or two fields (so that each rule on its own decides)."""
    record = {name: draw(valid) for name, (valid, _) in FIELDS.items()}
    for name in draw(st.lists(st.sampled_from(BREAKABLE), max_size=2, unique=True)):
        invalid = FIELDS[name][1]
        assert invalid is not None
        record[name] = draw(invalid)
    return record


AVRO_RECORDS = avro_records()


class _Str(str):
    pass


OFF_SCHEMA_VALUES_LIST: list[Any] = [
    None,
    0,
    1.5,
    True,
    b"abc",
    ["a"],
    {"a": 1},
    _Str("abc"),
    datetime(2024, 5, 1, 9, 30),  # naive
    datetime(2024, 5, 1, 9, 30, tzinfo=timezone(timedelta(hours=8))),
    datetime(2024, 5, 1, 9, 30, tzinfo=timezone(timedelta(0))),  # UTC, not the UTC object
    Channel.EMAIL,
    Direction.OUTBOUND,
    "chat",
    "inbound",
    "x",
]
OFF_SCHEMA_VALUES = st.sampled_from(OFF_SCHEMA_VALUES_LIST)
OFF_SCHEMA_ATTRIBUTE_VALUES = st.sampled_from(
    [None, 2**63, -(2**63) - 1, 2**200, b"x", ["x"], _Str("x"), 1 + 0j]
)


OFF_SCHEMA_TIMES_LIST = [
    datetime(2024, 5, 1, 9, 30),  # naive
    datetime(2024, 5, 1, 9, 30, tzinfo=timezone(timedelta(hours=8))),
    datetime(2024, 5, 1, 9, 30, tzinfo=timezone(timedelta(0))),  # UTC, not the UTC object
]
OFF_SCHEMA_TIMES = st.sampled_from(OFF_SCHEMA_TIMES_LIST)


@st.composite
def any_records(draw: st.DrawFn) -> dict[str, Any]:
    """Records as fastavro reads them, and some it never gives: a field of another type,
    a timestamp not in UTC, a field missing, one too many, an attribute of a type Avro
    does not have."""
    record = draw(AVRO_RECORDS)
    change = draw(
        st.sampled_from(["none", "none", "value", "time", "drop", "extra", "attribute", "key"])
    )
    if change == "value":
        record[draw(st.sampled_from(sorted(record)))] = draw(OFF_SCHEMA_VALUES)
    elif change == "time":
        record[draw(st.sampled_from(["occurred_at", "received_at"]))] = draw(OFF_SCHEMA_TIMES)
    elif change == "drop":
        del record[draw(st.sampled_from(sorted(record)))]
    elif change == "extra":
        record[draw(st.sampled_from(["extra", "score"]))] = draw(OFF_SCHEMA_VALUES)
    elif change == "attribute":
        record["attributes"] = {**record["attributes"], "n": draw(OFF_SCHEMA_ATTRIBUTE_VALUES)}
    elif change == "key":
        record["attributes"] = {**record["attributes"], draw(st.sampled_from([1, b"k"])): "v"}
    return record


BASE: dict[str, Any] = {
    "event_id": "e-1",
    "customer_id": "c-1",
    "occurred_at": datetime(2024, 5, 1, 9, 30, tzinfo=UTC),
    "received_at": datetime(2024, 5, 1, 9, 31, tzinfo=UTC),
    "channel": "chat",
    "kind": "message_sent",
    "direction": "inbound",
    "rep_id": "r-1",
    "contact_id": None,
    "text": "hello",
    "attributes": {"amount": 12.5, "n": 3, "vip": True, "sku": "x"},
    "source": "chat-http/0.1.0",
    "industry": None,
}
AVRO_EDGES: list[tuple[str, Any]] = [
    *((f, "x" * n) for f in ("event_id", "customer_id") for n in (0, 1, 128, 129)),
    *((f, "中" * n) for f in ("rep_id", "contact_id") for n in (0, 1, 128, 129)),
    *((f, "x" * n) for f in ("source", "industry") for n in (0, 1, 64, 65)),
    *(("text", "x" * n) for n in (0, 20_000, 20_001)),
    *(
        ("kind", k)
        for k in ("a", "a" * 64, "a" * 65, "", "A", "1a", "_a", "a-b", "a\n", "\na", "é", "a٣")
    ),
    *(("attributes", {"x" * n: 1}) for n in (0, 1, 64, 65)),
    *(("attributes", {"v": v}) for v in (math.nan, math.inf, -math.inf, -0.0, 2**63 - 1)),
    *(("attributes", {"v": v}) for v in (-(2**63), True, "", 1e308)),
]
"""One field of BASE set to a value of the schema's type: each limit's edges, inside
and out."""
AVRO_EDGE_RECORDS: list[dict[str, Any]] = [BASE, *({**BASE, f: v} for f, v in AVRO_EDGES)]
OFF_SCHEMA_EDGES: list[tuple[str, Any]] = [
    *(("attributes", {"v": v}) for v in (2**63, -(2**63) - 1, None, b"x", _Str("x"), 1j)),
    *(("attributes", {k: 1}) for k in (1, b"k", _Str("k"))),
    *((f, t) for f in ("occurred_at", "received_at") for t in OFF_SCHEMA_TIMES_LIST),
    *((f, v) for f in sorted(BASE) for v in OFF_SCHEMA_VALUES_LIST),
]
"""One field of BASE set to a value fastavro never gives for it."""
EDGE_RECORDS: list[dict[str, Any]] = [
    *AVRO_EDGE_RECORDS,
    *({**BASE, f: v} for f, v in OFF_SCHEMA_EDGES),
    *({k: v for k, v in BASE.items() if k != field} for field in BASE),
    {**BASE, "extra": 1},
    dict(reversed(BASE.items())),  # fields in another order than the model's
]


# --------------------------------------------------------------------------- exactness


def _canonical(value: Any) -> Any:
    """``value`` with every type spelt out, so that True != 1, "chat" != Channel.CHAT,
    NaN == NaN and a datetime's tzinfo object counts."""
    if isinstance(value, BaseModel):
        return (
            type(value),
            [(name, _canonical(v)) for name, v in value.__dict__.items()],
            sorted(value.__pydantic_fields_set__),
            value.__pydantic_extra__,
            value.__pydantic_private__,
        )
    if isinstance(value, dict):
        return (dict, [(type(k), k, _canonical(v)) for k, v in value.items()])
    if isinstance(value, list):
        return (list, [_canonical(v) for v in value])
    if isinstance(value, datetime):
        return (type(value), value.isoformat(), id(value.tzinfo) if value.tzinfo else None)
    if isinstance(value, float):
        return (float, repr(value))
    return (type(value), value)


def _validated(record: dict[str, Any]) -> TouchpointEvent | None:
    try:
        return TouchpointEvent.model_validate(record)
    except ValidationError:
        return None


def _disagrees(build: Build, record: dict[str, Any]) -> bool:
    """True if ``build`` returns an event that validation would not give for ``record``."""
    expected = _validated(record)
    try:
        fast = build(dict(record))
    except Exception:  # the fast path must never raise
        return True
    if fast is None:
        return False
    return expected is None or _canonical(fast) != _canonical(expected)


PROPERTY = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(any_records())
def test_fast_path_gives_what_validation_gives_or_defers(record: dict[str, Any]) -> None:
    expected = _validated(record)
    fast = touchpoint_from_avro(dict(record))
    if fast is not None:
        assert expected is not None, f"fast path accepted a record validation refuses: {record}"
        assert _canonical(fast) == _canonical(expected)


@PROPERTY
@given(AVRO_RECORDS)
def test_fast_path_takes_every_valid_avro_record(record: dict[str, Any]) -> None:
    """Records of the schema's types that validation accepts never need it."""
    expected = _validated(record)
    fast = touchpoint_from_avro(dict(record))
    if expected is not None:
        assert fast is not None, f"fast path deferred a valid record: {record}"
        assert _canonical(fast) == _canonical(expected)
    else:
        assert fast is None


def test_fast_path_on_every_edge() -> None:
    """Each limit's edges, values of other types, a field missing, one too many."""
    wrong = [r for r in EDGE_RECORDS if _disagrees(touchpoint_from_avro, r)]
    assert not wrong
    deferred = [
        r
        for r in AVRO_EDGE_RECORDS
        if _validated(r) is not None and touchpoint_from_avro(dict(r)) is None
    ]
    assert not deferred, "valid records of the schema's types must not need the validator"


def test_the_edges_reach_both_outcomes() -> None:
    outcomes = [_validated(r) is None for r in AVRO_EDGE_RECORDS]
    assert outcomes.count(True) > 20
    assert outcomes.count(False) > 20


def test_the_records_reach_both_outcomes() -> None:
    """The strategies above produce valid and invalid records alike (else the property
    tests would prove little)."""
    find(AVRO_RECORDS, lambda r: _validated(r) is not None, settings=SEARCH)
    find(AVRO_RECORDS, lambda r: _validated(r) is None, settings=SEARCH)


# --------------------------------------------------------------------------- weakened

DEFAULT = TouchpointChecks()
WEAKENED_AVRO_REACHABLE: dict[str, TouchpointChecks] = {
    "id min length": replace(DEFAULT, id_length=(0, 128)),
    "id max length": replace(DEFAULT, id_length=(1, 10**9)),
    "name min length": replace(DEFAULT, name_length=(0, 64)),
    "name max length": replace(DEFAULT, name_length=(1, 10**9)),
    "text max length": replace(DEFAULT, text_max_length=10**9),
    "kind pattern length": replace(DEFAULT, kind_pattern=r"^[a-z][a-z0-9_]*$"),
    "kind pattern characters": replace(DEFAULT, kind_pattern=r"^.{1,64}$"),
    "kind pattern end": replace(DEFAULT, kind_pattern=r"^[a-z][a-z0-9_]{0,63}\n?$"),
    "attribute key min length": replace(DEFAULT, attribute_key_length=(0, 64)),
    "attribute key max length": replace(DEFAULT, attribute_key_length=(1, 10**9)),
    "finite floats": replace(DEFAULT, finite_floats=False),
    "enum members": replace(DEFAULT, enum_members=False),
}
"""Rules a record read from Avro can break."""
WEAKENED_OFF_SCHEMA: dict[str, TouchpointChecks] = {
    "attribute long range": replace(DEFAULT, attribute_long_range=(-(2**300), 2**300)),
    "utc timestamps": replace(DEFAULT, utc_timestamps=False),
    "exact types": replace(DEFAULT, exact_types=False),
    "exact fields": replace(DEFAULT, exact_fields=False),
}
"""Rules only a record of other types than the schema's can break."""
SEARCH = settings(
    max_examples=500,
    database=None,
    derandomize=True,
    deadline=None,
    phases=[Phase.generate],  # the first record found is enough: no shrinking
)


@pytest.mark.parametrize(
    "checks",
    [*WEAKENED_AVRO_REACHABLE.values(), *WEAKENED_OFF_SCHEMA.values()],
    ids=[*WEAKENED_AVRO_REACHABLE, *WEAKENED_OFF_SCHEMA],
)
def test_a_fast_path_missing_a_rule_is_caught(checks: TouchpointChecks) -> None:
    assert _caught(checks.compile())


def test_the_full_rules_are_not_caught() -> None:
    """The same search finds nothing against the real fast path."""
    assert not _caught(DEFAULT.compile())


def _caught(build: Build) -> bool:
    """True if the edges or a search over generated records find a record ``build``
    gets wrong."""
    if any(_disagrees(build, r) for r in EDGE_RECORDS):
        return True
    try:
        find(any_records(), lambda r: _disagrees(build, r), settings=SEARCH)
    except NoSuchExample:
        return False
    return True


# --------------------------------------------------------------------------- decoders


def _reference_one(data: bytes) -> TouchpointEvent:
    """A single-record touchpoint decoded by validation only (decode_touchpoint)."""
    return decode_touchpoint(data)


def _reference(data: bytes) -> list[TouchpointEvent]:
    batch = touchpoint_batch_codec()
    if batch.knows(data):
        record = batch.decode(data)
        try:
            return TouchpointBatch.model_validate(record).events
        except ValidationError as exc:
            msg = f"decoded {batch.reader_schema.label} is not a valid TouchpointBatch: {exc}"
            raise InvalidRecordError(msg) from exc
    return [_reference_one(data)]


def _reference_lenient(data: bytes) -> tuple[list[TouchpointEvent], list[Any]]:
    batch = touchpoint_batch_codec()
    if not batch.knows(data):
        return [_reference_one(data)], []
    record = batch.decode(data)
    try:
        return TouchpointBatch.model_validate(record).events, []
    except ValidationError:
        pass
    events: list[TouchpointEvent] = []
    rejected: list[Any] = []
    for index, item in enumerate(record["events"]):
        try:
            events.append(TouchpointEvent.model_validate(item))
        except ValidationError as exc:
            detail = f"event {index} of a TouchpointBatch is not a valid TouchpointEvent: {exc}"
            rejected.append((index, touchpoint_event_codec().encode(item), detail))
    return events, rejected


def _outcome(decode: Callable[[bytes], Any], data: bytes) -> Any:
    """What ``decode`` returns for ``data``, or the error it raises (type and message)."""
    try:
        result = decode(data)
    except SchemaError as exc:
        return ("raised", type(exc), exc.reason, str(exc))
    if isinstance(result, tuple):  # lenient: (events, rejected)
        events, rejected = result
        return (
            _canonical(events),
            [r if isinstance(r, tuple) else (r.index, r.raw, str(r.error)) for r in rejected],
        )
    return _canonical(result)


def _encodings(records: list[AvroRecord]) -> list[bytes]:
    """The records as one TouchpointBatch and the first one alone."""
    return [
        touchpoint_batch_codec().encode({"events": records}),
        touchpoint_event_codec().encode(records[0]),
    ]


AVRO_BATCHES = st.lists(AVRO_RECORDS, min_size=1, max_size=4)


def _decoders_disagree(records: list[AvroRecord]) -> bool:
    for data in _encodings(records):
        if _outcome(decode_touchpoints, data) != _outcome(_reference, data):
            return True
        if _outcome(decode_touchpoints_lenient, data) != _outcome(_reference_lenient, data):
            return True
    return False


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(AVRO_BATCHES)
def test_decoders_return_what_validation_returns(records: list[AvroRecord]) -> None:
    """Same events, same rejected events with the same reasons, same errors raised."""
    assert not _decoders_disagree(records)


def test_decoders_on_every_edge() -> None:
    wrong = [r for r in AVRO_EDGE_RECORDS if _decoders_disagree([BASE, r])]
    assert not wrong


def test_an_empty_batch_decodes_as_before() -> None:
    data = touchpoint_batch_codec().encode({"events": []})
    assert _outcome(decode_touchpoints, data) == _outcome(_reference, data)
    assert _outcome(decode_touchpoints, data)[0] == "raised"
    assert _outcome(decode_touchpoints_lenient, data) == _outcome(_reference_lenient, data)


@pytest.mark.parametrize(
    "checks", list(WEAKENED_AVRO_REACHABLE.values()), ids=list(WEAKENED_AVRO_REACHABLE)
)
def test_decoders_with_a_fast_path_missing_a_rule_are_caught(
    checks: TouchpointChecks, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(codec_module, "touchpoint_from_avro", checks.compile())
    if any(_decoders_disagree([BASE, r]) for r in AVRO_EDGE_RECORDS):
        return
    find(AVRO_BATCHES, _decoders_disagree, settings=SEARCH)  # raises NoSuchExample if not caught
