"""Wire contracts as pydantic v2 models.

Every model is frozen and rejects unknown fields. Timestamps must carry a timezone and
are normalised to UTC. The Avro schemas in ``schemas/avro/`` describe the same records;
``tests/unit/test_schemas.py`` keeps the two in sync.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    Strict,
    StringConstraints,
)

__all__ = [
    "AttributeValue",
    "Channel",
    "ComplianceVerdict",
    "ConsentChange",
    "DeadLetter",
    "Direction",
    "DraftReview",
    "Experiment",
    "Explanation",
    "GateFinding",
    "GateTemplate",
    "InterventionCommand",
    "InterventionKind",
    "Match",
    "MessageDraft",
    "PolicyOutcome",
    "Priority",
    "ReviewAction",
    "Severity",
    "TouchpointBatch",
    "TouchpointChecks",
    "TouchpointEvent",
    "VerdictKind",
    "touchpoint_from_avro",
]

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
MAX_BATCH_EVENTS = 10_000
ID_MAX_LENGTH = 128
NAME_MAX_LENGTH = 64
TEXT_MAX_LENGTH = 20_000
CODE_PATTERN = r"^[a-z][a-z0-9_]{0,63}$"


class Channel(StrEnum):
    CHAT = "chat"
    EMAIL = "email"
    MEETING = "meeting"
    POS = "pos"
    CALL = "call"
    WEB = "web"
    PRODUCT = "product"
    SUPPORT = "support"
    CRM = "crm"
    EXTERNAL = "external"


class Direction(StrEnum):
    INBOUND = "inbound"
    OUTBOUND = "outbound"
    NONE = "none"


class InterventionKind(StrEnum):
    TASK = "task"
    CONTENT_PUSH = "content_push"
    ALERT = "alert"
    ESCALATION = "escalation"
    BLOCK = "block"
    TRAINING = "training"


class Severity(StrEnum):
    BLUE = "blue"
    YELLOW = "yellow"
    RED = "red"


class Priority(StrEnum):
    LOW = "low"
    NORMAL = "normal"
    HIGH = "high"
    URGENT = "urgent"


def _require_utc(value: datetime) -> datetime:
    if value.tzinfo is UTC:
        return value
    if value.tzinfo is None or value.utcoffset() is None:
        msg = (
            "timezone required: expected a tz-aware datetime "
            f"(e.g. 2024-05-01T09:30:00Z), found naive {value.isoformat()}"
        )
        raise ValueError(msg)
    return value.astimezone(UTC)


#: A tz-aware datetime, normalised to UTC. Naive datetimes are rejected.
UtcDatetime = Annotated[datetime, AfterValidator(_require_utc)]

Id = Annotated[str, StringConstraints(min_length=1, max_length=ID_MAX_LENGTH)]
ShortName = Annotated[str, StringConstraints(min_length=1, max_length=NAME_MAX_LENGTH)]
Code = Annotated[str, StringConstraints(pattern=CODE_PATTERN)]

#: Attribute values keep their Python type: ``True`` stays a bool, ``1`` an int and
#: ``1.0`` a float. Members are strict and tried in this order.
AttributeValue = Annotated[
    Annotated[bool, Strict()]
    | Annotated[int, Strict()]
    | Annotated[float, Strict()]
    | Annotated[str, Strict()],
    Field(union_mode="left_to_right"),
]
AttributeKey = Annotated[str, StringConstraints(min_length=1, max_length=NAME_MAX_LENGTH)]


def _ints_fit_avro_long(attributes: dict[str, AttributeValue]) -> dict[str, AttributeValue]:
    # Checked here, not on the int member: a strict float accepts an out-of-range int and
    # the union would silently turn it into a float.
    for key, value in attributes.items():
        if type(value) is int and not INT64_MIN <= value <= INT64_MAX:
            msg = (
                f"attribute {key!r}: expected an integer within -2**63..2**63-1 (Avro long), "
                f"found {value}"
            )
            raise ValueError(msg)
    return attributes


Attributes = Annotated[dict[AttributeKey, AttributeValue], AfterValidator(_ints_fit_avro_long)]


class _Contract(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class TouchpointEvent(_Contract):
    """Something that happened around a customer, keyed by ``customer_id``."""

    event_id: Id
    customer_id: Id
    occurred_at: UtcDatetime
    received_at: UtcDatetime
    channel: Channel
    kind: Code
    direction: Direction
    rep_id: Id | None = None
    contact_id: Id | None = None
    text: Annotated[str, StringConstraints(max_length=TEXT_MAX_LENGTH)] | None = None
    attributes: Attributes = Field(default_factory=dict)
    source: ShortName
    industry: ShortName | None = None


@dataclass(frozen=True, slots=True)
class TouchpointChecks:
    """What TouchpointEvent's validators require, as plain checks on a decoded Avro record.

    ``compile()`` gives the decoders' fast path: a function that builds the event from
    a record without running pydantic, or returns None when it cannot vouch for the
    record (the caller then validates it, which accepts it or says why not). The
    defaults are the model's rules; a test compiles weakened copies to show that it
    notices each rule missing.
    """

    id_length: tuple[int, int] = (1, ID_MAX_LENGTH)
    """event_id, customer_id, rep_id, contact_id."""
    name_length: tuple[int, int] = (1, NAME_MAX_LENGTH)
    """source and industry."""
    text_max_length: int = TEXT_MAX_LENGTH
    kind_pattern: str = CODE_PATTERN
    attribute_key_length: tuple[int, int] = (1, NAME_MAX_LENGTH)
    attribute_long_range: tuple[int, int] = (INT64_MIN, INT64_MAX)
    finite_floats: bool = True
    """allow_inf_nan=False: NaN and infinities are refused."""
    utc_timestamps: bool = True
    """Timestamps already in UTC (as fastavro reads timestamp-micros); others are left
    to the validator, which refuses naive ones and converts the rest."""
    exact_types: bool = True
    """Strings, datetimes and attribute values of exactly the types the model keeps."""
    exact_fields: bool = True
    """The record holds exactly the model's fields (extra="forbid")."""
    enum_members: bool = True
    """channel and direction become Channel and Direction members."""

    def compile(self) -> Callable[[dict[str, Any]], TouchpointEvent | None]:
        id_min, id_max = self.id_length
        name_min, name_max = self.name_length
        text_max = self.text_max_length
        key_min, key_max = self.attribute_key_length
        long_min, long_max = self.attribute_long_range
        finite = self.finite_floats
        utc = self.utc_timestamps
        strict = self.exact_types
        exact = self.exact_fields
        kind_match = re.compile(self.kind_pattern.removeprefix("^").removesuffix("$")).fullmatch
        kinds: set[str] = set()  # kinds seen to match, bounded
        channels: dict[object, object] = {m.value: m for m in Channel}
        directions: dict[object, object] = {m.value: m for m in Direction}
        if not self.enum_members:
            channels = {m.value: m.value for m in Channel}
            directions = {m.value: m.value for m in Direction}
        field_count = len(TouchpointEvent.model_fields)
        field_names = frozenset(TouchpointEvent.model_fields)
        isfinite = math.isfinite
        new = object.__new__
        set_attribute = object.__setattr__
        model = TouchpointEvent

        def build(record: dict[str, Any]) -> TouchpointEvent | None:
            if exact and len(record) != field_count:
                return None
            try:
                event_id = record["event_id"]
                customer_id = record["customer_id"]
                occurred_at = record["occurred_at"]
                received_at = record["received_at"]
                kind = record["kind"]
                rep_id = record["rep_id"]
                contact_id = record["contact_id"]
                text = record["text"]
                attributes = record["attributes"]
                source = record["source"]
                industry = record["industry"]
                channel = channels.get(record["channel"])
                direction = directions.get(record["direction"])
            except (KeyError, TypeError):  # a missing field, an unhashable enum value
                return None
            if channel is None or direction is None:
                return None
            if strict and not (
                type(event_id) is str
                and type(customer_id) is str
                and type(kind) is str
                and type(source) is str
                and type(occurred_at) is datetime
                and type(received_at) is datetime
                and type(attributes) is dict
                and (rep_id is None or type(rep_id) is str)
                and (contact_id is None or type(contact_id) is str)
                and (text is None or type(text) is str)
                and (industry is None or type(industry) is str)
            ):
                return None
            if not (
                id_min <= len(event_id) <= id_max
                and id_min <= len(customer_id) <= id_max
                and (rep_id is None or id_min <= len(rep_id) <= id_max)
                and (contact_id is None or id_min <= len(contact_id) <= id_max)
                and name_min <= len(source) <= name_max
                and (industry is None or name_min <= len(industry) <= name_max)
                and (text is None or len(text) <= text_max)
            ):
                return None
            if utc and not (occurred_at.tzinfo is UTC and received_at.tzinfo is UTC):
                return None
            if kind not in kinds:
                if kind_match(kind) is None:
                    return None
                if len(kinds) < 4096:
                    kinds.add(kind)
            for key, value in attributes.items():
                if (strict and type(key) is not str) or not key_min <= len(key) <= key_max:
                    return None
                value_type = type(value)
                if value_type is float:
                    if finite and not isfinite(value):
                        return None
                elif value_type is int:
                    if not long_min <= value <= long_max:
                        return None
                elif strict and value_type is not str and value_type is not bool:
                    return None
            event = new(model)
            set_attribute(
                event,
                "__dict__",
                {
                    "event_id": event_id,
                    "customer_id": customer_id,
                    "occurred_at": occurred_at,
                    "received_at": received_at,
                    "channel": channel,
                    "kind": kind,
                    "direction": direction,
                    "rep_id": rep_id,
                    "contact_id": contact_id,
                    "text": text,
                    "attributes": attributes,
                    "source": source,
                    "industry": industry,
                },
            )
            set_attribute(event, "__pydantic_fields_set__", set(field_names))
            set_attribute(event, "__pydantic_extra__", None)
            set_attribute(event, "__pydantic_private__", None)
            return event

        return build


