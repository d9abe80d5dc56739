"""A seeded generator of rule bundles over the workload's 20 touchpoint kinds.

``generate_bundle(100, seed)`` writes, in the bundle language (docs/rules.md), rules of
every condition type: event predicates (comparison, membership, contains, regex),
state thresholds, scores, count and sum windows, sequences, streaks, absences, and
all / any / not. About a quarter of the actions need a consent purpose, so the
consent check suppresses some interventions. The same seed gives the same text.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import yaml

from bench.cases.kinds import KINDS, WORDS, Attribute, Kind

BUNDLE_NAME = "bench-generated"
SCORES = ("lead", "win", "churn")

Condition = dict[str, Any]


class _NoAliases(yaml.SafeDumper):
    """Bundles refuse YAML anchors and aliases: never write one."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _pick_kind(rng: random.Random, *, numeric: bool = False, message: bool = False) -> Kind:
    candidates = [
        k
        for k in KINDS
        if (not numeric or any(a.numbers for a in k.attributes)) and (not message or k.message)
    ]
    return rng.choice(candidates)


def _test(rng: random.Random, attribute: Attribute) -> tuple[str, Any] | None:
    """A test on ``attributes.<name>`` that some of the workload's touchpoints pass."""
    field = f"attributes.{attribute.name}"
    if attribute.numbers is not None:
        low, high = attribute.numbers
        threshold = rng.randint(low, low + (high - low) * 3 // 4)
        op = rng.choice(("gt", "gte", "lt"))
        if op == "lt":
            threshold = max(threshold, low + 1)
        return field, {op: threshold}
    if attribute.values:
        if len(attribute.values) > 2 and rng.random() < 0.4:
            return field, sorted(rng.sample(attribute.values, 2))  # membership
        return field, rng.choice(attribute.values)
    return None


def _pattern(rng: random.Random, kind: Kind, *, with_test: bool = True) -> Condition:
    pattern: Condition = {"kind": kind.name}
    if with_test and kind.attributes:
        found = _test(rng, rng.choice(kind.attributes))
        if found is not None:
            pattern[found[0]] = found[1]
    return pattern


def _event(rng: random.Random) -> tuple[Condition, str]:
    kind = _pick_kind(rng)
    return {"event": _pattern(rng, kind)}, "1d"


def _text(rng: random.Random) -> tuple[Condition, str]:
    kind = _pick_kind(rng, message=True)
    word = rng.choice(WORDS)
    if rng.random() < 0.5:
        test: Any = {"contains": word}
    else:
        test = {"matches": f"(?i)\\b{word}\\b"}
    return {"event": {"kind": kind.name, "direction": kind.direction, "text": test}}, "6h"


def _state(rng: random.Random) -> tuple[Condition, str]:
    kind = _pick_kind(rng)
    return (
        {
            "state": {
                f"count.{kind.name}": {"gte": rng.randint(2, 6)},
                rng.choice(("days_since_last_outbound", "days_since_last_inbound")): {
                    "gt": rng.choice((0.01, 0.05, 0.1))
                },
            }
        },
        "1d",
    )


def _score(rng: random.Random) -> tuple[Condition, str]:
    kind = _pick_kind(rng)
    score = rng.choice(SCORES)
    return (
        {
            "all": [
                {"event": {"kind": kind.name}},
                {"state": {f"score.{score}": {"gte": round(rng.uniform(0.3, 0.6), 2)}}},
            ]
        },
        "1d",
    )


def _count(rng: random.Random) -> tuple[Condition, str]:
    kind = _pick_kind(rng)
    return (
        {
            "count": {
                "of": _pattern(rng, kind, with_test=rng.random() < 0.5),
                "within": f"{rng.randint(1, 6)}h",
                "at_least": rng.randint(2, 6),
            }
        },
        rng.choice(("0s", "1h")),
    )


def _sum(rng: random.Random) -> tuple[Condition, str]:
    kind = rng.choice([k for k in KINDS if any(a.numbers for a in k.attributes)])
    field = rng.choice([a for a in kind.attributes if a.numbers is not None])
    assert field.numbers is not None
    return (
        {
            "sum": {
                "of": {"kind": kind.name},
                "field": f"attributes.{field.name}",
                "within": f"{rng.randint(1, 6)}h",
                "at_least": field.numbers[1] * rng.randint(1, 3),
            }
        },
        rng.choice(("0s", "2h")),
    )


def _sequence(rng: random.Random) -> tuple[Condition, str]:
    first, second = rng.sample(KINDS[:17], 2)
    steps = [_pattern(rng, first), _pattern(rng, second, with_test=rng.random() < 0.5)]
    return {"sequence": {"within": f"{rng.randint(1, 4)}h", "steps": steps}}, "6h"


def _streak(rng: random.Random) -> tuple[Condition, str]:
    outbound = [k for k in KINDS if k.direction == "outbound"]
    of = rng.choice(outbound)
    return (
        {
            "streak": {
                "of": {"kind": of.name},
                "reset_by": {"direction": "inbound"},
                "length": rng.randint(2, 5),
            }
        },
        rng.choice(("0s", "1d")),
    )


def _absence(rng: random.Random) -> tuple[Condition, str]:
    after = rng.choice([k for k in KINDS if k.direction == "outbound" or k.channel == "web"])
    missing: Condition = (
        {"direction": "inbound"} if rng.random() < 0.6 else {"kind": _pick_kind(rng).name}
    )
    # Deadlines days after the touchpoints: the bench measures the touchpoint path, the
    # timers are armed (and kept in the schedule) but do not tick while it runs.
    return (
        {
            "absence": {
                "after": {"kind": after.name},
                "missing": missing,
                "within": f"{rng.randint(2, 5)}d",
            }
        },
        "0s",
    )


def _any(rng: random.Random) -> tuple[Condition, str]:
    first, _ = _text(rng)
    second, _ = _event(rng)
    return {"any": [first, second]}, "1d"


def _not(rng: random.Random) -> tuple[Condition, str]:
    kind = _pick_kind(rng)
    other = _pick_kind(rng)
    return (
        {
            "all": [
                {"event": {"kind": kind.name, "industry": {"in": ["saas", "fintech", "retail"]}}},
                {"not": {"state": {f"count.{other.name}": {"gte": rng.randint(1, 3)}}}},
            ]
        },
        "1d",
    )


TEMPLATES: tuple[tuple[str, Callable[[random.Random], tuple[Condition, str]]], ...] = (
    ("event", _event),
    ("text", _text),
    ("state", _state),
    ("score", _score),
    ("count", _count),
    ("sum", _sum),
    ("sequence", _sequence),
    ("streak", _streak),
    ("absence", _absence),
    ("any", _any),
    ("not", _not),
)


def _action(rng: random.Random, rule_id: str, shape: str) -> dict[str, Any]:
    then: dict[str, Any] = {
        "kind": rng.choice(("task", "task", "alert", "content_push", "escalation", "training")),
        "priority": rng.choice(("low", "normal", "normal", "high", "urgent")),
        "due_in": rng.choice(("2h", "1d", "3d")),
        "title": f"{shape} signal for {{customer_id}} ({{event_kind}}): {{observed}}",
        "body": f"Rule {{rule_id}} fired. Owner: {{rep_id}}. Generated rule {rule_id}.",
    }
    roll = rng.random()
    if roll < 0.15:
        then["purposes"] = ["marketing"]
    elif roll < 0.25:
        then["purposes"] = ["contact_by_chat"]
    assignee = rng.random()
    if assignee < 0.1:
        then["assignee"] = "manager"
    elif assignee < 0.2:
        then["assignee"] = f"role:{rng.choice(('renewals', 'support', 'success'))}"
    if rng.random() < 0.1:
        then["severity"] = rng.choice(("blue", "yellow"))
    return then


def generate_rules(count: int, seed: int) -> list[dict[str, Any]]:
    """``count`` rules, the condition types in turn, details drawn from ``seed``."""
    rng = random.Random(seed)
    rules = []
    for number in range(count):
        shape, make = TEMPLATES[number % len(TEMPLATES)]
        condition, cooldown = make(rng)
        rule_id = f"gen.{number:03d}-{shape}"
        rule: dict[str, Any] = {"id": rule_id}
        if cooldown != "0s":
            rule["cooldown"] = cooldown
        rule["when"] = condition
        rule["then"] = _action(rng, rule_id, shape)
        rules.append(rule)
    return rules


def generate_bundle(count: int = 100, seed: int = 12, version: int = 1) -> str:
    """The YAML text of a bundle of ``count`` generated rules."""
    document = {
        "bundle": BUNDLE_NAME,
        "version": version,
        "description": f"{count} generated rules over {len(KINDS)} touchpoint kinds (seed {seed}).",
        "managers": {f"rep-{n:03d}": f"mgr-{n % 12:02d}" for n in range(0, 120, 3)},
        "rules": generate_rules(count, seed),
    }
    text: str = yaml.dump(
        document, Dumper=_NoAliases, sort_keys=False, allow_unicode=True, width=100
    )
    return f"# Generated by bench/cases/generated_rules.py (seed {seed}); do not edit.\n{text}"


def kinds_used(rules: list[dict[str, Any]]) -> set[str]:
    """Every touchpoint kind the rules name anywhere in their conditions."""
    found: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "kind" and isinstance(value, str) and value in {k.name for k in KINDS}:
                    found.add(value)
                elif isinstance(key, str) and key.startswith("count."):
                    found.add(key.removeprefix("count."))
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    for rule in rules:
        walk(rule["when"])
    return found
