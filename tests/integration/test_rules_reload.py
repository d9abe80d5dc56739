"""Rule bundles pushed to a running worker: new versions apply within seconds, broken ones
are refused with the line named while the running version keeps working."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from engine.bundle import InvalidBundle
from schemas.codec import decode_intervention
from schemas.models import Channel
from streams.rules_push import delete_bundle, publish_bundle_text, push_bundle
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
bundle: team
version: {version}
rules:
  - id: team.interest
    when:
      event: {{kind: {kind}}}
    then:
      kind: alert
      due_in: 1h
      title: "v{version}: {{customer_id}} showed interest"
"""


def touchpoint(customer: str, kind: str, n: int) -> tuple[bytes, bytes]:
    now = datetime.now(UTC)
    return touchpoint_record(
        customer,
        f"{customer}-{kind}-{n}",
        kind,
        now - timedelta(seconds=1),
        channel=Channel.WEB,
        direction="inbound",
        rep_id="rep-cy",
        received_at=now,
    )


def titled(prefix: str, customer: str) -> Any:
    return lambda found: any(
        c.customer_id == customer and c.title.startswith(prefix) for c in found
    )


async def test_bundles_reload_live_and_broken_ones_are_refused(
    settings: Settings, worker: WorkerProcess
) -> None:
    await ensure_topics(settings)
    await push_bundle(settings, BUNDLE.format(version=1, kind="pricing_page_visit"), "team.yaml")
    worker.start()
    await produce_raw(settings, [touchpoint("c1", "pricing_page_visit", 1)])
    await read_topic(settings, "interventions", titled("v1:", "c1"), decode_intervention, worker)

    # A new version: the worker must behave by it within 5 s of the push.
    pushed = time.monotonic()
    await push_bundle(settings, BUNDLE.format(version=2, kind="demo_requested"), "team.yaml")
    n = 0
    while True:
        n += 1
        await produce_raw(settings, [touchpoint("c2", "demo_requested", n)])
        try:
            await read_topic(
                settings, "interventions", titled("v2:", "c2"), decode_intervention, worker, 0.5
            )
            break
        except AssertionError:
            assert time.monotonic() - pushed < 5.0, "the new bundle was not applied within 5 s"
    assert time.monotonic() - pushed < 5.0

    # A broken version is refused by the CLI path...
    broken = BUNDLE.format(version=3, kind="demo_requested").replace("event:", "evnt:")
    with pytest.raises(InvalidBundle, match=r"team\.yaml:6: rules\[0\]\.when\.evnt"):
        await push_bundle(settings, broken, "team.yaml")
    # ...and, written to the topic anyway, refused by the worker with the line named.
    await publish_bundle_text(settings, "team", broken)
    audit = await read_topic(
        settings,
        "audit",
        lambda found: any(a["event"] == "bundle_rejected" for a in found),
        orjson.loads,
        worker,
    )
    [rejected] = [a for a in audit if a["event"] == "bundle_rejected"]
    assert rejected["bundle"] == "team"
    assert any(":6: rules[0].when.evnt:" in p and "'event'" in p for p in rejected["problems"])
    assert [a["version"] for a in audit if a["event"] == "bundle_activated"] == [1, 2]

    # The running version (2) keeps working.
    await produce_raw(settings, [touchpoint("c3", "demo_requested", 1)])
    found = await read_topic(
        settings, "interventions", titled("v2:", "c3"), decode_intervention, worker
    )
    assert not any(c.customer_id == "c3" and c.title.startswith("v3") for c in found)


# `make chaos`; make test keeps live reloads and refusals
@pytest.mark.long
async def test_a_deleted_bundle_stops_on_a_running_worker_and_stays_deleted_after_a_restart(
    settings: Settings, worker: WorkerProcess
) -> None:
    await ensure_topics(settings)
    await push_bundle(settings, BUNDLE.format(version=1, kind="demo_requested"), "team.yaml")
    worker.start()
    await produce_raw(settings, [touchpoint("d1", "demo_requested", 1)])
    await read_topic(settings, "interventions", titled("v1:", "d1"), decode_intervention, worker)

    await delete_bundle(settings, "team")
    audit = await read_topic(
        settings,
        "audit",
        lambda found: any(a["event"] == "bundle_deleted" for a in found),
        orjson.loads,
        worker,
        within=5.0,
    )
    [deleted] = [a for a in audit if a["event"] == "bundle_deleted"]
    assert (deleted["bundle"], deleted["version"]) == ("team", 1)

    # After the deletion (and a restart that replays the rules topic) nothing fires.
    await produce_raw(settings, [touchpoint("d2", "demo_requested", 1)])
    worker.stop()
    worker.start()
    await produce_raw(settings, [touchpoint("d3", "demo_requested", 1)])
    await wait_until_committed(settings, worker)
    found = await read_all(settings, "interventions", decode_intervention)
    assert [c.customer_id for c in found] == ["d1"]

    # The name is free again: a new push runs.
    _, _, where = await push_bundle(
        settings, BUNDLE.format(version=1, kind="demo_requested"), "team.yaml"
    )
    offset = int(where.rsplit("@", 1)[1])
    await read_topic(
        settings,
        "audit",
        lambda found: any(
            (a["event"], a.get("rules_offset")) == ("bundle_activated", offset) for a in found
        ),
        orjson.loads,
        worker,
    )
    await produce_raw(settings, [touchpoint("d4", "demo_requested", 1)])
    await read_topic(settings, "interventions", titled("v1:", "d4"), decode_intervention, worker)
