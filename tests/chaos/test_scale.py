"""One worker scales to three and back to one under load: customer state follows its
partitions (rules that count across the scale events fire on the right touchpoints),
deadlines fire once, and nothing is lost or repeated."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from datetime import datetime

from engine.reducer import next_deadline
from schemas.models import Channel, Direction, TouchpointEvent
from schemas.partitioning import customer_partition
from streams.pipeline import RawRecord
from streams.rules_push import push_bundle
from streams.settings import Settings
from streams.timers import encode_tick
from streams.topics import ensure_topics
from tests.integration.harness import group_progress

from .conftest import ChaosWorker
from .workload import (
    RECOVERY_CUT_SHORT,
    TRANSACTION_KEPT_OPEN,
    Scale,
    Supervisor,
    compare,
    emitted_interventions,
    encode_mixed,
    generate_events,
    log_lines,
    oracle,
    oracle_pipeline,
    produce_paced,
    state_history,
    touchpoints_processed,
    tracebacks,
    where_emitted,
)

COUNTS_BUNDLE = """\
bundle: chaos-counts
version: 1
rules:
  - id: chaos.feature-burst
    when:
      count:
        of: {kind: feature_used}
        within: 1h
        at_least: 3
    cooldown: 2h
    then:
      kind: alert
      assignee: owner
      due_in: 1h
      title: "{customer_id} used features {observed} times within an hour"
  - id: chaos.tenth-touchpoint
    when:
      state: {touchpoints: {eq: 10}}
    then:
      kind: task
      assignee: owner
      due_in: 1h
      title: "{customer_id} reached ten touchpoints"
  - id: chaos.lead-not-met
    when:
      absence:
        after: {kind: lead_form_submitted}
        missing: {kind: meeting_held}
        within: 1m
    then:
      kind: escalation
      assignee: owner
      due_in: 1h
      title: "{customer_id} submitted a lead form and nobody met them"
"""
"""Rules whose decisions depend on state built across the scale events, and a deadline.

