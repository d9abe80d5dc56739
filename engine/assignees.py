"""Caps per assignee: at most N interventions per rep (or role queue) in any 24 hours.

Customers of one rep live on many partitions, so this is decided in a second,
assignee-keyed stage of the worker: the engine's decision here is pure, taking
what the assignee was sent and returning whether one more fits. Caps count in the
event time of the interventions' ``created_at`` (the first stage's processing time).
"""

from __future__ import annotations

from enum import StrEnum

from schemas.models import InterventionCommand

DAY = 86_400_000_000


def assignee_key(command: InterventionCommand) -> str:
    """Who receives the intervention: a rep id, a role queue, or nobody in particular."""
    if command.rep_id is not None:
        return f"rep:{command.rep_id}"
    if command.assignee_role is not None:
        return f"role:{command.assignee_role}"
    return "unassigned"


Sent = tuple[tuple[int, str], ...]
"""What an assignee was sent: (event time µs, intervention id), oldest first."""

REMEMBERED = 2_000
"""Interventions remembered per assignee when no cap bounds them (for repeats only)."""


class Admission(StrEnum):
    ADMITTED = "admitted"
    CAPPED = "capped"
    """The assignee already had ``cap`` interventions within 24 hours of this one."""
    REPEATED = "repeated"
    """This intervention id was admitted before (a record read twice): not sent again."""


def admit(sent: Sent, at: int, intervention_id: str, cap: int | None) -> tuple[Sent, Admission]:
    """(what to remember, the decision) for intervention ``intervention_id`` created at
    ``at`` (event time µs), under at most ``cap`` per assignee in any 24 hours.

    Each id is admitted at most once, so the stage is idempotent: an intervention read
    twice from the rep-candidates topic is sent once. Held-back ones are not remembered.
    """
    recent = tuple(entry for entry in sent if abs(at - entry[0]) < DAY)
    if any(entry[1] == intervention_id for entry in recent):
        return recent, Admission.REPEATED
    if cap is not None and len(recent) >= cap:
        return recent, Admission.CAPPED
    return (*recent[-(REMEMBERED - 1) :], (at, intervention_id)), Admission.ADMITTED
