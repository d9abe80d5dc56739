"""Business metrics: tallies per rule and interval, and how they are printed."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson

from streams.analytics import Analytics
from streams.tail import format_metric

T1 = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
T2 = datetime(2026, 11, 22, 10, 1, tzinfo=UTC)


def feedback(rule_id: str, status: str) -> bytes:
    return orjson.dumps({"intervention_id": "i", "rule_id": rule_id, "status": status})


def test_rates_per_rule_and_a_fresh_start_each_interval() -> None:
    tally = Analytics(worker="w1", started=T1)
    tally.record(["a", "b", "c", "d"], ["r1"], ["r2"], [])
    tally.record(["a", "e"], ["r1"], [], ["r1"])
    for status in ("done", "accepted", "dismissed", "done"):
        tally.record_feedback(feedback("r1", status))
    tally.record_feedback(b"not json")
    tally.record_feedback(feedback("r1", "ignored"))
    records = {r["rule_id"]: r for r in tally.flush(["r1", "r2", "r3"], T2)}
    r1 = records["r1"]
    assert (r1["customers_evaluated"], r1["fired"], r1["capped"]) == (5, 2, 1)
    assert r1["trigger_rate"] == 2 / 5
    assert r1["feedback"] == {"accepted": 1, "done": 2, "dismissed": 1, "expired": 0}
    assert r1["closed_loop_rate"] == 3 / 4
    assert (records["r2"]["shadowed"], records["r2"]["closed_loop_rate"]) == (1, None)
    assert records["r3"]["fired"] == 0
    assert (r1["interval_start"], r1["interval_end"]) == (T1.isoformat(), T2.isoformat())

    [empty] = tally.flush(["r1"], T2)
    assert (empty["customers_evaluated"], empty["fired"], empty["trigger_rate"]) == (0, 0, None)
    assert empty["interval_start"] == T2.isoformat()


def test_metrics_print_as_one_aligned_line() -> None:
    tally = Analytics(worker="w1", started=T1)
    tally.record(["a", "b"], ["builtin.unanswered-outbound"], [], [])
    tally.record_feedback(feedback("builtin.unanswered-outbound", "done"))
    [record] = tally.flush([], T2)
    line = format_metric(record)
    assert line.startswith("10:01:00 builtin.unanswered-outbound")
    assert "customers      2  fired     1 ( 50.0%)" in line
    assert "closed-loop 100.0%  [done 1]" in line


def test_journey_activity_per_variant_with_conversion_and_coverage() -> None:
    from engine.journeys import JourneySignal

    tally = Analytics(worker="w1", started=T1)
    marks = [("guided", "entered"), ("guided", "entered"), ("guided", "covered"),
             ("guided", "converted"), ("holdout", "entered"), ("guided", "intervened")]  # fmt: skip
    tally.record_signals(JourneySignal("trial", variant, what) for variant, what in marks)
    records = {r["variant"]: r for r in tally.flush([], T2) if r["metric"] == "journey_activity"}
    guided = records["guided"]
    assert (guided["entered"], guided["intervened"], guided["converted"]) == (2, 1, 1)
    assert (guided["conversion_rate"], guided["signal_coverage"]) == (0.5, 0.5)
    assert (records["holdout"]["entered"], records["holdout"]["conversion_rate"]) == (1, 0.0)
