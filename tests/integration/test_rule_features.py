"""Windows, sums, state thresholds, all/any/not, cooldown, caps and shadow mode on a real
worker: exactly the interventions they should emit, and the counts of what they held back."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp

from schemas.codec import decode_intervention
from schemas.models import Channel
from streams.rules_push import push_bundle
from streams.settings import Settings
from streams.topics import ensure_topics

from .harness import WorkerProcess, produce_raw, read_all, read_topic, touchpoint_record

BUNDLE = """\
bundle: features
version: 1
caps: {per_customer_per_day: 2}
rules:
  - id: errors.three-in-an-hour
    when: {count: {of: {kind: sandbox_error}, within: 1h, at_least: 3}}
    then: {kind: alert, title: "Sandbox keeps failing for {customer_id}", due_in: 1h}
  - id: spend.over-500
    when: {sum: {of: {kind: purchase}, field: attributes.amount, within: 7d, at_least: 500}}
    then: {kind: task, title: "Thank {customer_id} for {observed} of orders", due_in: 1d}
  - id: logins.loyal
    cooldown: 1d
    when:
      all:
        - event: {kind: login}
        - state: {count.login: {gte: 3}}
        - not: {event: {channel: chat}}
    then: {kind: content_push, title: "Power-user tips for {customer_id}", due_in: 1d}
  - id: churn.any
    mode: shadow
    when: {any: [{event: {kind: churn_signal}}, {event: {kind: downgrade}}]}
    then: {kind: escalation, title: "Save {customer_id}", due_in: 2h}
  - id: ping.each
    when: {event: {kind: ping}}
    then: {kind: task, title: "Ping from {customer_id}", due_in: 1h, priority: low}
"""

START = datetime.now(UTC) - timedelta(hours=2)


def tp(customer: str, n: int, kind: str, minutes: int, **attributes: Any) -> tuple[bytes, bytes]:
    at = START + timedelta(minutes=minutes)
    return touchpoint_record(
        customer,
        f"{customer}-{n}",
        kind,
        at,
        channel=Channel.WEB,
        direction="none",
        rep_id="rep-hal",
        **attributes,
    )


SCENARIO = [
    tp("errs", 1, "sandbox_error", 0),
    tp("errs", 2, "sandbox_error", 10),
    tp("errs", 3, "sandbox_error", 20),
    tp("errs", 4, "sandbox_error", 30),  # still 3+ in the hour: no second alert
    tp("spender", 1, "purchase", 0, amount=200),
    tp("spender", 2, "purchase", 5, amount=350),
    tp("loyal", 1, "login", 0),
    tp("loyal", 2, "login", 1),
    tp("loyal", 3, "login", 2),
    tp("loyal", 4, "login", 3),  # cooldown
    tp("churner", 1, "downgrade", 0),  # shadow: recorded, not emitted
    tp("pinger", 1, "ping", 0),
    tp("pinger", 2, "ping", 1),
    tp("pinger", 3, "ping", 2),  # over the daily cap of 2
]

EXPECTED = [
    ("errs", "errors.three-in-an-hour", ("errs-1", "errs-2", "errs-3")),
    ("loyal", "logins.loyal", ("loyal-3",)),
    ("pinger", "ping.each", ("pinger-1",)),
    ("pinger", "ping.each", ("pinger-2",)),
    ("spender", "spend.over-500", ("spender-1", "spender-2")),
]


async def test_rule_features_emit_exactly_what_they_should(
    settings: Settings, worker: WorkerProcess
) -> None:
    await ensure_topics(settings)
    await push_bundle(settings, BUNDLE, "features.yaml")
    worker.start()
    await produce_raw(settings, SCENARIO)
    await read_topic(
        settings, "interventions", lambda f: len(f) >= len(EXPECTED), decode_intervention, worker
    )
    await asyncio.sleep(2)
    everything = await read_all(settings, "interventions", decode_intervention)
    assert (
        sorted(
            (c.customer_id, c.rule_id, tuple(c.explanation.triggering_event_ids))
            for c in everything
        )
        == EXPECTED
    )
    spend = next(c for c in everything if c.rule_id == "spend.over-500")
    assert spend.title == "Thank spender for 550 of orders"

    url = f"http://127.0.0.1:{settings.web_port}/metrics"
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        metrics = await response.text()
    assert 'warroom_shadow_decisions_total{rule_id="churn.any"} 1.0' in metrics
    assert 'warroom_capped_interventions_total{rule_id="ping.each"} 1.0' in metrics
