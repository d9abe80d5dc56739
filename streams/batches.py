"""Batch handling: the engine over every touchpoint of a batch, its output written in
the batch's transaction.

The agent takes Kafka records with Faust's ``take_events``. Each batch is handled in
*slices* bounded by touchpoints (``WARROOM_SLICE_MAX_EVENTS``) and processing time
(``WARROOM_SLICE_MAX_SECONDS``). A slice's output (changed customers' states, once per
slice however many of their touchpoints it held, interventions, dead letters) is
appended straight into Kafka record batches (streams.writer) and its records are
acknowledged, all under the commit lock; the lock is let go between slices, so a
commit (with exactly-once: a transaction) holds whole slices, output and offsets
together, and never more than about one slice and a commit interval of work.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any, cast

import faust
from faust.types import EventT, StreamT

from engine.assignees import assignee_key
from engine.consent import KNOWN_PURPOSES
from schemas.codec import compliance_verdict_codec, encode_dead_letter
from schemas.partitioning import customer_partition
from schemas.topics import (
    AUDIT,
    COMPLIANCE_VERDICTS,
    DLQ,
    INTERVENTIONS,
    REP_CANDIDATES,
    SCORING_EXAMPLES,
)

from .audit_chain import BUNDLE_CHAIN, chain_records
from .metrics import WorkerMetrics
from .parts import Warroom
from .pipeline import BatchResult, RawRecord
from .rep_caps import admit_candidates
from .rep_training import findings_key, is_findings, train_reps
from .writer import OutRecord

RECORDS_PER_SLICE = 8
"""The worker yields to the event loop after this many records of a slice."""
EXIT_BUG = 70
"""Exit status when batch handling itself fails (EX_SOFTWARE)."""
log = logging.getLogger(__name__)


async def run_agent(warroom: Warroom, agent_stream: StreamT[bytes], ready: asyncio.Event) -> None:
    """The touchpoint agent's body: batches until the stream ends."""
    stream = cast(faust.Stream[bytes], agent_stream)
    settings = warroom.settings
    # Touchpoints wait until every bundle on the rules topic has been read.
    await ready.wait()
    async for events in stream.take_events(
        settings.batch_max_records, settings.batch_within_seconds
    ):
        try:
            await handle_batch(warroom, stream, events)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            _stop_without_acking(exc)


async def handle_batch(
    warroom: Warroom, stream: faust.Stream[bytes], events: Sequence[EventT[Any]]
) -> None:
    """Process a batch in slices bounded by touchpoints and time; each slice's output is
    written and its records acknowledged under the commit lock, and the lock is let go
    between slices, so a transaction never holds more than about one slice and a commit
    interval, whatever the backlog.

    Records of the batch not yet processed when the task is cancelled (the worker is
    stopping) are never acknowledged: they are read again after the restart."""
    start = 0
    try:
        while start < len(events):
            async with warroom.commit_lock.lock:
                start = await _handle_slice(warroom, stream, events, start)
            await asyncio.sleep(0)  # a commit waiting for the lock goes first
    except asyncio.CancelledError:
        _never_ack(events[start:])
        raise


async def _handle_slice(
    warroom: Warroom, stream: faust.Stream[bytes], events: Sequence[EventT[Any]], first: int
) -> int:
    """Process events from ``first`` on until the slice's budget is used; returns where the
    next slice starts. Runs under the commit lock."""
    started = time.perf_counter()
    settings = warroom.settings
    candidates = settings.topic(REP_CANDIDATES)
    pipeline = warroom.pipeline
    tracing = pipeline.tracing
    now = datetime.now(UTC)
    result = BatchResult()
    held: list[EventT[Any]] = []
    deadline = started + settings.slice_max_seconds
    index = first
    # A cancellation here writes nothing of this slice; handle_batch keeps all of its
    # records from being acknowledged.
    while index < len(events):
        message = events[index].message
        index += 1
        if message.topic == candidates:
            held.append(events[index - 1])
        else:
            record = RawRecord(
                message.topic, message.partition, message.offset, message.key, message.value
            )
            if tracing is not None and message.headers:
                tracing.process(
                    pipeline, record, message.headers, warroom.stored_state, now, result
                )
            else:
                pipeline.process((record,), warroom.stored_state, now, into=result)
        taken = result.processed + result.duplicates + len(result.dead_letters) + len(held)
        if taken >= settings.slice_max_events or time.perf_counter() >= deadline:
            break
        if (index - first) % RECORDS_PER_SLICE == 0:
            await asyncio.sleep(0)  # let the web server, timers and fetching run
    await _finish_slice(warroom, stream, events[first:index], result, held, started)
    return index


