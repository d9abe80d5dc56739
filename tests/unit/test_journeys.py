"""Journeys: stable variant assignment, steps by time and condition, conversion and exit."""

from __future__ import annotations

import textwrap
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from engine.bundle import InvalidBundle, load_bundle
from engine.conditions import micros
from engine.explain import explain_journeys
from engine.journeys import HOLDOUT, CompiledJourney, JourneySignal
from engine.reducer import apply, apply_timer, next_deadline
from engine.state import CustomerState
from schemas.models import Channel, Direction, InterventionCommand, TouchpointEvent

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)

BUNDLE = """\
bundle: onboarding
version: {version}
journeys:
  - id: trial
    entry: {{event: {{kind: trial_started}}}}
    conversion: {{event: {{kind: subscribed}}}}
    exit: {{event: {{kind: churned}}}}
    holdout: {holdout}
    variants:
      - name: guided
        weight: {guided}
        steps:
          - id: welcome-call
            after: 1h
            then: {{kind: task, title: "Welcome call for {{customer_id}}", due_in: 1d}}
          - id: fix-error
            when: {{event: {{kind: sandbox_error}}}}
            then: {{kind: task, title: "Fix the sandbox for {{customer_id}}", due_in: 2h}}
      - name: self-serve
        weight: {self_serve}
        steps:
          - id: tips-email
            after: 1d
            then: {{kind: content_push, title: "Tips for {{customer_id}}", due_in: 1d}}
"""


def journey(
    version: int = 1, holdout: int = 0, guided: int = 1, self_serve: int = 0
) -> CompiledJourney:
    text = BUNDLE.format(version=version, holdout=holdout, guided=guided, self_serve=self_serve)
    [compiled] = load_bundle(text, "onboarding.yaml").journeys
    return compiled


def tp(n: int, kind: str, minutes: float, customer: str = "c1") -> TouchpointEvent:
    at = T0 + timedelta(minutes=minutes)
    return TouchpointEvent(
        event_id=f"{customer}-{n}",
        customer_id=customer,
        occurred_at=at,
        received_at=at,
        channel=Channel.PRODUCT,
        kind=kind,
        direction=Direction.NONE,
        rep_id="rep-1",
        source="test/1",
    )


class Run:
    def __init__(self, compiled: CompiledJourney) -> None:
        self.journeys = (compiled,)
        self.state: CustomerState | None = None
        self.signals: list[JourneySignal] = []
        self.sent: list[InterventionCommand] = []

    def feed(self, *events: TouchpointEvent) -> None:
        for event in events:
            self.state, decisions = apply(
                self.state, event, NOW, (), None, self.journeys, self.signals
            )
            self.sent.extend(d.intervention for d in decisions)

    def timer(self, at: datetime) -> None:
        assert self.state is not None
        self.state, decisions = apply_timer(
            self.state, at, NOW, (), None, self.journeys, self.signals
        )
        self.sent.extend(d.intervention for d in decisions)

    def marks(self) -> list[str]:
        return [s.what for s in self.signals]


def test_assignment_is_stable_and_follows_weights_and_holdout() -> None:
    compiled = journey(holdout=10, guided=1, self_serve=3)
    shares = Counter(compiled.assign(f"cust-{n}") for n in range(20_000))
    assert compiled.assign("cust-7") == compiled.assign("cust-7")
    assert abs(shares[HOLDOUT] / 20_000 - 0.10) < 0.01
    assert abs(shares["guided"] / 20_000 - 0.225) < 0.015
    assert abs(shares["self-serve"] / 20_000 - 0.675) < 0.015


