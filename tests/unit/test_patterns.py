"""``matches`` runs on a linear-time engine (RE2): what it cannot run is refused at load time,
and what it runs keeps the documented meaning (found anywhere, case-sensitive unless ``(?i)``).
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from engine.bundle import InvalidBundle, load_bundle
from engine.reducer import apply
from schemas.models import Channel, Direction, TouchpointEvent

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


def bundle_matching(pattern: str) -> str:
    quoted = pattern.replace("'", "''")
    return (
        "bundle: b\nversion: 1\nrules:\n  - id: r\n"
        f"    when: {{event: {{text: {{matches: '{quoted}'}}}}}}\n"
        "    then: {kind: task, title: t, due_in: 1h}\n"
    )


def fires(pattern: str, text: str) -> bool:
    rules = load_bundle(bundle_matching(pattern), "team.yaml").rules
    event = TouchpointEvent(
        event_id="e1",
        customer_id="c1",
        occurred_at=T0,
        received_at=T0,
        channel=Channel.CHAT,
        kind="message_received",
        direction=Direction.INBOUND,
        text=text,
        source="test/1",
    )
    _, decisions = apply(None, event, NOW, rules)
    return bool(decisions)


def refusal(pattern: str) -> str:
    with pytest.raises(InvalidBundle) as caught:
        load_bundle(bundle_matching(pattern), "team.yaml")
    [problem] = caught.value.problems
    return str(problem)


def test_nested_quantifiers_evaluate_a_long_message_correctly() -> None:
    # Backtracking engines take exponential time here; RE2 answers in one pass.
    assert not fires("^(a+)+$", "a" * 10_000 + "!")
    assert fires("^(a+)+$", "a" * 10_000)


@pytest.mark.parametrize(
    ("pattern", "reason"),
    [
        (r"(\w+) \1", r"invalid escape sequence: \1"),
        ("cancel(?= now)", "invalid perl operator: (?="),
        ("(?<!not )interested", "invalid perl operator: (?<"),
        ("(?x) can cel", "invalid perl operator: (?x"),
        ("(unclosed", "missing ): (unclosed"),
    ],
    ids=["backreference", "lookahead", "lookbehind", "verbose-flag", "syntax"],
)
def test_what_re2_cannot_run_is_refused_with_the_reason(pattern: str, reason: str) -> None:
    problem = refusal(pattern)
    assert problem.startswith("team.yaml:5: rules[0].when.event.text.matches: ")
    assert "a regular expression of the RE2 syntax (linear time)" in problem
    assert reason in problem


@pytest.mark.parametrize(
    ("pattern", "text", "expected"),
    [
        ("cancel", "we may cancel soon", True),  # found anywhere, not only at the start
        ("^cancel", "we may cancel soon", False),
        ("Cancel", "we may cancel soon", False),  # case matters
        ("(?i)DISCOUNT|price match", "Any discount?", True),
        ("(?i)straße", "STRASSE", False),  # simple case folding, as before
        ("退款", "我要退款", True),
        (r"\p{Han}{2}", "我要", True),
        ("^SKU-[0-9]+$", "SKU-42", True),
        ("^.{3}$", "é中a", True),  # characters, not bytes
    ],
)
def test_matches_keeps_its_documented_meaning(pattern: str, text: str, expected: bool) -> None:
    assert fires(pattern, text) is expected


def test_a_pattern_is_evaluated_without_building_match_objects() -> None:
    from engine.conditions import compile_pattern

    search = compile_pattern("(?i)price (match|beat)")
    assert search("Can you do a PRICE MATCH?") is True
    assert search("no") is False
