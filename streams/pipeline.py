"""Kafka records in, engine decisions out: the synchronous core of the worker.

No Faust here, so it can be tested and benchmarked on its own. The agent hands
it the raw records of a batch and a way to load a customer's stored state; it
returns each changed customer's final state once (however many of the
customer's touchpoints the batch held), the interventions and the dead letters.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from engine.compliance import mask_pii
from engine.conditions import EPOCH
from engine.consent import apply_consent, may_train, remember, visible_attributes
from engine.errors import EvaluationError
from engine.journeys import CompiledJourney, JourneySignal
from engine.reducer import apply, apply_timer, next_deadline
from engine.retention import expired, fit_state
from engine.rulebook import RuleBook
from engine.rules import CompiledRule, Decision
from engine.state import CustomerState
from engine.timestamps import TimestampPolicy, timestamp_problem
from schemas.codec import (
    consent_change_codec,
    decode_gate_input,
    decode_touchpoints_lenient,
    encode_intervention,
    encode_touchpoint,
)
from schemas.errors import SchemaError
from schemas.models import (
    ComplianceVerdict,
    ConsentChange,
    DeadLetter,
    DraftReview,
    InterventionCommand,
    MessageDraft,
    TouchpointEvent,
)
from schemas.partitioning import customer_partition

from .timers import decode_tick
from .verdicts import decide, review_entry, verdict_entry

if TYPE_CHECKING:
    from engine import Example

    from .scoring import Scoring
    from .tracing import WorkerTracing

WORKER_DECIDER = "worker"


@dataclass(frozen=True, slots=True)
class RawRecord:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


@dataclass(slots=True)
class BatchResult:
    states: dict[int, dict[str, CustomerState]] = field(default_factory=dict)
    """Partition -> customer id -> the customer's state after the batch."""
    interventions: list[tuple[int, InterventionCommand]] = field(default_factory=list)
    encoded: dict[str, bytes] = field(default_factory=dict)
    """Intervention id -> the emitted intervention's Avro bytes (checked to fit a record)."""
    shadowed: list[tuple[int, InterventionCommand]] = field(default_factory=list)
    """What rules in shadow mode would have emitted."""
    capped: list[tuple[int, InterventionCommand]] = field(default_factory=list)
    """What a customer's daily cap held back."""
    signals: list[JourneySignal] = field(default_factory=list)
    """Journey entries, steps, conversions and exits, for analysts."""
    dead_letters: list[tuple[int, DeadLetter]] = field(default_factory=list)
    processed: int = 0
    duplicates: int = 0
    ticks: int = 0
    """Timer ticks that evaluated a deadline."""
    expired: list[tuple[int, str, datetime | None]] = field(default_factory=list)
    """(partition, customer id, newest touchpoint time) of customers removed for silence."""
    gone: set[str] = field(default_factory=set)
    """Customers removed in this batch: their stored state is no longer theirs."""
    trimmed_entries: int = 0
    """Window entries dropped to keep states within their byte budget."""
    trimmed_memories: int = 0
    """Whole rule memories dropped for the same reason (when dropping entries was not enough)."""
    trimmed_snapshots: int = 0
    """Score snapshots dropped for the same reason (before any rule memory is cut)."""
    suppressed: list[tuple[int, Decision]] = field(default_factory=list)
    """Decisions held back because the customer had not granted a purpose they need."""
    audit: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    """(partition, entry) of every decision to append to the partition's audit chain."""
    consent_changes: list[tuple[int, ConsentChange, bool]] = field(default_factory=list)
    """(partition, change, whether it changed the customer's consents)."""
    verdicts: list[tuple[int, ComplianceVerdict]] = field(default_factory=list)
    """Verdicts on drafts, written to compliance-verdicts once per draft."""
    reviews: list[tuple[int, DraftReview]] = field(default_factory=list)
    examples: list[tuple[int, Example]] = field(default_factory=list)
    """(partition, labelled example) for the scoring-examples topic."""
    trace_headers: dict[str, list[tuple[str, bytes]]] = field(default_factory=dict)
    """Intervention id -> the trace context headers of its record (streams.tracing)."""
    dead_letter_headers: dict[tuple[str, int, int], list[tuple[str, bytes]]] = field(
        default_factory=dict
    )
    """(topic, partition, offset) of a rejected record -> the trace context headers it
    came with, kept on its dead letters (streams.tracing)."""