def test_steps_wait_for_time_and_for_a_condition_then_the_customer_converts() -> None:
    run = Run(journey())
    run.feed(tp(1, "trial_started", 0), tp(2, "login", 10))
    assert run.marks() == ["entered"] and run.sent == []
    assert run.state is not None
    due = next_deadline(run.state, (), run.journeys)
    assert due is not None
    run.timer(T0 + timedelta(minutes=59))
    assert run.sent == []
    run.timer(T0 + timedelta(hours=1))
    [welcome] = run.sent
    assert welcome.rule_id == "trial.welcome-call"
    assert welcome.experiment is not None
    assert (welcome.experiment.experiment_id, welcome.experiment.variant) == ("trial", "guided")
    run.feed(tp(3, "login", 90), tp(4, "sandbox_error", 100))
    assert [c.rule_id for c in run.sent] == ["trial.welcome-call", "trial.fix-error"]
    assert run.sent[1].explanation.triggering_event_ids == ["c1-4"]
    run.feed(tp(5, "subscribed", 200))
    assert run.marks() == ["entered", "intervened", "intervened", "completed", "converted"]
    assert next_deadline(run.state, (), run.journeys) is None


def test_the_holdout_gets_no_steps_but_its_conversions_count() -> None:
    run = Run(journey(holdout=99))
    customer = next(f"h{n}" for n in range(100) if run.journeys[0].assign(f"h{n}") == HOLDOUT)
    run.feed(tp(1, "trial_started", 0, customer))
    run.timer(T0 + timedelta(days=2))
    run.feed(tp(2, "subscribed", 3000, customer))
    assert run.sent == []
    assert [(s.variant, s.what) for s in run.signals] == [
        (HOLDOUT, "entered"),
        (HOLDOUT, "converted"),
    ]


def test_exit_ends_the_journey_and_reentry_keeps_the_variant_across_versions() -> None:
    run = Run(journey(guided=1, self_serve=0))
    run.feed(tp(1, "trial_started", 0), tp(2, "churned", 5))
    assert run.marks() == ["entered", "exited"]
    run.timer(T0 + timedelta(hours=2))
    assert run.sent == []
    # A new version sends everyone new to self-serve; this customer stays guided.
    run.journeys = (journey(version=2, guided=0 + 1, self_serve=1000),)
    run.feed(tp(3, "trial_started", 600))
    assert run.signals[-1] == JourneySignal("trial", "guided", "entered")


@pytest.mark.parametrize(
    ("old", "new", "fragment"),
    [
        ("            after: 1h\n", "", "a step needs `after`, `when` or both"),
        ("holdout: {holdout}", "holdout: 100", "expected a percent from 0 to 99"),
        ("      - name: self-serve", "      - name: guided", "variant name 'guided' is taken"),
        ("    conversion:", "    convertion:", "did you mean 'conversion'?"),
        ("after: 1d", "after: 0s", "impossible window"),
    ],
)
def test_bad_journeys_are_refused_with_the_field_named(old: str, new: str, fragment: str) -> None:
    assert old in BUNDLE
    text = BUNDLE.replace(old, new).format(version=1, holdout=0, guided=1, self_serve=1)
    with pytest.raises(InvalidBundle) as caught:
        load_bundle(textwrap.dedent(text), "onboarding.yaml")
    problems = [str(p) for p in caught.value.problems]
    assert any(fragment in p and p.startswith("onboarding.yaml:") for p in problems), problems


def test_signal_coverage_marks_customers_whose_required_signals_all_arrived() -> None:
    text = BUNDLE.format(version=1, holdout=0, guided=1, self_serve=0).replace(
        "    holdout: 0\n", "    holdout: 0\n    required_signals: [login, sandbox_error, login]\n"
    )
    [compiled] = load_bundle(text, "onboarding.yaml").journeys
    assert compiled.required_signals == ("login", "sandbox_error")
    run = Run(compiled)
    run.feed(tp(1, "login", -5), tp(2, "trial_started", 0), tp(3, "login", 5), tp(4, "login", 6))
    assert "covered" not in run.marks()  # the login before entry does not count
    run.feed(tp(5, "sandbox_error", 7), tp(6, "sandbox_error", 8))
    assert run.marks().count("covered") == 1


