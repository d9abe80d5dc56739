"""A rep's compliance profile and the training it triggers (engine.training)."""

from __future__ import annotations

from dataclasses import dataclass

from engine.training import DAY_MICROS, profile, tally


@dataclass(frozen=True)
class Rule:
    category: str
    at_least: int
    within_days: int
    lesson_id: str = "value-anchoring"


RATES = Rule("return_promise", 3, 30)


def test_training_fires_once_when_the_count_reaches_the_threshold() -> None:
    findings: tuple[tuple[int, str], ...] = ()
    fired_at = []
    for n in range(5):
        result = tally(findings, n * DAY_MICROS, f"d-{n}", ["return_promise"], [RATES])
        findings = result.findings
        if result.fired:
            fired_at.append((n, result.fired[0][1]))
    assert fired_at == [(2, 3)]
    assert profile(findings, 4 * DAY_MICROS) == {"return_promise": 5}


def test_old_findings_leave_the_window_and_the_rule_can_fire_again() -> None:
    findings: tuple[tuple[int, str], ...] = ()
    fired = 0
    for n, day in enumerate([0, 1, 2, 40, 41, 42]):
        result = tally(findings, day * DAY_MICROS, f"d-{n}", ["return_promise"], [RATES])
        findings = result.findings
        fired += len(result.fired)
    assert fired == 2
    assert profile(findings, 42 * DAY_MICROS) == {"return_promise": 3}


def test_a_draft_counted_twice_changes_nothing() -> None:
    first = tally((), DAY_MICROS, "d-1", ["return_promise", "third_party_pii"], [RATES])
    again = tally(first.findings, 2 * DAY_MICROS, "d-1", ["return_promise"], [RATES])
    assert again.repeated and again.findings == first.findings and not again.fired


def test_other_categories_do_not_count_towards_a_rule() -> None:
    findings: tuple[tuple[int, str], ...] = ()
    for n in range(5):
        result = tally(findings, n * DAY_MICROS, f"d-{n}", ["delivery_date_promise"], [RATES])
        assert not result.fired
        findings = result.findings