class TouchpointBatch(_Contract):
    """Many events of one Kafka partition in one record (the connectors' fast path)."""

    events: Annotated[list[TouchpointEvent], Field(min_length=1, max_length=MAX_BATCH_EVENTS)]


class Match(_Contract):
    condition: str
    observed: str


class Explanation(_Contract):
    matched: list[Match]
    scores: dict[str, float] = Field(default_factory=dict)
    triggering_event_ids: list[str]


class Experiment(_Contract):
    experiment_id: Id
    variant: ShortName


class InterventionCommand(_Contract):
    """What a CRM should do for a customer, and why."""

    intervention_id: Id
    customer_id: Id
    rep_id: Id | None = None
    assignee_role: ShortName | None = None
    rule_id: Id
    rule_version: Annotated[int, Field(ge=0, le=INT32_MAX)]
    kind: InterventionKind
    severity: Severity | None = None
    priority: Priority = Priority.NORMAL
    title: Annotated[str, StringConstraints(min_length=1, max_length=500)]
    body: Annotated[str, StringConstraints(max_length=20_000)]
    due_at: UtcDatetime | None = None
    experiment: Experiment | None = None
    explanation: Explanation
    created_at: UtcDatetime


class DeadLetter(_Contract):
    """Input that could not be processed, with where it came from.

    ``raw_value`` holds the rejected value, or only its first bytes when it was
    longer than the worker keeps (``raw_length`` and ``raw_sha256`` describe the
    whole); ``raw_key`` is cut the same way.
    """

    source_topic: Annotated[str, StringConstraints(min_length=1, max_length=249)]
    partition: Annotated[int, Field(ge=0, le=INT32_MAX)]
    offset: Annotated[int, Field(ge=0, le=INT64_MAX)]
    reason: Code
    detail: str
    raw_key: bytes | None = None
    raw_value: bytes
    failed_at: UtcDatetime
    raw_length: Annotated[int, Field(ge=0, le=INT64_MAX)] | None = None
    raw_sha256: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")] | None = None


