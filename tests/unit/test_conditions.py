"""Every condition type, stepped through the pure reducer with small bundles."""

from __future__ import annotations

import textwrap
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from engine.bundle import load_bundle
from engine.reducer import apply, apply_timer, next_deadline
from engine.rules import CompiledRule
from engine.state import CustomerState
from schemas.models import Channel, Direction, InterventionCommand, TouchpointEvent

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


def rules(when: str, extra: str = "") -> tuple[CompiledRule, ...]:
    text = (
        "bundle: t\nversion: 1\n"
        + extra
        + "rules:\n  - id: r\n    when:\n"
        + textwrap.indent(textwrap.dedent(when).strip(), "      ")
        + "\n    then: {kind: task, title: 'saw {observed}', due_in: 1h}\n"
    )
    return load_bundle(text, "test.yaml").rules


def tp(
    n: int,
    kind: str = "note",
    minutes: float | None = None,
    direction: str = "none",
    **attributes: str | int | float | bool,
) -> TouchpointEvent:
    at = T0 + timedelta(minutes=n if minutes is None else minutes)
    return TouchpointEvent(
        event_id=f"e{n}",
        customer_id="c",
        occurred_at=at,
        received_at=at,
        channel=Channel.PRODUCT,
        kind=kind,
        direction=Direction(direction),
        rep_id="rep-1",
        source="test/1",
        attributes=attributes,
    )


def run(
    compiled: tuple[CompiledRule, ...], events: list[TouchpointEvent]
) -> tuple[CustomerState | None, list[InterventionCommand]]:
    state: CustomerState | None = None
    fired: list[InterventionCommand] = []
    for event in events:
        state, decisions = apply(state, event, NOW, compiled)
        fired.extend(d.intervention for d in decisions)
    return state, fired


def ids(fired: list[InterventionCommand]) -> list[list[str]]:
    return [c.explanation.triggering_event_ids for c in fired]


def test_event_predicates_with_every_operator() -> None:
    compiled = rules(
        """
        event:
          kind: [purchase, refund]
          attributes.amount: {gte: 100, lt: 1000}
          attributes.plan: {ne: free}
          attributes.note: {contains: URGENT}
          attributes.sku: {matches: "^SKU-[0-9]+$", not_in: [SKU-0]}
        """
    )
    hit = tp(1, "purchase", amount=150, plan="pro", note="very urgent please", sku="SKU-42")
    _, fired = run(compiled, [hit])
    assert ids(fired) == [["e1"]]
    assert ("attributes.amount gte 100", "150") in [
        (m.condition, m.observed) for m in fired[0].explanation.matched
    ]
    near_misses = [
        tp(2, "visit", amount=150, plan="pro", note="urgent", sku="SKU-1"),
        tp(3, "purchase", amount=1000, plan="pro", note="urgent", sku="SKU-1"),
        tp(4, "purchase", amount=150, plan="free", note="urgent", sku="SKU-1"),
        tp(5, "purchase", amount=150, plan="pro", note="later", sku="SKU-1"),
        tp(6, "purchase", amount=150, plan="pro", note="urgent", sku="SKU-0"),
        tp(7, "purchase", amount="150", plan="pro", note="urgent", sku="SKU-1"),
    ]
    assert run(compiled, near_misses)[1] == []


def test_state_thresholds_use_the_state_after_the_touchpoint() -> None:
    compiled = rules(
        """
        all:
          - event: {kind: login}
          - state: {count.login: {gte: 3}, days_since_last_inbound: {gt: 14}}
        """
    )
    _, fired = run(compiled, [tp(1, "login"), tp(2, "login"), tp(3, "login")])
    assert ids(fired) == [["e3"]]
    assert ("days_since_last_inbound gt 14", "never") in [
        (m.condition, m.observed) for m in fired[0].explanation.matched
    ]
    replied = [
        tp(0, "email_received", direction="inbound"),
        tp(1, "login"),
        tp(2, "login"),
        tp(3, "login"),
    ]
    assert run(compiled, replied)[1] == []


