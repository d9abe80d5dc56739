"""Caps per assignee: at most N interventions per rep (or role queue) in any 24 hours.

Customers of one rep live on many partitions, so this is decided in a second,
assignee-keyed stage of the worker: the engine's decision here is pure, taking
the times the assignee was sent interventions and returning whether one more fits.
"""

from __future__ import annotations

from schemas.models import InterventionCommand

DAY = 86_400_000_000


def assignee_key(command: InterventionCommand) -> str:
    """Who receives the intervention: a rep id, a role queue, or nobody in particular."""
    if command.rep_id is not None:
        return f"rep:{command.rep_id}"
    if command.assignee_role is not None:
        return f"role:{command.assignee_role}"
    return "unassigned"


def admit(sent: tuple[int, ...], at: int, cap: int) -> tuple[tuple[int, ...], bool]:
    """(times to remember, whether an intervention at ``at`` fits under ``cap``)."""
    recent = tuple(t for t in sent if abs(at - t) < DAY)
    if len(recent) >= cap:
        return recent, False
    return (*recent, at), True