# --- consent and the compliance gate ------------------------------------------------

Text = Annotated[str, StringConstraints(max_length=20_000)]


class ConsentChange(_Contract):
    """A customer granted or revoked one purpose (topic ``consents``, key customer_id).

    The newest ``occurred_at`` per customer and purpose wins; the same ``change_id`` twice
    changes nothing."""

    change_id: Id
    customer_id: Id
    purpose: Code
    granted: bool
    occurred_at: UtcDatetime
    source: ShortName
    segment: ShortName | None = None
    """The customer's segment (e.g. ``retail``, ``enterprise``): consent completion is
    reported per segment."""


class MessageDraft(_Contract):
    """A message a rep is about to send (topic ``message-drafts``, key customer_id)."""

    draft_id: Id
    customer_id: Id
    rep_id: Id
    text: Text
    kind: Code = "message"
    """``message``, ``email``, ``visit_report``: policies may require content per kind."""
    channel: Channel = Channel.CHAT
    created_at: UtcDatetime
    sender_contacts: list[Annotated[str, StringConstraints(max_length=320)]] = Field(
        default_factory=list, max_length=20
    )
    """The rep's own phone numbers and addresses: never flagged as personal data."""
    recipient_contacts: list[Annotated[str, StringConstraints(max_length=320)]] = Field(
        default_factory=list, max_length=20
    )
    """The recipient's own contact details: never flagged as a third party's data."""


