"""The 20 touchpoint kinds of the full-pipeline workload, and what each one carries.

The workload generator (bench/cases/full_workload.py) and the rule generator
(bench/cases/generated_rules.py) both read this table, so every generated rule tests
kinds and attributes the touchpoints really have.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Attribute:
    name: str
    numbers: tuple[int, int] | None = None
    """Inclusive range of a numeric attribute."""
    values: tuple[str, ...] = ()
    """Values of a text attribute."""


@dataclass(frozen=True, slots=True)
class Kind:
    name: str
    channel: str  # a schemas.models.Channel value
    direction: str  # a schemas.models.Direction value
    weight: float
    text: str | None = None
    """``chat`` or ``email`` when the touchpoint carries a message text."""
    attributes: tuple[Attribute, ...] = ()

    @property
    def message(self) -> bool:
        return self.text is not None


_PLANS = Attribute("plan", values=("trial", "team", "enterprise"))
_AMOUNT = Attribute("amount", numbers=(20, 5_000))

KINDS: tuple[Kind, ...] = (
    Kind("message_sent", "chat", "outbound", 0.18, "chat", (Attribute("thread_id"),)),
    Kind("message_received", "chat", "inbound", 0.14, "chat", (Attribute("thread_id"),)),
    Kind("email_sent", "email", "outbound", 0.10, "email", (Attribute("thread_id"),)),
    Kind("email_received", "email", "inbound", 0.07, "email", (Attribute("thread_id"),)),
    Kind(
        "call_made",
        "call",
        "outbound",
        0.04,
        None,
        (Attribute("duration_s", numbers=(20, 1_800)), Attribute("answered", values=("yes", "no"))),
    ),
    Kind(
        "meeting_held",
        "meeting",
        "none",
        0.03,
        None,
        (
            Attribute("meeting_type", values=("demo", "review", "qbr")),
            Attribute("duration_s", numbers=(600, 3_600)),
        ),
    ),
    Kind(
        "page_viewed",
        "web",
        "none",
        0.08,
        None,
        (
            Attribute("page", values=("pricing", "docs", "security", "blog", "careers")),
            Attribute("session_s", numbers=(5, 600)),
        ),
    ),
    Kind(
        "feature_used",
        "product",
        "none",
        0.10,
        None,
        (
            Attribute("feature", values=("reports", "export", "dashboards", "alerts", "api")),
            Attribute("duration_s", numbers=(1, 900)),
        ),
    ),
    Kind("login", "product", "none", 0.06, None, (_PLANS,)),
    Kind(
        "video_watched",
        "product",
        "none",
        0.03,
        None,
        (
            Attribute("video", values=("api-troubleshooting", "intro", "admin-setup")),
            Attribute("watched_seconds", numbers=(10, 900)),
            _PLANS,
        ),
    ),
    Kind(
        "sandbox_error",
        "product",
        "none",
        0.04,
        None,
        (Attribute("code", values=("401", "429", "500", "timeout")),),
    ),
    Kind("support_chat", "support", "inbound", 0.03, "chat", (Attribute("thread_id"),)),
    Kind(
        "support_ticket_opened",
        "support",
        "inbound",
        0.02,
        None,
        (Attribute("priority", values=("low", "normal", "high")),),
    ),
    Kind("purchase_completed", "pos", "none", 0.03, None, (_AMOUNT,)),
    Kind(
        "stage_changed",
        "crm",
        "none",
        0.015,
        None,
        (Attribute("stage", values=("qualified", "proposal", "negotiation")),),
    ),
    Kind(
        "quote_sent",
        "crm",
        "outbound",
        0.012,
        None,
        (_AMOUNT, Attribute("seats", numbers=(1, 500))),
    ),
    Kind(
        "document_downloaded",
        "web",
        "none",
        0.02,
        None,
        (Attribute("document", values=("security-whitepaper", "pricing-sheet", "case-study")),),
    ),
    # Outcomes: rare, and the labels of the three scores.
    Kind("deal_won", "crm", "none", 0.002, None, (_AMOUNT,)),
    Kind("deal_lost", "crm", "none", 0.002, None, ()),
    Kind("churned", "crm", "none", 0.001, None, ()),
)

BY_NAME = {kind.name: kind for kind in KINDS}

_SENTENCES = (
    "hi thanks quick question about the renewal pricing for our team plan could you send "
    "the updated quote we are comparing options next week invoice seats onboarding demo "
    "integration export dashboard contract discount trial upgrade support ticket follow up "
    "checking in again on my last message happy to hop on a call tomorrow morning cancel "
    "guaranteed return delivery friday refund"
)
WORDS = tuple(_SENTENCES.split())
"""Message words; a few (guaranteed return, delivery, friday) are ones the default
compliance policy looks for, so some drafts get a verdict other than allow."""