The deadline's customers ("lead" customers) send one lead form each and nothing else,
and no touchpoint is ever a meeting, so each fires exactly once, at its deadline, by
a timer tick: the same intervention id however late the tick runs."""

SCALE_UP_AT = 0.1


def with_leads(events: list[TouchpointEvent], leads: int, rng: random.Random) -> int:
    """Insert one lead form for each of ``leads`` new customers, in time order."""
    for number in range(leads):
        index = rng.randrange(1, len(events))
        at = events[index - 1].occurred_at
        events.insert(
            index,
            TouchpointEvent(
                event_id=f"lead-e{number}",
                customer_id=f"lead-{number:05d}",
                occurred_at=at,
                received_at=at,
                channel=Channel.WEB,
                kind="lead_form_submitted",
                direction=Direction.INBOUND,
                rep_id="rep-lead",
                source="chaos/1",
            ),
        )
    return leads


async def expected_with_deadlines(settings: Settings, now: datetime) -> list:  # type: ignore[type-arg]
    """The oracle, then one timer tick for every deadline that ``now`` has passed."""
    result = await oracle(settings, [COUNTS_BUNDLE])
    pipeline = oracle_pipeline(settings, [COUNTS_BUNDLE])
    rulebook = pipeline.rulebook
    ticks = []
    for partition, states in result.states.items():
        for customer_id, state in states.items():
            deadline = next_deadline(state, rulebook.rules, rulebook.journeys)
            if deadline is not None and deadline <= int(now.timestamp() * 1_000_000):
                value = encode_tick(customer_id, deadline)
                ticks.append(
                    RawRecord(settings.topic("timers"), partition, 0, customer_id.encode(), value)
                )
    pipeline.process(ticks, lambda _: None, now, into=result)
    return [c for _, c in result.interventions]


async def test_scaling_one_to_three_and_back_keeps_state_and_exactly_once(
    settings: Settings,
    workers: Callable[[int], list[ChaosWorker]],
    scale: Scale,
    seed: int,
    figures: dict[str, object],
) -> None:
    started = time.monotonic()
    rng = random.Random(seed)
    events = generate_events(scale.scale_touchpoints, scale.scale_touchpoints // 12, seed, "s")
    leads = with_leads(events, scale.scale_touchpoints // 50, rng)
    records = encode_mixed(events, settings.partitions, rng)
    figures.update(seed=seed, touchpoints=len(events), lead_deadlines=leads, records=len(records))
    await ensure_topics(settings)
    await push_bundle(settings, COUNTS_BUNDLE, "chaos-counts.yaml")
    first, *others = workers(3)
    supervisor = Supervisor([first, *others])
    rate = scale.scale_touchpoints_per_second
    per_record = len(events) / len(records)
    first.start()
    up = int(SCALE_UP_AT * len(records))
    phases: list[str] = []
    async with group_progress(settings) as progress:
        # One worker under load until the scale-up point.
        await produce_paced(settings, records[:up], per_record, rate)

        async def scale_up_point() -> bool:
            return (await progress())[0] >= up

        await supervisor.wait_for(scale_up_point, "the scale-up point", 120)
        for worker in others:
            worker.start()
        scaled_up = time.monotonic()
        # A trickle while the new workers start and recover, until each one processes.
        # A tenth of the load rate, so the two new workers have about 45 s (reduced
        # scale) to start, recover and process before it runs out on a loaded machine.
        all_working = asyncio.Event()
        trickle = asyncio.create_task(
            produce_paced(settings, records[up:], per_record, rate // 10, until=all_working)
        )

        async def all_three_working() -> bool:
            counts = [await touchpoints_processed(w) for w in others]
            return all(counts) or trickle.done()

        await supervisor.wait_for(all_three_working, "the new workers to process", 90)
        all_working.set()
        shared = up + await trickle
        assert shared < len(records), "the load ended before the three workers shared it"
        phases.append(f"three workers from {shared}/{len(records)} records")
        # Three workers share the load, then two of them stop (gracefully) mid-stream.
        down = shared + (len(records) - shared) // 2
        await produce_paced(settings, records[shared:down], per_record, rate)
        shares = [await touchpoints_processed(w) for w in (first, *others)]
        for worker in others:
            worker.stop()
        phases.append(f"one worker from {down}/{len(records)} records")
        figures.update(
            three_workers_seconds=round(time.monotonic() - scaled_up, 1),
            processed_per_worker_at_scale_down=shares,
        )
        await produce_paced(settings, records[down:], per_record, rate)

        async def all_committed() -> bool:
            done, total = await progress()
            return done == total == len(records)

        await supervisor.wait_for(all_committed, "every record committed", 180)
    print("phases:", "; ".join(phases))
    expected = await expected_with_deadlines(
        settings, datetime.now(tz=events[0].occurred_at.tzinfo)
    )
    wanted = {c.intervention_id for c in expected}

    async def all_emitted() -> bool:
        return wanted <= {c.intervention_id for c in await emitted_interventions(settings)}

    try:
        await supervisor.wait_for(all_emitted, "every expected intervention", 30)
    except AssertionError as exc:
        print(str(exc)[:2000])
    await asyncio.sleep(2)  # anything emitted twice has time to show
    emitted = await emitted_interventions(settings)
    verdict = compare(expected, emitted)
    by_rule = {
        rule: sum(1 for c in expected if c.rule_id == rule)
        for rule in sorted({c.rule_id for c in expected})
    }
    figures.update(
        expected_by_rule=by_rule,
        worker_exits=len(supervisor.exits),
        **verdict.figures(),
        tracebacks=sum(len(tracebacks(w)) for w in (first, *others)),
        recoveries_cut_short=sum(log_lines(w, RECOVERY_CUT_SHORT) for w in (first, *others)),
        transactions_kept_open=sum(log_lines(w, TRANSACTION_KEPT_OPEN) for w in (first, *others)),
        wall_seconds=round(time.monotonic() - started, 1),
    )
    print("worker exits:", supervisor.exits or "none")
    assert by_rule.get("chaos.lead-not-met") == leads, "the oracle misses deadlines"
    assert not supervisor.exits, f"workers exited: {supervisor.exits}"
    if not verdict.exact:
        copies = await where_emitted(settings, sorted(verdict.duplicates))
        involved = {
            verdict.described[i].split()[1]
            for i in (*verdict.missing, *verdict.unexpected, *verdict.duplicates)
            if not verdict.described[i].startswith("chaos.lead-not-met")
        }
        # only deadline interventions wrong: no touchpoint history to show
        history = await state_history(settings, set(sorted(involved)[:5])) if involved else []
        print("copies of duplicates:", *copies, sep="\n  ")
        print("state history:", *history, sep="\n  ")
    assert verdict.exact, verdict.problems()
    partitions = {customer_partition(c.customer_id, settings.partitions) for c in emitted}
    assert partitions == set(range(settings.partitions))
