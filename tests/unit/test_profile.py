"""The store profile: purchases, totals and tier folded from touchpoints."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from engine.bundle import InvalidBundle, load_bundle
from engine.profile import RECENT_PURCHASES, benefits
from engine.reducer import apply
from engine.state import CustomerState
from schemas.models import TouchpointEvent

T0 = datetime(2026, 11, 20, 2, 15, tzinfo=UTC)


def event(n: int, kind: str, minutes: int, **attributes: object) -> TouchpointEvent:
    at = T0 + timedelta(minutes=minutes)
    return TouchpointEvent.model_validate(
        {
            "event_id": f"e-{n}",
            "customer_id": "M-10086",
            "occurred_at": at,
            "received_at": at,
            "channel": "pos",
            "kind": kind,
            "direction": "inbound",
            "source": "test/1",
            "attributes": attributes,
        }
    )


def test_purchases_add_up_per_currency_and_the_newest_tier_wins() -> None:
    state = None
    for n, (minutes, amount, currency) in enumerate(
        [(0, 59.8, "CNY"), (5, 399.0, "CNY"), (9, 12.5, "USD")]
    ):
        state, _ = apply(
            state,
            event(
                n,
                "purchase",
                minutes,
                product=f"p{n}",
                amount=amount,
                currency=currency,
                quantity=1,
            ),
            T0,
            (),
        )
    state, _ = apply(state, event(10, "crm_update", 30, membership_tier="gold"), T0, ())
    state, _ = apply(state, event(11, "crm_update", 20, membership_tier="silver"), T0, ())  # older
    assert state is not None and state.profile is not None
    profile = state.profile
    assert profile.purchases == 3
    assert profile.totals == {"CNY": 458.8, "USD": 12.5}
    assert [p.product for p in profile.recent] == ["p0", "p1", "p2"]
    assert profile.tier == "gold"
    assert CustomerState.from_dict(state.to_dict()) == state


def test_recent_purchases_keep_the_newest_by_event_time() -> None:
    state = None
    for n in range(RECENT_PURCHASES + 5):
        state, _ = apply(state, event(n, "purchase", 100 - n, amount=1.0), T0, ())  # oldest last
    assert state is not None and state.profile is not None
    assert state.profile.purchases == RECENT_PURCHASES + 5
    ats = [p.at for p in state.profile.recent]
    assert len(ats) == RECENT_PURCHASES and ats == sorted(ats)
    assert state.profile.totals == {"": float(RECENT_PURCHASES + 5)}


def test_other_touchpoints_leave_the_profile_alone() -> None:
    state, _ = apply(None, event(1, "message_received", 0, amount=5.0), T0, ())
    assert state.profile is None


TIERS = """\
bundle: store-tiers
version: 1
tiers:
  gold: {benefits: ["10% off everything", "free delivery"]}
  silver: {benefits: ["5% off"]}
"""


def test_a_bundle_attaches_benefits_to_tiers_and_bad_ones_are_refused_with_the_line() -> None:
    bundle = load_bundle(TIERS)
    assert benefits(bundle.tiers, "gold") == ("10% off everything", "free delivery")
    assert benefits(bundle.tiers, "bronze") == () and benefits(bundle.tiers, None) == ()
    with pytest.raises(InvalidBundle) as refused:
        load_bundle(TIERS.replace('["5% off"]', "5% off"))
    problem = refused.value.problems[0]
    assert (problem.line, problem.field) == (5, "tiers.silver.benefits")
    assert problem.message.endswith("found 5% off")
