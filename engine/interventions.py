"""Turning a rule that fired into an intervention command."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import ClassVar

from pydantic import ValidationError
from schemas.models import (
    Experiment,
    Explanation,
    InterventionCommand,
    InterventionKind,
    Match,
    Priority,
    Severity,
)

from .conditions import MAX_EXPLAINED_EVENTS
from .errors import EngineError
from .limits import (
    BODY_MAX,
    ID_MAX,
    KIND_MAX,
    LATEST_EVENT_TIME,
    SHORT_NAME_MAX,
    TITLE_MAX,
    TOUCHPOINT_TEXT_MAX,
)

ROLE_MAX = SHORT_NAME_MAX
"""Limits of the InterventionCommand contract; rendered text longer than the title and body
limits is clipped."""

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
    return uuid5_text(name)


_NAMESPACE_BYTES = INTERVENTION_NAMESPACE.bytes


def uuid5_text(name: str) -> str:
    """``str(uuid.uuid5(INTERVENTION_NAMESPACE, name))`` without building a UUID object
    (one per intervention on the hot path): SHA-1 of namespace and name, version 5 and
    the RFC 4122 variant set in place, formatted 8-4-4-4-12."""
    digest = bytearray(
        hashlib.sha1(_NAMESPACE_BYTES + name.encode(), usedforsecurity=False).digest()[:16]
    )
    digest[6] = (digest[6] & 0x0F) | 0x50
    digest[8] = (digest[8] & 0x3F) | 0x80
    h = digest.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


@dataclass(frozen=True, slots=True)
class Template:
    """What to emit when a rule fires. ``{field}`` placeholders (see FIELDS) are filled in."""

    FIELDS: ClassVar[tuple[str, ...]] = (
        "customer_id",
        "rep_id",
        "rule_id",
        "observed",
        "event_kind",
    )

    kind: InterventionKind
    title: str
    body: str
    due_in: timedelta
    priority: Priority = Priority.NORMAL
    severity: Severity | None = None
    assignee_role: str | None = None
    """``None`` assigns the customer's owning rep; ``manager`` that rep's manager (from
    ``managers``); otherwise a role such as ``pharmacist``."""
    to_manager: bool = False
    """Assign the owning rep's manager (from ``managers``) instead."""
    managers: Mapping[str, str] = field(default_factory=dict, compare=False)
    purposes: tuple[str, ...] = ()
    """Consent purposes the intervention needs; it is suppressed for a customer who has
    not granted every one of them (engine.consent)."""

    def render(
        self,
        *,
        rule_id: str,
        rule_version: int,
        customer_id: str,
        rep_id: str | None,
        matched: Sequence[tuple[str, str]],
        triggering_event_ids: Sequence[str],
        triggered_at: datetime,
        event_kind: str | None,
        now: datetime,
        experiment: tuple[str, str] | None = None,
        scores: dict[str, float] | None = None,
    ) -> InterventionCommand:
        """The command, with ``scores`` (engine.state.explained_scores of the customer's
        state, a dict of its own: the explanation's validation copies it anyway) in its
        explanation."""
        assignee, role = self._assignee(rep_id)
        fields = {
            "customer_id": customer_id,
            "rep_id": rep_id or "unassigned",
            "rule_id": rule_id,
            "observed": matched[0][1] if matched else "",
            "event_kind": event_kind or "timer",
        }
        return InterventionCommand(
            intervention_id=intervention_id(
                rule_id, rule_version, customer_id, triggering_event_ids
            ),
            customer_id=customer_id,
            rep_id=assignee,
            assignee_role=role,
            rule_id=rule_id,
            rule_version=rule_version,
            kind=self.kind,
            severity=self.severity,
            priority=self.priority,
            title=_clip(self.title.format_map(fields), TITLE_MAX) or self.kind.value,
            body=_clip(self.body.format_map(fields), BODY_MAX),
            due_at=triggered_at + self.due_in,
            experiment=(
                Experiment(experiment_id=experiment[0], variant=experiment[1])
                if experiment is not None
                else None
            ),
            explanation=Explanation(
                matched=[Match(condition=c, observed=o) for c, o in matched],
                scores=scores or {},
                triggering_event_ids=list(triggering_event_ids),
            ),
            created_at=now,
        )

    def _assignee(self, owner: str | None) -> tuple[str | None, str | None]:
        """(rep id, role) of whoever gets the intervention."""
        if self.to_manager:
            manager = self.managers.get(owner) if owner is not None else None
            # Unknown manager: leave it to the CRM's manager queue.
            return manager, None if manager is not None else "manager"
        if self.assignee_role is None:
            return owner, None
        return None, self.assignee_role


class ContractBreach(EngineError):
    """A rule or journey step would emit an intervention the contract refuses."""


def dry_run(
    template: Template,
    *,
    rule_id: str,
    rule_version: int,
    condition_label: str,
    experiment: tuple[str, str] | None = None,
) -> list[InterventionCommand]:
    """Render ``template`` as it would be at event time, with the longest inputs a touchpoint
    may bring, and return the interventions; raise :class:`ContractBreach` naming the field
    of the InterventionCommand contract that one of them breaks.

    The inputs: a customer id, rep id and touchpoint ids of the contract's longest length,
    the longest text as the observed value, as many triggering touchpoints as an
    explanation names, the longest touchpoint kind (and a timer), no owner and an owner
    (for ``assignee: manager``, the one whose manager id is longest), at the latest event
    time a bundle is proven for. Each field of the command is checked by the pydantic
    model, which is the contract the Avro schema mirrors (rule_version an int, enums,
    timestamps in range).
    """
    owners: list[str | None] = [None, "r" * ID_MAX]
    if template.to_manager and template.managers:
        owners.append(max(template.managers, key=lambda rep: len(template.managers[rep])))
    event_ids = tuple(f"{n:03d}".ljust(ID_MAX, "e") for n in range(MAX_EXPLAINED_EVENTS))
    rendered: list[InterventionCommand] = []
    for index, owner in enumerate(owners):
        try:
            rendered.append(
                template.render(
                    rule_id=rule_id,
                    rule_version=rule_version,
                    customer_id="c" * ID_MAX,
                    rep_id=owner,
                    matched=((condition_label, "o" * TOUCHPOINT_TEXT_MAX),),
                    triggering_event_ids=event_ids,
                    triggered_at=LATEST_EVENT_TIME,
                    event_kind="k" * KIND_MAX if index else None,
                    now=LATEST_EVENT_TIME,
                    experiment=experiment,
                )
            )
        except ValidationError as invalid:
            error = invalid.errors()[0]
            where = ".".join(str(part) for part in error["loc"])
            found = error.get("input")
            shown = f" (found {len(found)})" if isinstance(found, str) else ""
            raise ContractBreach(
                "the intervention it would emit breaks the InterventionCommand contract: "
                f"{where}: {error['msg']}{shown}"
            ) from None
        except (OverflowError, ValueError) as exc:
            raise ContractBreach(f"the intervention it would emit cannot be built: {exc}") from None
    return rendered


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
