"""The running rule book: offering and withdrawing bundles."""

from __future__ import annotations

from engine.builtin import BUILTIN_BUNDLE
from engine.bundle import load_bundle
from engine.rulebook import BundleLedger, Kept, RuleBook

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


def test_a_refused_version_names_the_line_of_its_version_field() -> None:
    book = RuleBook(BUILTIN_BUNDLE)
    assert book.offer(TEAM.format(version=2), "team.yaml", "team").accepted
    older = "# re-pushed from an old checkout\n\n" + TEAM.format(version=1)

    verdict = book.offer(older, "team.yaml", "team")

    assert not verdict.accepted
    assert verdict.problems == (
        "team.yaml:4: version: expected a version above the running 2, found 1",
    )


def test_refusals_say_why_without_changing_what_runs() -> None:
    book = RuleBook(BUILTIN_BUNDLE)
    assert book.offer(TEAM.format(version=2), "team.yaml", "team").accepted
    same = load_bundle(TEAM.format(version=2), "team.yaml")

    problems = book.refusals(same, TEAM.format(version=2))

    assert [str(p) for p in problems] == [
        "team.yaml:2: version: expected a version above the running 2, found 2"
    ]
    assert book.refusals(load_bundle(TEAM.format(version=3), "t"), TEAM.format(version=3)) == []
    assert book.bundles["team"].version == 2


def running(ledger: BundleLedger) -> dict[str, int]:
    return {name: b.version for name, b in ledger.book.bundles.items() if name != "builtin"}


def test_a_refused_record_left_by_compaction_never_replaces_the_kept_version() -> None:
    # The log was v1@0, v2@1, v1@2, broken v3@3; compaction left only offset 3.
    ledger = BundleLedger(RuleBook(BUILTIN_BUNDLE))
    [restored] = ledger.restore([Kept("team", 1, TEAM.format(version=2))], log_end=4)
    assert (restored.accepted, restored.version) == (True, 2)

    verdict = ledger.decide("team", 3, TEAM.format(version=3).replace("when:", "wen:"), "r@3")

    assert verdict is not None and not verdict.accepted
    assert running(ledger) == {"team": 2}


def test_an_older_version_left_by_compaction_is_refused_against_the_kept_one() -> None:
    ledger = BundleLedger(RuleBook(BUILTIN_BUNDLE))
    ledger.restore([Kept("team", 1, TEAM.format(version=2))], log_end=3)

    verdict = ledger.decide("team", 2, TEAM.format(version=1), "rules@2")

    assert verdict is not None and not verdict.accepted
    assert "expected a version above the running 2, found 1" in verdict.problems[0]
    assert running(ledger) == {"team": 2}


def test_records_decided_before_the_kept_one_are_not_offered_again() -> None:
    ledger = BundleLedger(RuleBook(BUILTIN_BUNDLE))
    ledger.restore([Kept("team", 1, TEAM.format(version=2))], log_end=3)

    assert ledger.decide("team", 0, TEAM.format(version=1), "rules@0") is None
    assert ledger.decide("team", 1, TEAM.format(version=2), "rules@1") is None
    assert running(ledger) == {"team": 2}


def test_without_anything_kept_the_log_is_decided_record_by_record() -> None:
    ledger = BundleLedger(RuleBook(BUILTIN_BUNDLE))
    assert ledger.restore([], log_end=3) == []

    verdicts = [
        ledger.decide("team", offset, TEAM.format(version=version), f"rules@{offset}")
        for offset, version in enumerate((1, 2, 1))
    ]

    assert [v.accepted for v in verdicts if v is not None] == [True, True, False]
    assert running(ledger) == {"team": 2}


def test_a_kept_deletion_stays_deleted_and_frees_the_name() -> None:
    # The log was v5@0, deletion@1; a re-push of v1 follows at offset 2.
    ledger = BundleLedger(RuleBook(BUILTIN_BUNDLE))
    [restored] = ledger.restore(
        [Kept("team", 0, TEAM.format(version=5)), Kept("team", 1, None)], log_end=3
    )
    assert restored.accepted and running(ledger) == {}

    assert ledger.decide("team", 0, TEAM.format(version=5), "rules@0") is None
    verdict = ledger.decide("team", 2, TEAM.format(version=1), "rules@2")

    assert verdict is not None and verdict.accepted
    assert running(ledger) == {"team": 1}


def test_a_deletion_on_the_log_after_the_kept_version_still_deletes() -> None:
    ledger = BundleLedger(RuleBook(BUILTIN_BUNDLE))
    ledger.restore([Kept("team", 0, TEAM.format(version=1))], log_end=2)

    verdict = ledger.decide("team", 1, None, "rules@1")

    assert verdict is not None and (verdict.accepted, verdict.version) == (True, 1)
    assert running(ledger) == {}


def test_the_newest_kept_record_wins_whatever_order_it_was_written_in() -> None:
    # A worker lagging behind may write an older accepted version after a newer one.
    ledger = BundleLedger(RuleBook(BUILTIN_BUNDLE))
    ledger.restore(
        [Kept("team", 1, TEAM.format(version=2)), Kept("team", 0, TEAM.format(version=1))],
        log_end=2,
    )
    assert running(ledger) == {"team": 2}


def test_kept_positions_past_the_end_of_the_log_are_not_trusted() -> None:
    # The rules log was recreated: its offsets start again below the kept one.
    ledger = BundleLedger(RuleBook(BUILTIN_BUNDLE))
    ledger.restore([Kept("team", 7, TEAM.format(version=2))], log_end=1)

    verdict = ledger.decide("team", 0, TEAM.format(version=3), "rules@0")

    assert verdict is not None and verdict.accepted
    assert running(ledger) == {"team": 3}