def test_count_within_a_window_fires_when_the_count_is_reached_not_after() -> None:
    compiled = rules("count: {of: {kind: sandbox_error}, within: 24h, at_least: 3}")
    hours = [0, 1, 30, 31, 32, 33]
    _, fired = run(compiled, [tp(n, "sandbox_error", minutes=h * 60) for n, h in enumerate(hours)])
    assert ids(fired) == [["e2", "e3", "e4"]]


def test_sum_within_a_window() -> None:
    compiled = rules(
        "sum: {of: {kind: purchase}, field: attributes.amount, within: 7d, at_least: 500}"
    )
    events = [
        tp(1, "purchase", amount=200),
        tp(2, "purchase", amount=250),
        tp(3, "purchase", amount=60),
    ]
    _, fired = run(compiled, events)
    assert ids(fired) == [["e1", "e2", "e3"]]
    assert fired[0].title == "saw 510"


def test_ordered_sequence_within_a_bound() -> None:
    compiled = rules(
        """
        sequence:
          within: 24h
          steps:
            - {kind: video_watched, attributes.watched_seconds: {gt: 272}}
            - {kind: sandbox_error}
        """
    )
    in_order = [tp(1, "video_watched", watched_seconds=300), tp(2, "note"), tp(3, "sandbox_error")]
    assert ids(run(compiled, in_order)[1]) == [["e1", "e3"]]
    wrong_order = [tp(1, "sandbox_error"), tp(2, "video_watched", watched_seconds=300)]
    assert run(compiled, wrong_order)[1] == []
    too_short = [tp(1, "video_watched", watched_seconds=200), tp(2, "sandbox_error")]
    assert run(compiled, too_short)[1] == []
    too_late = [
        tp(1, "video_watched", watched_seconds=300),
        tp(2, "sandbox_error", minutes=25 * 60),
    ]
    assert run(compiled, too_late)[1] == []


def test_streaks_reset_and_fire_once_per_run() -> None:
    compiled = rules(
        "streak: {of: {direction: outbound}, reset_by: {direction: inbound}, length: 2}"
    )
    seq = ["outbound", "outbound", "outbound", "inbound", "outbound", "none", "outbound"]
    events = [tp(n, "message", direction=d) for n, d in enumerate(seq)]
    assert ids(run(compiled, events)[1]) == [["e0", "e1"], ["e4", "e6"]]


def test_absence_fires_at_the_deadline_by_timer_and_only_once() -> None:
    compiled = rules(
        "absence: {after: {kind: lead_form_submitted}, missing: {direction: outbound}, within: 24h}"
    )
    state, fired = run(compiled, [tp(0, "lead_form_submitted")])
    assert fired == [] and state is not None
    deadline = next_deadline(state, compiled)
    assert deadline is not None
    early, fired = apply_timer(state, T0 + timedelta(hours=23), NOW, compiled)
    assert fired == []
    at = T0 + timedelta(hours=24, microseconds=1)
    later, decisions = apply_timer(early, at, NOW, compiled)
    assert [d.intervention.explanation.triggering_event_ids for d in decisions] == [["e0"]]
    assert next_deadline(later, compiled) is None
    assert apply_timer(later, at + timedelta(hours=1), NOW, compiled)[1] == []


def test_absence_is_cancelled_by_the_missing_touchpoint() -> None:
    compiled = rules(
        "absence: {after: {kind: lead_form_submitted}, missing: {direction: outbound}, within: 24h}"
    )
    state, _ = run(
        compiled, [tp(0, "lead_form_submitted"), tp(60, "call_made", direction="outbound")]
    )
    assert state is not None and next_deadline(state, compiled) is None


