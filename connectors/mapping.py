"""Mapping connector: any JSON source -> touchpoints, configured in YAML, no code.

A mapping names where each touchpoint field comes from in a JSON record: a path
(``$.ticket.id``, ``$.items[0].sku``, ``$['odd key']``), a constant, a type
conversion, a time format, a value map; plus a filter that picks the records to use
and a template for the event id. It is checked completely when it is loaded, and
every problem is reported with the file, line and field (the same located YAML as
rule bundles). Mapping a record never raises anything but :class:`RecordRejected`,
whose problems name the record, the field and what was expected and found.

This module is pure: no I/O. ``connectors/webhook.py`` serves mappings over signed
HTTP and ``connectors/mapping_service.py`` follows a Kafka topic with one.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from enum import StrEnum
from typing import Any, Final, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import ValidationError

from engine.bundle import _DuplicateKey, _Forbidden, _Located, _LocatedList, _LocatingLoader
from schemas.models import Channel, Direction, TouchpointEvent

from .problems import describe as describe_problem

__all__ = [
    "MISSING",
    "InvalidMapping",
    "MappedBody",
    "Mapping",
    "MappingProblem",
    "RecordRejected",
    "load_mapping",
]

MAPPING_BYTES_MAX = 64 * 1024
"""Size of a mapping's YAML text, in bytes."""
PATH_STEPS_MAX = 32
"""Steps in one path (``$.a.b[0]`` has three)."""
ATTRIBUTES_MAX = 64
"""Attributes one mapping may fill."""
MAP_ENTRIES_MAX = 1_000
"""Entries of one value ``map`` and values of one filter ``in`` list."""
FILTER_TESTS_MAX = 32
TEMPLATE_CHARS_MAX = 200
RECORDS_PER_BODY_MAX = 1_000
"""Records one request body or one Kafka message may hold."""
FOUND_CHARS_SHOWN = 80

NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,47}$")
CODE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")


# --- problems ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MappingProblem:
    source: str
    line: int
    field: str
    message: str
    suggestion: str | None = None

    def __str__(self) -> str:
        hint = f" (did you mean {self.suggestion!r}?)" if self.suggestion else ""
        return f"{self.source}:{self.line}: {self.field}: {self.message}{hint}"


