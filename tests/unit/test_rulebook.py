"""The running rule book: offering and withdrawing bundles."""

from __future__ import annotations

from engine.builtin import BUILTIN_BUNDLE
from engine.rulebook import RuleBook

TEAM = """\
bundle: team
version: {version}
caps: {{per_customer_per_day: 2}}
rules:
  - id: team.demo
    when: {{event: {{kind: demo_requested}}}}
    then: {{kind: task, title: t, due_in: 1h}}
journeys:
  - id: team.onboarding
    entry: {{event: {{kind: signed_up}}}}
    variants:
      - name: all
        weight: 1
        steps:
          - id: welcome
            after: 1h
            then: {{kind: task, title: w, due_in: 1h}}
"""


def test_a_withdrawn_bundle_stops_and_its_name_is_free_again() -> None:
    book = RuleBook(BUILTIN_BUNDLE)
    assert book.offer(TEAM.format(version=4), "team.yaml", "team").accepted
    assert [r.rule_id for r in book.rules] == ["builtin.unanswered-outbound", "team.demo"]
    assert book.per_customer_per_day == 2 and len(book.journeys) == 1

    verdict = book.withdraw("team")

    assert (verdict.accepted, verdict.version) == (True, 4)
    assert [r.rule_id for r in book.rules] == ["builtin.unanswered-outbound"]
    assert book.per_customer_per_day is None and book.journeys == ()
    # A lower version is fine now: nothing of that name is running.
    assert book.offer(TEAM.format(version=1), "team.yaml", "team").accepted


def test_withdrawing_an_unknown_bundle_changes_nothing_so_replays_agree() -> None:
    book = RuleBook(BUILTIN_BUNDLE)
    verdict = book.withdraw("never-pushed")
    assert (verdict.accepted, verdict.version) == (True, None)
    assert [r.rule_id for r in book.rules] == ["builtin.unanswered-outbound"]


def test_the_builtin_bundle_cannot_be_withdrawn() -> None:
    book = RuleBook(BUILTIN_BUNDLE)
    verdict = book.withdraw("builtin")
    assert not verdict.accepted
    assert "mode: shadow" in verdict.problems[0]
    assert [r.rule_id for r in book.rules] == ["builtin.unanswered-outbound"]