def test_absence_noticed_by_a_late_touchpoint_fires_too() -> None:
    compiled = rules(
        "absence: {after: {kind: lead_form_submitted}, missing: {direction: outbound}, within: 24h}"
    )
    events = [tp(0, "lead_form_submitted"), tp(1, "web_visit", minutes=25 * 60)]
    assert ids(run(compiled, events)[1]) == [["e0"]]


def test_all_any_not() -> None:
    compiled = rules(
        """
        all:
          - any:
              - event: {kind: churn_signal}
              - event: {kind: downgrade}
          - not: {event: {attributes.plan: enterprise}}
        """
    )
    events = [
        tp(1, "downgrade", plan="pro"),
        tp(2, "churn_signal", plan="enterprise"),
        tp(3, "login"),
    ]
    assert ids(run(compiled, events)[1]) == [["e1"]]


def test_cooldown_is_in_event_time() -> None:
    compiled = load_bundle(
        "bundle: t\nversion: 1\nrules:\n  - id: r\n    cooldown: 1h\n"
        "    when: {event: {kind: ping}}\n    then: {kind: alert, title: t, due_in: 0s}\n"
    ).rules
    events = [tp(1, "ping", minutes=0), tp(2, "ping", minutes=30), tp(3, "ping", minutes=61)]
    assert ids(run(compiled, events)[1]) == [["e1"], ["e3"]]


def test_shadow_rules_decide_but_are_marked_shadow() -> None:
    compiled = load_bundle(
        "bundle: t\nversion: 1\nrules:\n  - id: r\n    mode: shadow\n"
        "    when: {event: {kind: ping}}\n    then: {kind: alert, title: t, due_in: 0s}\n"
    ).rules
    _, decisions = apply(None, tp(1, "ping"), NOW, compiled)
    assert [d.shadow for d in decisions] == [True]


def test_role_assignees_leave_the_rep_empty() -> None:
    compiled = load_bundle(
        "bundle: t\nversion: 1\nrules:\n  - id: r\n    when: {event: {kind: refill_due}}\n"
        "    then: {kind: task, title: t, due_in: 1d, assignee: 'role:pharmacist'}\n"
    ).rules
    [decision] = apply(None, tp(1, "refill_due"), NOW, compiled)[1]
    assert (decision.intervention.rep_id, decision.intervention.assignee_role) == (
        None,
        "pharmacist",
    )


# Window counts against a brute-force count, including out-of-order touchpoints.

offsets = st.lists(st.integers(min_value=0, max_value=90), min_size=1, max_size=40)


@settings(max_examples=200, deadline=None)
@given(
    offsets,
    st.integers(min_value=1, max_value=5),
    st.integers(min_value=1, max_value=45),
    st.sampled_from([0, 10, 60]),
)
def test_window_counts_match_a_brute_force_count(
    minutes: list[int], at_least: int, within: int, lateness: int
) -> None:
    compiled = rules(
        f"count: {{of: {{kind: hit}}, within: {within}m, at_least: {at_least}}}",
        extra=f"allowed_lateness: {lateness}m\n" if lateness else "",
    )
    fired_at: list[str] = []
    state: CustomerState | None = None
    for n, m in enumerate(minutes):
        state, decisions = apply(state, tp(n, "hit", minutes=m), NOW, compiled)
        fired_at.extend(f"e{n}" for _ in decisions)

    expected: list[str] = []
    accepted: list[int] = []
    newest: int | None = None
    for n, m in enumerate(minutes):
        newest = m if newest is None else max(newest, m)
        if m < newest - lateness:
            continue  # later than the allowed lateness: not counted
        accepted.append(m)
        ends = [m] + [a for a in accepted if m < a <= m + within]
        if any(sum(1 for a in accepted if end - within <= a <= end) == at_least for end in ends):
            expected.append(f"e{n}")
    assert fired_at == expected


