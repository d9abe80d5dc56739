"""The rules a worker runs: the latest valid version of every bundle, swapped whole.

A new version replaces its bundle only if it compiles, its version is higher
than the running one, and its rule ids do not collide with another bundle's.
Otherwise it is refused with the reasons, and what was running keeps running.

A :class:`BundleLedger` decides which records of the (compacted) rules log a worker
still has to offer, given what it accepted before: compaction may leave a refused
record as the only one of its bundle, and that record must never replace the version
that was accepted before it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta

from .builtin import BUILTIN_NAME
from .bundle import BundleProblem, InvalidBundle, RuleBundle, load_bundle
from .compliance import CompiledPolicy
from .journeys import CompiledJourney
from .rule_index import IndexedJourneys, IndexedRules
from .rules import CompiledRule
from .scoring.spec import ScoreSpec


@dataclass(frozen=True, slots=True)
class Verdict:
    """What happened to an offered bundle."""

    bundle: str
    accepted: bool
    version: int | None
    problems: tuple[str, ...] = ()


def deletion_refused(name: str) -> str | None:
    """Why bundle ``name`` cannot be deleted, or None if it can."""
    if name == BUILTIN_NAME:
        return (
            f"the {BUILTIN_NAME!r} bundle cannot be deleted; publish a higher version of it "
            "(rules in mode: shadow) to silence it"
        )
    return None


class RuleBook:
    """Holds the running bundles; ``rules`` is what the worker evaluates right now."""

    def __init__(self, *bundles: RuleBundle) -> None:
        self._bundles: dict[str, RuleBundle] = {b.name: b for b in bundles}
        self.rules: tuple[CompiledRule, ...] = ()
        self.allowed_lateness = timedelta(0)
        self.per_customer_per_day: int | None = None
        self.per_rep_per_day: int | None = None
        self.journeys: tuple[CompiledJourney, ...] = ()
        self.restricted_fields: dict[str, frozenset[str]] = {}
        self.tiers: dict[str, tuple[str, ...]] = {}
        """Membership tier -> benefits, over all bundles (the first bundle by name wins)."""
        """Attribute -> the consent purposes it may be used for, over all bundles."""
        self.scores: dict[str, ScoreSpec] = {}
        """Score name -> its spec, over the running bundles (the first bundle by name wins
        a name two bundles declare)."""
        self.policies: tuple[CompiledPolicy, ...] = ()
        """The running bundles' compliance policies, in bundle-name order."""
        self._rebuild()

    @property
    def bundles(self) -> dict[str, RuleBundle]:
        return dict(self._bundles)

    def offer(self, text: str, source: str, expected_name: str | None = None) -> Verdict:
        """Try a bundle's YAML; on success it replaces the bundle of the same name."""
        name = expected_name or "(unnamed)"
        try:
            bundle = load_bundle(text, source)
        except InvalidBundle as invalid:
            return Verdict(name, False, None, tuple(str(p) for p in invalid.problems))
        problems = self.refusals(bundle, text, expected_name)
        if problems:
            return Verdict(bundle.name, False, bundle.version, tuple(str(p) for p in problems))
        self._bundles[bundle.name] = bundle
        self._rebuild()
        return Verdict(bundle.name, True, bundle.version)

    def withdraw(self, name: str) -> Verdict:
        """Stop running bundle ``name`` (a deletion on the rules topic).

        Withdrawing a bundle that is not running is accepted and changes nothing, so
        replaying the topic from the start gives the same result. The built-in bundle
        cannot be withdrawn: every worker starts with it, so a deletion would not
        survive the tombstone's removal by compaction; silence it by publishing a
        higher ``builtin`` version instead.
        """
        refused = deletion_refused(name)
        if refused is not None:
            return Verdict(name, False, None, (refused,))
        running = self._bundles.pop(name, None)
        if running is not None:
            self._rebuild()
        return Verdict(name, True, None if running is None else running.version)

    def refusals(
        self, bundle: RuleBundle, text: str, expected_name: str | None = None
    ) -> list[BundleProblem]:
        """Why this rule book would refuse ``bundle`` (compiled from ``text``), or nothing."""
        problems: list[BundleProblem] = []
        if expected_name is not None and bundle.name != expected_name:
            problems.append(
                BundleProblem(
                    bundle.source,
                    _line_of(text, "bundle"),
                    "bundle",
                    f"published under the key {expected_name!r} but named {bundle.name!r}",
                )
            )
        running = self._bundles.get(bundle.name)
        if running is not None and bundle.version <= running.version:
            problems.append(
                BundleProblem(
                    bundle.source,
                    _line_of(text, "version"),
                    "version",
                    f"expected a version above the running {running.version}, found "
                    f"{bundle.version}",
                )
            )
        for other in self._bundles.values():
            if other.name == bundle.name:
                continue
            mine = {j.journey_id for j in bundle.journeys}
            for journey_id in sorted(mine & {j.journey_id for j in other.journeys}):
                problems.append(
                    BundleProblem(
                        bundle.source,
                        1,
                        "journeys",
                        f"journey id {journey_id!r} is already used by bundle {other.name!r}",
                    )
                )
            for rule_id in sorted(bundle.rule_ids & other.rule_ids):
                problems.append(
                    BundleProblem(
                        bundle.source,
                        1,
                        "rules",
                        f"rule id {rule_id!r} is already used by bundle {other.name!r}",
                    )
                )
        return problems

    def _rebuild(self) -> None:
        caps = [b.per_customer_per_day for b in self._bundles.values() if b.per_customer_per_day]
        self.per_customer_per_day = min(caps) if caps else None
        rep_caps = [b.per_rep_per_day for b in self._bundles.values() if b.per_rep_per_day]
        self.per_rep_per_day = min(rep_caps) if rep_caps else None
        self.allowed_lateness = max(
            (b.allowed_lateness for b in self._bundles.values()), default=timedelta(0)
        )
        # Indexed by the touchpoints that can change them (engine.rule_index): apply
        # evaluates only those.
        self.rules = IndexedRules(
            rule for name in sorted(self._bundles) for rule in self._bundles[name].rules
        )
        self.journeys = IndexedJourneys(
            journey for name in sorted(self._bundles) for journey in self._bundles[name].journeys
        )
        self.policies = tuple(
            policy
            for name in sorted(self._bundles)
            if (policy := self._bundles[name].policy) is not None
        )
        scores: dict[str, ScoreSpec] = {}
        for name in sorted(self._bundles):
            scoring = self._bundles[name].scoring
            for score in scoring.scores if scoring is not None else ():
                scores.setdefault(score.name, score)
        self.scores = scores
        restricted: dict[str, frozenset[str]] = {}
        for bundle in self._bundles.values():
            for name, purposes in bundle.restricted_fields.items():
                # Two bundles restricting one field: only the purposes both allow.
                restricted[name] = restricted.get(name, purposes) & purposes
        self.restricted_fields = restricted
        tiers: dict[str, tuple[str, ...]] = {}
        for name in sorted(self._bundles):
            for tier, listed in self._bundles[name].tiers.items():
                tiers.setdefault(tier, listed)  # the first bundle by name says
        self.tiers = tiers


