"""Seeded generator of rule bundles and touchpoints for the benchmarks.

    from bench.rulegen import bundle_yaml, touchpoint_kinds
    text = bundle_yaml(rules=100, kinds=20, seed=12)

``bundle_yaml`` writes a valid bundle (YAML, as a rules author would) of ``rules`` rules
over ``kinds`` touchpoint kinds, every condition type of the rule language in a mix
close to the example packs': most rules look at one or two kinds (an event with an
attribute test, a count or sum in a window, a sequence, a streak, an absence), a few
combine a touchpoint with a state threshold, and a few depend on state alone (those
must be evaluated at every touchpoint). The same seed gives the same text.

``touchpoint_kinds(kinds)`` lists the kinds the rules use, so a touchpoint generator can
draw from the same ones (``direction_of`` says which way each goes).
"""

from __future__ import annotations

import random

KIND_NAMES = (
    "message_sent", "message_received", "email_sent", "email_received", "meeting_held",
    "purchase", "video_watched", "sandbox_error", "support_chat", "stage_changed",
    "login", "page_viewed", "trial_started", "invoice_paid", "ticket_opened",
    "quote_sent", "demo_booked", "feature_used", "survey_answered", "refund_requested",
)  # fmt: skip

# (weight, template): {k}, {k2} kinds; {n}, {m} small numbers; {a} an amount that one
# touchpoint in five or so reaches. Weights sum to 100.
SHAPES: tuple[tuple[int, str], ...] = (
    (24, "event: {{kind: {k}, attributes.amount: {{gte: {a}}}}}"),
    (12, "all: [{{event: {{kind: {k}}}}}, {{state: {{touchpoints: {{gte: {n}}}}}}}]"),
    (14, "count: {{of: {{kind: {k}}}, within: {n}h, at_least: {m}}}"),
    (8, "sum: {{of: {{kind: {k}}}, field: attributes.amount, within: 7d, at_least: {n}00}}"),
    (10, "sequence: {{within: {n}h, steps: [{{kind: {k}}}, {{kind: {k2}}}]}}"),
    (8, "streak: {{of: {{kind: {k}}}, reset_by: {{kind: {k2}}}, length: {m}}}"),
    (8, "absence: {{after: {{kind: {k}}}, missing: {{kind: {k2}}}, within: {n}d}}"),
    (6, "any: [{{event: {{kind: {k}, attributes.amount: {{gte: {a}}}}}}}, "
        "{{event: {{kind: {k2}, attributes.plan: p{n}}}}}]"),
    (4, "all: [{{event: {{kind: {k}, attributes.amount: {{gte: {a}}}}}}}, "
        "{{not: {{event: {{channel: chat}}}}}}]"),
    (3, "state: {{count.{k}: {{gte: {n}}}}}"),
    (3, "all: [{{event: {{direction: inbound}}}}, "
        "{{state: {{days_since_last_outbound: {{gte: {m}}}}}}}]"),
)  # fmt: skip


def touchpoint_kinds(kinds: int = 20) -> tuple[str, ...]:
    """The first ``kinds`` kind names (generated names past the list)."""
    return tuple(KIND_NAMES[i] if i < len(KIND_NAMES) else f"signal_{i:03d}" for i in range(kinds))


def direction_of(kind: str) -> str:
    """inbound, outbound or none, as a connector would set it for ``kind``."""
    if kind.endswith("_sent"):
        return "outbound"
    if kind.endswith("_received") or kind in ("support_chat", "ticket_opened"):
        return "inbound"
    return "none"


def bundle_yaml(
    rules: int = 100, kinds: int = 20, seed: int = 12, name: str = "generated", version: int = 1
) -> str:
    """A bundle of ``rules`` rules over ``kinds`` touchpoint kinds (see the module doc)."""
    if rules < 1 or kinds < 2:
        raise ValueError(f"expected at least 1 rule and 2 kinds, found {rules} and {kinds}")
    rng = random.Random(seed)
    names = touchpoint_kinds(kinds)
    weights = [w for w, _ in SHAPES]
    lines = [
        f"bundle: {name}",
        f"version: {version}",
        f"description: {rules} generated rules over {kinds} touchpoint kinds (seed {seed}).",
        "rules:",
    ]
    for i in range(rules):
        [(_, shape)] = rng.choices(SHAPES, weights)
        k, k2 = rng.sample(names, 2)
        condition = shape.format(
            k=k, k2=k2, n=rng.randrange(2, 50), m=rng.randrange(2, 6), a=rng.randrange(350, 480)
        )
        lines += [
            f"  - id: {name}.r{i:03d}",
            f"    cooldown: {rng.choice(['1d', '7d', '30d'])}",
            f"    when: {{{condition}}}",
            f"    then: {{kind: task, priority: {rng.choice(['low', 'normal', 'high'])}, "
            f"due_in: 1d, title: 'r{i:03d} for {{customer_id}}'}}",
        ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(bundle_yaml(), end="")