def test_a_timed_step_keeps_its_timer_across_a_new_version() -> None:
    run = Run(journey(version=1))
    run.feed(tp(1, "trial_started", 0))
    run.journeys = (journey(version=2),)
    assert run.state is not None
    assert next_deadline(run.state, (), run.journeys) is not None
    run.timer(T0 + timedelta(hours=1))
    assert [c.rule_id for c in run.sent] == ["trial.welcome-call"]


def test_an_absence_inside_a_journey_is_scheduled() -> None:
    text = BUNDLE.format(version=1, holdout=0, guided=1, self_serve=0).replace(
        "    exit: {event: {kind: churned}}\n",
        "    exit: {absence: {after: {kind: trial_started}, missing: {kind: login}, within: 3d}}\n",
    )
    [compiled] = load_bundle(text, "onboarding.yaml").journeys
    run = Run(compiled)
    run.feed(tp(1, "trial_started", 0))
    run.timer(T0 + timedelta(hours=1))  # the welcome call
    assert run.state is not None
    due = next_deadline(run.state, (), run.journeys)
    assert due is not None
    run.timer(T0 + timedelta(days=3, minutes=1))
    assert run.marks()[-1] == "exited"


def test_duplicate_step_ids_and_clashes_with_rule_ids_are_refused() -> None:
    twice = BUNDLE.replace("id: fix-error", "id: welcome-call").format(
        version=1, holdout=0, guided=1, self_serve=1
    )
    with pytest.raises(InvalidBundle, match="step id 'welcome-call' is used twice"):
        load_bundle(twice, "onboarding.yaml")
    clash = BUNDLE.format(version=1, holdout=0, guided=1, self_serve=1) + (
        "rules:\n  - id: trial.tips-email\n    when: {event: {kind: a}}\n"
        "    then: {kind: task, title: t, due_in: 1h}\n"
    )
    with pytest.raises(
        InvalidBundle, match=r"journey step 'trial\.tips-email' has the id of the rule"
    ):
        load_bundle(clash, "onboarding.yaml")


def test_explain_says_where_a_customer_stands_in_each_journey() -> None:
    from engine.explain import explain_journeys

    compiled = journey()
    run = Run(compiled)
    assert explain_journeys(None, run.journeys, T0) == []
    run.feed(tp(1, "login", 0))
    [status] = explain_journeys(run.state, run.journeys, T0)
    assert (status.variant, status.inside, status.progress) == (None, False, "never entered")
    run.feed(tp(2, "trial_started", 1))
    [status] = explain_journeys(run.state, run.journeys, T0)
    assert status.inside and status.variant == "guided"
    assert "0 of 2 steps done; next 'welcome-call'" in status.progress
    assert status.deadline == T0 + timedelta(minutes=1, hours=1)
    run.feed(tp(3, "churned", 2))
    [status] = explain_journeys(run.state, run.journeys, T0)
    assert status.progress == "out of the journey (variant guided kept for re-entry)"


def test_a_shadow_journey_moves_customers_through_its_steps_but_emits_nothing() -> None:
    text = BUNDLE.format(version=1, holdout=0, guided=1, self_serve=0).replace(
        "    entry:", "    mode: shadow\n    entry:"
    )
    [compiled] = load_bundle(text, "onboarding.yaml").journeys
    state, decisions = apply(None, tp(1, "trial_started", 0), NOW, (), 1, (compiled,))
    assert decisions == []
    state, decisions = apply_timer(state, T0 + timedelta(hours=1), NOW, (), 1, (compiled,))
    [welcome] = decisions
    assert welcome.intervention.rule_id == "trial.welcome-call"
    assert welcome.shadow and not welcome.emitted
    # A cap of one a day is not used up by shadow decisions.
    _, decisions = apply(state, tp(2, "sandbox_error", 70), NOW, (), 1, (compiled,))
    [fix] = decisions
    assert fix.shadow and not fix.capped
    [status] = explain_journeys(state, (compiled,), T0 + timedelta(hours=2))
    assert status.mode == "shadow"
    with pytest.raises(InvalidBundle, match=r"journeys\[0\]\.mode"):
        load_bundle(text.replace("mode: shadow", "mode: shadowy"), "onboarding.yaml")