async def _finish_slice(
    warroom: Warroom,
    stream: faust.Stream[bytes],
    events: Sequence[EventT[Any]],
    result: BatchResult,
    held: list[EventT[Any]],
    started: float,
) -> None:
    """Write a slice's output and acknowledge its records, as one step a cancellation
    cannot cut in two."""
    encoded = warroom.pipeline.encode_states(result, warroom.state_codec.dumps)
    schedule = warroom.schedule
    removed = _forget_expired(warroom, result)
    for partition, changed in result.states.items():
        for customer_id, state in changed.items():
            warroom.states.put(customer_id, partition, state)
            schedule.note(customer_id, partition, state)
    warroom.leaders.note(p for p, changed in result.states.items() if changed)
    direct = warroom.pipeline.rulebook.per_rep_per_day is None
    output = removed + list(_output(warroom, result, encoded, direct))
    if held:
        verdicts = [
            (e.message.partition, e.message.value)
            for e in held
            if e.message.value is not None and is_findings(e.message.value)
        ]
        candidates = [e for e in held if not is_findings(e.message.value)]
        if candidates:
            output.extend(admit_candidates(warroom, candidates))
        if verdicts:
            trained, entries = train_reps(warroom, verdicts)
            output.extend(trained)
            result.audit.extend(entries)
    owns_bundle_chain = any(e.message.partition == BUNDLE_CHAIN for e in events)
    output.extend(
        chain_records(
            warroom.audit_heads,
            warroom.settings.topic(AUDIT),
            result.audit,
            datetime.now(UTC),
            warroom.bundle_decisions if owns_bundle_chain else None,
        )
    )

    async def write_and_ack() -> None:
        await warroom.writer.write(output)
        for event in events:
            await stream.ack(event)

    step = asyncio.ensure_future(write_and_ack())
    try:
        await asyncio.shield(step)
    except asyncio.CancelledError:
        if not step.done():
            # Stopping: let the write and its acks finish, then stop.
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(step)
        raise
    warroom.analytics.record(
        (customer for changed in result.states.values() for customer in changed),
        (c.rule_id for _, c in result.interventions) if direct else (),
        (c.rule_id for _, c in result.shadowed),
        (c.rule_id for _, c in result.capped),
    )
    warroom.analytics.record_signals(result.signals)
    warroom.analytics.record_verdicts(v for _, v in result.verdicts)
    warroom.analytics.record_consents(c for _, c, applied in result.consent_changes if applied)
    _observe(warroom.metrics, result, events, started, direct)
    predicted = warroom.scoring.take_predictions()
    if predicted:
        warroom.metrics.predictions.inc(predicted)
    for event in events:
        message = event.message
        warroom.progress[(message.topic, message.partition)] = message.offset + 1


def _forget_expired(warroom: Warroom, result: BatchResult) -> list[OutRecord]:
    """Drop customers removed for silence from the store; their changelog tombstones (and
    audit entries in ``result``). A customer who came back later in the same slice keeps
    its new state."""
    changelog = warroom.states.changelog
    out: list[OutRecord] = []
    for partition, customer_id, last in result.expired:
        if customer_id in result.states.get(partition, {}):
            continue
        warroom.states.delete(customer_id)
        warroom.schedule.forget(customer_id)
        key = customer_id.encode()
        out.append(OutRecord(changelog, partition, key, None))
        entry = {
            "event": "customer_expired",
            "customer_id": customer_id,
            "last_touchpoint_at": None if last is None else last.isoformat(),
            "ttl_days": warroom.settings.customer_ttl_days,
        }
        result.audit.append((partition, entry))
        warroom.metrics.expired.inc()
    return out


def _never_ack(events: Sequence[EventT[Any]]) -> None:
    """Keep ``events`` from ever being acknowledged (take_events acks its whole batch when
    the batch ends, however it ends): their offsets are not committed and they are read
    again by whoever owns their partition next."""
    for event in events:
        event.message.acked = True


def _stop_without_acking(exc: BaseException) -> None:
    """A bug outside per-touchpoint processing: stop the process now, before the batch's
    records are acknowledged or anything is committed. The open transaction is aborted by
    the broker (or fenced by the next worker) and processing restarts from the last
    commit: crash-only, never a silent skip."""
    log.critical("batch handling failed, stopping the worker without committing", exc_info=exc)
    logging.shutdown()
    os._exit(EXIT_BUG)