class InvalidMapping(ValueError):
    """A mapping that cannot be used; ``problems`` lists everything wrong with it."""

    def __init__(self, problems: list[MappingProblem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class RecordRejected(ValueError):
    """Records that do not map to touchpoints. Each problem is a dict with ``index`` (the
    record's place in the body), ``field`` (the touchpoint field), ``message`` (what
    was expected and found, without the value itself) and ``found`` (the value, cut
    short: for the sender's eyes, never for logs or dead letters)."""

    def __init__(self, problems: list[dict[str, Any]]) -> None:
        self.problems = problems
        super().__init__("; ".join(describe(p) for p in problems))


def describe(problem: dict[str, Any]) -> str:
    """A problem as one line, without the value found (safe to log)."""
    return describe_problem(problem, "record {}")


class _Bad(Exception):
    """One value does not convert; the message says what was expected and found."""

    def __init__(self, message: str, found: Any = None) -> None:
        self.found = found
        super().__init__(message)


def _kind_of(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return f"text of {len(value)} character(s)"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    return type(value).__name__


def _shown(value: Any) -> Any:
    if isinstance(value, str):
        return value if len(value) <= FOUND_CHARS_SHOWN else value[:FOUND_CHARS_SHOWN] + "…"
    if value is None or isinstance(value, bool | int | float):
        return value
    return _kind_of(value)


# --- paths -------------------------------------------------------------------------------

MISSING: Final = object()
_STEP = re.compile(
    r"""\.(?P<name>[^.\[\]'"\s]+)"""
    r"""|\[(?P<index>-?\d+)\]"""
    r"""|\['(?P<single>[^']*)'\]"""
    r"""|\["(?P<double>[^"]*)"\]"""
)


@dataclass(frozen=True, slots=True)
class JsonPath:
    """``$`` then ``.name``, ``[index]`` or ``['any key']`` steps."""

    text: str
    steps: tuple[str | int, ...]

    def get(self, record: Any) -> Any:
        """The value at this path, or ``MISSING``."""
        value = record
        for step in self.steps:
            if isinstance(step, int):
                if not isinstance(value, list) or not -len(value) <= step < len(value):
                    return MISSING
            elif not isinstance(value, dict) or step not in value:
                return MISSING
            value = value[step]
        return value


def parse_path(text: str) -> JsonPath:
    """A path, or ValueError saying what was expected and found."""
    if not text.startswith("$"):
        raise ValueError(f"expected a path starting with '$', found {text!r}")
    steps: list[str | int] = []
    position = 1
    while position < len(text):
        match = _STEP.match(text, position)
        if match is None:
            raise ValueError(
                f"expected .name, [index] or ['key'] at character {position + 1} of {text!r}, "
                f"found {text[position : position + 10]!r}"
            )
        if match.group("index") is not None:
            steps.append(int(match.group("index")))
        else:
            name = next(
                g for g in (match["name"], match["single"], match["double"]) if g is not None
            )
            steps.append(name)
        position = match.end()
    if len(steps) > PATH_STEPS_MAX:
        raise ValueError(f"expected at most {PATH_STEPS_MAX} steps, found {len(steps)}")
    return JsonPath(text, tuple(steps))


def _is_path(value: Any) -> bool:
    return isinstance(value, str) and (value == "$" or value.startswith(("$.", "$[")))


# --- conversions -------------------------------------------------------------------------


class Type(StrEnum):
    STR = "str"
    INT = "int"
    FLOAT = "float"
    BOOL = "bool"


_TRUE = frozenset({"true", "yes", "1", "on", "y", "x"})
_FALSE = frozenset({"false", "no", "0", "off", "n"})


def convert(value: Any, to: Type) -> Any:
    """``value`` as ``to``, or _Bad."""
    if to is Type.STR:
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, str | int | float):
            return str(value)
    elif to is Type.BOOL:
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
    elif to is Type.INT:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str) and re.fullmatch(r"\s*[-+]?[0-9]{1,19}\s*", value):
            return int(value)
    elif to is Type.FLOAT:
        if isinstance(value, int | float) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str):
            try:
                number = float(value)
            except ValueError:
                raise _Bad(f"expected a number, found {_kind_of(value)}", value) from None
        else:
            raise _Bad(f"expected a number, found {_kind_of(value)}", value)
        if not math.isfinite(number):
            raise _Bad("expected a finite number, found infinity or NaN", value)
        return number
    expected = {
        Type.STR: "text, a number or a boolean",
        Type.BOOL: "a boolean (true/false, yes/no, 1/0, X)",
        Type.INT: "a whole number",
    }[to]
    raise _Bad(f"expected {expected}, found {_kind_of(value)}", value)


TimeFormat = Literal["iso8601", "epoch_seconds", "epoch_millis"]
_EPOCH_MAX_SECONDS = 253_402_300_799  # 9999-12-31T23:59:59Z


@dataclass(frozen=True, slots=True)
class TimeSpec:
    """How a source writes a time: ``iso8601``, ``epoch_seconds``, ``epoch_millis`` or a
    strftime format; ``timezone`` is applied to times written without an offset."""

    format: str = "iso8601"
    timezone: tzinfo | None = None

    def parse(self, value: Any) -> datetime:
        if self.format in ("epoch_seconds", "epoch_millis"):
            return self._epoch(value)
        if not isinstance(value, str):
            raise _Bad(f"expected a time as text ({self.format}), found {_kind_of(value)}", value)
        try:
            if self.format == "iso8601":
                text = value.strip()
                parsed = datetime.fromisoformat(text[:-1] + "+00:00" if text[-1:] in "zZ" else text)
            else:
                parsed = datetime.strptime(value.strip(), self.format)  # noqa: DTZ007
        except (ValueError, IndexError):
            message = f"expected a time in the format {self.format}, found other text"
            raise _Bad(message, value) from None
        if parsed.tzinfo is None:
            if self.timezone is None:
                raise _Bad(
                    "expected a time with a UTC offset (or a timezone in the mapping), "
                    "found a time without one",
                    value,
                )
            parsed = parsed.replace(tzinfo=self.timezone)
        try:
            return parsed.astimezone(UTC)
        except OverflowError:
            message = "expected a time within years 1 to 9999 once in UTC, found one outside"
            raise _Bad(message, value) from None

    def _epoch(self, value: Any) -> datetime:
        number: Any = value
        if isinstance(value, str) and re.fullmatch(r"\s*[0-9]{1,20}(\.[0-9]+)?\s*", value):
            number = float(value) if "." in value else int(value)
        if isinstance(number, bool) or not isinstance(number, int | float):
            raise _Bad(f"expected {self.format} as a number, found {_kind_of(value)}", value)
        seconds = number / 1000 if self.format == "epoch_millis" else number
        if not 0 <= seconds <= _EPOCH_MAX_SECONDS:
            raise _Bad(
                f"expected {self.format} between 1970 and 9999, found a number out of range", value
            )
        return datetime.fromtimestamp(seconds, UTC)


