"""A customer's store profile: what store staff see at the counter.

Folded from touchpoints as they arrive: every ``purchase`` and ``prescription_filled``
touchpoint (from the POS connector: ``product``, ``quantity``, ``amount``, ``currency``,
``store``) adds to the totals and to the recent purchases (the newest
:data:`RECENT_PURCHASES`, by event time), and a ``membership_tier`` attribute on any
touchpoint sets the customer's tier (the newest by event time wins). Bundles attach
benefits to tiers (``tiers:``); :func:`benefits` looks them up.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

PURCHASE_KINDS = frozenset({"purchase", "prescription_filled"})
TIER_ATTRIBUTE = "membership_tier"
RECENT_PURCHASES = 10
TEXT_MAX = 128


@dataclass(frozen=True, slots=True)
class Purchase:
    at: int
    """Event time, µs since the epoch."""
    kind: str
    product: str | None
    quantity: float | None
    amount: float | None
    currency: str | None
    store: str | None

    def to_json(self) -> list[Any]:
        return [
            self.at,
            self.kind,
            self.product,
            self.quantity,
            self.amount,
            self.currency,
            self.store,
        ]

    @classmethod
    def from_json(cls, data: list[Any]) -> Purchase:
        at, kind, product, quantity, amount, currency, store = data
        return cls(int(at), str(kind), product, quantity, amount, currency, store)


@dataclass(frozen=True, slots=True)
class StoreProfile:
    purchases: int = 0
    totals: Mapping[str, float] = field(default_factory=dict)
    """Currency (``""`` when none was given) -> total amount."""
    recent: tuple[Purchase, ...] = ()
    """The newest purchases by event time, oldest first."""
    tier: str | None = None
    tier_at: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "purchases": self.purchases,
            "totals": dict(self.totals),
            "recent": [p.to_json() for p in self.recent],
            "tier": self.tier,
            "tier_at": self.tier_at,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> StoreProfile:
        return cls(
            purchases=int(data.get("purchases", 0)),
            totals={str(k): float(v) for k, v in data.get("totals", {}).items()},
            recent=tuple(Purchase.from_json(p) for p in data.get("recent", ())),
            tier=data.get("tier"),
            tier_at=data.get("tier_at"),
        )


def concerns_profile(kind: str, attributes: Mapping[str, Any]) -> bool:
    return kind in PURCHASE_KINDS or TIER_ATTRIBUTE in attributes


def fold(
    profile: StoreProfile | None, kind: str, at: int, attributes: Mapping[str, Any]
) -> StoreProfile:
    """``profile`` after a touchpoint of ``kind`` at ``at`` with ``attributes``."""
    profile = profile or StoreProfile()
    purchases, totals, recent = profile.purchases, profile.totals, profile.recent
    if kind in PURCHASE_KINDS:
        amount = _number(attributes.get("amount"))
        currency = _text(attributes.get("currency"))
        purchases += 1
        if amount is not None:
            totals = dict(totals)
            totals[currency or ""] = round(totals.get(currency or "", 0.0) + amount, 4)
        purchase = Purchase(
            at,
            kind,
            _text(attributes.get("product")),
            _number(attributes.get("quantity")),
            amount,
            currency,
            _text(attributes.get("store")),
        )
        recent = tuple(sorted((*recent, purchase), key=lambda p: p.at)[-RECENT_PURCHASES:])
    tier, tier_at = profile.tier, profile.tier_at
    given = _text(attributes.get(TIER_ATTRIBUTE))
    if given is not None and (tier_at is None or at >= tier_at):
        tier, tier_at = given, at
    return StoreProfile(purchases, totals, recent, tier, tier_at)


def benefits(tiers: Mapping[str, tuple[str, ...]], tier: str | None) -> tuple[str, ...]:
    return () if tier is None else tiers.get(tier, ())


def _text(value: Any) -> str | None:
    if value is None or isinstance(value, bool):
        return None
    return str(value)[:TEXT_MAX]


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)
