"""Features for scoring: a customer's state (and the touchpoint in hand) as a flat mapping.

:func:`features` reads a :class:`CustomerState` and a :class:`FeatureMemory` and returns
``{name: float | str}``; numbers are scaled by the model, strings are one-hot encoded.
A feature that has no value yet (no reply ever, no meeting ever) is left out rather than
set to 0, so the model tells "never" from "zero". Every name is defined in
docs/scoring.md.

:class:`FeatureMemory` keeps what :class:`CustomerState` does not: counts per channel,
amounts, reply latency, talk-time share, product usage, recent sentiment, the stage and
the declared profile attributes. It is folded with :func:`observe`, one touchpoint at a
time, by whoever folds the state, and stored beside it; it is bounded whatever the
customer does.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from schemas.models import Direction, TouchpointEvent

from .conditions import micros
from .state import CustomerState

FeatureValue = float | str
Features = dict[str, FeatureValue]

SENTIMENTS_KEPT = 5
"""Support-message sentiments remembered per customer (the newest win)."""
PROFILE_VALUE_CHARS = 64
"""A string profile attribute is cut to this many characters (one-hot categories stay few)."""
PROFILE_KEYS_MAX = 64
"""Profile attributes remembered per customer (a scoring section declares at most this)."""

_DAY = 86_400_000_000
_HOUR = 3_600_000_000
_WEEK = 7 * _DAY

BASE_FEATURES = (
    "touchpoints",
    "touchpoints_per_week",
    "days_since_first_seen",
    "days_since_last_event",
    "days_since_last_inbound",
    "days_since_last_outbound",
    "amount_total",
    "amount_mean",
    "purchases",
    "reply_latency_hours",
    "replies",
    "unanswered_outbound",
    "meetings",
    "customer_talk_share",
    "video_seconds",
    "videos",
    "sandbox_errors",
    "support_sentiment",
    "stage",
    "days_in_stage",
    "event_kind",
    "event_channel",
)
"""Every feature with a fixed name; ``count.<kind>``, ``channel.<channel>`` and
``profile.<attribute>`` come on top (families, see :data:`FAMILIES`)."""
FAMILIES = ("count", "channel", "profile")
"""Prefixes of the feature families: ``count.<kind>``, ``channel.<channel>``,
``profile.<attribute>``."""
CATEGORICAL = frozenset({"stage", "event_kind", "event_channel"})
"""Fixed-name features whose value is a string (profile attributes may be either)."""


@dataclass(frozen=True, slots=True)
class FeatureMemory:
    """What scoring needs about one customer beyond :class:`CustomerState`.

    Times are µs since the Unix epoch (event time)."""

    channel_counts: Mapping[str, int] = field(default_factory=dict)
    amount_total: float = 0.0
    purchases: int = 0
    """Touchpoints that carried a numeric ``amount`` attribute."""
    reply_latency_total: int = 0
    """Sum of reply latencies, µs: from the first unanswered outbound to the next inbound."""
    replies: int = 0
    awaiting_since: int | None = None
    """Event time of the first outbound touchpoint not yet answered, if any."""
    unanswered_outbound: int = 0
    meetings: int = 0
    """``meeting_held`` touchpoints that carried ``customer_talk_share``."""
    talk_share_total: float = 0.0
    video_seconds: float = 0.0
    videos: int = 0
    sandbox_errors: int = 0
    sentiments: tuple[float, ...] = ()
    """The last :data:`SENTIMENTS_KEPT` ``sentiment`` values of support touchpoints."""
    stage: str | None = None
    stage_since: int | None = None
    profile: Mapping[str, FeatureValue] = field(default_factory=dict)
    """Declared profile attribute -> its latest value (by event time)."""
    profile_at: Mapping[str, int] = field(default_factory=dict)
    """Declared profile attribute -> event time of that value."""

    def to_json(self) -> dict[str, Any]:
        return {
            "channel_counts": dict(self.channel_counts),
            "amount_total": self.amount_total,
            "purchases": self.purchases,
            "reply_latency_total": self.reply_latency_total,
            "replies": self.replies,
            "awaiting_since": self.awaiting_since,
            "unanswered_outbound": self.unanswered_outbound,
            "meetings": self.meetings,
            "talk_share_total": self.talk_share_total,
            "video_seconds": self.video_seconds,
            "videos": self.videos,
            "sandbox_errors": self.sandbox_errors,
            "sentiments": list(self.sentiments),
            "stage": self.stage,
            "stage_since": self.stage_since,
            "profile": dict(self.profile),
            "profile_at": dict(self.profile_at),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> FeatureMemory:
        """Inverse of :meth:`to_json`; raises ValueError naming the field that is wrong."""
        if not isinstance(data, Mapping):
            raise ValueError(f"feature memory: expected a mapping, found {type(data).__name__}")
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"feature memory: expected fields of {sorted(known)}, found {unknown}")
        values = dict(data)
        if "sentiments" in values:
            values["sentiments"] = tuple(values["sentiments"])
        return cls(**values)


def observe(
    memory: FeatureMemory | None,
    event: TouchpointEvent,
    profile_keys: Iterable[str] = (),
) -> FeatureMemory:
    """``memory`` with ``event`` folded in. Call it once per touchpoint the state accepted
    (the reducer returns the same state object for a repeat; skip those)."""
    m = memory if memory is not None else FeatureMemory()
    at = micros(event.occurred_at)
    attributes = event.attributes
    channels = dict(m.channel_counts)
    channels[event.channel.value] = channels.get(event.channel.value, 0) + 1

    amount_total, purchases = m.amount_total, m.purchases
    amount = _number(attributes.get("amount"))
    if amount is not None:
        amount_total += amount
        purchases += 1

    awaiting, unanswered = m.awaiting_since, m.unanswered_outbound
    latency_total, replies = m.reply_latency_total, m.replies
    if event.direction is Direction.OUTBOUND:
        if awaiting is None:
            awaiting = at
        unanswered += 1
    elif event.direction is Direction.INBOUND:
        if awaiting is not None and at >= awaiting:
            latency_total += at - awaiting
            replies += 1
        awaiting, unanswered = None, 0

    meetings, talk_total = m.meetings, m.talk_share_total
    share = _number(attributes.get("customer_talk_share"))
    if event.kind == "meeting_held" and share is not None and 0.0 <= share <= 1.0:
        meetings += 1
        talk_total += share

    video_seconds, videos = m.video_seconds, m.videos
    watched = _number(attributes.get("watched_seconds"))
    if event.kind == "video_watched" and watched is not None and watched >= 0:
        video_seconds += watched
        videos += 1

    sandbox_errors = m.sandbox_errors + (event.kind == "sandbox_error")

    sentiments = m.sentiments
    sentiment = _number(attributes.get("sentiment"))
    if sentiment is not None and (event.channel.value == "support" or event.kind == "support_chat"):
        sentiments = (*sentiments[-(SENTIMENTS_KEPT - 1) :], sentiment)

    stage, stage_since = m.stage, m.stage_since
    new_stage = attributes.get("stage")
    if (
        event.kind == "stage_changed"
        and isinstance(new_stage, str)
        and (stage_since is None or at >= stage_since)
    ):
        if new_stage != stage:
            stage_since = at
        stage = new_stage[:PROFILE_VALUE_CHARS]

    profile: Mapping[str, FeatureValue] = m.profile
    profile_at: Mapping[str, int] = m.profile_at
    for key in profile_keys:
        value = _profile_value(attributes[key]) if key in attributes else None
        if value is None or m.profile_at.get(key, -1) > at:
            continue
        if key not in profile and len(profile) >= PROFILE_KEYS_MAX:
            continue
        profile = {**profile, key: value}
        profile_at = {**profile_at, key: at}

    return FeatureMemory(
        channel_counts=channels,
        amount_total=amount_total,
        purchases=purchases,
        reply_latency_total=latency_total,
        replies=replies,
        awaiting_since=awaiting,
        unanswered_outbound=unanswered,
        meetings=meetings,
        talk_share_total=talk_total,
        video_seconds=video_seconds,
        videos=videos,
        sandbox_errors=sandbox_errors,
        sentiments=sentiments,
        stage=stage,
        stage_since=stage_since,
        profile=profile,
        profile_at=profile_at,
    )


def features(
    state: CustomerState,
    memory: FeatureMemory | None,
    at: datetime,
    event: TouchpointEvent | None = None,
) -> Features:
    """The customer's features at event time ``at`` (the touchpoint's time, or the time a
    query asks about). Pure: reads no clock; the same inputs give the same mapping."""
    now = micros(at)
    m = memory if memory is not None else FeatureMemory()
    out: Features = {"touchpoints": float(state.touchpoints)}
    if state.first_seen_at is not None:
        age = max(0, now - micros(state.first_seen_at))
        out["days_since_first_seen"] = age / _DAY
        out["touchpoints_per_week"] = state.touchpoints / max(1.0, age / _WEEK)
    for name, moment in (
        ("days_since_last_event", state.last_event_at),
        ("days_since_last_inbound", state.last_inbound_at),
        ("days_since_last_outbound", state.last_outbound_at),
    ):
        if moment is not None:
            out[name] = max(0, now - micros(moment)) / _DAY
    out["purchases"] = float(m.purchases)
    out["amount_total"] = m.amount_total
    if m.purchases:
        out["amount_mean"] = m.amount_total / m.purchases
    out["replies"] = float(m.replies)
    if m.replies:
        out["reply_latency_hours"] = m.reply_latency_total / m.replies / _HOUR
    out["unanswered_outbound"] = float(m.unanswered_outbound)
    out["meetings"] = float(m.meetings)
    if m.meetings:
        out["customer_talk_share"] = m.talk_share_total / m.meetings
    out["video_seconds"] = m.video_seconds
    out["videos"] = float(m.videos)
    out["sandbox_errors"] = float(m.sandbox_errors)
    if m.sentiments:
        out["support_sentiment"] = sum(m.sentiments) / len(m.sentiments)
    if m.stage is not None:
        out["stage"] = m.stage
        if m.stage_since is not None:
            out["days_in_stage"] = max(0, now - m.stage_since) / _DAY
    if event is not None:
        out["event_kind"] = event.kind
        out["event_channel"] = event.channel.value
    for kind, count in state.kind_counts.items():
        out[f"count.{kind}"] = float(count)
    for channel, count in m.channel_counts.items():
        out[f"channel.{channel}"] = float(count)
    for key, value in m.profile.items():
        out[f"profile.{key}"] = value
    return out


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _profile_value(value: object) -> FeatureValue | None:
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, str):
        return value[:PROFILE_VALUE_CHARS]
    return _number(value)