# --- values --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ValueSpec:
    """Where one touchpoint field or attribute comes from."""

    path: JsonPath | None = None
    constant: Any = None
    type: Type | None = None
    values: dict[Any, Any] | None = None
    """The ``map``: source value -> touchpoint value."""
    otherwise: Any = MISSING
    """The value for source values the map does not list (else the record is refused)."""
    default: Any = MISSING
    """The value when the path finds nothing (or null)."""
    time: TimeSpec | None = None

    def resolve(self, record: Any) -> Any:
        """The value for ``record``, ``MISSING`` when there is none, or _Bad."""
        if self.path is None:
            return self.constant
        value = self.path.get(record)
        if value is MISSING or value is None:
            return self.default
        if self.time is not None:
            return self.time.parse(value)
        if self.type is not None:
            value = convert(value, self.type)
        if self.values is not None:
            key = value if _hashable(value) else MISSING
            if key in self.values:
                return self.values[key]
            if isinstance(value, int | float) and str(value) in self.values:
                return self.values[str(value)]
            if self.otherwise is not MISSING:
                return self.otherwise
            listed = ", ".join(str(k) for k in list(self.values)[:10])
            raise _Bad(f"expected one of the mapped values ({listed}), found another", value)
        return value

    @property
    def source(self) -> str:
        return self.path.text if self.path is not None else "(constant)"


def _hashable(value: Any) -> bool:
    return isinstance(value, str | int | float | bool)


@dataclass(frozen=True, slots=True)
class Template:
    """Text with ``{$.path}`` placeholders: the event id from the source's own fields."""

    text: str
    parts: tuple[str | JsonPath, ...]

    def render(self, record: Any) -> str:
        out: list[str] = []
        for part in self.parts:
            if isinstance(part, str):
                out.append(part)
                continue
            value = part.get(record)
            if value is MISSING or value is None or isinstance(value, dict | list):
                raise _Bad(
                    f"expected a text or number at {part.text} for the event id, "
                    f"found {'nothing' if value is MISSING else _kind_of(value)}",
                    None if value is MISSING else value,
                )
            out.append(convert(value, Type.STR))
        return "".join(out)


_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")


def parse_template(text: str) -> Template:
    parts: list[str | JsonPath] = []
    position = 0
    for match in _PLACEHOLDER.finditer(text):
        if match.start() > position:
            parts.append(text[position : match.start()])
        parts.append(parse_path(match.group(1).strip()))
        position = match.end()
    if position < len(text):
        parts.append(text[position:])
    rest = "".join(p for p in parts if isinstance(p, str))
    if "{" in rest or "}" in rest:
        raise ValueError(
            f"expected placeholders written {{$.path}}, found an unmatched brace in {text!r}"
        )
    if not any(isinstance(p, JsonPath) for p in parts):
        raise ValueError(
            f"expected at least one {{$.path}} placeholder (event ids must come from the "
            f"source's own fields so a replay makes the same id), found none in {text!r}"
        )
    return Template(text, tuple(parts))


class FilterOp(StrEnum):
    EQUALS = "equals"
    NOT_EQUALS = "not_equals"
    IN = "in"
    NOT_IN = "not_in"
    EXISTS = "exists"


@dataclass(frozen=True, slots=True)
class FilterTest:
    path: JsonPath
    op: FilterOp
    operand: Any

    def holds(self, record: Any) -> bool:
        value = self.path.get(record)
        present = value is not MISSING and value is not None
        if self.op is FilterOp.EXISTS:
            return present is bool(self.operand)
        if self.op is FilterOp.EQUALS:
            return present and _same(value, self.operand)
        if self.op is FilterOp.NOT_EQUALS:
            return not (present and _same(value, self.operand))
        inside = present and any(_same(value, v) for v in self.operand)
        return inside if self.op is FilterOp.IN else not inside


def _same(a: Any, b: Any) -> bool:
    return isinstance(a, bool) is isinstance(b, bool) and a == b


# --- the mapping ---------------------------------------------------------------------------

