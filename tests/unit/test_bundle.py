"""Rule bundles are refused at load time with the file, line and field named."""

from __future__ import annotations

import textwrap

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.bundle import InvalidBundle, load_bundle
from engine.rules import RuleMode

GOOD = """\
bundle: trial-health
version: 3
allowed_lateness: 10m
rules:
  - id: trial.video-then-error
    mode: shadow
    cooldown: 7d
    when:
      sequence:
        within: 24h
        steps:
          - event: {kind: video_watched, attributes.watched_seconds: {gt: 272}}
          - event: {kind: sandbox_error}
    then:
      kind: task
      priority: high
      due_in: 15m
      title: "Remote fix for {customer_id}"
"""


def problems(text: str) -> list[str]:
    with pytest.raises(InvalidBundle) as caught:
        load_bundle(textwrap.dedent(text), "rules/team.yaml")
    return [str(p) for p in caught.value.problems]


def good_with(old: str, new: str) -> str:
    assert old in GOOD
    return GOOD.replace(old, new)


def test_a_valid_bundle_compiles() -> None:
    bundle = load_bundle(GOOD, "rules/team.yaml")
    assert (bundle.name, bundle.version) == ("trial-health", 3)
    [rule] = bundle.rules
    assert rule.rule_id == "trial.video-then-error"
    assert rule.version == 3
    assert rule.mode is RuleMode.SHADOW
    assert rule.cooldown.days == 7
    assert bundle.allowed_lateness.total_seconds() == 600


def test_unknown_field_names_line_and_suggests() -> None:
    assert problems(good_with("    cooldown: 7d", "    coldown: 7d")) == [
        "rules/team.yaml:7: rules[0].coldown: unknown field; expected one of id, when, then, "
        "description, mode, cooldown (did you mean 'cooldown'?)"
    ]


def test_unknown_touchpoint_field_is_refused_with_a_suggestion() -> None:
    [problem] = problems(good_with("{kind: sandbox_error}", "{knd: sandbox_error}"))
    assert problem.startswith("rules/team.yaml:13: rules[0].when.sequence.steps[1].event.knd:")
    assert "did you mean 'kind'?" in problem


def test_wrong_types_are_named() -> None:
    [problem] = problems(good_with("{gt: 272}", "{gt: lots}"))
    assert "rules/team.yaml:12:" in problem
    assert (
        "attributes.watched_seconds.gt: expected a number to compare with, found str 'lots'"
        in problem
    )


def test_an_impossible_window_is_refused() -> None:
    [problem] = problems(good_with("within: 24h", "within: 0s"))
    assert problem == (
        "rules/team.yaml:10: rules[0].when.sequence.within: impossible window: expected a "
        "duration above zero, found '0s'"
    )


def test_a_bad_duration_says_what_it_expected() -> None:
    [problem] = problems(good_with("due_in: 15m", "due_in: soon"))
    assert "rules[0].then.due_in: expected a duration such as '15m'" in problem


def test_unreachable_conditions_are_refused() -> None:
    [problem] = problems(good_with("{gt: 272}", "{gt: 272, lt: 100}"))
    assert "unreachable" in problem
    both = """
        bundle: b
        version: 1
        rules:
          - id: r
            when:
              all:
                - event: {kind: purchase}
                - event: {kind: refund}
            then: {kind: task, title: t, due_in: 1h}
    """
    [problem] = problems(both)
    assert "unreachable: one touchpoint cannot have kind 'purchase' and 'refund'" in problem
    assert "use a sequence" in problem


def test_enum_values_are_checked_with_a_suggestion() -> None:
    text = """
        bundle: b
        version: 1
        rules:
          - id: r
            when: {event: {direction: outbund}}
            then: {kind: task, title: t, due_in: 1h}
    """
    [problem] = problems(text)
    assert "direction is never 'outbund'" in problem
    assert "did you mean 'outbound'?" in problem


def test_every_problem_is_reported_not_just_the_first() -> None:
    text = """
        bundle: b
        version: 0
        rules:
          - id: r1
            when: {event: {kind: Purchase}}
            then: {kind: tsk, title: t, due_in: 1h}
          - id: r1
            when: {streak: {of: {direction: outbound}, reset_by: {direction: inbound}, length: 0}}
            then: {kind: task, title: "{custmer_id}", due_in: 1h}
    """
    found = problems(text)
    assert any(
        ":3: version: expected a whole number from 1 to 2147483647, found 0" in p for p in found
    )
    assert any(
        "rules[0].when.event.kind: a touchpoint kind is lower_snake_case" in p for p in found
    )
    assert any("rules[0].then.kind: expected one of task" in p and "'task'" in p for p in found)
    assert any(
        "rules[1].when.streak.length: expected a whole number from 1 to 1000" in p for p in found
    )
    assert any("unknown placeholder {custmer_id}" in p and "'customer_id'" in p for p in found)


