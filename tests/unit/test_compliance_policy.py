"""The ``policy:`` section of a bundle: compiled at load time, refused with line and field."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

from engine.bundle import InvalidBundle, load_bundle
from engine.compliance import CompiledPolicy, PolicyMode, TrainingRule
from engine.limits import (
    NEAR_WITHIN_MAX,
    NEGATION_WINDOW_MAX,
    POLICY_CATEGORIES_MAX,
    POLICY_PHRASES_MAX,
    TERM_CHARS_MAX,
)
from engine.rulebook import RuleBook

MINIMAL = """\
bundle: compliance-test
version: 3
policy:
  categories:
    - id: principal_protection
      tier: block
      terms: [保本]
"""


def policy_of(yaml_text: str) -> CompiledPolicy:
    policy = load_bundle(textwrap.dedent(yaml_text)).policy
    assert policy is not None
    return policy


def problems(yaml_text: str) -> list[str]:
    with pytest.raises(InvalidBundle) as refused:
        load_bundle(textwrap.dedent(yaml_text), "policy.yaml")
    return [str(p) for p in refused.value.problems]


def test_a_bundle_may_hold_only_a_policy() -> None:
    bundle = load_bundle(MINIMAL)
    assert bundle.rules == () and bundle.journeys == ()
    policy = bundle.policy
    assert policy is not None
    assert (policy.policy_id, policy.version, policy.mode) == (
        "compliance-test",
        3,
        PolicyMode.ENFORCE,
    )


def test_a_bundle_without_a_policy_has_none() -> None:
    bundle = load_bundle(
        """\
bundle: plain
version: 1
rules:
  - id: r
    when: {event: {kind: purchase}}
    then: {kind: task, title: t, due_in: 1d}
"""
    )
    assert bundle.policy is None


def test_the_section_may_name_its_policy_and_mode() -> None:
    policy = policy_of(MINIMAL.replace("policy:\n", "policy:\n  id: retail\n  mode: test\n"))
    assert (policy.policy_id, policy.mode) == ("retail", PolicyMode.TEST)


def test_a_bundle_with_nothing_to_run_is_refused() -> None:
    assert problems("bundle: empty\nversion: 1\n") == [
        "policy.yaml:1: rules: expected rules, journeys or a policy"
    ]


def test_the_rule_book_exposes_the_running_policies() -> None:
    book = RuleBook()
    assert book.policies == ()
    verdict = book.offer(MINIMAL, "test")
    assert verdict.accepted, verdict.problems
    assert [p.policy_id for p in book.policies] == ["compliance-test"]
    book.withdraw("compliance-test")
    assert book.policies == ()


def test_training_rules_are_compiled() -> None:
    policy = policy_of(
        MINIMAL
        + """\
  training:
    - category: principal_protection
      at_least: 5
      within_days: 30
      lesson_id: value-anchoring
      title: Anchor on value
      body: How to talk about value instead of returns.
