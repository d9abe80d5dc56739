"""Can a reader schema read data written with a writer schema? Avro's resolution rules.

A schema registry checks these rules before it accepts a new version of a subject:
BACKWARD means the new schema, as reader, reads data written with the registered one;
FORWARD the other way round; FULL both; ``*_TRANSITIVE`` against every registered
version rather than the latest only. The rules (Avro specification, "Schema
Resolution"):

- primitives match themselves; the writer's int is read as long, float or double, long
  as float or double, float as double; string and bytes read each other;
- records, enums and fixed types match by full name (or a reader alias); a reader field
  the writer lacks needs a default, a writer field the reader lacks is skipped; fields
  match by name (or a reader field's alias) and their types must resolve;
- an enum reader needs every writer symbol, unless it has a default symbol;
- fixed sizes are equal; array items and map values resolve;
- a writer union resolves if every branch does; a reader union reads a writer type if
  one of its branches does.

``incompatibilities`` returns what stands in the way, each naming where in the schema.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from enum import StrEnum
from typing import Any

__all__ = ["Compatibility", "incompatibilities", "problems_against"]


class Compatibility(StrEnum):
    BACKWARD = "BACKWARD"
    BACKWARD_TRANSITIVE = "BACKWARD_TRANSITIVE"
    FORWARD = "FORWARD"
    FORWARD_TRANSITIVE = "FORWARD_TRANSITIVE"
    FULL = "FULL"
    FULL_TRANSITIVE = "FULL_TRANSITIVE"
    NONE = "NONE"


_PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})
_NAMED = frozenset({"record", "error", "enum", "fixed"})
_PROMOTIONS: Mapping[str, frozenset[str]] = {
    "int": frozenset({"long", "float", "double"}),
    "long": frozenset({"float", "double"}),
    "float": frozenset({"double"}),
    "string": frozenset({"bytes"}),
    "bytes": frozenset({"string"}),
}


def problems_against(level: Compatibility, new: Any, registered: Sequence[Any]) -> list[str]:
    """What keeps ``new`` from joining a subject whose versions are ``registered``
    (oldest first) under ``level``; empty when it may join."""
    if level is Compatibility.NONE or not registered:
        return []
    transitive = level.value.endswith("_TRANSITIVE")
    targets = list(registered) if transitive else [registered[-1]]
    problems: list[str] = []
    for index, old in enumerate(targets):
        version = index + 1 if transitive else len(registered)
        if level.value.startswith(("BACKWARD", "FULL")):
            for problem in incompatibilities(reader=new, writer=old):
                problems.append(f"new schema cannot read version {version}: {problem}")
        if level.value.startswith(("FORWARD", "FULL")):
            for problem in incompatibilities(reader=old, writer=new):
                problems.append(f"version {version} cannot read the new schema: {problem}")
    return problems


def incompatibilities(reader: Any, writer: Any) -> list[str]:
    """Every reason ``reader`` cannot read data written with ``writer`` (both parsed
    JSON Avro schemas); empty when it can."""
    checker = _Checker(_names(reader), _names(writer))
    checker.check(reader, writer, "", None, None)
    return checker.problems


def _names(schema: Any) -> dict[str, Any]:
    """Every named type of ``schema`` by full name."""
    found: dict[str, Any] = {}
    _collect(schema, None, found)
    return found


def _full_name(name: str, namespace: str | None) -> str:
    if "." in name or not namespace:
        return name
    return f"{namespace}.{name}"


def _collect(schema: Any, namespace: str | None, found: dict[str, Any]) -> None:
    if isinstance(schema, list):
        for branch in schema:
            _collect(branch, namespace, found)
        return
    if not isinstance(schema, dict):
        return
    kind = schema.get("type")
    if kind in _NAMED:
        full = _full_name(str(schema["name"]), schema.get("namespace", namespace))
        found[full] = {**schema, "name": full}
        inner = full.rpartition(".")[0] or None
        for field in schema.get("fields", ()):
            _collect(field.get("type"), inner, found)
        return
    if kind == "array":
        _collect(schema.get("items"), namespace, found)
    elif kind == "map":
        _collect(schema.get("values"), namespace, found)
    elif isinstance(kind, dict | list):
        _collect(kind, namespace, found)


class _Checker:
    def __init__(self, reader_names: dict[str, Any], writer_names: dict[str, Any]) -> None:
        self.reader_names = reader_names
        self.writer_names = writer_names
        self.problems: list[str] = []
        self._seen: set[tuple[str, str]] = set()

    def _resolve(self, schema: Any, names: dict[str, Any], namespace: str | None) -> Any:
        """A schema with references replaced by the named type and bare type dicts
        (``{"type": "string"}``) by the name."""
        if isinstance(schema, str):
            if schema in _PRIMITIVES:
                return schema
            full = _full_name(schema, namespace)
            return names.get(full) or names.get(schema) or schema
        if isinstance(schema, dict):
            kind = schema.get("type")
            if isinstance(kind, str) and kind in _PRIMITIVES:
                return kind
            if kind in _NAMED:
                full = _full_name(str(schema["name"]), schema.get("namespace", namespace))
                return names.get(full, {**schema, "name": full})
            if isinstance(kind, dict | list | str) and kind not in ("array", "map"):
                return self._resolve(kind, names, namespace)
        return schema

    def check(
        self, reader: Any, writer: Any, path: str, r_ns: str | None, w_ns: str | None
    ) -> bool:
        reader = self._resolve(reader, self.reader_names, r_ns)
        writer = self._resolve(writer, self.writer_names, w_ns)
        if isinstance(writer, list):  # every writer branch must be readable
            readable = True
            for branch in writer:
                if not self._readable(reader, branch, path, r_ns, w_ns):
                    readable = False
            return readable
        if isinstance(reader, list):
            if any(self._fits(branch, writer, r_ns, w_ns) for branch in reader):
                return True
            self.problems.append(
                f"{path or 'the schema'}: expected a type the reader's union "
                f"{_describe(reader)} reads, found {_describe(writer)}"
            )
            return False
        return self._match(reader, writer, path, r_ns, w_ns)

    def _readable(
        self, reader: Any, branch: Any, path: str, r_ns: str | None, w_ns: str | None
    ) -> bool:
        if isinstance(reader, list):
            if any(self._fits(r, branch, r_ns, w_ns) for r in reader):
                return True
            where = path or "the schema"
            found = _describe(self._resolve(branch, self.writer_names, w_ns))
            self.problems.append(
                f"{where}: the writer's union branch {found} is not read by the reader's "
                f"union {_describe(reader)}"
            )
            return False
        return self.check(reader, branch, path, r_ns, w_ns)

    def _fits(self, reader: Any, writer: Any, r_ns: str | None, w_ns: str | None) -> bool:
        """Whether ``reader`` reads ``writer`` fully, without recording problems."""
        trial = _Checker(self.reader_names, self.writer_names)
        trial._seen = set(self._seen)
        return trial.check(reader, writer, "", r_ns, w_ns)

    def _match(
        self, reader: Any, writer: Any, path: str, r_ns: str | None, w_ns: str | None
    ) -> bool:
        where = path or "the schema"
        r_kind = reader if isinstance(reader, str) else reader.get("type")
        w_kind = writer if isinstance(writer, str) else writer.get("type")
        if (
            isinstance(r_kind, str)
            and r_kind in _PRIMITIVES
            and isinstance(w_kind, str)
            and w_kind in _PRIMITIVES
        ):
            if r_kind == w_kind or r_kind in _PROMOTIONS.get(w_kind, frozenset()):
                return True
            self.problems.append(
                f"{where}: expected {r_kind} (or a type promoted to it), found {w_kind}"
            )
            return False
        if r_kind == "error":
            r_kind = "record"
        if w_kind == "error":
            w_kind = "record"
        if r_kind != w_kind:
            self.problems.append(
                f"{where}: expected {_describe(reader)}, found {_describe(writer)}"
            )
            return False
        if r_kind == "array":
            return self.check(reader["items"], writer["items"], f"{path}[]", r_ns, w_ns)
        if r_kind == "map":
            return self.check(reader["values"], writer["values"], f"{path}{{}}", r_ns, w_ns)
        if not self._same_name(reader, writer, where):
            return False
        if r_kind == "fixed":
            if reader["size"] == writer["size"]:
                return True
            self.problems.append(
                f"{where}: fixed {reader['name']} expected size {reader['size']}, "
                f"found {writer['size']}"
            )
            return False
        if r_kind == "enum":
            return self._enum(reader, writer, where)
        return self._record(reader, writer, path)

    def _same_name(self, reader: Mapping[str, Any], writer: Mapping[str, Any], where: str) -> bool:
        r_name, w_name = str(reader["name"]), str(writer["name"])
        namespace = r_name.rpartition(".")[0] or None
        aliases = {_full_name(str(a), namespace) for a in reader.get("aliases", ())}
        if r_name == w_name or w_name in aliases:
            return True
        if r_name.rpartition(".")[2] == w_name.rpartition(".")[2]:
            return True  # unqualified names match, as the specification allows
        self.problems.append(f"{where}: expected a type named {r_name}, found {w_name}")
        return False

    def _enum(self, reader: Mapping[str, Any], writer: Mapping[str, Any], where: str) -> bool:
        if "default" in reader:
            return True
        missing = [s for s in writer["symbols"] if s not in reader["symbols"]]
        if not missing:
            return True
        self.problems.append(
            f"{where}: enum {reader['name']} has no symbol {', '.join(missing)} that the "
            "writer may write, and no default symbol"
        )
        return False

    def _record(self, reader: Mapping[str, Any], writer: Mapping[str, Any], path: str) -> bool:
        key = (str(reader["name"]), str(writer["name"]))
        if key in self._seen:
            return True  # a recursive type already being checked
        self._seen.add(key)
        r_ns = str(reader["name"]).rpartition(".")[0] or None
        w_ns = str(writer["name"]).rpartition(".")[0] or None
        written = {f["name"]: f for f in writer["fields"]}
        ok = True
        for field in reader["fields"]:
            name = field["name"]
            at = f"{path}.{name}" if path else name
            source = written.get(name)
            if source is None:
                source = next((written[a] for a in field.get("aliases", ()) if a in written), None)
            if source is not None:
                ok = self.check(field["type"], source["type"], at, r_ns, w_ns) and ok
            elif "default" not in field:
                self.problems.append(
                    f"{at}: the reader's field has no default and the writer's "
                    f"{writer['name']} has no such field"
                )
                ok = False
        return ok


def _describe(schema: Any) -> str:
    if isinstance(schema, str):
        return schema
    if isinstance(schema, list):
        return "[" + ", ".join(_describe(branch) for branch in schema) + "]"
    kind = schema.get("type")
    if kind in _NAMED:
        return f"{kind} {schema.get('name')}"
    return str(kind)