class VerdictKind(StrEnum):
    ALLOW = "allow"
    REMIND = "remind"
    CONFIRM = "confirm"
    BLOCK = "block"


class GateFinding(_Contract):
    category: Code
    term: Annotated[str, StringConstraints(max_length=500)]
    start: Annotated[int, Field(ge=0, le=INT32_MAX)]
    end: Annotated[int, Field(ge=0, le=INT32_MAX)]
    tier: VerdictKind
    reason: Annotated[str, StringConstraints(max_length=1_000)]
    excerpt: Annotated[str, StringConstraints(max_length=1_000)]
    """The matched text as written, personal data masked."""


class GateTemplate(_Contract):
    template_id: Id
    text: Annotated[str, StringConstraints(max_length=5_000)]


class PolicyOutcome(_Contract):
    policy_id: Id
    policy_version: Annotated[int, Field(ge=1, le=INT32_MAX)]
    mode: Annotated[str, StringConstraints(pattern=r"^(test|notify|enforce)$")]
    verdict: VerdictKind
    """What the policy decided, before its mode applied."""
    reason: Annotated[str, StringConstraints(max_length=2_000)]
    findings: list[GateFinding] = Field(default_factory=list)
    missing_topics: list[Annotated[str, StringConstraints(max_length=128)]] = Field(
        default_factory=list
    )
    templates: list[GateTemplate] = Field(default_factory=list)


class ComplianceVerdict(_Contract):
    """What the gate answered for a draft (topic ``compliance-verdicts``, key customer_id).

    Holds no raw message text: ``masked_text`` has personal data masked."""

    draft_id: Id
    customer_id: Id
    rep_id: Id
    kind: Code
    verdict: VerdictKind
    """What the rep was told, after the policies' modes."""
    severity: Severity | None = None
    policies: list[PolicyOutcome] = Field(default_factory=list)
    masked_text: Text
    decided_at: UtcDatetime
    decided_by: ShortName
    """``gate:<instance>`` when the HTTP gate answered, ``worker`` for a draft read from
    the message-drafts topic."""


class ReviewAction(StrEnum):
    CONFIRM = "confirm"
    """A manager confirms a draft that needed confirmation: it may be sent."""
    OVERRIDE = "override"
    """A manager lets a blocked draft through, with a note."""
    REJECT = "reject"
    """A manager refuses the draft."""


class DraftReview(_Contract):
    """A manager's decision on a draft (topic ``message-drafts``, key customer_id)."""

    review_id: Id
    draft_id: Id
    customer_id: Id
    reviewer_id: Id
    action: ReviewAction
    note: Annotated[str, StringConstraints(max_length=2_000)] = ""
    reviewed_at: UtcDatetime


touchpoint_from_avro = TouchpointChecks().compile()
"""A TouchpointEvent from a record as fastavro reads it, exactly as
``TouchpointEvent.model_validate(record)`` would return it; None when the record needs the
validator (it may be invalid, or of types the Avro schema does not produce). The event
keeps the record's attributes dict."""
