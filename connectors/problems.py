"""Problems: what the connectors say about input they refuse.

A problem is a dict with ``field`` and ``message``, located by ``line`` (a line of a
file or of a JSON-lines body) or ``index`` (an item of a JSON list), and, where it is
safe to repeat, the value ``found``. Every HTTP answer and every dead letter carries
them; :func:`describe` turns one into a line of text.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import Any

from pydantic import ValidationError

Problem = dict[str, Any]

FoundRule = Callable[[str, Mapping[str, Any]], tuple[bool, Any]]
"""Given the field and pydantic's error: whether the value found is shown, and as what."""

FOUND_CHARS = 40
"""Text found is cut to this many characters by :func:`found_unless`."""


def describe(problem: Mapping[str, Any], item: str, *, found: bool = False) -> str:
    """``line 3: field: message``, or ``<item> 2: field: message`` where the problem is
    located by index (``item`` is a format string such as ``"event {}"``); with ``found``,
    the value found follows in brackets."""
    if "line" in problem:
        where = f"line {problem['line']}: "
    elif problem.get("index") is not None:
        where = item.format(problem["index"]) + ": "
    else:
        where = ""
    shown = f" (found {problem['found']!r})" if found and "found" in problem else ""
    return f"{where}{problem['field']}: {problem['message']}{shown}"


def unencodable(
    event_ids: Sequence[str], problems: Iterable[Mapping[str, Any]], field: str
) -> list[Problem]:
    """The problems of touchpoints that do not encode (each names its ``event_id``),
    located by the index of the item the touchpoint came from."""
    index = {event_id: n for n, event_id in enumerate(event_ids)}
    return [
        {
            "index": index.get(p["event_id"]),
            "field": field,
            "message": f"does not encode as a touchpoint: {p['message']}",
        }
        for p in problems
    ]


def found_always(shown: Callable[[Any], Any]) -> FoundRule:
    """Every problem shows the value found, as ``shown`` renders it."""

    def rule(field: str, error: Mapping[str, Any]) -> tuple[bool, Any]:
        return True, shown(error.get("input"))

    return rule


def found_unless(quiet: Collection[str]) -> FoundRule:
    """The value found is shown (text cut to :data:`FOUND_CHARS`) except for ``quiet``
    fields (text not to repeat, or the whole item) and missing fields."""

    def rule(field: str, error: Mapping[str, Any]) -> tuple[bool, Any]:
        if field in quiet or error["type"] == "missing":
            return False, None
        value = error.get("input")
        return True, value[:FOUND_CHARS] if isinstance(value, str) else value

    return rule


def validation_problems(
    error: ValidationError,
    whole: str,
    where: Mapping[str, Any] | None = None,
    *,
    found: FoundRule | None = None,
    branches: Collection[str] = (),
) -> list[Problem]:
    """One problem per pydantic error, located by ``where``: the field is the error's
    location joined with dots (``whole`` when the error is about the item itself, and
    without a leading union branch named in ``branches``)."""
    problems: list[Problem] = []
    for item in error.errors(include_url=False):
        loc = [str(part) for part in item["loc"]]
        if loc and loc[0] in branches:
            loc = loc[1:]
        field = ".".join(loc) or whole
        problem: Problem = {**(where or {}), "field": field, "message": item["msg"]}
        if found is not None:
            show, value = found(field, item)
            if show:
                problem["found"] = value
        problems.append(problem)
    return problems
