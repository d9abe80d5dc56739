"""A compiled rule: a condition over a customer's touchpoints and what to do when it holds."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from schemas.models import InterventionCommand

from .conditions import Condition, Moment
from .interventions import Template
from .memories import RuleMemory
from .state import explained_scores


class RuleMode(StrEnum):
    ENFORCE = "enforce"
    """Fire: emit the intervention."""
    SHADOW = "shadow"
    """Evaluate and record what would have fired; emit nothing."""


@dataclass(frozen=True, slots=True)
class Decision:
    """A rule fired. In shadow mode it is recorded, not emitted."""

    intervention: InterventionCommand
    shadow: bool
    capped: bool = False
    """The customer had reached the daily cap (``per_customer_per_day``, counted in event
    time): recorded, not emitted. The rule still counts as having fired: its cooldown has
    started. (The per-rep cap is decided later, by the worker's assignee stage, in
    processing time; the engine never marks a decision for it.)"""

    needs: tuple[str, ...] = ()
    """The consent purposes the intervention needs (its template's ``purposes``)."""
    suppressed: tuple[str, ...] = ()
    """The purposes of ``needs`` the customer has not granted: not emitted, and not
    counted against the customer's cap; the rule's cooldown has started all the same."""

    @property
    def emitted(self) -> bool:
        return not (self.shadow or self.capped or self.suppressed)


@dataclass(frozen=True, slots=True)
class CompiledRule:
    rule_id: str
    version: int
    description: str
    mode: RuleMode
    condition: Condition
    template: Template
    cooldown: timedelta = timedelta(0)
    """Per rule and customer, in event time (the touchpoint's ``occurred_at`` or the timer's
    deadline), either side of the last firing: a late touchpoint dated within the cooldown
    *before* the last firing does not fire either. Shadow firings and firings held back by
    a cap start it too, and it holds across versions of the bundle."""

    def step(
        self, memory: RuleMemory | None, moment: Moment, now: datetime
    ) -> tuple[RuleMemory | None, Decision | None]:
        """The rule's new memory for this customer, and its decision if it fired.

        A rule in cooldown keeps tracking its condition but does not fire. When a
        new version of the rule arrives, partial matches made under the old version
        are dropped (they may mean nothing to the new condition) while the time it
        last fired is kept, so cooldowns hold across edits. When nothing changed,
        ``memory`` itself is returned (no copies downstream).
        """
        if memory is None:
            condition_memory, last_fired = None, None
        else:
            condition_memory, last_fired = memory.condition, memory.last_fired
            if memory.version != self.version:
                condition_memory = None
        new_condition_memory, observation = self.condition.step(condition_memory, moment)
        if observation is None and new_condition_memory is condition_memory:
            return memory, None
        decision = None
        if observation is not None and (
            last_fired is None
            or not self.cooldown
            or abs(moment.at - last_fired) >= self.cooldown // _MICROSECOND
        ):
            event = moment.event
            command = self.template.render(
                rule_id=self.rule_id,
                rule_version=self.version,
                customer_id=moment.state.customer_id,
                rep_id=moment.state.owner_rep_id,
                matched=observation.matched,
                triggering_event_ids=observation.event_ids,
                triggered_at=moment.at_datetime,
                event_kind=event.kind if event is not None else None,
                now=now,
                scores=explained_scores(moment.state),
            )
            decision = Decision(
                command, shadow=self.mode is RuleMode.SHADOW, needs=self.template.purposes
            )
            last_fired = moment.at if last_fired is None else max(last_fired, moment.at)
        if new_condition_memory is None and last_fired is None:
            return None, decision
        return RuleMemory(new_condition_memory, last_fired, self.version), decision

    def deadline(self, memory: RuleMemory | None) -> int | None:
        """Event time (µs) at which a timer must evaluate this rule for the customer."""
        if memory is None or memory.version != self.version:
            return None
        return self.condition.deadline(memory.condition)


_MICROSECOND = timedelta(microseconds=1)