@dataclass(frozen=True)
class Pipeline:
    rulebook: RuleBook
    """Read once per call: a bundle swapped mid-batch applies from the next slice."""
    timestamps: TimestampPolicy
    partitions: int
    allowed_lateness: timedelta = timedelta(hours=1)
    """Touchpoints further behind a customer's newest one go to the DLQ (reason late_event);
    a bundle's own ``allowed_lateness`` raises this for everyone."""
    timers_topic: str = "timers"
    """Records of this topic are timer ticks (see streams.timers), not touchpoints."""
    max_record_bytes: int = 1_000_000
    """An output record larger than this (key, value and headroom) would be refused by the
    broker: the touchpoint that caused it goes to the DLQ as ``too_large`` instead."""
    dead_letter_raw_bytes: int = 65_536
    """A dead letter keeps at most this many bytes of the rejected key and value."""
    customer_ttl: timedelta = timedelta(days=400)
    """Customers with no touchpoint (event time) for this long are removed on an expiry
    tick (engine.retention.expired)."""
    state_max_bytes: int = 512_000
    """A customer's encoded state is kept within this many bytes (engine.retention)."""
    consents_topic: str = "consents"
    """Records of this topic are consent changes."""
    drafts_topic: str = "message-drafts"
    """Records of this topic are message drafts, gate answers and manager reviews."""
    scoring: Scoring | None = None
    """Scores the running bundles declare, predicted as touchpoints are folded in
    (streams.scoring); None: no scoring."""
    tracing: WorkerTracing | None = None
    """Spans for touchpoint records that carry a trace context (streams.tracing); None:
    tracing is off and record headers are never read."""

    def encode_states(
        self, result: BatchResult, dump: Callable[[CustomerState], bytes]
    ) -> list[tuple[int, str, bytes]]:
        """(partition, customer id, encoded state) of every changed customer, each within
        ``state_max_bytes``; a state cut down to fit replaces its entry in ``result``."""
        out: list[tuple[int, str, bytes]] = []
        budget = self.state_max_bytes
        for partition, changed in result.states.items():
            for customer_id, state in changed.items():
                value = dump(state)
                if len(value) > budget and state.snapshots is not None:
                    # Training snapshots go first: a lost example costs less than a
                    # rule's partial match.
                    state, dropped = _fit_snapshots(state, budget, lambda s: len(dump(s)))
                    changed[customer_id] = state
                    result.trimmed_snapshots += dropped
                    value = dump(state)
                if len(value) > budget:
                    fitted = fit_state(state, budget, lambda s: len(dump(s)))
                    changed[customer_id] = fitted.state
                    result.trimmed_entries += fitted.entries_dropped
                    result.trimmed_memories += fitted.memories_dropped
                    value = dump(fitted.state)
                out.append((partition, customer_id, value))
        return out

    def process(
        self,
        records: Sequence[RawRecord],
        load: Callable[[str], CustomerState | None],
        now: datetime,
        into: BatchResult | None = None,
    ) -> BatchResult:
        """Process ``records``; continue ``into`` an earlier result of the same batch."""
        result = BatchResult() if into is None else into
        rules = self.rulebook.rules
        cap = self.rulebook.per_customer_per_day
        journeys = self.rulebook.journeys
        for record in records:
            self._process_record(record, load, now, result, rules, cap, journeys)
        return result

    def _process_record(
        self,
        record: RawRecord,
        load: Callable[[str], CustomerState | None],
        now: datetime,
        result: BatchResult,
        rules: Sequence[CompiledRule],
        cap: int | None,
        journeys: Sequence[CompiledJourney],
    ) -> None:
        partition = record.partition
        if record.topic == self.timers_topic and record.value is not None:
            self._process_tick(record, load, now, result, rules)
            return
        if record.topic == self.consents_topic and record.value is not None:
            self._process_consent(record, load, now, result)
            return
        if record.topic == self.drafts_topic and record.value is not None:
            self._process_gate_input(record, load, now, result)
            return
        if record.value is None:
            self._reject(
                result, record, "undecodable", "expected a touchpoint, found a null value", b"", now
            )
            return
        try:
            events, rejected = decode_touchpoints_lenient(record.value)
        except SchemaError as exc:
            self._reject(result, record, exc.reason, str(exc), record.value, now)
            return
        for bad in rejected:
            self._reject(result, record, bad.error.reason, str(bad.error), bad.raw, now)
        single = len(events) == 1 and not rejected
        changed = result.states.get(partition)
        if changed is None:
            changed = result.states[partition] = {}
        for index, event in enumerate(events):
            problem = self._problem(event, partition, now)
            if problem is not None:
                reason, detail = problem
                raw = record.value if single else encode_touchpoint(event)
                where = "" if single else f"event {index} of the batch: "
                self._reject(result, record, reason, where + detail, raw, now)
                continue
            customer_id = event.customer_id
            state = changed.get(customer_id)
            if state is None and customer_id not in result.gone:
                state = load(customer_id)
            if state is not None and event.event_id in state.recent_event_ids:
                result.duplicates += 1  # a redelivery, however late
                continue
            late = self._lateness_problem(event, state)
            if late is not None:
                raw = record.value if single else encode_touchpoint(event)
                where = "" if single else f"event {index} of the batch: "
                self._reject(result, record, "late_event", where + late, raw, now)
                continue
            signals: list[JourneySignal] = []
            try:
                updated, decisions = apply(
                    state,
                    event,
                    now,
                    rules,
                    cap,
                    journeys,
                    signals,
                    self.rulebook.restricted_fields,
                    self.scoring,
                    None if self.scoring is None else self.scoring.ranks,
                )
                emitted = self._encode(decisions)
            except (EvaluationError, _TooLarge) as exc:
                if self.scoring is not None:
                    self.scoring.take()  # the touchpoint is not accepted: nor its examples
                raw = record.value if single else encode_touchpoint(event)
                where = "" if single else f"event {index} of the batch: "
                self._reject(result, record, _reason(exc), where + str(exc), raw, now)
                continue
            if updated is state:
                result.duplicates += 1
                continue
            result.processed += 1
            changed[customer_id] = updated
            if self.scoring is not None and self.scoring.pending:
                result.examples.extend((partition, e) for e in self.scoring.take())
            if event.kind == DOCUMENT_VIEWED:
                result.audit.append((partition, _document_view(event)))
            result.signals.extend(signals)
            result.encoded.update(emitted)
            _sort(result, partition, decisions)

    def _process_consent(
        self,
        record: RawRecord,
        load: Callable[[str], CustomerState | None],
        now: datetime,
        result: BatchResult,
    ) -> None:
        assert record.value is not None
        try:
            change = consent_change_codec().decode(record.value)
        except SchemaError as exc:
            self._reject(result, record, exc.reason, str(exc), record.value, now)
            return
        partition = record.partition
        if customer_partition(change.customer_id, self.partitions) != partition:
            self._reject(
                result,
                record,
                "wrong_partition",
                f"consent of customer {change.customer_id!r} belongs on partition "
                f"{customer_partition(change.customer_id, self.partitions)}, found on {partition}",
                record.value,
                now,
            )
            return
        changed = result.states.setdefault(partition, {})
        state = changed.get(change.customer_id)
        if state is None and change.customer_id not in result.gone:
            state = load(change.customer_id)
        outcome = apply_consent(state, change)
        if outcome.state is state:
            result.duplicates += 1
            return
        changed[change.customer_id] = (
            outcome.state
            if self.scoring is None
            else _without_training(
                _without_hidden_profile(outcome.state, self.rulebook.restricted_fields)
            )
        )
        result.consent_changes.append((partition, change, outcome.changed))
        result.audit.append(
            (
                partition,
                {
                    "event": "consent_granted" if change.granted else "consent_revoked",
                    "customer_id": change.customer_id,
                    "purpose": change.purpose,
                    "change_id": change.change_id,
                    "occurred_at": change.occurred_at.isoformat(),
                    "applied": outcome.changed,
                    "source": change.source,
                },
            )
        )

    def _process_gate_input(
        self,
        record: RawRecord,
        load: Callable[[str], CustomerState | None],
        now: datetime,
        result: BatchResult,
    ) -> None:
        """A draft to judge, a verdict the HTTP gate gave, or a manager's review: each
        recorded once per id (the ids share the customer's recently seen ids)."""
        assert record.value is not None
        try:
            item = decode_gate_input(record.value)
        except SchemaError as exc:
            self._reject(result, record, exc.reason, str(exc), record.value, now)
            return
        partition = record.partition
        expected = customer_partition(item.customer_id, self.partitions)
        if expected != partition:
            self._reject(
                result,
                record,
                "wrong_partition",
                f"customer {item.customer_id!r} belongs on partition {expected}, found on "
                f"{partition}; key records by customer_id",
                record.value,
                now,
            )
            return
        seen = (
            f"review:{item.review_id}"
            if isinstance(item, DraftReview)
            else f"draft:{item.draft_id}"
        )
        changed = result.states.setdefault(partition, {})
        state = changed.get(item.customer_id)
        if state is None and item.customer_id not in result.gone:
            state = load(item.customer_id)
        if state is not None and seen in state.recent_event_ids:
            result.duplicates += 1
            return
        if isinstance(item, DraftReview):
            result.reviews.append((partition, item))
            result.audit.append((partition, review_entry(item, mask_pii(item.note))))
        else:
            if isinstance(item, MessageDraft):
                try:
                    verdict = decide(self.rulebook.policies, item, now, WORKER_DECIDER)
                except Exception as exc:  # a bug in one policy must not take the batch
                    self._reject(
                        result,
                        record,
                        "processing_error",
                        f"draft {item.draft_id!r}: {type(exc).__name__} while judging",
                        record.value,
                        now,
                    )
                    return
            else:
                verdict = item
            result.verdicts.append((partition, verdict))
            result.audit.append((partition, verdict_entry(verdict)))
        changed[item.customer_id] = remember(state, item.customer_id, seen)

    def _reject(
        self,
        result: BatchResult,
        record: RawRecord,
        reason: str,
        detail: str,
        raw: bytes,
        now: datetime,
    ) -> None:
        """A dead letter for ``record``: at most ``dead_letter_raw_bytes`` of its key and
        of ``raw``, with the length and SHA-256 of the whole ``raw``."""
        keep = self.dead_letter_raw_bytes
        key = record.key
        result.dead_letters.append(
            (
                record.partition,
                DeadLetter(
                    source_topic=record.topic,
                    partition=record.partition,
                    offset=record.offset,
                    reason=reason,
                    detail=mask_pii(detail[:DETAIL_MAX]),
                    raw_key=None if key is None else key[:keep],
                    raw_value=raw[:keep],
                    failed_at=now,
                    raw_length=len(raw),
                    raw_sha256=hashlib.sha256(raw).hexdigest(),
                ),
            )
        )

    def _encode(self, decisions: Sequence[Decision]) -> dict[str, bytes]:
        """Avro bytes of each emitted intervention; :class:`_TooLarge` if one cannot be sent."""
        encoded: dict[str, bytes] = {}
        for decision in decisions:
            if not decision.emitted:
                continue
            command = decision.intervention
            value = encode_intervention(command)
            size = len(value) + len(command.customer_id.encode()) + RECORD_HEADROOM
            if size > self.max_record_bytes:
                raise _TooLarge(
                    f"rule {command.rule_id!r}: its intervention takes {size} bytes as a "
                    f"record, the most the broker accepts is {self.max_record_bytes}"
                )
            encoded[command.intervention_id] = value
        return encoded

    def _process_tick(
        self,
        record: RawRecord,
        load: Callable[[str], CustomerState | None],
        now: datetime,
        result: BatchResult,
        rules: Sequence[CompiledRule],
    ) -> None:
        assert record.value is not None
        try:
            customer_id, due = decode_tick(record.value)
        except ValueError as exc:
            self._reject(result, record, "undecodable", str(exc), record.value, now)
            return
        partition = record.partition
        changed = result.states.setdefault(partition, {})
        state = changed.get(customer_id)
        if state is None and customer_id not in result.gone:
            state = load(customer_id)
        if state is None:
            return
        if due is None:
            if expired(state, now, self.customer_ttl):
                changed.pop(customer_id, None)
                result.gone.add(customer_id)
                result.expired.append((partition, customer_id, state.last_event_at))
            return
        scoring = self.scoring
        scores = self.rulebook.scores if scoring is not None else None
        deadline = next_deadline(state, rules, self.rulebook.journeys, scores)
        if deadline is None or deadline > due:
            return  # already fired, or a touchpoint moved the deadline: a stale tick
        if scoring is not None:
            settled = scoring.settle_due(state, due)
            if settled is not state:
                state = changed[customer_id] = settled
                result.examples.extend((partition, e) for e in scoring.take())
            deadline = next_deadline(state, rules, self.rulebook.journeys)
            if deadline is None or deadline > due:
                return  # only snapshots were due: rules are not evaluated
        cap = self.rulebook.per_customer_per_day
        signals: list[JourneySignal] = []
        try:
            updated, decisions = apply_timer(
                state,
                EPOCH + timedelta(microseconds=due),
                now,
                rules,
                cap,
                self.rulebook.journeys,
                signals,
                None if scoring is None else scoring.ranks,
            )
            emitted = self._encode(decisions)
        except (EvaluationError, _TooLarge) as exc:
            self._reject(
                result, record, _reason(exc), f"timer for {customer_id!r}: {exc}", record.value, now
            )
            return
        result.signals.extend(signals)
        result.ticks += 1
        if updated is not state:
            changed[customer_id] = updated
        result.encoded.update(emitted)
        _sort(result, partition, decisions)

    def _lateness_problem(self, event: TouchpointEvent, state: CustomerState | None) -> str | None:
        newest = state.last_event_at if state is not None else None
        if newest is None:
            return None
        allowed = max(self.allowed_lateness, self.rulebook.allowed_lateness)
        if event.occurred_at >= newest - allowed:
            return None
        return (
            f"occurred_at {event.occurred_at.isoformat()} is {newest - event.occurred_at} "
            f"behind the customer's newest touchpoint ({newest.isoformat()}); the allowed "
            f"lateness is {allowed}"
        )

    def _problem(
        self, event: TouchpointEvent, partition: int, now: datetime
    ) -> tuple[str, str] | None:
        time_problem = timestamp_problem(event, now, self.timestamps)
        if time_problem is not None:
            return "bad_timestamp", time_problem
        expected = customer_partition(event.customer_id, self.partitions)
        if expected != partition:
            return "wrong_partition", (
                f"customer {event.customer_id!r} belongs on partition {expected} of "
                f"{self.partitions}, found on partition {partition}; key records by customer_id"
            )
        return None


