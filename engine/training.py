"""A rep's compliance profile and the training it triggers.

Each verdict with findings adds one entry per finding category to the rep's recent
findings: ``(decided at µs, "<category>|<draft id>")``. A policy's training rule
(``TrainingRule``: at least N findings of a category within D days) fires when a
draft takes the rep's count from below N to N or more; the rep then gets a ``training``
intervention with the rule's lesson. The same draft counted twice (a redelivered
verdict) changes nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

DAY_MICROS = 86_400_000_000
DEFAULT_WINDOW_DAYS = 30
ENTRIES_MAX = 2_000
"""A rep's profile keeps at most this many recent findings (the newest)."""

Findings = tuple[tuple[int, str], ...]
"""(decided at µs, "<category>|<draft id>"), oldest first."""


class TrainingRule(Protocol):
    @property
    def category(self) -> str: ...
    @property
    def at_least(self) -> int: ...
    @property
    def within_days(self) -> int: ...


@dataclass(frozen=True, slots=True)
class Tally:
    findings: Findings
    fired: tuple[tuple[TrainingRule, int], ...]
    """The rules this draft made fire, with the rep's count of their category."""
    repeated: bool = False


def tally(
    findings: Findings,
    at: int,
    draft_id: str,
    categories: Iterable[str],
    rules: Sequence[TrainingRule],
) -> Tally:
    """Add a draft's finding categories to a rep's ``findings`` at ``at``."""
    suffix = f"|{draft_id}"
    if any(entry.endswith(suffix) for _, entry in findings):
        return Tally(findings, (), repeated=True)
    window = max((r.within_days for r in rules), default=DEFAULT_WINDOW_DAYS)
    horizon = at - max(window, DEFAULT_WINDOW_DAYS) * DAY_MICROS
    kept = [(t, e) for t, e in findings if t > horizon]
    added = [(at, f"{category}{suffix}") for category in sorted(set(categories))]
    updated = tuple(sorted(kept + added))[-ENTRIES_MAX:]
    fired: list[tuple[TrainingRule, int]] = []
    for rule in rules:
        if not any(e.startswith(f"{rule.category}|") for _, e in added):
            continue
        since = at - rule.within_days * DAY_MICROS
        after = sum(1 for t, e in updated if t > since and e.startswith(f"{rule.category}|"))
        if after - 1 < rule.at_least <= after:
            fired.append((rule, after))
    return Tally(updated, tuple(fired))


def profile(findings: Findings, at: int, days: int = DEFAULT_WINDOW_DAYS) -> dict[str, int]:
    """Findings per category within ``days`` before ``at``."""
    since = at - days * DAY_MICROS
    counts: dict[str, int] = {}
    for t, entry in findings:
        if t > since:
            category = entry.split("|", 1)[0]
            counts[category] = counts.get(category, 0) + 1
    return dict(sorted(counts.items()))
