"""A short built-in scenario that shows one intervention being raised."""

from __future__ import annotations

import asyncio
import sys
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp


def demo_messages(now: datetime, run: str) -> list[dict[str, Any]]:
    """Two customers: one never answers three messages, one replies in between."""

    def message(n: int, customer: str, sender: str, text: str) -> dict[str, Any]:
        return {
            "message_id": f"demo-{run}-{n}",
            "customer_id": customer,
            "sent_at": (now - timedelta(minutes=30 - n)).isoformat(),
            "sender": sender,
            "rep_id": "rep-ana",
            "text": text,
            "industry": "saas",
        }

    quiet = f"acme-{run}"
    chatty = f"globex-{run}"
    return [
        message(1, quiet, "rep", "Hi! Did the trial workspace set up fine?"),
        message(2, chatty, "rep", "Hi! Any questions about the trial?"),
        message(3, chatty, "customer", "Yes, how do SSO seats work?"),
        message(4, quiet, "rep", "Happy to walk you through the API sandbox."),
        message(5, chatty, "rep", "SSO seats are pooled per workspace."),
        message(6, quiet, "rep", "Shall I book 15 minutes tomorrow?"),
    ]


async def post_demo(url: str, attempts: int = 60) -> int:
    run = uuid.uuid4().hex[:6]
    messages = demo_messages(datetime.now(UTC), run)
    async with aiohttp.ClientSession() as session:
        for attempt in range(attempts):
            try:
                for item in messages:
                    async with session.post(f"{url}/v1/messages", json=item) as response:
                        if response.status != 202:
                            print(
                                f"demo: {response.status} {await response.text()}", file=sys.stderr
                            )
                            return 1
                break
            except aiohttp.ClientConnectionError:
                if attempt == attempts - 1:
                    raise
                await asyncio.sleep(1)
    print(
        f"demo: posted {len(messages)} chat messages for acme-{run} and globex-{run}; "
        f"expect one intervention for acme-{run}",
        flush=True,
    )
    return 0
