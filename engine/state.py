"""Per-customer state: what the engine remembers between touchpoints."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from .memories import JourneyMemory, RuleMemory
from .profile import StoreProfile

if TYPE_CHECKING:
    from .features import FeatureMemory
    from .scoring.learner import Snapshots

RECENT_EVENT_IDS = 32
"""How many event ids a customer's state remembers to drop redelivered events."""

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_OLD_JOURNEY_PREFIX = "journey:"


@dataclass(frozen=True, slots=True)
class Consent:
    """The latest decision of a customer on one purpose."""

    granted: bool
    at: int
    """Event time of the change, µs since the epoch."""

    def to_json(self) -> list[object]:
        return [self.granted, self.at]

    @classmethod
    def from_json(cls, data: object) -> Consent:
        if not isinstance(data, list) or len(data) != 2:
            raise ValueError(f"expected [granted, at], found {data!r}")
        granted, at = data
        if not isinstance(granted, bool) or not isinstance(at, int):
            raise ValueError(f"expected [bool, int], found {data!r}")
        return cls(granted, at)


@dataclass(frozen=True, slots=True)
class Score:
    """A customer's latest score of one name, as the model version that gave it saw them."""

    value: float
    """Probability of label 1."""
    model_version: int
    at: int
    """Event time of the touchpoint it was predicted at, µs since the epoch."""
    top: tuple[tuple[str, float | str, float], ...] = ()
    """(feature, value, contribution to the log-odds) of the features that weighed most."""

    def to_json(self) -> list[Any]:
        return [self.value, self.model_version, self.at, [list(t) for t in self.top]]

    @classmethod
    def from_json(cls, data: Any) -> Score:
        if not isinstance(data, list) or len(data) != 4 or not isinstance(data[3], list):
            raise ValueError(f"score: expected [value, version, at, top], found {data!r}")
        value, version, at, top = data
        if not isinstance(version, int) or not isinstance(at, int):
            raise ValueError(f"score: expected a whole version and time, found {data!r}")
        rows: list[tuple[str, float | str, float]] = []
        for row in top:
            if not isinstance(row, list) or len(row) != 3 or not isinstance(row[0], str):
                raise ValueError(
                    f"score.top: expected [feature, value, contribution], found {row!r}"
                )
            rows.append((row[0], row[1], float(row[2])))
        return cls(float(value), version, at, tuple(rows))


