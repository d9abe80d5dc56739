"""The pure reducer: one touchpoint in, new state and interventions out."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime

from schemas.models import Direction, InterventionCommand, TouchpointEvent

from .rules import BUILTIN_RULES, Rule
from .state import RECENT_EVENT_IDS, CustomerState


def apply(
    state: CustomerState | None,
    event: TouchpointEvent,
    now: datetime,
    rules: Sequence[Rule] = BUILTIN_RULES,
) -> tuple[CustomerState, list[InterventionCommand]]:
    """Fold ``event`` into ``state`` and evaluate ``rules``.

    ``state`` is ``None`` for a customer never seen before. An event whose id
    the state has already seen returns the state unchanged (the same object)
    and no interventions, so redelivered events are harmless.
    """
    if state is None:
        state = CustomerState(customer_id=event.customer_id)
    elif event.event_id in state.recent_event_ids:
        return state, []

    at = event.occurred_at
    direction = event.direction
    counts = dict(state.kind_counts)
    counts[event.kind] = counts.get(event.kind, 0) + 1
    last_event_at = state.last_event_at
    updated = CustomerState(
        customer_id=state.customer_id,
        owner_rep_id=_owner(state, event),
        touchpoints=state.touchpoints + 1,
        first_seen_at=state.first_seen_at or at,
        last_event_at=at if last_event_at is None or at > last_event_at else last_event_at,
        last_inbound_at=_latest(state.last_inbound_at, at, direction is Direction.INBOUND),
        last_outbound_at=_latest(state.last_outbound_at, at, direction is Direction.OUTBOUND),
        kind_counts=counts,
        recent_event_ids=(*state.recent_event_ids[-(RECENT_EVENT_IDS - 1) :], event.event_id),
        streaks=state.streaks,
    )

    interventions: list[InterventionCommand] = []
    streaks = None
    for rule in rules:
        streak, fired = rule.step(updated, event, now)
        if streak is not None:
            if streaks is None:
                streaks = dict(updated.streaks)
            streaks[rule.rule_id] = streak
        if fired is not None:
            interventions.append(fired)
    if streaks is not None:
        updated = replace(updated, streaks=streaks)
    return updated, interventions


def _owner(state: CustomerState, event: TouchpointEvent) -> str | None:
    """The rep who owns the customer: the latest rep seen on an outbound or CRM touchpoint."""
    if event.rep_id is not None and (
        event.direction is Direction.OUTBOUND or state.owner_rep_id is None
    ):
        return event.rep_id
    return state.owner_rep_id


def _latest(previous: datetime | None, at: datetime, applies: bool) -> datetime | None:
    if not applies or (previous is not None and previous >= at):
        return previous
    return at
