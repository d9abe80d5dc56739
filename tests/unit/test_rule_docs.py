"""docs/rules.md and rules/examples/ say what the engine does.

Every bundle shown in the reference compiles (or, when marked ``<!-- invalid -->``,
is refused with exactly the error printed under it), every example pack compiles,
and each pack fires on the touchpoints it is written for and not on a near miss.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest

from engine.builtin import BUILTIN_BUNDLE
from engine.bundle import InvalidBundle, RuleBundle, load_bundle
from engine.journeys import JourneySignal
from engine.reducer import apply, apply_timer, next_deadline
from engine.rulebook import RuleBook
from engine.state import CustomerState
from schemas.models import (
    Channel,
    Direction,
    InterventionCommand,
    InterventionKind,
    Priority,
    Severity,
    TouchpointEvent,
)

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "rules.md"
EXAMPLES = ROOT / "rules" / "examples"
PACKS = (
    "email-follow-up.yaml",
    "meeting-coaching.yaml",
    "new-lead-no-contact.yaml",
    "refill-due.yaml",
    "saas-trial-health.yaml",
    "service-opportunity.yaml",
    "stalled-deal.yaml",
    "unanswered-outbound.yaml",
)

T0 = datetime(2026, 4, 6, 9, 0, tzinfo=UTC)
NOW = T0 + timedelta(days=200)
JUST = timedelta(microseconds=1)


# --- the reference ----------------------------------------------------------------------

FENCE = re.compile(r"^```(\w*)\n(.*?)^```\n", re.MULTILINE | re.DOTALL)
INVALID = re.compile(r"<!--\s*invalid(?::\s*(?P<source>\S+))?\s*-->\s*$")


@dataclass(frozen=True)
class DocBundle:
    line: int
    text: str
    invalid: bool
    source: str | None
    printed: str | None
    """The ``text`` block that follows an invalid bundle: the error it should print."""


def doc_bundles() -> list[DocBundle]:
    doc = DOC.read_text(encoding="utf-8")
    blocks = list(FENCE.finditer(doc))
    found = []
    for index, block in enumerate(blocks):
        language, body = block.group(1), block.group(2)
        if language not in ("yaml", "yml") or not body.lstrip().startswith("bundle:"):
            continue
        before = doc[: block.start()].rstrip("\n").rsplit("\n", 1)[-1]
        marker = INVALID.search(before)
        printed = None
        if marker and index + 1 < len(blocks) and blocks[index + 1].group(1) == "text":
            printed = blocks[index + 1].group(2).rstrip("\n")
        found.append(
            DocBundle(
                line=doc.count("\n", 0, block.start()) + 2,
                text=body,
                invalid=marker is not None,
                source=marker.group("source") if marker else None,
                printed=printed,
            )
        )
    return found


DOC_BUNDLES = doc_bundles()


def test_the_reference_shows_a_bundle_for_every_condition_and_an_invalid_one() -> None:
    valid = [b for b in DOC_BUNDLES if not b.invalid]
    assert len(valid) >= 8
    shown = "\n".join(b.text for b in valid)
    for kind in ("event", "state", "count", "sum", "sequence", "streak", "absence"):
        assert re.search(rf"^\s+{kind}:\s*$", shown, re.MULTILINE), kind
    for kind in ("all", "any", "not"):
        assert re.search(rf"^\s+-? ?{kind}:\s*$", shown, re.MULTILINE), kind
    assert any(b.invalid for b in DOC_BUNDLES)


@pytest.mark.parametrize(
    "example", [b for b in DOC_BUNDLES if not b.invalid], ids=lambda b: f"rules.md:{b.line}"
)
def test_every_bundle_in_the_reference_compiles(example: DocBundle) -> None:
    bundle = load_bundle(example.text, f"docs/rules.md:{example.line}")
    assert bundle.rules or bundle.journeys


@pytest.mark.parametrize(
    "example", [b for b in DOC_BUNDLES if b.invalid], ids=lambda b: f"rules.md:{b.line}"
)
def test_every_bundle_marked_invalid_is_refused_as_printed(example: DocBundle) -> None:
    with pytest.raises(InvalidBundle) as refused:
        load_bundle(example.text, example.source or "<doc>")
    assert refused.value.problems
    if example.source is not None:
        assert example.printed is not None, "an invalid example names a file: show its error"
        assert str(refused.value) == example.printed


# --- the packs --------------------------------------------------------------------------


def test_the_shipped_packs_are_there() -> None:
    assert sorted(p.name for p in EXAMPLES.glob("*.yaml")) == sorted(PACKS)


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.y*ml")), ids=lambda p: p.name)
def test_every_example_pack_compiles(path: Path) -> None:
    bundle = load_bundle(path.read_text(encoding="utf-8"), str(path.relative_to(ROOT)))
    assert bundle.name == path.stem
    assert bundle.rules


def pack(name: str) -> RuleBundle:
    path = EXAMPLES / name
    return load_bundle(path.read_text(encoding="utf-8"), str(path.relative_to(ROOT)))


_ids = iter(range(1, 1_000_000))


def touch(
    kind: str,
    at: datetime,
    direction: str = "none",
    channel: str = "product",
    rep: str | None = "rep-maria",
    customer: str = "cust-42",
    **attributes: bool | int | float | str,
) -> TouchpointEvent:
    return TouchpointEvent(
        event_id=f"evt-{next(_ids)}",
        customer_id=customer,
        occurred_at=at,
        received_at=at,
        channel=Channel(channel),
        kind=kind,
        direction=Direction(direction),
        rep_id=rep,
        attributes=attributes,
        source="test/1",
    )


@dataclass
class Run:
    bundle: RuleBundle
    state: CustomerState | None = None

    def feed(self, *events: TouchpointEvent) -> list[list[InterventionCommand]]:
        """Interventions emitted at each touchpoint, in order."""
        emitted = []
        for event in events:
            self.state, decisions = apply(self.state, event, NOW, self.bundle.rules)
            assert not any(d.shadow for d in decisions)
            emitted.append([d.intervention for d in decisions])
        return emitted

    def timer(self, at: datetime) -> list[InterventionCommand]:
        assert self.state is not None
        self.state, decisions = apply_timer(self.state, at, NOW, self.bundle.rules)
        return [d.intervention for d in decisions]

    def deadline(self) -> datetime | None:
        assert self.state is not None
        at = next_deadline(self.state, self.bundle.rules)
        return None if at is None else datetime(1970, 1, 1, tzinfo=UTC) + at * JUST


def only(emitted: Iterable[list[InterventionCommand]]) -> list[int]:
    """Positions of the touchpoints at which something was emitted."""
    return [i for i, commands in enumerate(emitted) if commands]


# saas-trial-health


def video(at: datetime, seconds: int, video_id: str = "api-troubleshooting") -> TouchpointEvent:
    return touch(
        "video_watched",
        at,
        channel="web",
        plan="trial",
        video=video_id,
        watched_seconds=seconds,
    )


def test_trial_user_stuck_after_the_video_gets_a_remote_fix_task() -> None:
    run = Run(pack("saas-trial-health.yaml"))
    run.feed(touch("message_sent", T0 - timedelta(days=1), "outbound", "email"))
    emitted = run.feed(
        video(T0, 273),
        touch("page_viewed", T0 + timedelta(hours=2), page="docs"),
        touch("sandbox_error", T0 + timedelta(hours=23, minutes=59)),
        touch("sandbox_error", T0 + timedelta(hours=24)),
    )
    assert only(emitted) == [2]
    [task] = emitted[2]
    assert task.rule_id == "trial.api-video-then-sandbox-error"
    assert task.kind is InterventionKind.TASK
    assert task.priority is Priority.HIGH
    assert task.rep_id == "rep-maria"
    assert task.assignee_role is None
    assert "15-minute remote fix" in task.title and "cust-42" in task.title
    assert "video to error: completed in 23h59m" in task.body
    assert task.due_at == T0 + timedelta(hours=25, minutes=59)


@pytest.mark.parametrize(
    "first, error_after",
    [
        (lambda: video(T0, 272), timedelta(hours=1)),  # exactly 4m32s is not more
        (lambda: video(T0, 900, "billing-basics"), timedelta(hours=1)),
        (lambda: video(T0, 900), timedelta(hours=24, seconds=1)),  # too late
    ],
    ids=["watched-exactly-272s", "other-video", "error-after-24h"],
)
def test_trial_near_misses_do_not_fire(first, error_after: timedelta) -> None:
    run = Run(pack("saas-trial-health.yaml"))
    emitted = run.feed(first(), touch("sandbox_error", T0 + error_after))
    assert only(emitted) == []


def test_an_error_before_the_video_does_not_count() -> None:
    run = Run(pack("saas-trial-health.yaml"))
    assert only(run.feed(touch("sandbox_error", T0), video(T0 + timedelta(minutes=5), 600))) == []


# unanswered-outbound


def test_third_unanswered_outbound_message_pushes_the_approved_script() -> None:
    run = Run(pack("unanswered-outbound.yaml"))
    emitted = run.feed(
        touch("message_sent", T0, "outbound", "chat"),
        touch("call_made", T0 + timedelta(hours=1), "outbound", "call"),  # neither
        touch("email_sent", T0 + timedelta(days=1), "outbound", "email"),
        touch("message_sent", T0 + timedelta(days=2), "outbound", "chat"),
        touch("message_sent", T0 + timedelta(days=3), "outbound", "chat"),
    )
    assert only(emitted) == [3]
    [push] = emitted[3]
    assert push.rule_id == "outbound.three-unanswered"
    assert push.kind is InterventionKind.CONTENT_PUSH
    assert push.rep_id == "rep-maria"
    assert "legal-reviewed" in push.body and "3 messages" in push.body


def test_a_reply_in_between_means_no_script() -> None:
    run = Run(pack("unanswered-outbound.yaml"))
    emitted = run.feed(
        touch("message_sent", T0, "outbound", "chat"),
        touch("email_sent", T0 + timedelta(days=1), "outbound", "email"),
        touch("message_received", T0 + timedelta(days=1, hours=2), "inbound", "chat"),
        touch("message_sent", T0 + timedelta(days=2), "outbound", "chat"),
        touch("message_sent", T0 + timedelta(days=3), "outbound", "chat"),
    )
    assert only(emitted) == []


# new-lead-no-contact


def lead_form(at: datetime) -> TouchpointEvent:
    return touch("lead_form_submitted", at, "inbound", "web", rep=None, form="contact-sales")


def test_a_lead_nobody_contacts_in_24h_is_escalated_at_the_deadline() -> None:
    run = Run(pack("new-lead-no-contact.yaml"))
    assert only(run.feed(lead_form(T0))) == []
    deadline = T0 + timedelta(hours=24)
    assert run.deadline() == deadline + JUST
    assert run.timer(deadline) == []
    [escalation] = run.timer(deadline + JUST)
    assert escalation.rule_id == "lead.no-contact-24h"
    assert escalation.kind is InterventionKind.ESCALATION
    assert escalation.assignee_role == "sales_manager"
    assert escalation.rep_id is None
    assert escalation.priority is Priority.HIGH
    assert escalation.severity is Severity.YELLOW
    assert "owner: unassigned" in escalation.body
    assert run.deadline() is None
    assert run.timer(deadline + timedelta(hours=1)) == []


def test_an_automated_email_is_not_contact_but_a_call_is() -> None:
    automated = Run(pack("new-lead-no-contact.yaml"))
    automated.feed(
        lead_form(T0),
        touch("email_sent", T0 + timedelta(minutes=1), "outbound", "email", automated=True),
    )
    assert len(automated.timer(T0 + timedelta(hours=24) + JUST)) == 1

    called = Run(pack("new-lead-no-contact.yaml"))
    called.feed(lead_form(T0), touch("call_made", T0 + timedelta(hours=23), "outbound", "call"))
    assert called.deadline() is None
    assert called.timer(T0 + timedelta(hours=24) + JUST) == []


def test_the_next_touchpoint_after_the_deadline_also_notices_it() -> None:
    run = Run(pack("new-lead-no-contact.yaml"))
    emitted = run.feed(
        lead_form(T0),
        touch("page_viewed", T0 + timedelta(hours=24), "inbound", "web", page="pricing"),
        touch("page_viewed", T0 + timedelta(hours=30), "inbound", "web", page="pricing"),
    )
    assert only(emitted) == [2]


# refill-due


def fill(at: datetime, days_supply: int = 30, chronic: bool = True) -> TouchpointEvent:
    return touch(
        "prescription_filled",
        at,
        channel="pos",
        rep="pharm-li",
        chronic=chronic,
        days_supply=days_supply,
    )


def test_a_chronic_30_day_fill_not_refilled_in_25_days_calls_the_pharmacist() -> None:
    run = Run(pack("refill-due.yaml"))
    run.feed(fill(T0))
    assert run.timer(T0 + timedelta(days=25)) == []
    [task] = run.timer(T0 + timedelta(days=25) + JUST)
    assert task.rule_id == "refill.30-day-supply"
    assert task.kind is InterventionKind.TASK
    assert task.assignee_role == "pharmacist"
    assert task.rep_id is None
    assert task.due_at == T0 + timedelta(days=27) + JUST


def test_a_90_day_supply_waits_85_days() -> None:
    run = Run(pack("refill-due.yaml"))
    run.feed(fill(T0, days_supply=90))
    assert run.timer(T0 + timedelta(days=25) + JUST) == []
    [task] = run.timer(T0 + timedelta(days=85) + JUST)
    assert task.rule_id == "refill.90-day-supply"


def test_a_refill_in_time_or_a_non_chronic_fill_means_no_call() -> None:
    refilled = Run(pack("refill-due.yaml"))
    refilled.feed(fill(T0), fill(T0 + timedelta(days=24)))
    assert refilled.timer(T0 + timedelta(days=40)) == []
    # The refill starts the wait for the next one: a call is due 25 days after it.
    assert refilled.deadline() == T0 + timedelta(days=49, microseconds=1)
    assert len(refilled.timer(T0 + timedelta(days=50))) == 1

    acute = Run(pack("refill-due.yaml"))
    acute.feed(fill(T0, chronic=False))
    assert acute.deadline() is None


# stalled-deal


def stage(at: datetime, name: str) -> TouchpointEvent:
    return touch("stage_changed", at, "none", "crm", stage=name)


def test_a_late_stage_deal_silent_for_14_days_alerts_the_owner() -> None:
    run = Run(pack("stalled-deal.yaml"))
    emitted = run.feed(
        touch("meeting_held", T0 - timedelta(days=3), "outbound", "meeting"),
        stage(T0, "proposal"),
        touch("field_updated", T0 + timedelta(days=5), "none", "crm"),  # not activity
        touch("email_received", T0 + timedelta(days=15), "inbound", "email"),
    )
    assert only(emitted) == [3]
    [alert] = emitted[3]
    assert alert.rule_id == "deal.late-stage-silent-14d"
    assert alert.kind is InterventionKind.ALERT
    assert alert.rep_id == "rep-maria"
    assert alert.severity is Severity.YELLOW


def test_a_conversation_within_14_days_or_an_early_stage_means_no_alert() -> None:
    talking = Run(pack("stalled-deal.yaml"))
    emitted = talking.feed(
        stage(T0, "negotiation"),
        touch("call_made", T0 + timedelta(days=13), "outbound", "call"),
        touch("email_received", T0 + timedelta(days=30), "inbound", "email"),
    )
    assert only(emitted) == []
    assert talking.timer(T0 + timedelta(days=40)) == []

    early = Run(pack("stalled-deal.yaml"))
    early.feed(stage(T0, "discovery"))
    assert early.deadline() is None
    assert only(early.feed(touch("email_received", T0 + timedelta(days=30), "inbound"))) == []


# --- the reference's worked examples -----------------------------------------------------


def doc_bundle(name: str) -> RuleBundle:
    """The valid bundle named ``name`` shown in the reference."""
    for example in DOC_BUNDLES:
        if not example.invalid and example.text.startswith(f"bundle: {name}\n"):
            return load_bundle(example.text, f"docs/rules.md:{example.line}")
    raise AssertionError(f"docs/rules.md shows no bundle {name!r}")


def doc_text_after(heading: str) -> str:
    """The first ``text`` block after ``heading`` in the reference."""
    doc = DOC.read_text(encoding="utf-8")
    start = doc.index(f"\n{heading}\n")
    block = next(b for b in FENCE.finditer(doc, start) if b.group(1) == "text")
    return block.group(2).rstrip("\n")


def inbound_chat(at: datetime, text: str, rep: str | None = "rep-maria") -> TouchpointEvent:
    return TouchpointEvent(
        event_id=f"evt-{next(_ids)}",
        customer_id="cust-42",
        occurred_at=at,
        received_at=at,
        channel=Channel.CHAT,
        kind="message_received",
        direction=Direction.INBOUND,
        rep_id=rep,
        text=text,
        source="test/1",
    )


def test_the_cap_example_emits_the_most_urgent_and_holds_back_the_rest_for_24h() -> None:
    book = RuleBook(BUILTIN_BUNDLE, doc_bundle("support-desk"))
    assert book.per_customer_per_day == 2
    monday = datetime(2026, 4, 6, 9, 0, tzinfo=UTC)
    state = None
    outcomes = []
    for at, text in (
        (monday, "we may cancel"),
        (monday + timedelta(hours=23), "hello again"),
        (monday + timedelta(hours=24), "still there?"),
    ):
        state, decisions = apply(
            state, inbound_chat(at, text), NOW, book.rules, book.per_customer_per_day
        )
        outcomes.append(
            (
                sorted(d.intervention.rule_id for d in decisions if d.emitted),
                sorted(d.intervention.rule_id for d in decisions if d.capped),
            )
        )
    assert outcomes == [
        (["desk.cancel-intent", "desk.reply-to-inbound"], ["desk.log-contact"]),
        ([], ["desk.log-contact", "desk.reply-to-inbound"]),
        (["desk.log-contact", "desk.reply-to-inbound"], []),
    ]


def test_the_strictest_cap_among_running_bundles_applies() -> None:
    looser = load_bundle(
        "bundle: looser\nversion: 1\ncaps: {per_customer_per_day: 5}\nrules:\n"
        "  - id: looser.any\n    when: {event: {kind: x}}\n"
        "    then: {kind: task, title: t, due_in: 1h}\n"
    )
    assert RuleBook(looser, doc_bundle("support-desk")).per_customer_per_day == 2
    assert RuleBook(looser).per_customer_per_day == 5
    assert RuleBook(BUILTIN_BUNDLE).per_customer_per_day is None


def test_the_manager_example_reaches_the_owners_manager_or_the_manager_queue() -> None:
    rules = doc_bundle("renewals").rules
    asked = datetime(2026, 4, 6, 9, 0, tzinfo=UTC)
    _, [known] = apply(None, inbound_chat(asked, "Any discount?", "rep-maria"), NOW, rules)
    assert (known.intervention.rep_id, known.intervention.assignee_role) == ("mgr-lee", None)
    assert known.intervention.body == "Owner: rep-maria."
    _, [unknown] = apply(None, inbound_chat(asked, "Price match?", "rep-zoe"), NOW, rules)
    assert (unknown.intervention.rep_id, unknown.intervention.assignee_role) == (None, "manager")


def test_the_explain_example_is_what_the_worker_prints() -> None:
    from streams.explain_cli import format_explanation
    from streams.web import explain_customer

    book = RuleBook(BUILTIN_BUNDLE, doc_bundle("quote-follow-up"), doc_bundle("account-health"))
    first = datetime(2026, 4, 1, 9, 0, tzinfo=UTC)
    happened = [
        ("support_ticket_opened", first + timedelta(days=day), "inbound", "support", None)
        for day in range(5)
    ] + [
        ("quote_sent", first + timedelta(days=5), "outbound", "email", "rep-maria"),
        ("message_sent", first + timedelta(days=6), "outbound", "chat", "rep-maria"),
        ("message_sent", first + timedelta(days=6, hours=3), "outbound", "chat", "rep-maria"),
    ]
    state = None
    for number, (kind, at, direction, channel, rep) in enumerate(happened, start=1):
        event = TouchpointEvent(
            event_id=f"evt-{number}",
            customer_id="cust-42",
            occurred_at=at,
            received_at=at,
            channel=Channel(channel),
            kind=kind,
            direction=Direction(direction),
            rep_id=rep,
            source="test/1",
        )
        state, _ = apply(state, event, NOW, book.rules)
    worker = SimpleNamespace(
        settings=SimpleNamespace(partitions=4),
        stored_state=lambda customer_id: state,
        pipeline=SimpleNamespace(rulebook=book),
    )
    now = datetime(2026, 4, 8, 12, 0, tzinfo=UTC)
    answer = explain_customer(worker, "cust-42", frozenset(range(4)), now)  # type: ignore[arg-type]
    assert format_explanation(answer) == doc_text_after("## Why didn't it fire?")


def test_the_journey_example_takes_each_variant_through_its_steps_as_described() -> None:
    [trial] = doc_bundle("trial-onboarding").journeys
    journeys = (trial,)
    customers = [f"cust-{n}" for n in range(20_000)]
    shares = Counter(trial.assign(c) for c in customers)
    assert abs(shares["holdout"] / len(customers) - 0.10) < 0.01
    assert abs(shares["guided"] / len(customers) - 0.45) < 0.015
    pick = {variant: next(c for c in customers if trial.assign(c) == variant) for variant in shares}

    def journey_run(
        variant: str,
    ) -> tuple[Callable[..., list[InterventionCommand]], list[JourneySignal]]:
        customer, signals = pick[variant], list[JourneySignal]()
        state: CustomerState | None = None

        def at(
            when: timedelta, kind: str | None = None, **attributes: str
        ) -> list[InterventionCommand]:
            nonlocal state
            if kind is None:
                assert state is not None
                state, decisions = apply_timer(state, T0 + when, NOW, (), None, journeys, signals)
            else:
                event = touch(kind, T0 + when, customer=customer, **attributes)
                state, decisions = apply(state, event, NOW, (), None, journeys, signals)
            return [d.intervention for d in decisions]

        return at, signals

    guided, guided_signals = journey_run("guided")
    assert guided(timedelta(0), "trial_started") == []
    assert guided(timedelta(hours=2) - JUST) == []
    [welcome] = guided(timedelta(hours=2))
    assert welcome.rule_id == "trial.welcome-call"
    assert welcome.experiment is not None
    assert (welcome.experiment.experiment_id, welcome.experiment.variant) == ("trial", "guided")
    early = timedelta(days=1, hours=2)
    assert guided(early, "page_viewed", page="pricing") == []
    [pricing] = guided(timedelta(days=2, hours=2), "page_viewed", page="pricing")
    assert pricing.rule_id == "trial.pricing-call"
    guided(timedelta(days=3), "subscription_started")
    assert [s.what for s in guided_signals] == [
        "entered",
        "intervened",
        "intervened",
        "completed",
        "converted",
    ]

    self_serve, _ = journey_run("self-serve")
    self_serve(timedelta(0), "trial_started")
    assert self_serve(timedelta(hours=23), "sandbox_error") == []
    [guide] = self_serve(timedelta(days=1))
    assert guide.rule_id == "trial.getting-started"
    assert self_serve(timedelta(days=1, hours=1), "sandbox_error") == []
    assert self_serve(timedelta(days=1, hours=2), "sandbox_error") == []
    [stuck] = self_serve(timedelta(days=1, hours=3), "sandbox_error")
    assert stuck.rule_id == "trial.stuck-help"
    assert stuck.body == "3 sandbox errors in a day."

    held, held_signals = journey_run("holdout")
    held(timedelta(0), "trial_started")
    assert held(timedelta(days=3)) == []
    held(timedelta(days=14), "trial_expired")
    assert [(s.variant, s.what) for s in held_signals] == [
        ("holdout", "entered"),
        ("holdout", "exited"),
    ]
