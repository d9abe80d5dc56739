"""Predicates on a single touchpoint, built once and called per event."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from schemas.models import Direction, TouchpointEvent

from .errors import RuleDefinitionError

_EVENT_FIELDS = frozenset(TouchpointEvent.model_fields)


@dataclass(frozen=True, slots=True)
class Predicate:
    """A named test on a touchpoint; ``description`` is shown in explanations."""

    description: str
    test: Callable[[TouchpointEvent], bool]

    def __call__(self, event: TouchpointEvent) -> bool:
        return self.test(event)


def _check_field(name: str) -> None:
    if name not in _EVENT_FIELDS:
        known = ", ".join(sorted(_EVENT_FIELDS))
        raise RuleDefinitionError(f"unknown touchpoint field {name!r}; expected one of: {known}")


def field_equals(name: str, value: object) -> Predicate:
    """``event.<name> == value``."""
    _check_field(name)
    return Predicate(f"{name} == {value}", lambda event: getattr(event, name) == value)


def field_in(name: str, values: Iterable[object]) -> Predicate:
    """``event.<name>`` is one of ``values``."""
    _check_field(name)
    allowed = frozenset(values)
    if not allowed:
        raise RuleDefinitionError(f"field_in({name!r}) needs at least one value, got none")
    shown = ", ".join(sorted(str(v) for v in allowed))
    return Predicate(f"{name} in [{shown}]", lambda event: getattr(event, name) in allowed)


def all_of(*parts: Predicate) -> Predicate:
    """Every part holds."""
    if not parts:
        raise RuleDefinitionError("all_of needs at least one predicate, got none")
    tests = tuple(p.test for p in parts)
    return Predicate(
        " and ".join(p.description for p in parts),
        lambda event: all(test(event) for test in tests),
    )


def is_inbound() -> Predicate:
    """The customer reached out (any channel)."""
    return field_equals("direction", Direction.INBOUND)