_TOUCHPOINT_FIELDS = (
    "event_id",
    "customer_id",
    "occurred_at",
    "channel",
    "kind",
    "direction",
    "rep_id",
    "contact_id",
    "text",
    "industry",
)
_TEXT_FIELDS = frozenset({"customer_id", "rep_id", "contact_id", "text", "industry", "kind"})
_REQUIRED = ("event_id", "customer_id", "occurred_at", "channel", "kind")
_TOP = ("mapping", "version", "description", "records", "filter", "touchpoint", "attributes")
_VALUE_KEYS = ("field", "value", "type", "map", "otherwise", "default", "time", "timezone")


@dataclass(frozen=True, slots=True)
class MappedBody:
    """What a body (one JSON value) became: touchpoints, and how many records the filter
    left out."""

    events: list[TouchpointEvent]
    skipped: int


@dataclass(frozen=True)
class Mapping:
    """A compiled, valid mapping."""

    name: str
    version: int
    event_id: Template
    fields: dict[str, ValueSpec]
    """Touchpoint fields other than ``event_id`` (required ones always present)."""
    attributes: dict[str, ValueSpec] = field(default_factory=dict)
    filter: tuple[FilterTest, ...] = ()
    records: JsonPath | None = None
    source: str = "<mapping>"

    @property
    def touchpoint_source(self) -> str:
        """The touchpoints' ``source``: this mapping's name and version."""
        return f"mapping:{self.name}/{self.version}"

    def records_of(self, payload: Any) -> list[Any]:
        """The records in one JSON value: the list at ``records`` (or the value itself,
        a list or one object). RecordRejected when there is no such list."""
        found = payload if self.records is None else self.records.get(payload)
        if self.records is not None and not isinstance(found, list):
            message = (
                f"expected a list of records at {self.records.text}, "
                f"found {'nothing' if found is MISSING else _kind_of(found)}"
            )
            raise RecordRejected([{"index": None, "field": "(records)", "message": message}])
        items = found if isinstance(found, list) else [found]
        if len(items) > RECORDS_PER_BODY_MAX:
            message = f"expected at most {RECORDS_PER_BODY_MAX} records, found {len(items)}"
            raise RecordRejected([{"index": None, "field": "(records)", "message": message}])
        return items

    def selects(self, record: Any) -> bool:
        """Whether the filter keeps the record."""
        return all(test.holds(record) for test in self.filter)

    def to_touchpoint(
        self, record: Any, received_at: datetime, index: int | None = None
    ) -> TouchpointEvent:
        """The touchpoint for one record (filter not applied), or RecordRejected naming
        every field that does not map."""
        problems: list[dict[str, Any]] = []
        values: dict[str, Any] = {}

        def problem(name: str, message: str, found: Any) -> None:
            problems.append(
                {"index": index, "field": name, "message": message, "found": _shown(found)}
            )

        if not isinstance(record, dict):
            problem("(record)", f"expected a JSON object, found {_kind_of(record)}", record)
            raise RecordRejected(problems)
        try:
            values["event_id"] = self.event_id.render(record)
        except _Bad as bad:
            problem("event_id", str(bad), bad.found)
        for name, spec in self.fields.items():
            try:
                value = spec.resolve(record)
            except _Bad as bad:
                problem(name, f"{spec.source}: {bad}", bad.found)
                continue
            if value is MISSING:
                if name in _REQUIRED:
                    problem(name, f"expected a value at {spec.source}, found none", None)
                continue
            if name in _TEXT_FIELDS and not isinstance(value, str):
                if not isinstance(value, int | float | bool):
                    message = f"{spec.source}: expected text or a number, found {_kind_of(value)}"
                    problem(name, message, value)
                    continue
                value = convert(value, Type.STR)
            values[name] = value
        attributes: dict[str, Any] = {}
        for key, spec in self.attributes.items():
            try:
                value = spec.resolve(record)
            except _Bad as bad:
                problem(f"attributes.{key}", f"{spec.source}: {bad}", bad.found)
                continue
            if value is MISSING:
                continue
            if not isinstance(value, str | int | float | bool):
                message = f"{spec.source}: expected text, a number or a boolean, found "
                problem(f"attributes.{key}", message + _kind_of(value), value)
                continue
            attributes[key] = value
        if problems:
            raise RecordRejected(problems)
        try:
            values.setdefault("direction", Direction.NONE)
            return TouchpointEvent(
                **values,
                received_at=received_at,
                attributes=attributes,
                source=self.touchpoint_source,
            )
        except ValidationError as exc:
            for item in exc.errors(include_url=False):
                name = ".".join(str(part) for part in item["loc"]) or "(record)"
                origin = self.fields.get(name)
                where = f"{origin.source}: " if origin is not None else ""
                problem(name, f"{where}{item['msg']}", item.get("input"))
            raise RecordRejected(problems) from None

    def map_body(self, payload: Any, received_at: datetime) -> MappedBody:
        """Every record of one JSON value that the filter keeps, as touchpoints; raises
        RecordRejected naming every record that does not map (nothing is returned then)."""
        events: list[TouchpointEvent] = []
        problems: list[dict[str, Any]] = []
        skipped = 0
        for index, record in enumerate(self.records_of(payload)):
            if isinstance(record, dict) and not self.selects(record):
                skipped += 1
                continue
            try:
                events.append(self.to_touchpoint(record, received_at, index))
            except RecordRejected as rejected:
                problems.extend(rejected.problems)
        if problems:
            raise RecordRejected(problems)
        return MappedBody(events, skipped)


