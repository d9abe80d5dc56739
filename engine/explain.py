"""Why a rule did or did not fire for a customer: the answer to "why didn't it fire?"."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from .conditions import EPOCH, Moment, micros
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
