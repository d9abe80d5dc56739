"""The `make bench` suite's own parts: generated rules, workload, decoding, table."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bench.cases import full_workload
from bench.cases.generated_rules import TEMPLATES, generate_bundle, generate_rules, kinds_used
from bench.cases.kinds import KINDS
from bench.cases.latency import percentile
from bench.cases.plain_avro import PlainDecoder
from bench.cases.summary import Row, ratio, render
from bench.cases.worker_result import Clock
from engine.builtin import BUILTIN_BUNDLE
from engine.bundle import load_bundle
from engine.rulebook import RuleBook
from schemas.codec import (
    consent_change_codec,
    decode_touchpoint,
    decode_touchpoints,
    message_draft_codec,
)

NOW = datetime(2026, 12, 1, 12, tzinfo=UTC)


def test_the_generated_bundle_loads_with_100_rules_over_the_20_kinds() -> None:
    bundle = load_bundle(generate_bundle(100, 12), "generated.yaml")
    rules = generate_rules(100, 12)

    assert len(KINDS) == 20
    assert len(bundle.rules) == 100
    assert kinds_used(rules) == {kind.name for kind in KINDS}
    shapes = {rule["id"].split("-", 1)[1] for rule in rules}
    assert shapes == {name for name, _ in TEMPLATES}
    assert any("purposes" in rule["then"] for rule in rules)


@pytest.mark.parametrize("seed", [1, 99])
def test_every_seed_gives_a_bundle_that_loads(seed: int) -> None:
    assert len(load_bundle(generate_bundle(100, seed), f"seed-{seed}.yaml").rules) == 100


def test_the_generator_is_deterministic_per_seed() -> None:
    assert generate_bundle(100, 12) == generate_bundle(100, 12)
    assert generate_bundle(100, 12) != generate_bundle(100, 13)


def test_the_full_pipeline_bundles_run_together() -> None:
    book = RuleBook(BUILTIN_BUNDLE)
    for source, text in full_workload.bundles():
        verdict = book.offer(text, source)
        assert verdict.accepted, verdict.problems

    assert set(book.scores) == {"lead", "win", "churn"}
    assert len(book.policies) == 1
    assert len(book.rules) >= 100


def test_a_prefix_holds_the_first_touchpoints_both_ways_with_their_drafts() -> None:
    workload = full_workload.build(900, 60, 0.9, 5, NOW, 4, envelope_chunk=250, cuts=(400,))
    prefix = workload.prefix(400)

    singles = [decode_touchpoint(value) for _, _, value in prefix.singles]
    enveloped = [event for _, _, value in prefix.envelopes for event in decode_touchpoints(value)]
    assert len(singles) == 400
    assert sorted(e.event_id for e in enveloped) == sorted(e.event_id for e in singles)
    outbound = {
        e.event_id for e in singles if e.text is not None and e.direction.value == "outbound"
    }
    drafts = [message_draft_codec().decode(value) for _, _, value in prefix.drafts]
    assert {d.draft_id.removeprefix("draft-") for d in drafts} == outbound
    assert outbound
    changes = [consent_change_codec().decode(value) for _, _, value in workload.consents]
    assert {c.purpose for c in changes} == {"marketing", "contact_by_chat", "profiling"}
    with pytest.raises(ValueError, match="prefix length"):
        workload.prefix(401)


def test_the_plain_decoder_reads_what_warroom_reads() -> None:
    workload = full_workload.build(50, 10, 0.9, 3, NOW, 4)
    decode = PlainDecoder()
    for _, _, value in workload.singles:
        plain = decode(value)
        event = decode_touchpoint(value)
        assert plain["event_id"] == event.event_id
        assert plain["kind"] == event.kind
        assert plain["occurred_at"] == event.occurred_at
    with pytest.raises(ValueError, match="C3 01 marker"):
        decode(b"\x00\x01" + workload.singles[0][2][2:])


def test_percentile_is_the_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.5) == 50.0
    assert percentile(values, 0.99) == 99.0
    assert percentile([7.0], 0.99) == 7.0
    assert percentile([], 0.5) is None


def _row(case: str, rate: float) -> Row:
    return Row(case, 1, 1000, 1000 / rate, rate, None, 90.0, 0.5, 3)


def test_the_table_shows_each_rate_against_naive_ceiling_and_quix() -> None:
    rows = [
        _row("ceiling", 400_000.0),
        _row("naive", 2_000.0),
        _row("quix", 50_000.0),
        _row("full-single", 20_000.0),
    ]
    table = render(rows).splitlines()
    full = next(line for line in table if line.startswith("| full-single"))
    quix = next(line for line in table if line.startswith("| quix"))

    assert ratio({"a": 3.0, "b": 2.0}, "a", "b") == 1.5
    assert ratio({"a": 3.0}, "a", "b") is None
    assert ratio({"a": 3.0, "b": 0.0}, "a", "b") is None
    # full-single: 10x naive, 0.05x the ceiling, 0.4x Quix
    assert [c.strip() for c in full.split("|")[7:10]] == ["10.00x", "0.05x", "0.40x"]
    # no "vs quix" for a peer's own row
    assert [c.strip() for c in quix.split("|")[7:10]] == ["25.00x", "0.12x", "-"]


def test_a_worker_clock_writes_its_result_at_the_n_th_input(tmp_path: Path) -> None:
    config = {
        "case": "quix",
        "expected": 5,
        "result_path": str(tmp_path / "result.json"),
        "started_path": str(tmp_path / "started"),
    }
    clock = Clock(config)
    clock.writes_per_event = 1
    clock.begin()

    assert (tmp_path / "started").exists()
    assert not clock.add(4)
    assert not (tmp_path / "result.json").exists()
    assert clock.add(2)
    result = json.loads((tmp_path / "result.json").read_text())
    assert (result["events"], result["state_writes"], result["case"]) == (6, 6, "quix")
    assert result["seconds"] >= 0


def test_the_in_process_pipeline_bench_runs_every_part_and_leaves_out_what_it_is_told() -> None:
    from bench import pipeline_micro

    workload = full_workload.build(300, 60, 0.9, 7, datetime.now(UTC), pipeline_micro.PARTITIONS)
    _, everything = pipeline_micro.run(workload, set(), singles=False, batch=100)
    _, singles = pipeline_micro.run(workload, set(), singles=True, batch=100)
    _, without_rules = pipeline_micro.run(workload, {"rules"}, singles=False, batch=100)

    assert everything > 0, "the full workload raised no intervention in process"
    assert singles == everything, (
        f"the same touchpoints one per record: expected {everything} interventions, found {singles}"
    )
    assert without_rules < everything, (
        f"without the generated rules: expected fewer than {everything} interventions, "
        f"found {without_rules}"
    )
