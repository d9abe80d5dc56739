"""The rules a worker runs: the latest valid version of every bundle, swapped whole.

A new version replaces its bundle only if it compiles, its version is higher
than the running one, and its rule ids do not collide with another bundle's.
Otherwise it is refused with the reasons, and what was running keeps running.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from .builtin import BUILTIN_NAME
from .bundle import BundleProblem, InvalidBundle, RuleBundle, load_bundle
from .journeys import CompiledJourney
from .rules import CompiledRule


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
        problems = self._conflicts(bundle, expected_name)
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

    def _conflicts(self, bundle: RuleBundle, expected_name: str | None) -> list[BundleProblem]:
        problems: list[BundleProblem] = []
        if expected_name is not None and bundle.name != expected_name:
            problems.append(
                BundleProblem(
                    bundle.source,
                    1,
                    "bundle",
                    f"published under the key {expected_name!r} but named {bundle.name!r}",
                )
            )
        running = self._bundles.get(bundle.name)
        if running is not None and bundle.version <= running.version:
            problems.append(
                BundleProblem(
                    bundle.source,
                    2,
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
        self.rules = tuple(
            rule for name in sorted(self._bundles) for rule in self._bundles[name].rules
        )
        self.journeys = tuple(
            journey for name in sorted(self._bundles) for journey in self._bundles[name].journeys
        )
