"""What the compliance gate is given and what it answers."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from schemas.models import Severity


class Verdict(StrEnum):
    """A gate verdict, from the most lenient to the strictest."""

    ALLOW = "allow"
    REMIND = "remind"
    """Blue: the draft may go; the rep is reminded of the policy."""
    CONFIRM = "confirm"
    """Yellow: the draft goes only once a manager confirms it."""
    BLOCK = "block"
    """Red: the draft does not go."""

    @property
    def rank(self) -> int:
        """0 for allow up to 3 for block: a higher rank is stricter."""
        return _RANKS[self]

    @property
    def severity(self) -> Severity | None:
        """The intervention severity of this tier; None for allow."""
        return _SEVERITIES[self]

    def raised(self, steps: int = 1) -> Verdict:
        """This tier raised by ``steps`` (never past block)."""
        return _ORDER[min(self.rank + steps, len(_ORDER) - 1)]

    @staticmethod
    def strictest(verdicts: tuple[Verdict, ...] | list[Verdict]) -> Verdict:
        """The strictest of ``verdicts``; allow when there are none."""
        return max(verdicts, key=_RANKS.__getitem__, default=Verdict.ALLOW)


_ORDER = (Verdict.ALLOW, Verdict.REMIND, Verdict.CONFIRM, Verdict.BLOCK)
_RANKS = {verdict: rank for rank, verdict in enumerate(_ORDER)}
_SEVERITIES: dict[Verdict, Severity | None] = {
    Verdict.ALLOW: None,
    Verdict.REMIND: Severity.BLUE,
    Verdict.CONFIRM: Severity.YELLOW,
    Verdict.BLOCK: Severity.RED,
}

DRAFT_KINDS = ("message", "visit_report", "email")


@dataclass(frozen=True, slots=True)
class Draft:
    """Something a rep is about to send or file, checked before it leaves."""

    draft_id: str
    customer_id: str
    rep_id: str
    text: str
    kind: str = "message"
    """message, visit_report or email."""
    sender_contacts: tuple[str, ...] = ()
    """The rep's own phone numbers and emails: never flagged."""
    recipient_contacts: tuple[str, ...] = ()
    """The customer's own contact details: never flagged."""


@dataclass(frozen=True, slots=True)
class Finding:
    """One thing a policy objects to, located in the draft as the rep wrote it."""

    category: str
    term: str
    """The policy's term as written in the bundle; for personal data, the detector's name
    (``resident_id``, ``mobile``, ``bank_card``, ``email``), never the data itself."""
    start: int
    end: int
    """Code-point positions in the original draft text, end exclusive."""
    tier: Verdict
    reason: str
    excerpt: str
    """The original text at start:end with personal data masked."""


@dataclass(frozen=True, slots=True)
class Template:
    """An approved wording to suggest instead."""

    template_id: str
    text: str


@dataclass(frozen=True, slots=True)
class PolicyVerdict:
    """What one policy decided about a draft."""

    policy_id: str
    policy_version: int
    mode: str
    """test, notify or enforce."""
    verdict: Verdict
    """What this policy decided, before its mode is applied."""
    findings: tuple[Finding, ...]
    missing_topics: tuple[str, ...]
    templates: tuple[Template, ...]
    reason: str


@dataclass(frozen=True, slots=True)
class GateDecision:
    """The answer to a draft, after every running policy's mode is applied."""

    verdict: Verdict
    """What the caller is told: the strictest over the policies after their modes."""
    policies: tuple[PolicyVerdict, ...]
    """Every running policy's verdict, test-mode ones included."""
    masked_text: str
    """The draft text with personal data masked."""


@dataclass(frozen=True, slots=True)
class TrainingRule:
    """A rep whose findings in ``category`` over ``within_days`` reach ``at_least`` gets a
    ``training`` intervention with this lesson. Counting is done by the worker."""

    category: str
    at_least: int
    within_days: int
    lesson_id: str
    title: str
    body: str
