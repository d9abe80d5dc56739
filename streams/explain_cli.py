"""``warroom explain CUSTOMER``: ask a worker about a customer and print the answer."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import aiohttp
from pydantic import SecretStr

from .web import bearer


def format_explanation(data: dict[str, Any]) -> str:
    lines = [f"customer {data['customer_id']} (partition {data['partition']})"]
    if not data["owned_here"]:
        lines.append("  this worker does not own that partition; ask the worker that does")
    state = data["state"]
    if state is None:
        lines.append("  no touchpoints seen yet")
    else:
        lines.append(
            f"  owner {state['owner_rep_id'] or '-'}, {state['touchpoints']} touchpoints, "
            f"last {state['last_event_at']}, last inbound {state['last_inbound_at'] or 'never'}"
        )
        counts = ", ".join(f"{k} {v}" for k, v in sorted(state["kind_counts"].items()))
        lines.append(f"  by kind: {counts}")
    for name, score in data.get("scores", {}).items():
        top = ", ".join(
            f"{t['feature']} {t['value']} ({t['contribution']:+.2f})" for t in score["top"]
        )
        lines.append(f"  score {name} {score['value']:.3f} (model v{score['model_version']})")
        if top:
            lines.append(f"    weighed most: {top}")
    for rule in data["rules"]:
        lines.append(f"  rule {rule['rule_id']} v{rule['version']} ({rule['mode']})")
        lines.append(f"    {rule['progress']}")
        if rule["last_fired_at"]:
            lines.append(f"    last fired at {rule['last_fired_at']}")
        if rule["cooldown_until"]:
            lines.append(f"    in cooldown until {rule['cooldown_until']}: it will not fire before")
        if rule["deadline"]:
            lines.append(f"    deadline {rule['deadline']}")
    for journey in data.get("journeys", []):
        shadow = " (shadow)" if journey.get("mode") == "shadow" else ""
        lines.append(f"  journey {journey['journey_id']}{shadow}")
        lines.append(f"    {journey['progress']}")
        if journey["deadline"]:
            lines.append(f"    deadline {journey['deadline']}")
    return "\n".join(lines)


async def show_customer(url: str, customer_id: str, token: SecretStr | None = None) -> int:
    address = f"{url.rstrip('/')}/customers/{quote(customer_id, safe='')}"
    return await _show(address, format_explanation, token)


async def _show(
    address: str, render: Callable[[dict[str, Any]], str], token: SecretStr | None
) -> int:
    """Print the rendered JSON page at ``address``; 1 (and the answer) unless it is a 200."""
    async with (
        aiohttp.ClientSession(headers=bearer(token)) as session,
        session.get(address) as response,
    ):
        if response.status != 200:
            print(f"{address}: HTTP {response.status}: {await response.text()}", file=sys.stderr)
            return 1
        print(render(await response.json()))
    return 0


def format_profile(data: dict[str, Any]) -> str:
    lines = [f"customer {data['customer_id']} (partition {data['partition']})"]
    if not data["owned_here"]:
        lines.append("  this worker does not own that partition; ask the worker that does")
    tier = data["tier"] or "no tier"
    lines.append(f"  {tier}: {', '.join(data['benefits']) or 'no benefits listed'}")
    totals = ", ".join(
        f"{amount:,.2f} {currency}".strip() for currency, amount in data["totals"].items()
    )
    lines.append(f"  {data['purchases']} purchases, total {totals or '0'}")
    for purchase in data["recent"]:
        quantity = purchase["quantity"]
        amount = purchase["amount"]
        lines.append(
            f"  {purchase['at']}  {purchase['product'] or purchase['kind']}"
            + (f" x{quantity:g}" if quantity is not None else "")
            + (
                f"  {amount:,.2f} {purchase['currency'] or ''}".rstrip()
                if amount is not None
                else ""
            )
            + (f"  at {purchase['store']}" if purchase["store"] else "")
        )
    return "\n".join(lines)


async def show_profile(url: str, customer_id: str, token: SecretStr | None = None) -> int:
    address = f"{url.rstrip('/')}/customers/{quote(customer_id, safe='')}/profile"
    return await _show(address, format_profile, token)