def _line_of(text: str, key: str) -> int:
    """The line of top-level ``key`` in bundle YAML (1 if it cannot be found)."""
    found = re.search(rf"^{re.escape(key)}\s*:", text, re.MULTILINE)
    return text.count("\n", 0, found.start()) + 1 if found else 1


@dataclass(frozen=True, slots=True)
class Kept:
    """What was last accepted for bundle ``name``: the text of the record at ``position``
    in the rules log, or None when that record was a deletion."""

    name: str
    position: int
    text: str | None


class BundleLedger:
    """Feeds a :class:`RuleBook` from the rules log, after what was kept as accepted.

    :meth:`restore` loads the kept bundles first; :meth:`decide` then offers the log's
    records, except those of a bundle at or before the position of its kept record:
    they were decided already, and whatever compaction left of them (an older version,
    a broken text) cannot replace what was accepted after them.
    """

    def __init__(self, book: RuleBook) -> None:
        self.book = book
        self._decided: dict[str, int] = {}

    def restore(self, kept: Iterable[Kept], log_end: int) -> list[Verdict]:
        """Load the newest kept record of each bundle (by log position), oldest first.

        A kept position at or past ``log_end`` (the rules log was recreated) is not
        trusted: that bundle's records on the log are all offered again. A kept text
        the rule book now refuses is reported, and that bundle's records are offered
        again too.
        """
        newest: dict[str, Kept] = {}
        for entry in kept:
            if entry.name not in newest or entry.position > newest[entry.name].position:
                newest[entry.name] = entry
        verdicts: list[Verdict] = []
        for entry in sorted(newest.values(), key=lambda e: e.position):
            if entry.text is None:
                verdict = self.book.withdraw(entry.name)
            else:
                source = f"rules-accepted ({entry.name}, rules@{entry.position})"
                verdict = self.book.offer(entry.text, source, expected_name=entry.name)
            verdicts.append(verdict)
            if verdict.accepted and entry.position < log_end:
                self._decided[entry.name] = entry.position
        return verdicts

    def decide(self, name: str, position: int, text: str | None, source: str) -> Verdict | None:
        """Offer the log's record at ``position`` (a deletion if ``text`` is None); None if
        it was decided before the kept record of its bundle."""
        if position <= self._decided.get(name, -1):
            return None
        self._decided[name] = position
        if text is None:
            return self.book.withdraw(name)
        return self.book.offer(text, source, expected_name=name)
