"""Caps per assignee: the pure decision of the assignee-keyed stage."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from engine.assignees import DAY, REMEMBERED, Admission, Sent, admit, assignee_key
from engine.bundle import InvalidBundle, load_bundle
from engine.rulebook import RuleBook
from schemas.models import InterventionCommand, InterventionKind

HOUR = DAY // 24
T0 = 1_800_000_000_000_000


def admitted(sent: Sent, at: int, cap: int | None, iid: str | None = None) -> tuple[Sent, bool]:
    remembered, admission = admit(sent, at, iid or f"i-{at}", cap)
    return remembered, admission is Admission.ADMITTED


def test_a_rep_gets_up_to_the_cap_in_any_24_hours() -> None:
    sent: Sent = ()
    verdicts = []
    for n in range(4):
        sent, ok = admitted(sent, T0 + n * HOUR, cap=3)
        verdicts.append(ok)
    assert verdicts == [True, True, True, False]
    # The first one leaves the window 24 h after it was sent, not at midnight.
    assert admitted(sent, T0 + DAY - 1, cap=3)[1] is False
    sent, ok = admitted(sent, T0 + DAY, cap=3)
    assert ok
    assert [at for at, _ in sent] == [T0 + HOUR, T0 + 2 * HOUR, T0 + DAY]


def test_refused_interventions_do_not_use_up_the_cap() -> None:
    sent, _ = admitted((), T0, cap=1)
    for n in range(1, 5):
        sent, ok = admitted(sent, T0 + n * HOUR, cap=1)
        assert not ok
    assert sent == ((T0, f"i-{T0}"),)


def test_out_of_order_times_count_within_24_hours_either_way() -> None:
    sent, _ = admitted((), T0 + 10 * HOUR, cap=2)
    sent, ok = admitted(sent, T0, cap=2)  # earlier, but within a day of the first
    assert ok
    assert admitted(sent, T0 + 5 * HOUR, cap=2)[1] is False


@pytest.mark.parametrize("cap", [None, 1, 5])
def test_an_intervention_id_is_admitted_once_however_often_it_is_read(cap: int | None) -> None:
    sent, first = admit((), T0, "same", cap)
    again, second = admit(sent, T0, "same", cap)
    assert (first, second) == (Admission.ADMITTED, Admission.REPEATED)
    assert again == sent  # a repeat uses up nothing


def test_without_a_cap_every_distinct_id_is_admitted_and_memory_stays_bounded() -> None:
    sent: Sent = ()
    for n in range(REMEMBERED + 50):
        sent, admission = admit(sent, T0 + n, f"i-{n}", None)
        assert admission is Admission.ADMITTED
    assert len(sent) == REMEMBERED and sent[-1] == (T0 + REMEMBERED + 49, f"i-{REMEMBERED + 49}")


def command(rep: str | None, role: str | None) -> InterventionCommand:
    at = datetime(2026, 11, 1, tzinfo=UTC)
    return InterventionCommand.model_validate(
        {
            "intervention_id": "00000000-0000-5000-8000-000000000001",
            "customer_id": "c-1",
            "rule_id": "r",
            "rule_version": 1,
            "kind": InterventionKind.TASK,
            "priority": "normal",
            "title": "t",
            "body": "",
            "rep_id": rep,
            "assignee_role": role,
            "created_at": at,
            "due_at": at + timedelta(hours=1),
            "explanation": {"matched": [], "triggering_event_ids": ["e"]},
        }
    )


def test_the_assignee_is_the_rep_else_the_role_queue() -> None:
    assert assignee_key(command("rep-ivy", None)) == "rep:rep-ivy"
    assert assignee_key(command(None, "pharmacist")) == "role:pharmacist"
    assert assignee_key(command(None, None)) == "unassigned"


RULE = "rules:\n  - id: {n}.r\n    when: {{event: {{kind: a}}}}\n    then: {{kind: task, title: t, due_in: 1h}}\n"  # noqa: E501


def test_bundles_declare_rep_caps_and_the_strictest_applies() -> None:
    both = load_bundle(
        "bundle: a\nversion: 1\ncaps: {per_customer_per_day: 4, per_rep_per_day: 9}\n"
        + RULE.format(n="a")
    )
    assert (both.per_customer_per_day, both.per_rep_per_day) == (4, 9)
    book = RuleBook()
    assert book.offer(
        "bundle: a\nversion: 1\ncaps: {per_rep_per_day: 9}\n" + RULE.format(n="a"), "a"
    ).accepted
    assert book.offer(
        "bundle: b\nversion: 1\ncaps: {per_rep_per_day: 5}\n" + RULE.format(n="b"), "b"
    ).accepted
    assert (book.per_rep_per_day, book.per_customer_per_day) == (5, None)


@pytest.mark.parametrize(
    ("caps", "expected"),
    [
        ("{}", "caps: expected per_customer_per_day, per_rep_per_day or both"),
        ("{per_rep_per_day: 0}", "caps.per_rep_per_day"),
        ("{per_rep_per_dya: 3}", "did you mean 'per_rep_per_day'?"),
    ],
)
def test_bad_caps_are_refused_with_the_field_named(caps: str, expected: str) -> None:
    with pytest.raises(InvalidBundle) as caught:
        load_bundle(f"bundle: a\nversion: 1\ncaps: {caps}\n" + RULE.format(n="a"), "caps.yaml")
    text = "\n".join(str(p) for p in caught.value.problems)
    assert "caps.yaml:3:" in text
    assert expected in text