def test_a_late_touchpoint_can_complete_a_window_ending_later() -> None:
    compiled = rules(
        "count: {of: {kind: sandbox_error}, within: 1h, at_least: 3}",
        extra="allowed_lateness: 1h\n",
    )
    events = [
        tp(1, "sandbox_error", minutes=0),
        tp(2, "sandbox_error", minutes=50),
        tp(3, "sandbox_error", minutes=40),  # late, but within the allowed lateness
    ]
    assert [sorted(i) for i in ids(run(compiled, events)[1])] == [["e1", "e2", "e3"]]


def test_a_touchpoint_later_than_the_allowed_lateness_is_not_counted() -> None:
    compiled = rules(
        "count: {of: {kind: sandbox_error}, within: 3h, at_least: 2}",
        extra="allowed_lateness: 10m\n",
    )
    events = [tp(1, "sandbox_error", minutes=120), tp(2, "sandbox_error", minutes=60)]
    assert run(compiled, events)[1] == []


def test_true_is_not_one() -> None:
    compiled = rules("event: {attributes.chronic: true}")
    assert run(compiled, [tp(1, "fill", chronic=1)])[1] == []
    assert ids(run(compiled, [tp(2, "fill", chronic=True)])[1]) == [["e2"]]
    listed = rules("event: {attributes.flag: {in: [1, 2]}}")
    assert run(listed, [tp(3, "x", flag=True)])[1] == []


def test_a_refill_ends_one_wait_and_starts_the_next() -> None:
    compiled = rules("absence: {after: {kind: refill}, missing: {kind: refill}, within: 25d}")
    state, _ = run(compiled, [tp(1, "refill", minutes=0), tp(2, "refill", minutes=20 * 1440)])
    assert state is not None
    assert (
        next_deadline(state, compiled)
        == int(
            (T0 + timedelta(days=45) - datetime(1970, 1, 1, tzinfo=UTC)) / timedelta(microseconds=1)
        )
        + 1
    )


def test_long_observed_text_is_clipped_not_fatal() -> None:
    compiled = load_bundle(
        "bundle: t\nversion: 1\nrules:\n  - id: r\n    when: {event: {kind: note}}\n"
        "    then: {kind: task, title: '{observed}', due_in: 1h}\n"
    ).rules
    long_kind_event = tp(1, "note")
    [decision] = apply(None, long_kind_event, NOW, compiled)[1]
    assert decision.intervention.title == "note"


def test_explain_says_where_each_rule_stands() -> None:
    from engine.explain import explain

    compiled = load_bundle(
        "bundle: t\nversion: 2\nrules:\n"
        "  - id: streak\n    cooldown: 1d\n"
        "    when: {streak: {of: {direction: outbound},\n"
        "                    reset_by: {direction: inbound}, length: 3}}\n"
        "    then: {kind: task, title: t, due_in: 1h}\n"
        "  - id: wait\n"
        "    when: {absence: {after: {kind: lead}, missing: {direction: outbound}, within: 1d}}\n"
        "    then: {kind: task, title: t, due_in: 1h}\n"
        "  - id: seq\n"
        "    when: {sequence: {within: 1h, steps: [{kind: a}, {kind: b}, {kind: c}]}}\n"
        "    then: {kind: task, title: t, due_in: 1h}\n"
    ).rules
    events = [tp(1, "lead"), tp(2, "note", direction="outbound"), tp(3, "a")]
    state, _ = run(compiled, events)
    statuses = {s.rule_id: s for s in explain(state, compiled, T0 + timedelta(minutes=10))}
    assert statuses["streak"].progress.endswith(": 1 of 3 so far")
    assert statuses["streak"].version == 2
    assert statuses["wait"].progress.startswith("(kind eq lead) and no (direction eq outbound)")
    assert "not waiting" in statuses["wait"].progress  # the outbound note ended the wait
    assert "1 of 3 steps done (e3); waits for (kind eq b) for 53m more" in statuses["seq"].progress
    assert explain(None, compiled, T0) == []

    fired_state, fired = run(compiled, [tp(n, "note", direction="outbound") for n in (4, 5, 6)])
    assert len(fired) == 1
    [streak] = [
        s for s in explain(fired_state, compiled, T0 + timedelta(hours=1)) if s.rule_id == "streak"
    ]
    assert "held at 3" in streak.progress
    assert streak.last_fired_at == T0 + timedelta(minutes=6)
    assert streak.cooldown_until == T0 + timedelta(days=1, minutes=6)


