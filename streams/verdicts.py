"""Between the engine's compliance gate and the wire: drafts in, verdict records out.

Both the HTTP gate (streams.gate_service) and the worker (streams.pipeline, for drafts
read from the message-drafts topic) judge a draft here, so a verdict has one shape
whoever decided it.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from engine.compliance import CompiledPolicy, Draft, GateDecision, judge
from schemas.models import (
    ComplianceVerdict,
    DraftReview,
    GateFinding,
    GateTemplate,
    MessageDraft,
    PolicyOutcome,
    ReviewAction,
    Severity,
    VerdictKind,
)

SEVERITY: dict[VerdictKind, Severity | None] = {
    VerdictKind.ALLOW: None,
    VerdictKind.REMIND: Severity.BLUE,
    VerdictKind.CONFIRM: Severity.YELLOW,
    VerdictKind.BLOCK: Severity.RED,
}
REVIEW_EVENTS: dict[ReviewAction, str] = {
    ReviewAction.CONFIRM: "draft_confirmed",
    ReviewAction.OVERRIDE: "draft_overridden",
    ReviewAction.REJECT: "draft_rejected",
}
REASON_MAX = 2_000
EXCERPT_MAX = 1_000


def engine_draft(draft: MessageDraft) -> Draft:
    return Draft(
        draft_id=draft.draft_id,
        customer_id=draft.customer_id,
        rep_id=draft.rep_id,
        text=draft.text,
        kind=draft.kind,
        sender_contacts=tuple(draft.sender_contacts),
        recipient_contacts=tuple(draft.recipient_contacts),
    )


def decide(
    policies: Sequence[CompiledPolicy], draft: MessageDraft, at: datetime, decided_by: str
) -> ComplianceVerdict:
    """Judge ``draft`` with ``policies``: the verdict record, personal data masked."""
    return verdict_record(judge(policies, engine_draft(draft)), draft, at, decided_by)


def verdict_record(
    decision: GateDecision, draft: MessageDraft, at: datetime, decided_by: str
) -> ComplianceVerdict:
    verdict = VerdictKind(decision.verdict.value)
    return ComplianceVerdict(
        draft_id=draft.draft_id,
        customer_id=draft.customer_id,
        rep_id=draft.rep_id,
        kind=draft.kind,
        verdict=verdict,
        severity=SEVERITY[verdict],
        policies=[
            PolicyOutcome(
                policy_id=outcome.policy_id,
                policy_version=outcome.policy_version,
                mode=outcome.mode,
                verdict=VerdictKind(outcome.verdict.value),
                reason=outcome.reason[:REASON_MAX],
                findings=[
                    GateFinding(
                        category=finding.category,
                        term=finding.term[:500],
                        start=finding.start,
                        end=finding.end,
                        tier=VerdictKind(finding.tier.value),
                        reason=finding.reason[: REASON_MAX // 2],
                        excerpt=finding.excerpt[:EXCERPT_MAX],
                    )
                    for finding in outcome.findings
                ],
                missing_topics=list(outcome.missing_topics),
                templates=[
                    GateTemplate(template_id=t.template_id, text=t.text) for t in outcome.templates
                ],
            )
            for outcome in decision.policies
        ],
        masked_text=decision.masked_text,
        decided_at=at,
        decided_by=decided_by,
    )


def verdict_entry(verdict: ComplianceVerdict) -> dict[str, Any]:
    """The audit entry of a verdict: what was decided and by which policy versions; no
    text, not even masked."""
    return {
        "event": "draft_verdict",
        "customer_id": verdict.customer_id,
        "draft_id": verdict.draft_id,
        "rep_id": verdict.rep_id,
        "verdict": verdict.verdict.value,
        "decided_by": verdict.decided_by,
        "policies": [
            {
                "policy_id": p.policy_id,
                "version": p.policy_version,
                "mode": p.mode,
                "verdict": p.verdict.value,
                "categories": sorted({f.category for f in p.findings}),
                "missing_topics": list(p.missing_topics),
            }
            for p in verdict.policies
        ],
    }


def review_entry(review: DraftReview, note: str) -> dict[str, Any]:
    """The audit entry of a manager's review; ``note`` already has personal data masked."""
    return {
        "event": REVIEW_EVENTS[review.action],
        "customer_id": review.customer_id,
        "draft_id": review.draft_id,
        "review_id": review.review_id,
        "reviewer_id": review.reviewer_id,
        "note": note,
        "reviewed_at": review.reviewed_at.isoformat(),
    }
