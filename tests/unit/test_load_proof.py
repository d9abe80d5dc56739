"""A bundle that loads can always emit: every rule and journey step is rendered once at load
time with the longest inputs the touchpoint contract allows, and must satisfy the
InterventionCommand contract, so nothing a bundle says can fail when a touchpoint arrives.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from engine import interventions
from engine.bundle import InvalidBundle, RuleBundle, load_bundle
from engine.interventions import Template
from engine.limits import ID_MAX, RULE_VERSION_MAX, SHORT_NAME_MAX
from schemas.codec import decode_intervention, encode_intervention
from schemas.models import InterventionKind
from tests.unit.test_rule_docs import DOC_BUNDLES

ROOT = Path(__file__).resolve().parents[2]


def refused(text: str) -> list[str]:
    with pytest.raises(InvalidBundle) as caught:
        load_bundle(text, "team.yaml")
    return [str(p) for p in caught.value.problems]


def journey_bundle(
    journey_id: str = "trial", variant: str = "guided", step_id: str = "welcome", version: int = 1
) -> str:
    return (
        f"bundle: b\nversion: {version}\njourneys:\n"
        f"  - id: {journey_id}\n"
        "    entry: {event: {kind: trial_started}}\n"
        "    variants:\n"
        f"      - name: {variant}\n"
        "        steps:\n"
        f"          - id: {step_id}\n"
        "            after: 1h\n"
        "            then: {kind: task, title: 'Call {customer_id}', due_in: 1d}\n"
    )


def test_a_variant_name_longer_than_the_experiment_contract_allows_is_refused() -> None:
    assert refused(journey_bundle(variant="v" * 97)) == [
        "team.yaml:7: journeys[0].variants[0].name: journey variant name: expected at most "
        f"{SHORT_NAME_MAX} characters, found 97"
    ]
    load_bundle(journey_bundle(variant="v" * SHORT_NAME_MAX))


def test_a_journey_and_step_id_longer_than_a_rule_id_may_be_is_refused() -> None:
    journey_id, step_id = "j" * 100, "s" * 40
    assert refused(journey_bundle(journey_id=journey_id, step_id=step_id)) == [
        "team.yaml:9: journeys[0].variants[0].steps[0].id: journey and step id "
        f"'{journey_id}.{step_id}' is the intervention's rule_id: expected at most {ID_MAX} "
        "characters, found 141"
    ]
    load_bundle(journey_bundle(journey_id="j" * 100, step_id="s" * 27))


def test_a_manager_id_longer_than_a_rep_id_may_be_is_refused() -> None:
    text = (
        "bundle: b\nversion: 1\nmanagers:\n"
        f"  rep-maria: {'m' * 130}\n"
        "rules:\n"
        "  - id: r\n    when: {event: {kind: a}}\n"
        "    then: {kind: task, title: t, due_in: 1h, assignee: manager}\n"
    )
    assert refused(text) == [
        f"team.yaml:4: managers.rep-maria: manager id: expected at most {ID_MAX} characters, "
        "found 130"
    ]


def test_a_version_beyond_the_avro_int_is_refused() -> None:
    [problem] = refused(journey_bundle(version=RULE_VERSION_MAX + 1))
    assert problem == (
        f"team.yaml:2: version: expected a whole number from 1 to {RULE_VERSION_MAX}, "
        f"found {RULE_VERSION_MAX + 1}"
    )
    assert load_bundle(journey_bundle(version=RULE_VERSION_MAX)).version == RULE_VERSION_MAX


@pytest.mark.parametrize("due_in", ["600000w", "99999999999999999999w"])
def test_a_due_in_beyond_the_calendar_is_refused_not_a_crash(due_in: str) -> None:
    text = (
        "bundle: b\nversion: 1\nrules:\n  - id: r\n    when: {event: {kind: a}}\n"
        f"    then: {{kind: task, title: t, due_in: {due_in}}}\n"
    )
    [problem] = refused(text)
    assert problem.startswith("team.yaml:6: rules[0].then.due_in: expected a duration of at most")


def test_membership_lists_hold_single_values_only() -> None:
    text = (
        "bundle: b\nversion: 1\nrules:\n  - id: r\n"
        "    when: {event: {attributes.plan: {in: [[gold, silver], bronze]}}}\n"
        "    then: {kind: task, title: t, due_in: 1h}\n"
    )
    [problem] = refused(text)
    assert problem.startswith("team.yaml:5: rules[0].when.event.attributes.plan.in: expected")
    assert "found a list of 2" in problem


def test_the_dry_run_names_the_field_of_the_contract_that_breaks() -> None:
    template = Template(
        kind=InterventionKind.TASK,
        title="t",
        body="",
        due_in=timedelta(hours=1),
        assignee_role="r" * (SHORT_NAME_MAX + 1),
    )
    with pytest.raises(interventions.ContractBreach) as breach:
        interventions.dry_run(template, rule_id="r", rule_version=1, condition_label="kind eq a")
    assert str(breach.value) == (
        "the intervention it would emit breaks the InterventionCommand contract: "
        f"assignee_role: String should have at most {SHORT_NAME_MAX} characters "
        f"(found {SHORT_NAME_MAX + 1})"
    )


def every_dry_run(bundle: RuleBundle) -> list[bytes]:
    encoded = []
    for rule in bundle.rules:
        for command in interventions.dry_run(
            rule.template,
            rule_id=rule.rule_id,
            rule_version=rule.version,
            condition_label=rule.condition.label,
        ):
            encoded.append(encode_intervention(command))
            assert decode_intervention(encoded[-1]) == command
    for journey in bundle.journeys:
        for variant in journey.variants:
            for step in variant.steps:
                for command in interventions.dry_run(
                    step.template,
                    rule_id=f"{journey.journey_id}.{step.step_id}",
                    rule_version=journey.version,
                    condition_label=f"step {step.step_id} due",
                    experiment=(journey.journey_id, variant.name),
                ):
                    encoded.append(encode_intervention(command))
                    assert decode_intervention(encoded[-1]) == command
    return encoded


def test_every_dry_run_of_the_reference_and_the_packs_encodes_as_avro() -> None:
    texts = [(b.text, f"docs/rules.md:{b.line}") for b in DOC_BUNDLES if not b.invalid]
    texts += [
        (p.read_text(encoding="utf-8"), p.name) for p in (ROOT / "rules" / "examples").glob("*")
    ]
    assert len(texts) > 10
    encoded = [blob for text, source in texts for blob in every_dry_run(load_bundle(text, source))]
    assert len(encoded) > len(texts)


def test_the_longest_names_a_bundle_may_use_still_encode() -> None:
    journey_id, step_id = "j" * 100, "s" * 27
    text = journey_bundle(
        journey_id=journey_id, variant="v" * SHORT_NAME_MAX, step_id=step_id
    ).replace("title: 'Call {customer_id}'", "title: '{observed}', body: '{observed}'")
    text = text.replace("version: 1", f"version: {RULE_VERSION_MAX}")
    text += (
        "managers:\n"
        f"  rep-maria: {'m' * ID_MAX}\n"
        "rules:\n"
        f"  - id: {'r' * ID_MAX}\n"
        "    when: {event: {text: {matches: 'cancel'}}}\n"
        "    then: {kind: task, title: '{observed}', due_in: 3650d, assignee: manager}\n"
        f"  - id: role\n"
        "    when: {event: {kind: a}}\n"
        f"    then: {{kind: task, title: t, due_in: 1h, assignee: 'role:{'p' * 64}'}}\n"
    )
    assert len(every_dry_run(load_bundle(text))) >= 4
