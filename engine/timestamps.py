"""Checks on event time that decide whether a touchpoint can be trusted."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from schemas.models import TouchpointEvent


@dataclass(frozen=True, slots=True)
class TimestampPolicy:
    """Bounds on ``occurred_at``; events outside them are rejected, not guessed at."""

    earliest: datetime = datetime(2000, 1, 1, tzinfo=UTC)
    max_clock_skew: timedelta = timedelta(minutes=5)


DEFAULT_TIMESTAMP_POLICY = TimestampPolicy()


def timestamp_problem(
    event: TouchpointEvent, now: datetime, policy: TimestampPolicy = DEFAULT_TIMESTAMP_POLICY
) -> str | None:
    """Why the event's timestamps cannot be used, or ``None`` when they are fine."""
    occurred = event.occurred_at
    if occurred < policy.earliest:
        return (
            f"occurred_at {occurred.isoformat()} is before the earliest accepted time "
            f"{policy.earliest.isoformat()}"
        )
    if occurred > now + policy.max_clock_skew:
        return (
            f"occurred_at {occurred.isoformat()} is in the future: expected at most "
            f"{policy.max_clock_skew} after now ({now.isoformat()})"
        )
    if event.received_at + policy.max_clock_skew < occurred:
        return (
            f"received_at {event.received_at.isoformat()} is before occurred_at "
            f"{occurred.isoformat()} by more than {policy.max_clock_skew}"
        )
    return None