# --- loading -------------------------------------------------------------------------------


def load_mapping(text: str, source: str = "<mapping>") -> Mapping:
    """Parse and check a mapping, or raise :class:`InvalidMapping` naming every problem
    with its line."""
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAPPING_BYTES_MAX:
        message = f"expected at most {MAPPING_BYTES_MAX:,} bytes, found {size:,}"
        raise InvalidMapping([MappingProblem(source, 1, "(mapping)", message)])
    try:
        document = yaml.load(text, Loader=_LocatingLoader)  # a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        line = mark.line + 1 if mark is not None else 1
        message = f"not valid YAML: {exc.problem}"
        raise InvalidMapping([MappingProblem(source, line, "(yaml)", message)]) from None
    except _DuplicateKey as exc:
        raise InvalidMapping([MappingProblem(source, exc.line, exc.key, "appears twice")]) from None
    except _Forbidden as exc:
        message = exc.message.replace("bundles may not", "mappings may not")
        raise InvalidMapping([MappingProblem(source, exc.line, "(yaml)", message)]) from None
    except yaml.YAMLError as exc:
        raise InvalidMapping(
            [MappingProblem(source, 1, "(yaml)", f"not valid YAML: {exc}")]
        ) from None
    checker = _Checker(source)
    mapping = checker.mapping(document)
    if checker.problems or mapping is None:
        raise InvalidMapping(sorted(checker.problems, key=lambda p: p.line))
    return mapping


class _Refused(Exception):
    """A field is unusable; its problem is recorded."""


