"""Why a rule did or did not fire for a customer: the answer to "why didn't it fire?"."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from .conditions import EPOCH, Moment, micros
from .journeys import HOLDOUT, CompiledJourney
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
        memory: Any = state.rules.get(rule.rule_id)
        condition_memory, last_fired, version = memory if memory else (None, None, rule.version)
        if version != rule.version:
            condition_memory = None
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
        memory: Any = state.rules.get(journey.key)
        if memory is None or memory[0] is None:
            statuses.append(
                JourneyStatus(
                    journey.journey_id, None, False, "never entered", None, journey.mode.value
                )
            )
            continue
        variant, inside, index, started = memory[0], bool(memory[1]), memory[2], memory[3]
        follows = memory[10] if len(memory) > 10 else None
        statuses.append(
            JourneyStatus(
                journey.journey_id,
                variant,
                inside,
                _progress(journey, state.customer_id, variant, inside, index, started, follows),
                _at(journey.deadline(memory)),
                journey.mode.value,
            )
        )
    return statuses


def _progress(
    journey: CompiledJourney,
    customer_id: str,
    variant: str,
    inside: bool,
    index: int,
    started: int,
    follows: str | None,
) -> str:
    """Where an entered customer stands, in words."""
    if not inside:
        return f"out of the journey (variant {variant} kept for re-entry)"
    since = _at(started)
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