"""
    )
    assert policy.training == (
        TrainingRule(
            "principal_protection",
            5,
            30,
            "value-anchoring",
            "Anchor on value",
            "How to talk about value instead of returns.",
        ),
    )


@pytest.mark.parametrize(
    ("section", "expected"),
    [
        (
            "  mode: strict\n  categories: [{id: a, tier: block, terms: [x]}]\n",
            "policy.yaml:4: policy.mode: expected one of test, notify, enforce, found 'strict'",
        ),
        (
            "  categories: [{id: a, tier: red, terms: [x]}]\n",
            "policy.yaml:4: policies.categories[0].tier",
        ),
        (
            "  catgories: []\n",
            "policy.yaml:4: policy.catgories: unknown field",
        ),
        (
            "  description: nothing to check\n",
            "policy.yaml:3: policy.categories: expected categories, required or both",
        ),
    ],
)
def test_refusals_name_line_and_field(section: str, expected: str) -> None:
    found = problems("bundle: p\nversion: 1\npolicy:\n" + section)
    expected = expected.replace("policies.", "policy.")
    assert any(p.startswith(expected) for p in found), found


def test_every_problem_is_listed_with_its_line() -> None:
    found = problems(
        """\
        bundle: p
        version: 1
        policy:
          categories:
            - id: a
              tier: block
              terms:
                - 保本
                - "---"
                - 保 本
            - id: b
              tier: remind
              terms: [x]
              pii: [mobile]
            - id: c
              tier: confirm
              pii: [passport]
        """
    )
    assert found == [
        "policy.yaml:9: policy.categories[0].terms[1]: expected a term with a letter, digit or "
        "CJK character, found '---' (spaces, punctuation and symbols are ignored when matching)",
        "policy.yaml:10: policy.categories[0].terms[2]: term '保 本' reads the same as the term "
        "at line 8 once case, width, spacing and look-alike characters are normalised",
        "policy.yaml:11: policy.categories[1]: expected either terms or pii (detectors), not "
        "both or neither",
        "policy.yaml:17: policy.categories[2].pii[0]: expected one of resident_id, mobile, "
        "bank_card, email, found str 'passport'",
    ]


def test_yaml_booleans_are_not_taken_for_terms() -> None:
    found = problems(
        """\
        bundle: p
        version: 1
        policy:
          negation:
            before: {words: [not, no]}
          categories: [{id: a, tier: block, terms: [x]}]
        """
    )
    assert found == [
        "policy.yaml:5: policy.negation.before.words[1]: expected a term (text), found bool False"
    ]


def test_patterns_must_be_linear_time() -> None:
    found = problems(
        """\
        bundle: p
        version: 1
        policy:
          categories:
            - id: a
              tier: remind
              terms: [deliver]
              near:
                - within: 20
                  patterns: ['(a+)\\1']
        """
    )
    assert len(found) == 1
    assert found[0].startswith(
        "policy.yaml:10: policy.categories[0].near[0].patterns[0]: expected a regular expression "
        "of the RE2 syntax (linear time), found '(a+)\\\\1'"
    )


@pytest.mark.parametrize(
    ("snippet", "expected"),
    [
        (f"terms: [{'x' * (TERM_CHARS_MAX + 1)}]", f"expected a term of at most {TERM_CHARS_MAX}"),
        (
            f"terms: [x]\n      near_number: {{within: {NEAR_WITHIN_MAX + 1}}}",
            f"expected a whole number from 1 to {NEAR_WITHIN_MAX}",
        ),
    ],
)
def test_category_limits(snippet: str, expected: str) -> None:
    text = (
        "bundle: p\nversion: 1\npolicy:\n  categories:\n    - id: a\n      tier: block\n      "
        + snippet
        + "\n"
    )
    found = problems(text)
    assert any(expected in p for p in found), found


def test_negation_window_is_bounded() -> None:
    found = problems(
        "bundle: p\nversion: 1\npolicy:\n  negation:\n"
        f"    before: {{window: {NEGATION_WINDOW_MAX + 1}, words: [不]}}\n"
        "  categories: [{id: a, tier: block, terms: [x]}]\n"
    )
    assert found == [
        "policy.yaml:5: policy.negation.before.window: expected a whole number from 0 to "
        f"{NEGATION_WINDOW_MAX}, found {NEGATION_WINDOW_MAX + 1}"
    ]


def _letters(number: int) -> str:
    """``number`` in letters that no normalisation folds together (no i, no l)."""
    alphabet = "abcdefghjkmnopqrstuvwxyz"
    word = ""
    while True:
        number, digit = divmod(number, len(alphabet))
        word += alphabet[digit]
        if not number:
            return word


def test_too_many_categories_or_phrases_are_refused() -> None:
    categories = "".join(
        f"    - {{id: c{i}, tier: remind, terms: [t{i}]}}\n"
        for i in range(POLICY_CATEGORIES_MAX + 1)
    )
    found = problems("bundle: p\nversion: 1\npolicy:\n  categories:\n" + categories)
    assert found == [
        f"policy.yaml:4: policy.categories: expected at most {POLICY_CATEGORIES_MAX} categories, "
        f"found {POLICY_CATEGORIES_MAX + 1}; split it into several bundles"
    ]
    per_category = POLICY_PHRASES_MAX // 4 + 1
    terms = [
        ", ".join(f"w{_letters(i)}x{_letters(j)}" for j in range(per_category)) for i in range(4)
    ]
    many = "".join(f"    - {{id: c{i}, tier: remind, terms: [{terms[i]}]}}\n" for i in range(4))
    found = problems("bundle: p\nversion: 1\npolicy:\n  categories:\n" + many)
    assert found == [
        f"policy.yaml:3: policy: expected at most {POLICY_PHRASES_MAX:,} terms and phrases in a "
        f"policy, found {4 * per_category:,}; split it into several bundles"
    ]


def test_training_must_name_a_category_of_the_policy() -> None:
    found = problems(
        MINIMAL.replace("bundle: compliance-test", "bundle: p")
        + """\
  training:
    - {category: returns, at_least: 5, within_days: 30, lesson_id: l, title: t, body: b}