@dataclass(frozen=True, slots=True)
class CustomerState:
    """Everything the engine knows about one customer."""

    customer_id: str
    owner_rep_id: str | None = None
    touchpoints: int = 0
    first_seen_at: datetime | None = None
    last_event_at: datetime | None = None
    last_inbound_at: datetime | None = None
    last_outbound_at: datetime | None = None
    kind_counts: Mapping[str, int] = field(default_factory=dict)
    recent_event_ids: tuple[str, ...] = ()
    emitted: tuple[int, ...] = ()
    """Event times (µs) of interventions emitted in the last 24 hours, for caps."""
    rule_memories: Mapping[str, RuleMemory] = field(default_factory=dict)
    """Rule id -> that rule's memory for this customer (partial matches, last firing)."""
    journey_memories: Mapping[str, JourneyMemory] = field(default_factory=dict)
    """Journey id -> where the customer stands in that journey (variant, steps)."""
    consents: Mapping[str, Consent] = field(default_factory=dict)
    """Purpose -> the customer's latest grant or revocation (engine.consent)."""
    profile: StoreProfile | None = None
    """Purchases, totals and membership tier, for store staff (engine.profile)."""
    feature_memory: FeatureMemory | None = None
    """What scoring remembers beyond this state (engine.features); None until a running
    bundle declares a score."""
    snapshots: Snapshots | None = None
    """Features as they were at recent predictions, kept until a label settles them
    (engine.scoring.learner); None for a customer who refused training. Written as
    ``feature_snapshots`` (:meth:`Snapshots.to_compact`); states written before that
    carry ``snapshots`` (:meth:`Snapshots.to_json`) and still load."""
    scores: Mapping[str, Score] = field(default_factory=dict)
    """Score name -> the latest prediction."""

    def with_scoring(
        self,
        feature_memory: FeatureMemory | None,
        snapshots: Snapshots | None,
        scores: Mapping[str, Score],
    ) -> CustomerState:
        """This state with new scoring fields (once per touchpoint with scores)."""
        return self._with(
            self.rule_memories, self.journey_memories, feature_memory, snapshots, scores
        )

    def with_memories(
        self,
        rule_memories: Mapping[str, RuleMemory],
        journey_memories: Mapping[str, JourneyMemory],
    ) -> CustomerState:
        """This state with new rule and journey memories (once per touchpoint that moves
        one)."""
        return self._with(
            rule_memories, journey_memories, self.feature_memory, self.snapshots, self.scores
        )

    def _with(
        self,
        rule_memories: Mapping[str, RuleMemory],
        journey_memories: Mapping[str, JourneyMemory],
        feature_memory: FeatureMemory | None,
        snapshots: Snapshots | None,
        scores: Mapping[str, Score],
    ) -> CustomerState:
        # Built field by field: ``dataclasses.replace`` costs about twice as much, and
        # this runs for most touchpoints (tests/unit/test_engine.py checks that every
        # other field is carried).
        return CustomerState(
            customer_id=self.customer_id,
            owner_rep_id=self.owner_rep_id,
            touchpoints=self.touchpoints,
            first_seen_at=self.first_seen_at,
            last_event_at=self.last_event_at,
            last_inbound_at=self.last_inbound_at,
            last_outbound_at=self.last_outbound_at,
            kind_counts=self.kind_counts,
            recent_event_ids=self.recent_event_ids,
            emitted=self.emitted,
            rule_memories=rule_memories,
            journey_memories=journey_memories,
            consents=self.consents,
            profile=self.profile,
            feature_memory=feature_memory,
            snapshots=snapshots,
            scores=scores,
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly form; times are microseconds since the Unix epoch. Consents
        appear only once the customer has some."""
        data: dict[str, Any] = {
            "customer_id": self.customer_id,
            "owner_rep_id": self.owner_rep_id,
            "touchpoints": self.touchpoints,
            "first_seen_at": _to_micros(self.first_seen_at),
            "last_event_at": _to_micros(self.last_event_at),
            "last_inbound_at": _to_micros(self.last_inbound_at),
            "last_outbound_at": _to_micros(self.last_outbound_at),
            "kind_counts": dict(self.kind_counts),
            "recent_event_ids": list(self.recent_event_ids),
            "emitted": list(self.emitted),
            "rule_memories": {k: m.to_json() for k, m in self.rule_memories.items()},
            "journey_memories": {k: m.to_json() for k, m in self.journey_memories.items()},
        }
        if self.consents:
            data["consents"] = {k: c.to_json() for k, c in self.consents.items()}
        if self.profile is not None:
            data["profile"] = self.profile.to_json()
        if self.feature_memory is not None:
            data["feature_memory"] = self.feature_memory.to_json()
        if self.snapshots is not None:
            data["feature_snapshots"] = self.snapshots.to_compact()
        if self.scores:
            data["scores"] = {k: s.to_json() for k, s in self.scores.items()}
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CustomerState:
        """Inverse of :meth:`to_dict`. Also reads the form written before memories had
        names: one ``rules`` mapping of positional lists, journeys under ``journey:<id>``."""
        rule_memories: dict[str, RuleMemory] = {}
        journey_memories: dict[str, JourneyMemory] = {}
        for key, memory in data.get("rules", {}).items():  # the earlier form
            if memory is None:
                continue
            if key.startswith(_OLD_JOURNEY_PREFIX):
                journey_id = key[len(_OLD_JOURNEY_PREFIX) :]
                journey_memories[journey_id] = JourneyMemory.from_json(journey_id, memory)
            else:
                rule_memories[key] = RuleMemory.from_json(key, memory)
        for key, memory in data.get("rule_memories", {}).items():
            rule_memories[key] = RuleMemory.from_json(key, memory)
        for key, memory in data.get("journey_memories", {}).items():
            journey_memories[key] = JourneyMemory.from_json(key, memory)
        feature_memory = snapshots = None
        if "feature_memory" in data:
            from .features import FeatureMemory

            feature_memory = FeatureMemory.from_json(data["feature_memory"])
        if "feature_snapshots" in data:
            from .scoring.learner import Snapshots

            snapshots = Snapshots.from_compact(data["feature_snapshots"])
        elif "snapshots" in data:  # the form written before snapshots were shared
            from .scoring.learner import Snapshots

            snapshots = Snapshots.from_json(data["snapshots"])
        return cls(
            customer_id=data["customer_id"],
            owner_rep_id=data.get("owner_rep_id"),
            touchpoints=data.get("touchpoints", 0),
            first_seen_at=_from_micros(data.get("first_seen_at")),
            last_event_at=_from_micros(data.get("last_event_at")),
            last_inbound_at=_from_micros(data.get("last_inbound_at")),
            last_outbound_at=_from_micros(data.get("last_outbound_at")),
            kind_counts=dict(data.get("kind_counts", {})),
            recent_event_ids=tuple(data.get("recent_event_ids", ())),
            emitted=tuple(data.get("emitted", ())),
            rule_memories=rule_memories,
            journey_memories=journey_memories,
            consents={k: Consent.from_json(v) for k, v in data.get("consents", {}).items()},
            profile=StoreProfile.from_json(data["profile"]) if "profile" in data else None,
            feature_memory=feature_memory,
            snapshots=snapshots,
            scores={k: Score.from_json(v) for k, v in data.get("scores", {}).items()},
        )


def _to_micros(moment: datetime | None) -> int | None:
    if moment is None:
        return None
    return (moment - _EPOCH) // timedelta(microseconds=1)


def _from_micros(micros: int | None) -> datetime | None:
    if micros is None:
        return None
    return _EPOCH + timedelta(microseconds=micros)


def explained_scores(state: CustomerState) -> dict[str, float]:
    """The customer's scores as an intervention's explanation carries them: ``<score>``
    the value, ``<score>.model_version`` the model version that gave it and
    ``<score>.contribution.<feature>`` what each top feature added to the log-odds."""
    out: dict[str, float] = {}
    for name, score in state.scores.items():
        out[name] = score.value
        out[f"{name}.model_version"] = float(score.model_version)
        for feature, _value, contribution in score.top:
            out[f"{name}.contribution.{feature}"] = contribution
    return out
