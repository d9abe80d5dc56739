"""Absence rules fire at their deadline when the customer sends nothing more, once,
also when the worker restarts before the deadline."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from schemas.codec import decode_intervention
from schemas.models import Channel
from streams.rules_push import push_bundle
from streams.settings import Settings
from streams.topics import ensure_topics

from .harness import (
    WorkerProcess,
    produce_raw,
    read_all,
    read_topic,
    touchpoint_record,
    wait_until_committed,
)

BUNDLE = """\
bundle: leads
version: 1
rules:
  - id: leads.no-contact
    when:
      absence:
        after: {kind: lead_form_submitted}
        missing: {direction: outbound}
        within: 20s
    then:
      kind: escalation
      assignee: role:sales_manager
      due_in: 1h
      title: "New lead {customer_id} got no contact in time"
"""


def lead(
    customer: str, kind: str = "lead_form_submitted", direction: str = "inbound"
) -> tuple[bytes, bytes]:
    return touchpoint_record(
        customer,
        f"{customer}-{kind}",
        kind,
        datetime.now(UTC),
        channel=Channel.WEB,
        direction=direction,
        rep_id=None,
    )


# `make chaos`: a real 20 s deadline across a restart; make test sees absences fire in
# test_rule_packs and deadlines survive rebalances in the reduced chaos scaling test
@pytest.mark.long
async def test_an_absence_fires_at_its_deadline_once_across_a_restart(
    settings: Settings, worker: WorkerProcess
) -> None:
    await ensure_topics(settings)
    await push_bundle(settings, BUNDLE, "leads.yaml")
    worker.start()
    # Two leads; one gets a call in time. Nothing else arrives for either.
    await produce_raw(settings, [lead("quiet-lead"), lead("called-lead")])
    await produce_raw(settings, [lead("called-lead", "call_made", "outbound")])
    await wait_until_committed(settings, worker)

    # Crash before the deadline: the restarted worker must rebuild the timer.
    worker.kill()
    worker.start()
    found = await read_topic(
        settings,
        "interventions",
        lambda f: any(c.customer_id == "quiet-lead" for c in f),
        decode_intervention,
        worker,
    )
    [escalation] = found
    assert escalation.rule_id == "leads.no-contact"
    assert escalation.assignee_role == "sales_manager"
    assert escalation.explanation.triggering_event_ids == ["quiet-lead-lead_form_submitted"]
    assert escalation.created_at >= escalation.due_at - timedelta(hours=1)

    # Later ticks and a graceful restart do not raise it again.
    worker.stop()
    worker.start()
    await produce_raw(settings, [lead("probe-lead")])
    await read_topic(
        settings,
        "interventions",
        lambda f: any(c.customer_id == "probe-lead" for c in f),
        decode_intervention,
        worker,
    )
    await asyncio.sleep(1)
    everything = await read_all(settings, "interventions", decode_intervention)
    assert sorted(c.customer_id for c in everything) == ["probe-lead", "quiet-lead"]
