"""The shipped rule packs, pushed to a real worker and fed scenarios: exactly the
interventions each pack should raise, and none for the near misses."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp

from schemas.codec import decode_intervention
from schemas.models import Channel
from streams.explain_cli import format_explanation
from streams.rules_push import push_bundle
from streams.settings import Settings
from streams.topics import ensure_topics
from streams.web import bearer

from .harness import REPO, WorkerProcess, produce_raw, read_all, read_topic, touchpoint_record

NOW = datetime.now(UTC).replace(microsecond=0)
PACKS = sorted((REPO / "rules" / "examples").glob("*.yaml"))
PACK_TEXTS = {pack: pack.read_text(encoding="utf-8") for pack in PACKS}


def tp(
    customer: str,
    n: int,
    kind: str,
    ago: timedelta,
    direction: str = "none",
    channel: Channel = Channel.PRODUCT,
    **attributes: Any,
) -> tuple[bytes, bytes]:
    at = NOW - ago
    return touchpoint_record(
        customer,
        f"{customer}-{n}",
        kind,
        at,
        channel=channel,
        direction=direction,
        rep_id="rep-dana",
        **attributes,
    )


h, d = timedelta(hours=1), timedelta(days=1)

SCENARIOS = [
    # saas-trial-health: the video for > 272 s, then a sandbox error within 24 h.
    tp("trial-1", 1, "video_watched", 3 * h, plan="trial", video="api-troubleshooting",
       watched_seconds=300),
    tp("trial-1", 2, "sandbox_error", 1 * h),
    tp("trial-2", 1, "video_watched", 3 * h, plan="trial", video="api-troubleshooting",
       watched_seconds=200),
    tp("trial-2", 2, "sandbox_error", 1 * h),
    # unanswered-outbound (and the built-in rule): three messages, no reply.
    tp("buyer-1", 1, "message_sent", 3 * h, "outbound", Channel.CHAT),
    tp("buyer-1", 2, "email_sent", 2 * h, "outbound", Channel.EMAIL),
    tp("buyer-1", 3, "message_sent", 1 * h, "outbound", Channel.CHAT),
    tp("buyer-2", 1, "message_sent", 3 * h, "outbound", Channel.CHAT),
    tp("buyer-2", 2, "message_received", 2 * h, "inbound", Channel.CHAT),
    tp("buyer-2", 3, "message_sent", 1 * h, "outbound", Channel.CHAT),
    # new-lead-no-contact: a lead form and nobody called for 24 h.
    tp("lead-1", 1, "lead_form_submitted", 3 * d, "inbound", Channel.WEB),
    tp("lead-2", 1, "lead_form_submitted", 3 * d, "inbound", Channel.WEB),
    tp("lead-2", 2, "call_made", 3 * d - 2 * h, "outbound", Channel.CALL),
    # refill-due: a 30-day chronic fill 40 days ago and no refill since.
    tp("patient-1", 1, "prescription_filled", 40 * d, channel=Channel.POS, chronic=True,
       days_supply=30),
    tp("patient-2", 1, "prescription_filled", 10 * d, channel=Channel.POS, chronic=True,
       days_supply=30),
    # stalled-deal: proposal stage 20 days ago and silence since.
    tp("deal-1", 1, "stage_changed", 20 * d, channel=Channel.CRM, stage="proposal"),
    tp("deal-2", 1, "stage_changed", 20 * d, channel=Channel.CRM, stage="proposal"),
    tp("deal-2", 2, "email_received", 10 * d, "inbound", Channel.EMAIL),
    # meeting-coaching: the rep talked through the meeting, and a near miss.
    tp("meet-1", 1, "meeting_held", 2 * h, channel=Channel.MEETING, rep_talk_share=0.72,
       rep_questions=1),
    tp("meet-2", 1, "meeting_held", 2 * h, channel=Channel.MEETING, rep_talk_share=0.72,
       rep_questions=5),
]  # fmt: skip

EXPECTED = {
    ("meet-1", "meeting.rep-talked-through", ("meet-1-1",)),
    ("trial-1", "trial.api-video-then-sandbox-error", ("trial-1-1", "trial-1-2")),
    ("buyer-1", "outbound.three-unanswered", ("buyer-1-1", "buyer-1-2", "buyer-1-3")),
    ("buyer-1", "builtin.unanswered-outbound", ("buyer-1-1", "buyer-1-2", "buyer-1-3")),
    ("lead-1", "lead.no-contact-24h", ("lead-1-1",)),
    ("patient-1", "refill.30-day-supply", ("patient-1-1",)),
    ("deal-1", "deal.late-stage-silent-14d", ("deal-1-1",)),
}


async def test_every_shipped_pack_raises_exactly_its_interventions(
    settings: Settings, worker: WorkerProcess
) -> None:
    assert [p.name for p in PACKS] == [
        "email-follow-up.yaml",
        "meeting-coaching.yaml",
        "new-lead-no-contact.yaml",
        "refill-due.yaml",
        "saas-trial-health.yaml",
        "service-opportunity.yaml",
        "stalled-deal.yaml",
        "unanswered-outbound.yaml",
    ]
    await ensure_topics(settings)
    for pack in PACKS:
        await push_bundle(settings, PACK_TEXTS[pack], str(pack))
    worker.start()
    await produce_raw(settings, SCENARIOS)

    def summary(found: list[Any]) -> set[tuple[str, str, tuple[str, ...]]]:
        return {
            (c.customer_id, c.rule_id, tuple(c.explanation.triggering_event_ids)) for c in found
        }

    await read_topic(
        settings,
        "interventions",
        lambda found: summary(found) >= EXPECTED,
        decode_intervention,
        worker,
    )
    await asyncio.sleep(3)  # let any wrong extra (a near miss, a repeated timer) land
    everything = await read_all(settings, "interventions", decode_intervention)
    assert summary(everything) == EXPECTED
    assert len(everything) == len(EXPECTED)
    by_rule = {c.rule_id: c for c in everything}
    assert by_rule["refill.30-day-supply"].assignee_role == "pharmacist"
    assert by_rule["lead.no-contact-24h"].assignee_role == "sales_manager"
    assert by_rule["trial.api-video-then-sandbox-error"].rep_id == "rep-dana"

    # Why did the near misses not fire? The worker says, rule by rule.
    async with aiohttp.ClientSession(headers=bearer(settings.admin_token)) as session:
        base = f"http://127.0.0.1:{settings.web_port}/customers"
        async with session.get(f"{base}/buyer-2") as response:
            buyer = await response.json()
        async with session.get(f"{base}/patient-2") as response:
            patient = await response.json()
    assert buyer["owned_here"] and buyer["state"]["touchpoints"] == 3
    progress = {r["rule_id"]: r["progress"] for r in buyer["rules"]}
    assert progress["outbound.three-unanswered"].endswith(": 1 of 3 so far")
    [refill] = [r for r in patient["rules"] if r["rule_id"] == "refill.30-day-supply"]
    assert "waiting since patient-2-1" in refill["progress"]
    assert refill["deadline"] is not None
    text = format_explanation(patient)
    assert "rule refill.30-day-supply v1 (enforce)" in text
    assert "deadline " in text
