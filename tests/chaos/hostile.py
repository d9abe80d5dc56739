"""Hostile rule bundles: each must be refused with a reason or run without harm."""

from __future__ import annotations

RULE_THEN = '{kind: alert, assignee: owner, due_in: 1h, title: "hostile rule fired"}'

REGEX = f"""\
bundle: hostile-regex
version: 1
rules:
  - id: hostile.regex
    when:
      event: {{text: {{matches: "^(a+)+$"}}}}
    then: {RULE_THEN}
"""
"""A pattern that backtracks exponentially on a run of a's that does not end the text."""

REGEX_PROBE_TEXT = "a" * 5_000 + "!"


def alias_bomb(levels: int = 9) -> str:
    """Billion laughs: each level lists the previous one ten times (10**levels kinds)."""
    lines = [
        "bundle: hostile-aliases",
        "version: 1",
        "rules:",
        "  - id: hostile.aliases",
        "    when:",
        "      any:",
        "        - event: {kind: {in: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]}}",
    ]
    for level in range(1, levels):
        previous = ", ".join([f"*l{level - 1}"] * 10)
        lines.append(f"        - event: {{kind: {{in: &l{level} [{previous}]}}}}")
    lines.append(f"    then: {RULE_THEN}")
    return "\n".join(lines) + "\n"


def long_rule_id(length: int = 200_000) -> str:
    return f"""\
bundle: hostile-long-id
version: 1
rules:
  - id: hostile.{"r" * length}
    when:
      event: {{kind: hostile_kind}}
    then: {RULE_THEN}
"""


LONG_NAME = "hostile-" + "n" * 100_000


def long_name() -> str:
    return f"""\
bundle: {LONG_NAME}
version: 1
rules:
  - id: hostile.long-name
    when:
      event: {{kind: hostile_kind}}
    then: {RULE_THEN}
"""


def many_rules(count: int = 10_000) -> str:
    """``count`` rules in flow style, kept under the broker's 1 MB message limit."""
    rules = "\n".join(
        f"  - {{id: m{n}, when: {{event: {{kind: k{n % 50}}}}}, "
        f"then: {{kind: alert, assignee: owner, due_in: 1h, title: t}}}}"
        for n in range(count)
    )
    return f"bundle: hostile-many\nversion: 1\nrules:\n{rules}\n"


def many_rules_within(limit: int = 250_000) -> str:
    """As many rules as fit in ``limit`` bytes (a bundle size limit cannot refuse it)."""
    count = 10_000
    while len(text := many_rules(count).replace("hostile-many", "hostile-many-small")) > limit:
        count = count * 9 // 10
    return text


LONG_KEY = "hostile-key-" + "k" * 900_000
"""A rules-topic key near the broker's record limit, for a small, valid bundle."""

KEYED_WRONG = f"""\
bundle: hostile-key
version: 1
rules:
  - id: hostile.key
    when:
      event: {{kind: hostile_kind}}
    then: {RULE_THEN}
"""


HOSTILE: dict[str, str] = {
    "hostile-long-id": long_rule_id(),
    LONG_NAME: long_name(),
    "hostile-many": many_rules(),
    "hostile-many-small": many_rules_within(),
    "hostile-aliases": alias_bomb(),
    "hostile-regex": REGEX,
}
"""Bundle key on the rules topic -> YAML text, in the order they are pushed."""