@dataclass
class _Checker:
    source: str
    problems: list[MappingProblem] = field(default_factory=list)

    def refuse(self, line: int, where: str, message: str, suggestion: str | None = None) -> None:
        self.problems.append(MappingProblem(self.source, line, where, message, suggestion))

    def known_keys(self, mapping: _Located, allowed: Sequence[str], where: str) -> None:
        for key in mapping:
            if key not in allowed:
                close = difflib.get_close_matches(str(key), list(allowed), n=1, cutoff=0.6)
                self.refuse(
                    mapping.lines.get(key, mapping.line),
                    _join(where, str(key)),
                    f"unknown field; expected one of {', '.join(allowed)}",
                    close[0] if close else None,
                )

    def mapping(self, document: Any) -> Mapping | None:
        if not isinstance(document, _Located):
            self.refuse(1, "(mapping)", f"expected a YAML mapping, found {_kind_of(document)}")
            return None
        self.known_keys(document, _TOP, "")
        name = self.name(document)
        version = self.version(document)
        description = document.get("description")
        if description is not None and not isinstance(description, str):
            self.refuse(_line(document, "description"), "description", "expected text")
        records = None
        if "records" in document:
            records = self.path(document["records"], _line(document, "records"), "records")
        tests = self.filter(document)
        touchpoint = document.get("touchpoint")
        if not isinstance(touchpoint, _Located):
            found = "nothing" if touchpoint is None else _kind_of(touchpoint)
            self.refuse(
                _line(document, "touchpoint"),
                "touchpoint",
                f"expected a mapping of touchpoint fields ({', '.join(_REQUIRED)} at least), "
                f"found {found}",
            )
            return None
        self.known_keys(touchpoint, _TOUCHPOINT_FIELDS, "touchpoint")
        for required in _REQUIRED:
            if required not in touchpoint:
                self.refuse(touchpoint.line, f"touchpoint.{required}", "required, missing")
        event_id = self.template(touchpoint)
        fields: dict[str, ValueSpec] = {}
        for key in _TOUCHPOINT_FIELDS[1:]:
            if key in touchpoint:
                spec = self.value(touchpoint, key, f"touchpoint.{key}")
                if spec is not None:
                    fields[key] = spec
        attributes = self.attributes(document)
        if self.problems or name is None or version is None or event_id is None:
            return None
        return Mapping(
            name=name,
            version=version,
            event_id=event_id,
            fields=fields,
            attributes=attributes,
            filter=tests,
            records=records,
            source=self.source,
        )

    def name(self, document: _Located) -> str | None:
        name = document.get("mapping")
        if not isinstance(name, str) or not NAME.match(name):
            found = "nothing" if name is None else repr(name)
            self.refuse(
                _line(document, "mapping"),
                "mapping",
                "expected a name of lower-case letters, digits, '.', '_', '-' (at most 48, "
                f"starting with a letter or digit), found {found}",
            )
            return None
        return name

    def version(self, document: _Located) -> int | None:
        version = document.get("version")
        if isinstance(version, bool) or not isinstance(version, int) or not 1 <= version < 2**31:
            found = "nothing" if version is None else repr(version)
            self.refuse(
                _line(document, "version"),
                "version",
                f"expected a whole number from 1 to 2147483647, found {found}",
            )
            return None
        return version

    def path(self, value: Any, line: int, where: str) -> JsonPath | None:
        if not isinstance(value, str):
            self.refuse(line, where, f"expected a path such as $.a.b, found {_kind_of(value)}")
            return None
        try:
            return parse_path(value)
        except ValueError as exc:
            self.refuse(line, where, str(exc))
            return None

    def filter(self, document: _Located) -> tuple[FilterTest, ...]:
        if "filter" not in document:
            return ()
        items = document["filter"]
        line = _line(document, "filter")
        if not isinstance(items, _LocatedList) or not items:
            self.refuse(line, "filter", f"expected a list of tests, found {_kind_of(items)}")
            return ()
        if len(items) > FILTER_TESTS_MAX:
            self.refuse(
                line, "filter", f"expected at most {FILTER_TESTS_MAX} tests, found {len(items)}"
            )
            return ()
        tests: list[FilterTest] = []
        for number, (item, item_line) in enumerate(zip(items, items.lines, strict=True)):
            where = f"filter[{number}]"
            if not isinstance(item, _Located):
                self.refuse(
                    item_line,
                    where,
                    f"expected {{field: $.path, <test>: ...}}, found {_kind_of(item)}",
                )
                continue
            self.known_keys(item, ("field", *(op.value for op in FilterOp)), where)
            ops = [FilterOp(k) for k in item if k in FilterOp.__members__.values()]
            path = self.path(item.get("field"), _line(item, "field"), f"{where}.field")
            if len(ops) != 1:
                self.refuse(
                    item_line,
                    where,
                    f"expected exactly one test of {', '.join(FilterOp)}, found {len(ops)}",
                )
                continue
            op = ops[0]
            operand = item[op.value]
            op_line = _line(item, op.value)
            if op in (FilterOp.IN, FilterOp.NOT_IN):
                if (
                    not isinstance(operand, list)
                    or not operand
                    or len(operand) > MAP_ENTRIES_MAX
                    or not all(_hashable(v) for v in operand)
                ):
                    self.refuse(
                        op_line,
                        f"{where}.{op}",
                        f"expected a list of 1 to {MAP_ENTRIES_MAX} plain values, "
                        f"found {_kind_of(operand)}",
                    )
                    continue
            elif op is FilterOp.EXISTS:
                if not isinstance(operand, bool):
                    self.refuse(
                        op_line,
                        f"{where}.exists",
                        f"expected true or false, found {_kind_of(operand)}",
                    )
                    continue
            elif not _hashable(operand):
                self.refuse(
                    op_line, f"{where}.{op}", f"expected a plain value, found {_kind_of(operand)}"
                )
                continue
            if path is not None:
                tests.append(
                    FilterTest(path, op, list(operand) if isinstance(operand, list) else operand)
                )
        return tuple(tests)

    def template(self, touchpoint: _Located) -> Template | None:
        if "event_id" not in touchpoint:
            return None
        value = touchpoint["event_id"]
        line = _line(touchpoint, "event_id")
        if not isinstance(value, str) or not value or len(value) > TEMPLATE_CHARS_MAX:
            self.refuse(
                line,
                "touchpoint.event_id",
                f"expected a template of at most {TEMPLATE_CHARS_MAX} characters such as "
                f"'ticket:{{$.id}}', found {_kind_of(value)}",
            )
            return None
        try:
            return parse_template(value)
        except ValueError as exc:
            self.refuse(line, "touchpoint.event_id", str(exc))
            return None

    def attributes(self, document: _Located) -> dict[str, ValueSpec]:
        if "attributes" not in document:
            return {}
        items = document["attributes"]
        line = _line(document, "attributes")
        if not isinstance(items, _Located):
            self.refuse(
                line, "attributes", f"expected a mapping name: source, found {_kind_of(items)}"
            )
            return {}
        if len(items) > ATTRIBUTES_MAX:
            self.refuse(
                line, "attributes", f"expected at most {ATTRIBUTES_MAX}, found {len(items)}"
            )
            return {}
        specs: dict[str, ValueSpec] = {}
        for key in items:
            where = f"attributes.{key}"
            if not isinstance(key, str) or not 1 <= len(key) <= 64:
                self.refuse(_line(items, key), where, "expected a name of 1 to 64 characters")
                continue
            spec = self.value(items, key, where)
            if spec is None:
                continue
            specs[key] = spec
        return specs

    def value(self, parent: _Located, key: str, where: str) -> ValueSpec | None:
        """A field: a path, a constant, or {field|value, type, map, otherwise, default,
        time, timezone}."""
        raw = parent[key]
        line = _line(parent, key)
        name = where.rsplit(".", 1)[-1] if where.startswith("touchpoint.") else "attribute"
        if name == "occurred_at" and not (_is_path(raw) or isinstance(raw, _Located)):
            self.refuse(line, where, "expected a path: a constant event time is never right")
            return None
        try:
            if _is_path(raw):
                spec = ValueSpec(path=self.must(parse_path, raw, line, where))
            elif isinstance(raw, _Located):
                spec = self.detailed(raw, where)
            elif _hashable(raw):
                spec = ValueSpec(constant=raw)
            else:
                self.refuse(
                    line, where, f"expected a path, a constant or a mapping, found {_kind_of(raw)}"
                )
                return None
            if name == "occurred_at":
                if spec.path is None:
                    self.refuse(
                        line, where, "expected a path: a constant event time is never right"
                    )
                    return None
                if spec.default is not MISSING or spec.values is not None or spec.type:
                    self.refuse(
                        line,
                        where,
                        "expected no default, map or type: an event time comes from the "
                        "record, or the record is refused",
                    )
                    return None
                if spec.time is None:
                    spec = ValueSpec(path=spec.path, time=TimeSpec())
            elif spec.time is not None:
                self.refuse(line, where, "expected no time: only occurred_at is a time")
                return None
            self.outputs(spec, name, line, where)
            return spec
        except _Refused:
            return None

    def must(self, parse: Any, value: Any, line: int, where: str) -> Any:
        try:
            return parse(value)
        except ValueError as exc:
            self.refuse(line, where, str(exc))
            raise _Refused from None

    def detailed(self, raw: _Located, where: str) -> ValueSpec:
        self.known_keys(raw, _VALUE_KEYS, where)
        if ("field" in raw) == ("value" in raw):
            self.refuse(
                raw.line, where, "expected exactly one of field (a path) and value (a constant)"
            )
            raise _Refused
        if "value" in raw:
            if not _hashable(raw["value"]):
                self.refuse(
                    _line(raw, "value"),
                    f"{where}.value",
                    f"expected a plain value, found {_kind_of(raw['value'])}",
                )
                raise _Refused
            extra = [k for k in raw if k != "value"]
            if extra:
                self.refuse(
                    raw.line,
                    where,
                    f"expected nothing beside a constant value, found {', '.join(extra)}",
                )
                raise _Refused
            return ValueSpec(constant=raw["value"])
        path = (
            self.must(parse_path, raw["field"], _line(raw, "field"), f"{where}.field")
            if isinstance(raw["field"], str)
            else None
        )
        if path is None:
            self.refuse(
                _line(raw, "field"),
                f"{where}.field",
                f"expected a path such as $.a.b, found {_kind_of(raw['field'])}",
            )
            raise _Refused
        to = None
        if "type" in raw:
            if raw["type"] not in Type.__members__.values():
                self.refuse(
                    _line(raw, "type"),
                    f"{where}.type",
                    f"expected one of {', '.join(Type)}, found {raw['type']!r}",
                    _close(str(raw["type"]), [t.value for t in Type]),
                )
                raise _Refused
            to = Type(raw["type"])
        values = None
        if "map" in raw:
            table = raw["map"]
            if (
                not isinstance(table, _Located)
                or not table
                or len(table) > MAP_ENTRIES_MAX
                or not all(_hashable(v) and _hashable(k) for k, v in table.items())
            ):
                self.refuse(
                    _line(raw, "map"),
                    f"{where}.map",
                    f"expected a mapping of 1 to {MAP_ENTRIES_MAX} source value: touchpoint value",
                )
                raise _Refused
            values = dict(table)
        otherwise = raw.get("otherwise", MISSING)
        if otherwise is not MISSING and values is None:
            self.refuse(_line(raw, "otherwise"), f"{where}.otherwise", "expected only beside a map")
            raise _Refused
        default = raw.get("default", MISSING)
        for label, given in (("otherwise", otherwise), ("default", default)):
            if given is not MISSING and not _hashable(given):
                self.refuse(
                    _line(raw, label),
                    f"{where}.{label}",
                    f"expected a plain value, found {_kind_of(given)}",
                )
                raise _Refused
        time = None
        if "time" in raw or "timezone" in raw:
            time = self.time_spec(raw, where)
            if to is not None or values is not None:
                self.refuse(raw.line, where, "expected either time or type/map, found both")
                raise _Refused
        return ValueSpec(
            path=path, type=to, values=values, otherwise=otherwise, default=default, time=time
        )

    def time_spec(self, raw: _Located, where: str) -> TimeSpec:
        fmt = raw.get("time", "iso8601")
        line = _line(raw, "time")
        if not isinstance(fmt, str) or not (
            fmt in ("iso8601", "epoch_seconds", "epoch_millis") or "%" in fmt
        ):
            self.refuse(
                line,
                f"{where}.time",
                "expected iso8601, epoch_seconds, epoch_millis or a strftime format such as "
                f"'%Y-%m-%d %H:%M:%S', found {fmt!r}",
            )
            raise _Refused
        if "%" in fmt:
            try:
                datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC).strftime(fmt)
            except ValueError as exc:
                self.refuse(line, f"{where}.time", f"expected a valid strftime format: {exc}")
                raise _Refused from None
        zone = None
        if "timezone" in raw:
            name = raw["timezone"]
            try:
                zone = ZoneInfo(name) if isinstance(name, str) and name else None
            except (ZoneInfoNotFoundError, ValueError):
                zone = None
            if zone is None:
                self.refuse(
                    _line(raw, "timezone"),
                    f"{where}.timezone",
                    f"expected an IANA time zone such as Asia/Shanghai or UTC, found {name!r}",
                )
                raise _Refused
            if fmt in ("epoch_seconds", "epoch_millis"):
                self.refuse(
                    _line(raw, "timezone"),
                    f"{where}.timezone",
                    "expected none: epoch times are UTC",
                )
                raise _Refused
        return TimeSpec(fmt, zone)

    def outputs(self, spec: ValueSpec, name: str, line: int, where: str) -> None:
        """Constants, map targets and defaults are checked against what the touchpoint
        field takes, so a wrong one fails at load and never at a record."""
        produced = [spec.constant] if spec.path is None else []
        if spec.values is not None:
            produced += list(spec.values.values())
        produced += [v for v in (spec.otherwise, spec.default) if v is not MISSING]
        allowed: Iterable[str] | None = None
        if name == "channel":
            allowed = [c.value for c in Channel]
        elif name == "direction":
            allowed = [d.value for d in Direction]
        for value in produced:
            if allowed is not None and value not in list(allowed):
                self.refuse(
                    line,
                    where,
                    f"expected one of {', '.join(allowed)}, found {value!r}",
                    _close(str(value), list(allowed)),
                )
                raise _Refused
            if name == "kind" and not (isinstance(value, str) and CODE.match(value)):
                self.refuse(line, where, f"expected a kind in lower_snake_case, found {value!r}")
                raise _Refused


def _close(word: str, choices: list[str]) -> str | None:
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return close[0] if close else None


def _line(mapping: _Located, key: Any) -> int:
    return mapping.lines.get(key, mapping.line)


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key