def test_a_daily_cap_holds_back_the_least_urgent_and_lifts_after_24_hours() -> None:
    bundle = load_bundle(
        "bundle: t\nversion: 1\ncaps: {per_customer_per_day: 2}\nrules:\n"
        "  - id: low\n    when: {event: {kind: ping}}\n"
        "    then: {kind: task, title: t, due_in: 1h, priority: low}\n"
        "  - id: urgent\n    when: {event: {kind: ping}}\n"
        "    then: {kind: task, title: t, due_in: 1h, priority: urgent}\n"
        "  - id: normal\n    when: {event: {kind: ping}}\n"
        "    then: {kind: task, title: t, due_in: 1h}\n"
    )
    assert bundle.per_customer_per_day == 2
    state, decisions = apply(None, tp(1, "ping", minutes=0), NOW, bundle.rules, 2)
    assert {d.intervention.rule_id: d.capped for d in decisions} == {
        "low": True,
        "urgent": False,
        "normal": False,
    }
    state, decisions = apply(state, tp(2, "ping", minutes=60), NOW, bundle.rules, 2)
    assert all(d.capped for d in decisions)
    _, decisions = apply(state, tp(3, "ping", minutes=24 * 60 + 1), NOW, bundle.rules, 2)
    assert sorted(d.intervention.rule_id for d in decisions if d.emitted) == ["normal", "urgent"]


def test_the_strictest_cap_of_the_running_bundles_applies() -> None:
    from engine.rulebook import RuleBook

    book = RuleBook()
    template = "bundle: {n}\nversion: 1\n{caps}rules:\n  - id: {n}.r\n    when: {{event: {{kind: a}}}}\n    then: {{kind: task, title: t, due_in: 1h}}\n"  # noqa: E501
    assert book.offer(
        template.format(n="a", caps="caps: {per_customer_per_day: 5}\n"), "a"
    ).accepted
    assert book.per_customer_per_day == 5
    assert book.offer(
        template.format(n="b", caps="caps: {per_customer_per_day: 3}\n"), "b"
    ).accepted
    assert book.per_customer_per_day == 3
    assert book.offer(template.format(n="c", caps=""), "c").accepted
    assert book.per_customer_per_day == 3


def test_manager_assignees_resolve_through_the_bundles_directory() -> None:
    compiled = load_bundle(
        "bundle: t\nversion: 1\nmanagers: {rep-1: mgr-zoe}\nrules:\n"
        "  - id: r\n    when: {event: {kind: escalate}}\n"
        "    then: {kind: escalation, title: t, due_in: 1h, assignee: manager}\n"
    ).rules
    [decision] = apply(None, tp(1, "escalate"), NOW, compiled)[1]
    assert (decision.intervention.rep_id, decision.intervention.assignee_role) == ("mgr-zoe", None)
    unknown = tp(2, "escalate").model_copy(update={"rep_id": "rep-new"})
    [decision] = apply(None, unknown, NOW, compiled)[1]
    assert (decision.intervention.rep_id, decision.intervention.assignee_role) == (None, "manager")


def test_a_late_touchpoint_does_not_slip_past_the_cap() -> None:
    compiled = load_bundle(
        "bundle: t\nversion: 1\nrules:\n  - id: r\n    when: {event: {kind: ping}}\n"
        "    then: {kind: task, title: t, due_in: 1h}\n"
    ).rules
    state, first = apply(None, tp(1, "ping", minutes=30), NOW, compiled, 1)
    state, late = apply(state, tp(2, "ping", minutes=0), NOW, compiled, 1)
    assert [d.emitted for d in first + late] == [True, False]


