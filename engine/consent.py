"""Consent per purpose: what a customer allowed Warroom (and the CRM behind it) to do.

Consent is opt-in. A purpose a customer never granted counts as missing, the same as
one they revoked: an intervention that needs it is suppressed, and a restricted field
stays hidden. Per customer and purpose the newest change (by ``occurred_at``) wins; at
the same instant a revocation wins over a grant, so a tie never lets data through. A
change whose id the customer's state has already seen changes nothing, so a redelivered
record is harmless.

Purposes are plain names (``marketing``, ``contact_by_chat``, ``contact_by_phone``,
``profiling``, ``risk_modelling``, ``data_sharing``, ``service`` ...); bundles may
name any purpose they need.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

from schemas.models import ConsentChange

from .conditions import micros
from .state import RECENT_EVENT_IDS, Consent, CustomerState

KNOWN_PURPOSES = frozenset(
    {
        "marketing",
        "contact_by_chat",
        "contact_by_phone",
        "contact_by_email",
        "profiling",
        "risk_modelling",
        "data_sharing",
        "service",
    }
)
"""The documented purposes (metrics label others as ``other``; bundles may name any)."""
TRAINING_PURPOSES = ("profiling", "risk_modelling")
"""A customer who refused either of these is never used to train a model."""
CONSENT_ID_PREFIX = "consent:"
"""Consent change ids share the state's list of recently seen ids under this prefix."""


@dataclass(frozen=True, slots=True)
class ConsentOutcome:
    """What a consent change did to a customer's state."""

    state: CustomerState
    changed: bool
    """False for a repeated change id or a change older than the recorded decision."""
    previous: Consent | None


def apply_consent(state: CustomerState | None, change: ConsentChange) -> ConsentOutcome:
    """Fold ``change`` into the customer's consents."""
    if state is None:
        state = CustomerState(customer_id=change.customer_id)
    seen_id = CONSENT_ID_PREFIX + change.change_id
    if seen_id in state.recent_event_ids:
        return ConsentOutcome(state, False, state.consents.get(change.purpose))
    at = micros(change.occurred_at)
    previous = state.consents.get(change.purpose)
    recent = (*state.recent_event_ids[-(RECENT_EVENT_IDS - 1) :], seen_id)
    if previous is not None and (
        previous.at > at or (previous.at == at and (not previous.granted or change.granted))
    ):
        # Older than what is recorded (or a grant tying with a revocation): remembered as
        # seen, changes nothing else.
        return ConsentOutcome(replace(state, recent_event_ids=recent), False, previous)
    consents = dict(state.consents)
    consents[change.purpose] = Consent(change.granted, at)
    return ConsentOutcome(
        replace(state, consents=consents, recent_event_ids=recent), True, previous
    )


def remember(state: CustomerState | None, customer_id: str, seen_id: str) -> CustomerState:
    """``state`` (or a new one) with ``seen_id`` among its recently seen ids, so the same
    draft, review or change is recorded once."""
    if state is None:
        state = CustomerState(customer_id=customer_id)
    recent = (*state.recent_event_ids[-(RECENT_EVENT_IDS - 1) :], seen_id)
    return replace(state, recent_event_ids=recent)


def granted(state: CustomerState | None, purpose: str) -> bool:
    if state is None:
        return False
    consent = state.consents.get(purpose)
    return consent is not None and consent.granted


def missing_purposes(state: CustomerState | None, purposes: Iterable[str]) -> tuple[str, ...]:
    """The purposes of ``purposes`` the customer has not granted (in the given order)."""
    return tuple(p for p in purposes if not granted(state, p))


def may_train(state: CustomerState | None) -> bool:
    """False when the customer refused (revoked) profiling or risk modelling.

    Training needs no grant (a model learns from outcomes of customers who simply never
    answered), but an explicit refusal of either purpose keeps the customer out."""
    if state is None:
        return True
    for purpose in TRAINING_PURPOSES:
        consent = state.consents.get(purpose)
        if consent is not None and not consent.granted:
            return False
    return True


def visible_attributes(
    attributes: Mapping[str, object],
    restricted: Mapping[str, frozenset[str]],
    state: CustomerState | None,
) -> dict[str, object] | None:
    """``attributes`` without the restricted fields the customer granted none of the
    purposes for; None when nothing is hidden (the caller keeps the original)."""
    hidden = [
        key
        for key in attributes
        if (purposes := restricted.get(key)) is not None
        and not any(granted(state, p) for p in purposes)
    ]
    if not hidden:
        return None
    return {k: v for k, v in attributes.items() if k not in hidden}