def test_duplicate_rule_ids_and_keys_are_refused() -> None:
    text = """
        bundle: b
        version: 1
        rules:
          - id: same
            when: {event: {kind: purchase}}
            then: {kind: task, title: t, due_in: 1h}
          - id: same
            when: {event: {kind: refund}}
            then: {kind: task, title: t, due_in: 1h}
    """
    [problem] = problems(text)
    assert "rule id 'same' is already used by the rule at line 5" in problem
    [problem] = problems("bundle: b\nversion: 1\nversion: 2\nrules: []\n")
    assert problem == "rules/team.yaml:3: version: appears twice"


def test_yaml_syntax_errors_name_the_line() -> None:
    [problem] = problems("bundle: b\nversion: 1\nrules:\n  - id: [unclosed\n")
    assert problem.startswith("rules/team.yaml:")
    assert "not valid YAML" in problem


def test_a_condition_needs_exactly_one_kind() -> None:
    text = """
        bundle: b
        version: 1
        rules:
          - id: r
            when: {event: {kind: a}, state: {touchpoints: {gt: 1}}}
            then: {kind: task, title: t, due_in: 1h}
    """
    [problem] = problems(text)
    assert "expected exactly one condition" in problem
    [problem] = problems(
        text.replace("{event: {kind: a}, state: {touchpoints: {gt: 1}}}", "{evnt: {kind: a}}")
    )
    assert "did you mean 'event'?" in problem


def test_bad_regular_expressions_and_assignees_are_refused() -> None:
    text = """
        bundle: b
        version: 1
        rules:
          - id: r
            when: {event: {text: {matches: "(unclosed"}}}
            then: {kind: task, title: t, due_in: 1h, assignee: pharmacist}
    """
    found = problems(text)
    assert any("expected a regular expression of the RE2 syntax" in p for p in found)
    assert any("expected 'owner', 'manager' or 'role:<name>'" in p for p in found)


@pytest.mark.parametrize(
    ("then", "fragment"),
    [
        ("{kind: task, title: '', due_in: 1h}", "expected a title, found none"),
        ("{kind: task, title: '{customer_id:d}', due_in: 1h}", "take no format or conversion"),
        ("{kind: task, title: '" + "x" * 501 + "', due_in: 1h}", "at most 500 characters"),
        ("{kind: task, title: t, due_in: 1h, assignee: 'role:" + "r" * 70 + "'}", "at most 64"),
    ],
)
def test_actions_that_could_not_be_emitted_are_refused_at_load(then: str, fragment: str) -> None:
    text = (
        "bundle: b\nversion: 1\nrules:\n  - id: r\n    when: {event: {kind: a}}\n"
        f"    then: {then}\n"
    )
    [problem] = problems(text)
    assert ":6: rules[0].then." in problem
    assert fragment in problem


def test_numbers_are_not_compared_with_text_fields() -> None:
    text = """
        bundle: b
        version: 1
        rules:
          - id: r
            when: {event: {rep_id: {gt: 5}}}
            then: {kind: task, title: t, due_in: 1h}
    """
    [problem] = problems(text)
    assert "rep_id is text and never compares as a number" in problem


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("? [a, b]\n: c\n", "rules/team.yaml:1: (yaml): expected a plain key, found a list of 2"),
        (
            "bundle: b\nversion: 1\nrules:\n  - id: r\n    when: {event: {? {x: 1}: 1}}\n",
            "rules/team.yaml:5: (yaml): expected a plain key, found a mapping",
        ),
        (
            'bundle: b\nversion: 1\ndescription: "a \ud800 b"\n',
            "rules/team.yaml:3: (yaml): not valid YAML: unacceptable character #xd800: special "
            "characters are not allowed",
        ),
        (
            "bundle: b\nversion: 1\ndescription: a \x07 b\n",
            "rules/team.yaml:3: (yaml): not valid YAML: unacceptable character #x0007: special "
            "characters are not allowed",
        ),
    ],
    ids=["list-key", "mapping-key", "surrogate", "control-character"],
)
def test_yaml_a_bundle_cannot_use_is_refused_not_a_crash(text: str, expected: str) -> None:
    assert problems(text) == [expected]


YAML_PIECES = st.sampled_from(
    [
        "bundle: b\n", "version: 1\n", "rules:\n", "  - id: r\n", "    when: ", "    then: ",
        "{kind: task, title: t, due_in: 1h}", "{event: {kind: a}}", "{not: ", "{all: [", "]}",
        "}", "[", "]", "? ", ": ", ", ", "&a ", "*a", "!!binary ", "!!str ", "- ", "\n", "  ",
        "'", '"', "{matches: '(a+)+'}", "\ud800", "\t", "#", "journeys:\n", "caps: ", "1e400",
        "-1", "null", "~", "<<: ", "%YAML 1.1\n", "---\n", "...\n", "|\n", ">\n",
    ]
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(st.lists(YAML_PIECES, max_size=40).map("".join))
def test_whatever_the_text_a_bundle_loads_or_is_refused(text: str) -> None:
    try:
        load_bundle(text, "fuzz.yaml")
    except InvalidBundle as refused:
        assert refused.problems