def test_a_new_rule_version_drops_partial_matches_but_keeps_the_cooldown() -> None:
    def version(n: int, length: int) -> tuple[CompiledRule, ...]:
        return load_bundle(
            f"bundle: t\nversion: {n}\nrules:\n  - id: r\n    cooldown: 1d\n"
            "    when: {streak: {of: {direction: outbound}, reset_by: {direction: inbound}, "
            f"length: {length}}}}}\n    then: {{kind: task, title: t, due_in: 1h}}\n"
        ).rules

    state: CustomerState | None = None
    for n in (1, 2):
        state, _ = apply(state, tp(n, "note", direction="outbound"), NOW, version(1, 3))
    # Version 2 arrives with two of three messages counted: the count starts again.
    state, fired = apply(state, tp(3, "note", direction="outbound"), NOW, version(2, 3))
    assert fired == []
    for n in (4, 5):
        state, fired = apply(state, tp(n, "note", direction="outbound"), NOW, version(2, 3))
    assert [d.intervention.explanation.triggering_event_ids for d in fired] == [["e3", "e4", "e5"]]
    # Fired at e5; a version 3 with a shorter streak still honours the cooldown.
    state, _ = apply(state, tp(6, "note", direction="inbound"), NOW, version(3, 1))
    state, fired = apply(state, tp(7, "note", direction="outbound"), NOW, version(3, 1))
    assert fired == []


def test_cooldowns_and_customer_caps_count_event_time_whatever_the_processing_time() -> None:
    compiled = load_bundle(
        "bundle: t\nversion: 1\nrules:\n  - id: r\n    cooldown: 1h\n"
        "    when: {event: {kind: ping}}\n    then: {kind: alert, title: t, due_in: 0s}\n"
    ).rules
    # Processed days apart, 30 minutes apart in event time: the cooldown holds.
    state, first = apply(None, tp(1, "ping", minutes=0), NOW, compiled)
    _, second = apply(state, tp(2, "ping", minutes=30), NOW + timedelta(days=3), compiled)
    assert (len(first), len(second)) == (1, 0)
    # A touchpoint 30 minutes *before* the last firing, arriving late, is in cooldown too.
    _, earlier = apply(state, tp(3, "ping", minutes=-30), NOW, compiled)
    assert earlier == []
    # Processed in the same second, 25 hours apart in event time: the cap of 1 lets both out.
    state, first = apply(None, tp(4, "ping", minutes=0), NOW, compiled, 1)
    _, later = apply(state, tp(5, "ping", minutes=25 * 60), NOW, compiled, 1)
    assert [d.emitted for d in first + later] == [True, True]


def test_an_intervention_held_back_by_the_customer_cap_starts_the_cooldown() -> None:
    compiled = load_bundle(
        "bundle: t\nversion: 1\nrules:\n"
        "  - id: first\n    when: {event: {kind: ping}}\n"
        "    then: {kind: alert, title: t, due_in: 0s, priority: urgent}\n"
        "  - id: second\n    cooldown: 2h\n    when: {event: {kind: ping}}\n"
        "    then: {kind: alert, title: t, due_in: 0s, priority: low}\n"
    ).rules
    state, at_once = apply(None, tp(1, "ping", minutes=0), NOW, compiled, 1)
    assert {d.intervention.rule_id: d.capped for d in at_once} == {"first": False, "second": True}
    _, next_day = apply(state, tp(2, "ping", minutes=25 * 60), NOW, compiled, 1)
    assert [d.intervention.rule_id for d in next_day if d.emitted] == ["first"]
    _, in_cooldown = apply(state, tp(3, "ping", minutes=60), NOW, compiled, 5)
    assert [d.intervention.rule_id for d in in_cooldown] == ["first"]
