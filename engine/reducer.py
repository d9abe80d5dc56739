"""The pure reducer: a touchpoint (or a timer) in, new state and decisions out."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime

from schemas.models import Direction, Priority, TouchpointEvent

from .builtin import BUILTIN_RULES
from .conditions import Moment, Ranks, micros
from .consent import missing_purposes, visible_attributes
from .errors import EvaluationError
from .journeys import CompiledJourney, JourneySignal
from .memories import JourneyMemory, RuleMemory
from .profile import concerns_profile, fold
from .retention import MAX_KIND_COUNTS, OTHER_KINDS
from .rule_index import journey_entries, rule_entries
from .rules import CompiledRule, Decision
from .scoring.spec import ScoreSpec
from .state import RECENT_EVENT_IDS, CustomerState

ScoreHook = Callable[[CustomerState, TouchpointEvent], CustomerState]
"""Folds a touchpoint into a state's feature memory, snapshots and scores (the worker's
streams.scoring); called after the touchpoint is folded in and before any rule runs."""


def apply(
    state: CustomerState | None,
    event: TouchpointEvent,
    now: datetime,
    rules: Sequence[CompiledRule] = BUILTIN_RULES,
    cap_per_day: int | None = None,
    journeys: Sequence[CompiledJourney] = (),
    signals: list[JourneySignal] | None = None,
    restricted: Mapping[str, frozenset[str]] | None = None,
    score: ScoreHook | None = None,
    ranks: Ranks | None = None,
) -> tuple[CustomerState, list[Decision]]:
    """Fold ``event`` into ``state`` and evaluate ``rules`` and ``journeys``.

    ``score`` updates the customer's scores before rules see the state; the scores an
    intervention was decided with are carried in its explanation (filled in when it is
    rendered: engine.state.explained_scores). ``ranks`` answers ``rank`` conditions
    (without it they do not hold).

    ``restricted`` maps attribute names to the consent purposes they may be used for:
    rules and journeys see such an attribute only if the customer granted one of them.
    An intervention that needs a purpose the customer has not granted is decided but
    marked ``suppressed`` (engine.consent).

    Journey signals (entered, converted, ...) are appended to ``signals`` when
    given.

    A rule or journey that raises is reported as :class:`EvaluationError` naming it;
    ``state`` is never modified, so the caller can drop the touchpoint and go on.

    With ``cap_per_day``, at most that many interventions are emitted for the
    customer in any 24 hours of event time; the rest are decided but marked
    ``capped`` (the most urgent go first when several fire at once). The caller passes
    one cap for all ``rules`` and ``journeys``, whatever bundle they come from (the
    worker passes the strictest of its running bundles'). Cooldowns are per rule, also in
    event time; ``now`` (processing time) only becomes the interventions' ``created_at``,
    which is what the per-rep cap (streams' assignee stage) counts.

    ``state`` is ``None`` for a customer never seen before. An event whose id
    the state has already seen returns the state unchanged (the same object)
    and no decisions, so redelivered events are harmless.
    """
    if state is None:
        state = CustomerState(customer_id=event.customer_id)
    elif event.event_id in state.recent_event_ids:
        return state, []

    at = event.occurred_at
    at_micros = micros(at)  # once per touchpoint: the profile and every condition use it
    direction = event.direction
    counts = dict(state.kind_counts)
    kind = event.kind if event.kind in counts or len(counts) < MAX_KIND_COUNTS else OTHER_KINDS
    counts[kind] = counts.get(kind, 0) + 1
    last_event_at = state.last_event_at
    # Built field by field (dataclasses.replace costs a tenth of a touchpoint's time);
    # tests/unit/test_engine.py checks that no field is forgotten.
    updated = CustomerState(
        customer_id=state.customer_id,
        owner_rep_id=_owner(state, event),
        touchpoints=state.touchpoints + 1,
        first_seen_at=state.first_seen_at or at,
        last_event_at=at if last_event_at is None or at > last_event_at else last_event_at,
        last_inbound_at=_latest(state.last_inbound_at, at, direction is Direction.INBOUND),
        last_outbound_at=_latest(state.last_outbound_at, at, direction is Direction.OUTBOUND),
        kind_counts=counts,
        recent_event_ids=(*state.recent_event_ids[-(RECENT_EVENT_IDS - 1) :], event.event_id),
        emitted=state.emitted,
        rule_memories=state.rule_memories,
        journey_memories=state.journey_memories,
        consents=state.consents,
        profile=(
            fold(state.profile, event.kind, at_micros, event.attributes)
            if concerns_profile(event.kind, event.attributes)
            else state.profile
        ),
        feature_memory=state.feature_memory,
        snapshots=state.snapshots,
        scores=state.scores,
    )
    if restricted and event.attributes:
        visible = visible_attributes(event.attributes, restricted, updated)
        if visible is not None:
            event = event.model_copy(update={"attributes": visible})
    if score is not None:  # scores see only what rules may see
        updated = score(updated, event)
    last = updated.last_event_at
    newest = at_micros if last is at or last is None else max(micros(last), at_micros)
    moment = Moment(updated, at_micros, event, ranks, newest)
    return _evaluate(updated, moment, now, rules, cap_per_day, journeys, signals)


def apply_timer(
    state: CustomerState,
    at: datetime,
    now: datetime,
    rules: Sequence[CompiledRule] = BUILTIN_RULES,
    cap_per_day: int | None = None,
    journeys: Sequence[CompiledJourney] = (),
    signals: list[JourneySignal] | None = None,
    ranks: Ranks | None = None,
) -> tuple[CustomerState, list[Decision]]:
    """Evaluate ``rules`` and ``journeys`` for a customer at event time ``at``, no touchpoint.

    This is how an absence fires at its deadline when the customer sends
    nothing more.
    """
    moment = Moment(state, micros(at), None, ranks)
    return _evaluate(state, moment, now, rules, cap_per_day, journeys, signals)


def next_deadline(
    state: CustomerState,
    rules: Sequence[CompiledRule] = BUILTIN_RULES,
    journeys: Sequence[CompiledJourney] = (),
    scores: Mapping[str, ScoreSpec] | None = None,
) -> int | None:
    """The earliest event time (µs) at which :func:`apply_timer` can change anything, or
    (with ``scores``) at which one of the customer's snapshots times out."""
    deadlines = [
        d
        for rule in rules
        if (memory := state.rule_memories.get(rule.rule_id)) is not None
        and (d := rule.deadline(memory)) is not None
    ]
    deadlines.extend(
        d
        for journey in journeys
        if (journey_memory := state.journey_memories.get(journey.journey_id)) is not None
        and (d := journey.deadline(journey_memory)) is not None
    )
    if scores and state.snapshots is not None:
        for name, kept in state.snapshots.by_score.items():
            spec = scores.get(name)
            if spec is not None and spec.timeout is not None and kept:
                deadlines.append(min(s.at for s in kept) + spec.timeout.after)
    return min(deadlines) if deadlines else None


def _evaluate(
    state: CustomerState,
    moment: Moment,
    now: datetime,
    rules: Sequence[CompiledRule],
    cap_per_day: int | None,
    journeys: Sequence[CompiledJourney] = (),
    signals: list[JourneySignal] | None = None,
) -> tuple[CustomerState, list[Decision]]:
    decisions: list[Decision] = []
    old_rules = state.rule_memories
    rule_memories: dict[str, RuleMemory] | None = None  # copied at the first change
    # Only the rules this moment can change (engine.rule_index); every rule when
    # ``rules`` is not indexed.
    for rule, when, wake in rule_entries(rules, moment.event) if rules else ():
        memory = old_rules.get(rule.rule_id)
        if when and (
            memory is None
            or (
                wake is not None
                and (
                    memory.version != rule.version
                    or (woken := wake(memory.condition)) is None
                    or moment.at < woken
                )
            )
        ):
            continue  # this moment can change neither the rule's memory nor its verdict
        try:
            new_memory, decision = rule.step(memory, moment, now)
        except Exception as exc:  # a bug in one rule must not take the batch with it
            raise EvaluationError(f"rule {rule.rule_id!r}", exc) from exc
        if new_memory is not memory:
            if rule_memories is None:
                rule_memories = dict(old_rules)
            if new_memory is None:
                rule_memories.pop(rule.rule_id, None)
            else:
                rule_memories[rule.rule_id] = new_memory
        if decision is not None:
            decisions.append(decision)
    old_journeys = state.journey_memories
    journey_memories: dict[str, JourneyMemory] | None = None
    for journey, entry_reached in journey_entries(journeys, moment.event) if journeys else ():
        journey_memory = old_journeys.get(journey.journey_id)
        if (
            not entry_reached
            and journey_memory is not None
            and not journey_memory.inside
            and journey_memory.version == journey.version
        ):
            continue  # outside the journey, and this moment cannot make it enter
        try:
            new_journey_memory, fired, marks = journey.step(journey_memory, moment, now)
        except Exception as exc:
            raise EvaluationError(f"journey {journey.journey_id!r}", exc) from exc
        if new_journey_memory is not journey_memory:
            if journey_memories is None:
                journey_memories = dict(old_journeys)
            journey_memories[journey.journey_id] = new_journey_memory
        decisions.extend(fired)
        if signals is not None:
            signals.extend(marks)
    if rule_memories is not None or journey_memories is not None:
        # What is no longer running goes.
        kept_rules: Mapping[str, RuleMemory] = old_rules if rule_memories is None else rule_memories
        if len(kept_rules) > len(rules):
            running = {rule.rule_id for rule in rules}
            kept_rules = {k: v for k, v in kept_rules.items() if k in running}
        kept_journeys: Mapping[str, JourneyMemory] = (
            old_journeys if journey_memories is None else journey_memories
        )
        if len(kept_journeys) > len(journeys):
            running = {journey.journey_id for journey in journeys}
            kept_journeys = {k: v for k, v in kept_journeys.items() if k in running}
        state = state.with_memories(kept_rules, kept_journeys)
    if decisions and any(d.needs for d in decisions):
        decisions = _consent_gate(state, decisions)
    if decisions and cap_per_day is not None:
        return _cap(state, decisions, moment.at, cap_per_day)
    return state, decisions


def _consent_gate(state: CustomerState, decisions: list[Decision]) -> list[Decision]:
    """Suppress what needs a purpose the customer has not granted."""
    gated: list[Decision] = []
    for decision in decisions:
        if decision.needs and not decision.shadow:
            missing = missing_purposes(state, decision.needs)
            if missing:
                decision = replace(decision, suppressed=missing)
        gated.append(decision)
    return gated


_DAY = 86_400_000_000
_URGENCY = {Priority.URGENT: 0, Priority.HIGH: 1, Priority.NORMAL: 2, Priority.LOW: 3}


def _cap(
    state: CustomerState, decisions: list[Decision], at: int, cap: int
) -> tuple[CustomerState, list[Decision]]:
    """Hold back what does not fit under ``cap`` emissions within 24 hours of event time
    either side of ``at`` (the touchpoint's or the timer's event time)."""
    # Emissions within a day either side: a late touchpoint must not slip past
    # interventions emitted for later touchpoints.
    recent = [t for t in state.emitted if abs(at - t) < _DAY]
    room = cap - len(recent)
    ranked = sorted(
        (d for d in decisions if not (d.shadow or d.suppressed)),
        key=lambda d: _URGENCY[d.intervention.priority],
    )
    allowed = {id(d) for d in ranked[: max(room, 0)]}
    capped = [
        d if d.shadow or d.suppressed or id(d) in allowed else replace(d, capped=True)
        for d in decisions
    ]
    newest = max([at, *state.emitted])
    kept = [t for t in state.emitted if t > newest - _DAY] + [at for _ in allowed]
    return replace(state, emitted=tuple(sorted(kept))), capped


def _owner(state: CustomerState, event: TouchpointEvent) -> str | None:
    """The rep who owns the customer: the latest rep seen on an outbound touchpoint."""
    if event.rep_id is not None and (
        event.direction is Direction.OUTBOUND or state.owner_rep_id is None
    ):
        return event.rep_id
    return state.owner_rep_id


def _latest(previous: datetime | None, at: datetime, applies: bool) -> datetime | None:
    if not applies or (previous is not None and previous >= at):
        return previous
    return at
