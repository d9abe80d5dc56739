"""A journey on a real worker: timed and conditional steps, per-variant metrics."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from engine.bundle import load_bundle
from schemas.codec import decode_intervention
from schemas.models import Channel
from streams.rules_push import push_bundle
from streams.settings import Settings
from streams.topics import ensure_topics
from streams.web import bearer

from .harness import WorkerProcess, produce_raw, read_all, read_topic, touchpoint_record

BUNDLE = """\
bundle: onboarding
version: 1
journeys:
  - id: trial
    entry: {event: {kind: trial_started}}
    conversion: {event: {kind: subscribed}}
    variants:
      - name: guided
        steps:
          - id: welcome
            after: 2s
            then: {kind: task, title: "Welcome call for {customer_id}", due_in: 1d}
          - id: fix-error
            when: {event: {kind: sandbox_error}}
            then: {kind: task, title: "Fix the sandbox for {customer_id}", due_in: 2h}
      - name: self-serve
        steps:
          - id: tips
            after: 2s
            then: {kind: content_push, title: "Tips for {customer_id}", due_in: 1d}
  - id: upsell
    mode: shadow
    entry: {event: {kind: trial_started}}
    variants:
      - name: quiet
        steps:
          - id: nudge
            after: 1s
            then: {kind: task, title: "Offer the annual plan to {customer_id}", due_in: 1d}
"""


def tp(customer: str, n: int, kind: str) -> tuple[bytes, bytes]:
    at = datetime.now(UTC) - timedelta(milliseconds=10)
    return touchpoint_record(
        customer,
        f"{customer}-{n}",
        kind,
        at,
        channel=Channel.PRODUCT,
        direction="none",
        rep_id="rep-gus",
    )


async def test_a_journey_runs_its_variant_steps_and_reports_per_variant(
    settings: Settings, tmp_path: Path
) -> None:
    settings = settings.model_copy(update={"metrics_interval_seconds": 1.0})
    journey, _ = load_bundle(BUNDLE, "onboarding.yaml").journeys
    customers = [f"trial-{n}" for n in range(40)]
    guided = next(c for c in customers if journey.assign(c) == "guided")
    self_serve = next(c for c in customers if journey.assign(c) == "self-serve")
    worker = WorkerProcess(settings, tmp_path / "journey-worker.log")
    await ensure_topics(settings)
    await push_bundle(settings, BUNDLE, "onboarding.yaml")
    worker.start()
    try:
        await produce_raw(
            settings, [tp(guided, 1, "trial_started"), tp(self_serve, 1, "trial_started")]
        )
        # Nothing else arrives: the timed first steps fire from timers.
        first = await read_topic(
            settings, "interventions", lambda found: len(found) >= 2, decode_intervention, worker
        )
        by_customer = {c.customer_id: c for c in first}
        assert by_customer[guided].rule_id == "trial.welcome"
        assert by_customer[self_serve].rule_id == "trial.tips"
        for customer, variant in ((guided, "guided"), (self_serve, "self-serve")):
            experiment = by_customer[customer].experiment
            assert experiment is not None
            assert (experiment.experiment_id, experiment.variant) == ("trial", variant)

        await produce_raw(settings, [tp(guided, 2, "sandbox_error"), tp(guided, 3, "subscribed")])
        found = await read_topic(
            settings, "interventions", lambda f: len(f) >= 3, decode_intervention, worker
        )
        assert sorted(c.rule_id for c in found) == [
            "trial.fix-error",
            "trial.tips",
            "trial.welcome",
        ]

        def journeys(records: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
            totals: dict[str, dict[str, int]] = {}
            for r in records:
                if r.get("metric") == "journey_activity" and r["journey_id"] == "trial":
                    into = totals.setdefault(r["variant"], {"entered": 0, "converted": 0})
                    into["entered"] += r["entered"]
                    into["converted"] += r["converted"]
            return totals

        async with aiohttp.ClientSession(headers=bearer(settings.admin_token)) as session:
            url = f"http://127.0.0.1:{settings.web_port}/customers/{self_serve}"
            async with session.get(url) as response:
                explained = await response.json()
        status, shadow = sorted(explained["journeys"], key=lambda j: j["journey_id"] != "trial")
        assert (status["journey_id"], status["mode"]) == ("trial", "enforce")
        assert (shadow["journey_id"], shadow["mode"]) == ("upsell", "shadow")
        assert shadow["progress"].startswith("out of the journey (variant quiet")  # step done
        assert status["progress"].startswith("in variant self-serve: all 1 steps done")

        records = await read_topic(
            settings,
            "metrics",
            lambda f: journeys(f).get("guided", {}).get("converted", 0) >= 1,
            orjson.loads,
            worker,
        )
        # The shadow journey decided its step for both customers and emitted nothing.
        async with aiohttp.ClientSession() as session:
            url = f"http://127.0.0.1:{settings.web_port}/metrics"
            async with session.get(url) as response:
                exposition = await response.text()
        assert 'warroom_shadow_decisions_total{rule_id="upsell.nudge"} 2.0' in exposition
        everything = await read_all(settings, "interventions", decode_intervention)
        assert not [c for c in everything if c.rule_id.startswith("upsell.")]
    finally:
        worker.stop()
    assert journeys(records) == {
        "guided": {"entered": 1, "converted": 1},
        "self-serve": {"entered": 1, "converted": 0},
    }