OPEN_ENDED = """\
bundle: nudges
version: 1
journeys:
  - id: nudge
    entry: {event: {kind: trial_started}}
    holdout: 50
    variants:
      - name: guided
        steps:
          - id: welcome-call
            after: 1h
            then: {kind: task, title: "Welcome call for {customer_id}", due_in: 1d}
          - id: fix-error
            when: {event: {kind: sandbox_error}}
            then: {kind: task, title: "Fix the sandbox for {customer_id}", due_in: 2h}
"""


@pytest.mark.parametrize("variant", ["guided", HOLDOUT])
def test_without_conversion_or_exit_holdout_customers_leave_when_a_variant_customer_would(
    variant: str,
) -> None:
    [compiled] = load_bundle(OPEN_ENDED, "nudges.yaml").journeys
    run = Run(compiled)
    customer = next(f"c{n}" for n in range(100) if compiled.assign(f"c{n}") == variant)
    run.feed(tp(1, "trial_started", 0, customer))
    assert run.state is not None
    assert next_deadline(run.state, (), run.journeys) == micros(T0 + timedelta(hours=1))
    run.timer(T0 + timedelta(hours=1))
    run.feed(tp(2, "trial_started", 70, customer))  # still inside: no second entry
    run.feed(tp(3, "sandbox_error", 100, customer))  # the last step: the customer leaves
    run.feed(tp(4, "trial_started", 200, customer))  # and enters again
    entered = [s.what for s in run.signals].count("entered")
    assert entered == 2
    if variant == HOLDOUT:
        assert run.sent == []
        assert {s.variant for s in run.signals} == {HOLDOUT}
        assert [s.what for s in run.signals] == ["entered", "entered"]
    else:
        assert [c.rule_id for c in run.sent] == ["nudge.welcome-call", "nudge.fix-error"]
        assert [s.what for s in run.signals] == [
            "entered",
            "intervened",
            "intervened",
            "completed",
            "entered",
        ]


def test_explain_says_a_holdout_customer_follows_a_variant_s_steps_silently() -> None:
    [compiled] = load_bundle(OPEN_ENDED, "nudges.yaml").journeys
    run = Run(compiled)
    customer = next(f"c{n}" for n in range(100) if compiled.assign(f"c{n}") == HOLDOUT)
    run.feed(tp(1, "trial_started", 0, customer))
    [status] = explain_journeys(run.state, run.journeys, T0)
    assert status.inside and status.variant == HOLDOUT
    assert status.progress == (
        "in the holdout (gets nothing), following variant guided: 0 of 2 steps passed; "
        f"next 'welcome-call', waiting since {T0.isoformat()}; leaves after the last step"
    )
    assert status.deadline == T0 + timedelta(hours=1)
    run.timer(T0 + timedelta(hours=1))
    [status] = explain_journeys(run.state, run.journeys, T0 + timedelta(hours=1))
    assert "1 of 2 steps passed; next 'fix-error'" in status.progress
    run.feed(tp(2, "sandbox_error", 100, customer))
    [status] = explain_journeys(run.state, run.journeys, T0 + timedelta(hours=2))
    assert not status.inside
    assert status.progress == "out of the journey (variant holdout kept for re-entry)"


def test_explain_says_a_holdout_customer_waits_for_conversion_or_exit() -> None:
    run = Run(journey(holdout=99))
    customer = next(f"h{n}" for n in range(100) if run.journeys[0].assign(f"h{n}") == HOLDOUT)
    run.feed(tp(1, "trial_started", 0, customer))
    [status] = explain_journeys(run.state, run.journeys, T0)
    assert status.inside and status.variant == HOLDOUT
    assert status.progress == "in the holdout (gets nothing): waits for conversion or exit"
