"""Rules: a condition over a customer's touchpoints and what to do when it holds.

A rule keeps its partial match in the customer's state (here: a streak), steps
it with every touchpoint and returns an intervention when the condition holds.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from schemas.models import InterventionCommand, InterventionKind, Match, Priority, TouchpointEvent

from .errors import RuleDefinitionError
from .interventions import InterventionTemplate
from .predicates import Predicate, all_of, field_equals, field_in, is_inbound
from .state import CustomerState, Streak


@dataclass(frozen=True, slots=True)
class StreakRule:
    """Fires once when ``length`` touchpoints matching ``counts`` arrive in a row.

    A touchpoint matching ``resets`` breaks the streak; touchpoints matching
    neither leave it as it is. After firing, the rule stays quiet until the
    streak is broken, so one unanswered run gives one intervention.
    """

    rule_id: str
    version: int
    counts: Predicate
    resets: Predicate
    length: int
    template: InterventionTemplate

    def __post_init__(self) -> None:
        if self.length < 1:
            raise RuleDefinitionError(
                f"rule {self.rule_id!r}: streak length must be at least 1, got {self.length}"
            )
        if self.version < 1:
            raise RuleDefinitionError(
                f"rule {self.rule_id!r}: version must be at least 1, got {self.version}"
            )

    def step(
        self, state: CustomerState, event: TouchpointEvent, now: datetime
    ) -> tuple[Streak | None, InterventionCommand | None]:
        """The rule's new partial match for this customer, and what fired (if anything).

        Returns ``None`` as the streak when it did not change.
        """
        streak = state.streaks.get(self.rule_id)
        if self.resets(event):
            if streak is None or streak.length == 0:
                return None, None
            return Streak(), None
        if not self.counts(event):
            return None, None
        streak = streak or Streak()
        ids = (*streak.event_ids, event.event_id)[-self.length :]
        grown = Streak(streak.length + 1, ids, streak.fired)
        if grown.fired or grown.length < self.length:
            return grown, None
        intervention = self.template.render(
            rule_id=self.rule_id,
            rule_version=self.version,
            customer_id=state.customer_id,
            rep_id=state.owner_rep_id,
            matched=[
                Match(condition=f"{self.counts.description} in a row", observed=str(grown.length)),
                Match(condition=f"no {self.resets.description} since", observed="true"),
            ],
            triggering_event_ids=ids,
            triggered_at=event.occurred_at,
            now=now,
            fields={"customer_id": state.customer_id, "streak": grown.length},
        )
        return replace(grown, fired=True), intervention


Rule = StreakRule
"""Every rule kind the engine evaluates (the rule language adds more)."""

OUTBOUND_MESSAGE_KINDS = ("message_sent", "email_sent")

UNANSWERED_OUTBOUND = StreakRule(
    rule_id="builtin.unanswered-outbound",
    version=1,
    counts=all_of(
        field_equals("direction", "outbound"),
        field_in("kind", OUTBOUND_MESSAGE_KINDS),
    ),
    resets=is_inbound(),
    length=3,
    template=InterventionTemplate(
        kind=InterventionKind.TASK,
        title="Change approach: {streak} messages to {customer_id} without a reply",
        body=(
            "The last {streak} outbound messages to customer {customer_id} got no reply. "
            "Stop sending more of the same; call, or try a different channel or content."
        ),
        due_in=timedelta(hours=24),
        priority=Priority.NORMAL,
    ),
)
"""Three outbound messages in a row with no inbound reply: a task for the owning rep."""

BUILTIN_RULES: tuple[Rule, ...] = (UNANSWERED_OUTBOUND,)
