"""Everything a bundle brings is bounded at load time: its size, counts, nesting, patterns and
lists; YAML anchors and aliases are refused. Each limit is refused with the line and field."""

from __future__ import annotations

import pytest

from engine.bundle import InvalidBundle, load_bundle
from engine.limits import (
    BUNDLE_BYTES_MAX,
    CONDITION_NODES_MAX,
    COUNT_MAX,
    JOURNEYS_MAX,
    LIST_ITEMS_MAX,
    NESTING_MAX,
    PATTERN_CHARS_MAX,
    RULES_MAX,
    STEPS_MAX,
)

HEAD = "bundle: b\nversion: 1\n"
THEN = "{kind: task, title: t, due_in: 1h}"


def refused(text: str) -> list[str]:
    with pytest.raises(InvalidBundle) as caught:
        load_bundle(text, "team.yaml")
    return [str(p) for p in caught.value.problems]


def rules(count: int, when: str = "{event: {kind: a}}") -> str:
    return (
        HEAD
        + "rules:\n"
        + "".join(f"  - {{id: r{n}, when: {when}, then: {THEN}}}\n" for n in range(count))
    )


def one_rule(when: str) -> str:
    return HEAD + f"rules:\n  - id: r\n    when: {when}\n    then: {THEN}\n"


# --- YAML anchors and aliases ----------------------------------------------------------


def alias_bomb() -> str:
    """1.4 KB of YAML that expands to tens of thousands of conditions."""
    lines = [HEAD.rstrip("\n"), "rules:", "  - id: r", "    when:", "      any:"]
    lines.append("        - &c0 {event: {kind: a}}")
    for level in range(1, 15):
        lines.append(f"        - &c{level} {{any: [*c{level - 1}, *c{level - 1}]}}")
    lines.append(f"    then: {THEN}")
    return "\n".join(lines) + "\n"


def test_an_alias_bomb_is_refused_at_its_first_anchor() -> None:
    text = alias_bomb()
    assert len(text) < 1_500
    assert refused(text) == [
        "team.yaml:7: (yaml): bundles may not use YAML anchors or aliases (found the anchor "
        "&c0); write each value out"
    ]


@pytest.mark.parametrize(
    ("text", "line", "found"),
    [
        (
            HEAD + "defaults: &d {kind: task, title: t, due_in: 1h}\n",
            3,
            "the anchor &d",
        ),
        (
            HEAD + "rules:\n  - id: r\n    when: {event: {kind: a}}\n    then: *t\n",
            6,
            "the alias *t",
        ),
        (
            HEAD + "rules:\n  - id: r\n    when: {event: {kind: a}}\n"
            "    then:\n      <<: *t\n      title: x\n",
            7,
            "the alias *t",
        ),
    ],
    ids=["anchor", "alias", "merge-key"],
)
def test_anchors_aliases_and_merge_keys_are_refused(text: str, line: int, found: str) -> None:
    assert refused(text) == [
        f"team.yaml:{line}: (yaml): bundles may not use YAML anchors or aliases (found {found}); "
        "write each value out"
    ]


# --- size and counts -----------------------------------------------------------------------


def test_a_thousand_generated_rules_load() -> None:
    bundle = load_bundle(rules(1_000, "{event: {kind: a, text: {matches: 'cancel|refund'}}}"))
    assert len(bundle.rules) == 1_000


def test_ten_thousand_rules_are_refused_by_size_before_parsing() -> None:
    text = rules(10_000)
    size = len(text.encode())
    assert refused(text) == [
        f"team.yaml:1: (bundle): expected at most {BUNDLE_BYTES_MAX:,} bytes (256 KiB), found "
        f"{size:,}; split it into several bundles"
    ]


def test_more_rules_than_the_limit_are_refused_without_compiling_them() -> None:
    text = rules(RULES_MAX + 1)
    assert len(text.encode()) <= BUNDLE_BYTES_MAX
    assert refused(text) == [
        f"team.yaml:3: rules: expected at most {RULES_MAX:,} rules in a bundle, found "
        f"{RULES_MAX + 1:,}; split it into several bundles"
    ]
    assert len(load_bundle(rules(RULES_MAX)).rules) == RULES_MAX


def journeys(count: int, steps: int = 1) -> str:
    listed = ", ".join(f"{{id: s{n}, after: 1h, then: {THEN}}}" for n in range(steps))
    return (
        HEAD
        + "journeys:\n"
        + "".join(
            f"  - {{id: j{n}, entry: {{event: {{kind: a}}}}, "
            f"variants: [{{name: v, steps: [{listed}]}}]}}\n"
            for n in range(count)
        )
    )