RECORD_HEADROOM = 512
"""Bytes a record takes in a batch besides its key and value (headers, varints, margin)."""
DETAIL_MAX = 4000
"""Characters of a dead letter's detail kept (an exception message can be anything)."""


class _TooLarge(Exception):
    """An output record would exceed what the broker accepts."""


def _reason(exc: EvaluationError | _TooLarge) -> str:
    """The dead-letter reason for a touchpoint whose processing raised ``exc``."""
    return "too_large" if isinstance(exc, _TooLarge) else "processing_error"


def _fit_snapshots(
    state: CustomerState, budget: int, measure: Callable[[CustomerState], int]
) -> tuple[CustomerState, int]:
    """``state`` with its oldest score snapshots dropped, half of each score's at a time,
    until ``measure(state) <= budget`` or none is left; and how many were dropped."""
    dropped = 0
    while state.snapshots is not None and measure(state) > budget:
        kept = state.snapshots.by_score
        if not any(kept.values()):
            break
        halved = {name: snaps[len(snaps) // 2 + len(snaps) % 2 :] for name, snaps in kept.items()}
        dropped += sum(len(kept[n]) - len(halved[n]) for n in kept)
        state = replace(
            state, snapshots=type(state.snapshots)({n: v for n, v in halved.items() if v})
        )
    return state, dropped


def _without_hidden_profile(
    state: CustomerState, restricted: Mapping[str, frozenset[str]]
) -> CustomerState:
    """``state`` without remembered profile attributes whose purposes the customer no
    longer grants (a revocation): scoring forgets them as rules stop seeing them."""
    memory = state.feature_memory
    if memory is None or not restricted or not memory.profile:
        return state
    visible = visible_attributes(memory.profile, restricted, state)
    if visible is None:
        return state
    kept = {k: v for k, v in memory.profile.items() if k in visible}
    at = {k: v for k, v in memory.profile_at.items() if k in visible}
    return replace(state, feature_memory=replace(memory, profile=kept, profile_at=at))


def _without_training(state: CustomerState) -> CustomerState:
    """``state`` without open snapshots once the customer refuses training (a consent
    change): what was kept for learning is not kept any longer."""
    if state.snapshots is not None and not may_train(state):
        return replace(state, snapshots=None)
    return state


def _sort(result: BatchResult, partition: int, decisions: Sequence[Decision]) -> None:
    for decision in decisions:
        command = decision.intervention
        if decision.shadow:
            result.shadowed.append((partition, command))
        elif decision.suppressed:
            result.suppressed.append((partition, decision))
            result.audit.append(
                (
                    partition,
                    {
                        "event": "intervention_suppressed",
                        "customer_id": command.customer_id,
                        "intervention_id": command.intervention_id,
                        "rule_id": command.rule_id,
                        "rule_version": command.rule_version,
                        "missing_purposes": list(decision.suppressed),
                    },
                )
            )
        elif decision.capped:
            result.capped.append((partition, command))
        else:
            result.interventions.append((partition, command))
            result.audit.append(
                (
                    partition,
                    {
                        "event": "intervention_decided",
                        "customer_id": command.customer_id,
                        "intervention_id": command.intervention_id,
                        "rule_id": command.rule_id,
                        "rule_version": command.rule_version,
                        "kind": command.kind.value,
                        "purposes": list(decision.needs),
                    },
                )
            )


DOCUMENT_VIEWED = "document_viewed"
"""Touchpoints of this kind (a contract or document opened) are audited."""


def _document_view(event: TouchpointEvent) -> dict[str, Any]:
    document = event.attributes.get("document_id")
    return {
        "event": DOCUMENT_VIEWED,
        "customer_id": event.customer_id,
        "event_id": event.event_id,
        "document_id": None if document is None else str(document),
        "viewer": event.rep_id or event.contact_id,
        "occurred_at": event.occurred_at.isoformat(),
    }
