"""What the engine remembers per customer for each running rule and journey.

A customer's :class:`~engine.state.CustomerState` keeps one :class:`RuleMemory` per rule
(keyed by rule id) and one :class:`JourneyMemory` per journey (keyed by journey id) that
has something to remember.

Condition memories
------------------
Inside both, each condition keeps a memory of its own: plain JSON values, ``None``
when there is nothing to remember, read only by the condition that wrote it
(``engine/conditions.py``). Their shapes, times in µs since the Unix epoch:

- ``event``, ``state``: always ``None``.
- ``count``, ``sum``: the window's entries, oldest first,
  ``[[time, amount (float), event id], ...]`` (amount 1.0 for a count). Only these
  are trimmed when a state outgrows its byte budget (``engine/retention.py``).
- ``sequence``: partial matches, at most ``MAX_PARTIAL_SEQUENCES``, oldest first,
  ``[[first step's time, index of the next step, [event ids so far]], ...]``.
- ``streak``: ``[run length, [the last ``length`` event ids], held already (bool)]``.
- ``absence``: ``[started, deadline, id of the touchpoint that started the wait]``.
- ``all``, ``any``: one memory per listed condition, in order, or ``None`` when all
  of them are ``None``.
- ``not``: the memory of the condition it negates.

A condition given a memory returns that same object when nothing changed; rules and
journeys rely on it to keep a customer's state (and its changelog record) as it was.

Stored form
-----------
:meth:`RuleMemory.to_json` and :meth:`JourneyMemory.to_json` give objects with the
field names below. :meth:`RuleMemory.from_json` and :meth:`JourneyMemory.from_json`
read those, and the positional lists states were stored as before memories had
names, so changelog records already written keep their partial matches, cooldowns and
journeys:

- rule: ``[condition, last fired, version]`` (and ``[condition, last fired]``, from
  before rule versions, read as version 0: the partial match is dropped at the next
  touchpoint, the cooldown is kept);
- journey: ``[variant, inside (0 or 1), steps done, waiting since, entry, exit,
  conversion, when, version, required kinds seen, variant followed]``, the last two
  optional.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .errors import StateFormatError


@dataclass(frozen=True, slots=True)
class RuleMemory:
    """One rule's memory for one customer."""

    condition: Any
    """The memory of the rule's condition (shapes in this module's docstring)."""
    last_fired: int | None
    """Event time (µs) of the rule's latest firing, for its cooldown; None if never."""
    version: int
    """The rule version ``condition`` was built under; another version starts afresh."""

    def to_json(self) -> dict[str, Any]:
        return {"condition": self.condition, "last_fired": self.last_fired, "version": self.version}

    @classmethod
    def from_json(cls, rule_id: str, data: Any) -> RuleMemory:
        """Inverse of :meth:`to_json`; also reads the positional list stored before."""
        if type(data) is dict and len(data) == 3:
            last_fired, version = data.get("last_fired", ""), data.get("version")
            if _is_time(last_fired) and type(version) is int and "condition" in data:
                return cls(data["condition"], last_fired, version)
        elif type(data) is list and 2 <= len(data) <= 3:
            version = data[2] if len(data) == 3 else 0
            if _is_time(data[1]) and type(version) is int:
                return cls(data[0], data[1], version)
        raise StateFormatError(
            f"memory of rule {rule_id!r}: expected an object with condition, last_fired and "
            f"version (or a list [condition, last fired, version]), found {_shown(data)}"
        )


@dataclass(frozen=True, slots=True)
class JourneyMemory:
    """One journey's memory for one customer."""

    variant: str | None
    """The variant (or ``holdout``) assigned at first entry; kept for every re-entry.
    None until the customer first enters."""
    inside: bool
    steps_done: int
    """Steps taken since the customer entered; the next step is this index."""
    waiting_since: int
    """Event time (µs) of the entry or of the latest step: the next step's ``after``
    counts from here."""
    entry: Any
    """Memory of the journey's ``entry`` condition."""
    exit: Any
    """Memory of ``exit``."""
    conversion: Any
    """Memory of ``conversion``."""
    when: Any
    """Memory of the next step's ``when`` condition."""
    version: int
    """The journey version the condition memories were built under."""
    signals_seen: tuple[str, ...]
    """Required signal kinds seen since the customer entered, in the order they came."""
    follows: str | None = None
    """For a holdout customer of a journey with neither conversion nor exit: the variant
    whose steps they follow without getting them."""

    def to_json(self) -> dict[str, Any]:
        return {
            "variant": self.variant,
            "inside": self.inside,
            "steps_done": self.steps_done,
            "waiting_since": self.waiting_since,
            "entry": self.entry,
            "exit": self.exit,
            "conversion": self.conversion,
            "when": self.when,
            "version": self.version,
            "signals_seen": list(self.signals_seen),
            "follows": self.follows,
        }

    @classmethod
    def from_json(cls, journey_id: str, data: Any) -> JourneyMemory:
        """Inverse of :meth:`to_json`; also reads the positional list stored before."""
        fields: tuple[Any, ...] | None = None
        if type(data) is dict and len(data) == len(_JOURNEY_FIELDS):
            try:
                fields = tuple(data[name] for name in _JOURNEY_FIELDS)
            except KeyError:
                fields = None
        elif type(data) is list and 9 <= len(data) <= 11:
            fields = (
                *data[:9],
                data[9] if len(data) > 9 else [],
                data[10] if len(data) > 10 else None,
            )
        if fields is not None:
            variant, inside, steps_done, waiting_since = fields[:4]
            version, seen, follows = fields[8:]
            if (
                _is_name(variant)
                and type(inside) in (bool, int)
                and type(steps_done) is int
                and type(waiting_since) is int
                and type(version) is int
                and type(seen) is list
                and all(type(kind) is str for kind in seen)
                and _is_name(follows)
            ):
                return cls(
                    variant,
                    bool(inside),
                    steps_done,
                    waiting_since,
                    fields[4],
                    fields[5],
                    fields[6],
                    fields[7],
                    version,
                    tuple(seen),
                    follows,
                )
        raise StateFormatError(
            f"memory of journey {journey_id!r}: expected an object with variant, inside, "
            "steps_done, waiting_since, entry, exit, conversion, when, version, signals_seen "
            f"and follows (or the positional list of 9 to 11 items), found {_shown(data)}"
        )


_JOURNEY_FIELDS = (
    "variant",
    "inside",
    "steps_done",
    "waiting_since",
    "entry",
    "exit",
    "conversion",
    "when",
    "version",
    "signals_seen",
    "follows",
)


def _is_time(value: Any) -> bool:
    return value is None or type(value) is int


def _is_name(value: Any) -> bool:
    return value is None or type(value) is str


def _shown(data: Any) -> str:
    text = repr(data)
    return text if len(text) <= 200 else f"{text[:200]}... ({type(data).__name__})"
