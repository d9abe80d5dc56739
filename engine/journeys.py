"""Journeys: multi-step flows a customer enters, moves through and leaves, per variant.

A customer enters when ``entry`` holds and is assigned a variant by a stable hash
of journey and customer (a ``holdout`` share gets no steps, to measure against).
The assignment is kept in the customer's state, so it sticks across bundle
versions even when weights change. Each step waits ``after`` a duration since
the previous step (or the entry), and/or ``when`` a condition holds, then emits
its intervention, tagged with the journey and variant. ``conversion`` and
``exit`` end the journey; after the last step the customer stays in it until
one of them holds, so conversions after the last step still count (a journey
with neither lets the customer go after the last step).

Holdout customers leave the way variant customers do. With ``conversion`` or
``exit``, both stay until one holds. With neither, a holdout customer follows,
without getting anything, the steps of the variant the hash would have given them
outside the holdout (their waits and ``when`` conditions), and leaves when that
path's last step would have been taken; so re-entries are counted alike.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .conditions import Condition, Moment
from .interventions import Template
from .memories import JourneyMemory
from .rules import Decision, RuleMode
from .state import explained_scores

HOLDOUT = "holdout"
BUCKETS = 10_000


@dataclass(frozen=True, slots=True)
class JourneySignal:
    """Something analysts count per journey and variant."""

    journey_id: str
    variant: str
    what: str
    """entered, intervened, completed, converted, exited, or covered (every required
    signal has arrived since the customer entered)."""


@dataclass(frozen=True, slots=True)
class JourneyStep:
    step_id: str
    after: int | None
    """Microseconds to wait since the previous step (or the entry)."""
    when: Condition | None
    template: Template


@dataclass(frozen=True, slots=True)
class Variant:
    name: str
    weight: int
    steps: tuple[JourneyStep, ...]


@dataclass(frozen=True, slots=True)
class CompiledJourney:
    journey_id: str
    version: int
    entry: Condition
    exit: Condition | None
    conversion: Condition | None
    holdout: int
    """Percent of customers who enter and get no steps."""
    variants: tuple[Variant, ...]
    required_signals: tuple[str, ...] = ()
    """Touchpoint kinds every customer in the journey is expected to produce; the share
    who produced all of them is the journey's signal coverage."""
    mode: RuleMode = RuleMode.ENFORCE
    """In shadow mode customers enter, get variants and move through the steps as usual,
    but the steps' interventions are recorded, not emitted."""

    def assign(self, customer_id: str) -> str:
        """The customer's variant: stable for a journey id, whatever else changes."""
        bucket = _bucket(self.journey_id, customer_id)
        held = self.holdout * BUCKETS // 100
        if bucket < held:
            return HOLDOUT
        total = sum(v.weight for v in self.variants)
        point = (bucket - held) * total // (BUCKETS - held)
        for variant in self.variants:
            if point < variant.weight:
                return variant.name
            point -= variant.weight
        return self.variants[-1].name

    def follows(self, customer_id: str) -> str:
        """The variant whose steps a holdout customer follows, without getting them, in a
        journey with neither conversion nor exit: by the same hash, among the variants in
        proportion to their weights."""
        total = sum(v.weight for v in self.variants)
        point = _bucket(self.journey_id, customer_id) * total // BUCKETS
        for variant in self.variants:
            if point < variant.weight:
                return variant.name
            point -= variant.weight
        return self.variants[-1].name

    @property
    def open_ended(self) -> bool:
        """Neither conversion nor exit: customers leave after the last step."""
        return self.conversion is None and self.exit is None

    def _steps(self, variant: str) -> tuple[JourneyStep, ...]:
        for candidate in self.variants:
            if candidate.name == variant:
                return candidate.steps
        return ()

    def path(self, assigned: str, follows: str | None) -> tuple[JourneyStep, ...]:
        """The steps the customer moves through: their variant's, or for a holdout customer
        of an open-ended journey those of the variant they follow (nothing is emitted)."""
        if assigned != HOLDOUT:
            return self._steps(assigned)
        if follows is None or not self.open_ended:
            return ()
        return self._steps(follows)

    def step(
        self, memory: JourneyMemory | None, moment: Moment, now: datetime
    ) -> tuple[JourneyMemory, list[Decision], list[JourneySignal]]:
        """The customer's new memory of this journey, the step decisions and the signals.
        When nothing changed, ``memory`` itself is returned."""
        if memory is None:
            assigned, inside, index, started = None, False, 0, 0
            m_entry = m_exit = m_conv = m_when = None
            version, follows = 0, None
            seen: tuple[str, ...] = ()
        else:
            assigned = memory.variant
            inside = memory.inside
            index = memory.steps_done
            started = memory.waiting_since
            m_entry = memory.entry
            m_exit = memory.exit
            m_conv = memory.conversion
            m_when = memory.when
            version = memory.version
            seen = memory.signals_seen
            follows = memory.follows
        if version != self.version:
            m_entry = m_exit = m_conv = m_when = None
        decisions: list[Decision] = []
        signals: list[JourneySignal] = []
        if not inside:
            m_entry, entered = self.entry.step(m_entry, moment)
            if entered is not None:
                known = assigned == HOLDOUT or any(v.name == assigned for v in self.variants)
                if assigned is None or not known:  # never assigned, or its variant removed
                    assigned = self.assign(moment.state.customer_id)
                inside, index, started, seen = True, 0, moment.at, ()
                m_exit = m_conv = m_when = None
                signals.append(JourneySignal(self.journey_id, assigned, "entered"))
            elif memory is not None and m_entry is memory.entry and version == self.version:
                return memory, decisions, signals  # still outside, nothing new: the usual case
        if assigned is None:  # never entered
            kept = self._remember(
                memory, None, False, index, started, m_entry, m_exit, m_conv, m_when, seen, follows
            )
            return kept, decisions, signals
        if inside:
            # The entering touchpoint counts too: it may start an absence in `exit`.
            for condition, what in ((self.conversion, "converted"), (self.exit, "exited")):
                if condition is None or not inside:
                    continue
                held_memory, held = condition.step(
                    m_conv if what == "converted" else m_exit, moment
                )
                if what == "converted":
                    m_conv = held_memory
                else:
                    m_exit = held_memory
                if held is not None:
                    inside = False
                    signals.append(JourneySignal(self.journey_id, assigned, what))
        event = moment.event
        if (
            inside
            and event is not None
            and event.kind in self.required_signals
            and event.kind not in seen
        ):
            seen = (*seen, event.kind)
            if len(seen) == len(self.required_signals):
                signals.append(JourneySignal(self.journey_id, assigned, "covered"))
        lost = follows is None or not self._steps(follows)  # never set, or variant removed
        if inside and assigned == HOLDOUT and self.open_ended and lost:
            follows = self.follows(moment.state.customer_id)
        if inside:
            steps = self.path(assigned, follows)
            steps_held = assigned == HOLDOUT  # followed, not taken: nothing is emitted
            if index < len(steps):
                current = steps[index]
                observation = None
                if current.when is not None:
                    m_when, observation = current.when.step(m_when, moment)
                due = current.after is None or moment.at >= started + current.after
                if due and (current.when is None or observation is not None) and not steps_held:
                    ids = observation.event_ids if observation is not None else ()
                    command = current.template.render(
                        rule_id=f"{self.journey_id}.{current.step_id}",
                        rule_version=self.version,
                        customer_id=moment.state.customer_id,
                        rep_id=moment.state.owner_rep_id,
                        matched=(
                            observation.matched
                            if observation is not None
                            else ((f"step {current.step_id} due", "timer"),)
                        ),
                        triggering_event_ids=ids or (f"{self.journey_id}@{started}",),
                        triggered_at=moment.at_datetime,
                        event_kind=moment.event.kind if moment.event is not None else None,
                        now=now,
                        experiment=(self.journey_id, assigned),
                        scores=explained_scores(moment.state),
                    )
                    decisions.append(
                        Decision(
                            command,
                            shadow=self.mode is RuleMode.SHADOW,
                            needs=current.template.purposes,
                        )
                    )
                    signals.append(JourneySignal(self.journey_id, assigned, "intervened"))
                    index, started, m_when = index + 1, moment.at, None
                    if index == len(steps):
                        signals.append(JourneySignal(self.journey_id, assigned, "completed"))
                        if self.open_ended:
                            inside = False  # nothing to wait for: free to enter again
                elif due and (current.when is None or observation is not None):
                    index, started, m_when = index + 1, moment.at, None
                    if index == len(steps):
                        inside = False  # where a variant customer would leave
        new_memory = self._remember(
            memory, assigned, inside, index, started, m_entry, m_exit, m_conv, m_when, seen, follows
        )
        return new_memory, decisions, signals

    def _remember(
        self,
        memory: JourneyMemory | None,
        variant: str | None,
        inside: bool,
        steps_done: int,
        waiting_since: int,
        entry: Any,
        exit: Any,
        conversion: Any,
        when: Any,
        signals_seen: tuple[str, ...],
        follows: str | None,
    ) -> JourneyMemory:
        """The new memory, or ``memory`` itself when nothing changed (no copies downstream).
        Condition memories are compared by identity: a condition returns the memory it was
        given when nothing changed (as rules rely on too)."""
        if (
            memory is not None
            and waiting_since == memory.waiting_since
            and inside == memory.inside
            and steps_done == memory.steps_done
            and when is memory.when
            and exit is memory.exit
            and conversion is memory.conversion
            and entry is memory.entry
            and signals_seen == memory.signals_seen
            and variant == memory.variant
            and follows == memory.follows
            and self.version == memory.version
        ):
            return memory  # compared first: a frozen record costs ~1 µs to build
        return JourneyMemory(
            variant,
            inside,
            steps_done,
            waiting_since,
            entry,
            exit,
            conversion,
            when,
            self.version,
            signals_seen,
            follows,
        )

    def deadline(self, memory: JourneyMemory | None) -> int | None:
        """When a timer must look at the customer: a waiting step falls due, or a
        condition of the journey (an absence, say) has a deadline of its own."""
        if memory is None:
            return None
        m_entry, m_exit, m_conv, m_when = memory.entry, memory.exit, memory.conversion, memory.when
        if memory.version != self.version:
            m_entry = m_exit = m_conv = m_when = None
        if not memory.inside:
            return self.entry.deadline(m_entry)
        candidates = [
            condition.deadline(condition_memory)
            for condition, condition_memory in ((self.exit, m_exit), (self.conversion, m_conv))
            if condition is not None
        ]
        steps = self.path(memory.variant, memory.follows) if memory.variant is not None else ()
        index = memory.steps_done
        if index < len(steps):
            step = steps[index]
            if step.when is not None:
                candidates.append(step.when.deadline(m_when))
            elif step.after is not None:
                candidates.append(memory.waiting_since + step.after)
        due = [d for d in candidates if d is not None]
        return min(due) if due else None


def _bucket(journey_id: str, customer_id: str) -> int:
    digest = hashlib.sha256(f"{journey_id}\x1f{customer_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % BUCKETS
