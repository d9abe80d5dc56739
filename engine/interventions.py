"""Turning a matched rule into an intervention command."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from schemas.models import (
    Explanation,
    InterventionCommand,
    InterventionKind,
    Match,
    Priority,
    Severity,
)

INTERVENTION_NAMESPACE = uuid.UUID("0b9d1c52-6f0e-5c7a-9d7e-5b1f2a7c9e31")
"""Namespace of the name-based UUIDs used as intervention ids."""


def intervention_id(
    rule_id: str, rule_version: int, customer_id: str, triggering_event_ids: Sequence[str]
) -> str:
    """Deterministic id: the same rule, version, customer and events give the same id.

    A CRM can therefore drop an intervention it has already seen, whatever
    happened upstream.
    """
    name = "\x1f".join((rule_id, str(rule_version), customer_id, *triggering_event_ids))
    return str(uuid.uuid5(INTERVENTION_NAMESPACE, name))


@dataclass(frozen=True, slots=True)
class InterventionTemplate:
    """What to emit when a rule matches. ``{field}`` placeholders are filled in."""

    kind: InterventionKind
    title: str
    body: str
    due_in: timedelta
    priority: Priority = Priority.NORMAL
    severity: Severity | None = None
    assignee_role: str | None = None

    def render(
        self,
        *,
        rule_id: str,
        rule_version: int,
        customer_id: str,
        rep_id: str | None,
        matched: Sequence[Match],
        triggering_event_ids: Sequence[str],
        triggered_at: datetime,
        now: datetime,
        fields: dict[str, object],
    ) -> InterventionCommand:
        return InterventionCommand(
            intervention_id=intervention_id(
                rule_id, rule_version, customer_id, triggering_event_ids
            ),
            customer_id=customer_id,
            rep_id=rep_id,
            assignee_role=self.assignee_role,
            rule_id=rule_id,
            rule_version=rule_version,
            kind=self.kind,
            severity=self.severity,
            priority=self.priority,
            title=self.title.format_map(fields),
            body=self.body.format_map(fields),
            due_at=triggered_at + self.due_in,
            experiment=None,
            explanation=Explanation(
                matched=list(matched),
                scores={},
                triggering_event_ids=list(triggering_event_ids),
            ),
            created_at=now,
        )
