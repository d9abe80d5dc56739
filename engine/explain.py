"""Why a rule did or did not fire for a customer: the answer to "why didn't it fire?"."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from .conditions import EPOCH, Moment, micros
from .journeys import HOLDOUT, CompiledJourney
from .memories import JourneyMemory
from .rules import CompiledRule
from .state import CustomerState


@dataclass(frozen=True, slots=True)
class RuleStatus:
    rule_id: str
    version: int
    mode: str
    progress: str
    """Where the rule's condition stands, in words."""
    last_fired_at: datetime | None
    cooldown_until: datetime | None
    deadline: datetime | None


def explain(
    state: CustomerState | None, rules: Sequence[CompiledRule], at: datetime
) -> list[RuleStatus]:
    """Each rule's progress for this customer, as of event time ``at``."""
    if state is None:
        return []
    moment = Moment(state, micros(at))
    statuses = []
    for rule in rules:
        memory = state.rule_memories.get(rule.rule_id)
        condition_memory, last_fired = None, None
        if memory is not None:
            last_fired = memory.last_fired
            if memory.version == rule.version:
                condition_memory = memory.condition
        fired_at = _at(last_fired)
        cooldown_until = None
        if fired_at is not None and rule.cooldown and fired_at + rule.cooldown > at:
            cooldown_until = fired_at + rule.cooldown
        statuses.append(
            RuleStatus(
                rule_id=rule.rule_id,
                version=rule.version,
                mode=rule.mode.value,
                progress=rule.condition.describe(condition_memory, moment),
                last_fired_at=fired_at,
                cooldown_until=cooldown_until,
                deadline=_at(rule.deadline(memory)),
            )
        )
    return statuses


def _at(value: int | None) -> datetime | None:
    return None if value is None else EPOCH + timedelta(microseconds=value)


@dataclass(frozen=True, slots=True)
class JourneyStatus:
    journey_id: str
    variant: str | None
    """None until the customer first enters."""
    inside: bool
    progress: str
    deadline: datetime | None
    mode: str = "enforce"


def explain_journeys(
    state: CustomerState | None, journeys: Sequence[CompiledJourney], at: datetime
) -> list[JourneyStatus]:
    """Where the customer stands in each running journey, as of event time ``at``."""
    if state is None:
        return []
    statuses = []
    for journey in journeys:
        memory = state.journey_memories.get(journey.journey_id)
        if memory is None or memory.variant is None:
            statuses.append(
                JourneyStatus(
                    journey.journey_id, None, False, "never entered", None, journey.mode.value
                )
            )
            continue
        statuses.append(
            JourneyStatus(
                journey.journey_id,
                memory.variant,
                memory.inside,
                _progress(journey, state.customer_id, memory.variant, memory),
                _at(journey.deadline(memory)),
                journey.mode.value,
            )
        )
    return statuses


def _progress(
    journey: CompiledJourney, customer_id: str, variant: str, memory: JourneyMemory
) -> str:
    """Where an entered customer stands, in words."""
    if not memory.inside:
        return f"out of the journey (variant {variant} kept for re-entry)"
    index, follows = memory.steps_done, memory.follows
    since = _at(memory.waiting_since)
    waiting = f"waiting since {since.isoformat() if since else '-'}"
    if variant == HOLDOUT:
        if not journey.open_ended:
            return "in the holdout (gets nothing): waits for conversion or exit"
        if follows is None or not journey.path(HOLDOUT, follows):
            follows = journey.follows(customer_id)  # as the next touchpoint or timer will
        steps = journey.path(HOLDOUT, follows)
        if index >= len(steps):
            return f"in the holdout (gets nothing), following variant {follows}: leaves next"
        return (
            f"in the holdout (gets nothing), following variant {follows}: {index} of "
            f"{len(steps)} steps passed; next {steps[index].step_id!r}, {waiting}; "
            "leaves after the last step"
        )
    steps = journey.path(variant, None)
    if index < len(steps):
        return (
            f"in variant {variant}: {index} of {len(steps)} steps done; next "
            f"{steps[index].step_id!r}, {waiting}"
        )
    return f"in variant {variant}: all {len(steps)} steps done; waits for conversion or exit"