def test_more_journeys_than_the_limit_are_refused() -> None:
    assert refused(journeys(JOURNEYS_MAX + 1)) == [
        f"team.yaml:3: journeys: expected at most {JOURNEYS_MAX} journeys in a bundle, found "
        f"{JOURNEYS_MAX + 1}; split it into several bundles"
    ]
    assert len(load_bundle(journeys(JOURNEYS_MAX)).journeys) == JOURNEYS_MAX


def test_more_steps_than_the_limit_are_refused() -> None:
    assert refused(journeys(1, steps=STEPS_MAX + 1)) == [
        f"team.yaml:4: journeys[0].variants[0].steps: expected at most {STEPS_MAX} steps in a "
        f"variant, found {STEPS_MAX + 1}"
    ]
    load_bundle(journeys(1, steps=STEPS_MAX))


def test_more_conditions_than_the_limit_are_refused() -> None:
    chain = "{event: {kind: a}}"
    for _ in range(39):
        chain = f"{{not: {chain}}}"  # 40 conditions in 7 bytes each
    per_rule = 1 + 10 * 40  # an `any` holding ten chains
    count = CONDITION_NODES_MAX // per_rule + 1
    text = rules(count, "{any: [" + ", ".join([chain] * 10) + "]}")
    assert len(text.encode()) <= BUNDLE_BYTES_MAX
    found = refused(text)
    assert len(found) == 1
    assert found[0].startswith("team.yaml:")
    assert found[0].endswith(
        f": expected at most {CONDITION_NODES_MAX:,} conditions in a bundle; this is one more"
    )


def test_nesting_deeper_than_the_limit_is_refused_not_a_crash() -> None:
    for depth in (NESTING_MAX, 1_000, 10_000):  # deep enough to exhaust Python's stack
        chain = "{event: {kind: a}}"
        for _ in range(depth):
            chain = f"{{not: {chain}}}"
        assert refused(one_rule(chain)) == [
            f"team.yaml:5: (yaml): expected YAML nested at most {NESTING_MAX} levels deep, "
            f"found more"
        ]
    chain = "{event: {kind: a}}"
    for _ in range(NESTING_MAX - 10):
        chain = f"{{not: {chain}}}"
    load_bundle(one_rule(chain))


# --- patterns, lists and counts ----------------------------------------------------------


def test_a_pattern_longer_than_the_limit_is_refused() -> None:
    pattern = "a" * (PATTERN_CHARS_MAX + 1)
    assert refused(one_rule(f"{{event: {{text: {{matches: '{pattern}'}}}}}}")) == [
        "team.yaml:5: rules[0].when.event.text.matches: expected a pattern of at most "
        f"{PATTERN_CHARS_MAX:,} characters, found {PATTERN_CHARS_MAX + 1:,}"
    ]
    load_bundle(one_rule(f"{{event: {{text: {{matches: '{'a' * PATTERN_CHARS_MAX}'}}}}}}"))


@pytest.mark.parametrize(
    ("written", "path"),
    [("{{not_in: [{items}]}}", "rules[0].when.event.rep_id.not_in"), ("[{items}]", None)],
    ids=["not_in", "shorthand"],
)
def test_a_membership_list_longer_than_the_limit_is_refused(written: str, path: str | None) -> None:
    items = ", ".join(f"rep-{n}" for n in range(LIST_ITEMS_MAX + 1))
    where = path or "rules[0].when.event.rep_id"
    assert refused(one_rule(f"{{event: {{rep_id: {written.format(items=items)}}}}}")) == [
        f"team.yaml:5: {where}: expected a list of at most {LIST_ITEMS_MAX:,} values, found "
        f"{LIST_ITEMS_MAX + 1:,}"
    ]


@pytest.mark.parametrize(
    ("when", "field"),
    [
        (f"{{count: {{of: {{kind: a}}, within: 1d, at_least: {COUNT_MAX + 1}}}}}", "at_least"),
        (
            f"{{streak: {{of: {{kind: a}}, reset_by: {{kind: b}}, length: {COUNT_MAX + 1}}}}}",
            "length",
        ),
    ],
    ids=["count", "streak"],
)
def test_counts_a_customer_would_have_to_remember_are_bounded(when: str, field: str) -> None:
    [problem] = refused(one_rule(when))
    assert f".{field}: expected a whole number from 1 to {COUNT_MAX}" in problem
    assert problem.startswith("team.yaml:5: rules[0].when.")