"""
    )
    assert found == [
        "policy.yaml:9: policy.training[0].category: expected a category of this policy "
        "(principal_protection), found str 'returns'"
    ]


def test_required_content_checks_at_least_against_its_topics() -> None:
    found = problems(
        """\
        bundle: p
        version: 1
        policy:
          required:
            - kind: visit_report
              at_least: 3
              tier: remind
              topics:
                - {name: budget, terms: [预算, budget]}
                - {name: next_step, terms: [下一步, next step]}
        """
    )
    assert found == [
        "policy.yaml:6: policy.required[0].at_least: expected a whole number from 1 to 2, found 3"
    ]


def test_template_ids_are_unique_in_a_policy() -> None:
    found = problems(
        """\
        bundle: p
        version: 1
        policy:
          categories:
            - id: a
              tier: block
              terms: [x]
              templates: [{id: t, text: one}]
            - id: b
              tier: block
              terms: [y]
              templates: [{id: t, text: two}]
        """
    )
    assert found == ["policy.yaml:12: policy.categories[1].templates[0].id: template 't' is "
                     "already used at line 8"]  # fmt: skip


def test_the_shipped_default_policy_loads() -> None:
    text = (Path(__file__).resolve().parents[2] / "rules/policies/default.yaml").read_text(
        encoding="utf-8"
    )
    policy = load_bundle(text, "rules/policies/default.yaml").policy
    assert policy is not None
    assert policy.mode is PolicyMode.ENFORCE
    assert {c.category_id for c in policy.categories} >= {
        "principal_protection",
        "return_promise",
        "delivery_date",
        "third_party_pii",
    }
    assert all(c.templates for c in policy.categories)
    assert [r.kind for r in policy.requirements] == ["visit_report"]
    assert any(
        t.category == "return_promise" and t.lesson_id == "value-anchoring" for t in policy.training
    )


DOC = Path(__file__).resolve().parents[2] / "docs" / "compliance.md"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```\n", re.MULTILINE | re.DOTALL)


def test_the_reference_bundles_load_or_print_what_the_reference_says() -> None:
    doc = DOC.read_text(encoding="utf-8")
    blocks = list(FENCE.finditer(doc))
    shown = 0
    for index, block in enumerate(blocks):
        language, body = block.group(1), block.group(2)
        if language != "yaml" or not body.startswith("bundle:"):
            continue
        shown += 1
        invalid = doc[: block.start()].rstrip("\n").endswith("<!-- invalid -->")
        if not invalid:
            assert load_bundle(body, "docs/compliance.md").policy is not None
            continue
        printed = blocks[index + 1].group(2).rstrip("\n")
        with pytest.raises(InvalidBundle) as refused:
            load_bundle(body, "policy.yaml")
        assert "\n".join(str(p) for p in refused.value.problems) == printed
    assert shown >= 3


def test_a_list_must_be_declared_and_used_as_declared() -> None:
    found = problems(
        """\
        bundle: p
        version: 1
        policy:
          lists:
            rate: {patterns: ['\\d+%']}
            Bad Name: {terms: [x]}
          categories:
            - id: a
              tier: remind
              terms: [{term: x, near: [{within: 5, lists: [rates]}]}]
        """
    )
    assert found == [
        "policy.yaml:6: policy.lists.Bad Name: expected a name of lower-case letters, digits, "
        "'.', '_' or '-', found 'Bad Name'",
        "policy.yaml:10: policy.categories[0].terms[0].near[0].lists[0]: expected one of this "
        "policy's lists (rate), found str 'rates'",
    ]