def _output(
    warroom: Warroom, result: BatchResult, states: list[tuple[int, str, bytes]], direct: bool
) -> Iterator[OutRecord]:
    """What a slice writes. ``direct``: interventions go straight out; otherwise to the
    assignee-keyed stage that applies per-rep caps."""
    settings = warroom.settings
    changelog = warroom.states.changelog
    for partition, customer_id, value in states:
        yield OutRecord(changelog, partition, customer_id.encode(), value)
    interventions = settings.topic(INTERVENTIONS)
    candidates = settings.topic(REP_CANDIDATES)
    encoded = result.encoded
    traced = result.trace_headers
    for partition, command in result.interventions:
        value = encoded[command.intervention_id]
        headers = traced.get(command.intervention_id) if traced else None
        if direct:
            customer = command.customer_id.encode()
            yield OutRecord(interventions, partition, customer, value, headers=headers)
            continue
        key = assignee_key(command)
        yield OutRecord(
            candidates,
            customer_partition(key, settings.partitions),
            key.encode(),
            value,
            source_partition=partition,
            headers=headers,
        )
    verdicts = settings.topic(COMPLIANCE_VERDICTS)
    for partition, verdict in result.verdicts:
        value = compliance_verdict_codec().encode(verdict)
        yield OutRecord(verdicts, partition, verdict.customer_id.encode(), value)
        rep = findings_key(verdict)
        if rep is not None:
            yield OutRecord(
                candidates,
                customer_partition(rep, settings.partitions),
                rep.encode(),
                value,
                source_partition=partition,
            )
    if result.examples:
        from .scoring import encode_example  # only a worker that scores imports River

        examples = settings.topic(SCORING_EXAMPLES)
        for partition, example in result.examples:
            yield OutRecord(
                examples,
                0,
                example.score.encode(),
                encode_example(example),
                source_partition=partition,
            )
    dlq = settings.topic(DLQ)
    kept = result.dead_letter_headers
    for partition, letter in result.dead_letters:
        headers = kept.get((letter.source_topic, letter.partition, letter.offset)) if kept else None
        yield OutRecord(dlq, partition, letter.raw_key, encode_dead_letter(letter), headers=headers)


def _observe(
    metrics: WorkerMetrics,
    result: BatchResult,
    events: Sequence[EventT[Any]],
    started: float,
    direct: bool,
) -> None:
    finished = time.perf_counter()
    metrics.batch_duration.observe(finished - started)
    if result.processed:
        metrics.touchpoints.labels("processed").inc(result.processed)
    if result.ticks:
        metrics.ticks.inc(result.ticks)
    if result.duplicates:
        metrics.touchpoints.labels("duplicate").inc(result.duplicates)
    for command in (c for _, c in result.interventions if direct):
        metrics.interventions.labels(command.rule_id, command.kind.value).inc()
    for command in (c for _, c in result.shadowed):
        metrics.shadowed.labels(command.rule_id).inc()
    for command in (c for _, c in result.capped):
        metrics.capped.labels(command.rule_id).inc()
    for letter in (d for _, d in result.dead_letters):
        metrics.dead_letters.labels(letter.reason).inc()
    for _, decision in result.suppressed:
        metrics.suppressed.labels(decision.intervention.rule_id).inc()
    for _, verdict in result.verdicts:
        metrics.verdicts.labels(verdict.verdict.value, verdict.decided_by.split(":")[0]).inc()
    for _, change, applied in result.consent_changes:
        purpose = change.purpose if change.purpose in KNOWN_PURPOSES else "other"
        metrics.consents.labels(
            purpose if applied else "(stale)", "granted" if change.granted else "revoked"
        ).inc()
    for _, example in result.examples:
        metrics.examples_written.labels(example.score).inc()
    if result.trimmed_entries:
        metrics.trimmed.labels("window_entries").inc(result.trimmed_entries)
    if result.trimmed_snapshots:
        metrics.trimmed.labels("score_snapshots").inc(result.trimmed_snapshots)
    if result.trimmed_memories:
        metrics.trimmed.labels("rule_memories").inc(result.trimmed_memories)
    now = time.time()
    for event in events:
        appended = event.message.timestamp
        if appended:
            metrics.latency.observe(max(0.0, now - appended))
