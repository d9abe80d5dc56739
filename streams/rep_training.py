"""The rep stage for compliance: each rep's findings, and training when a pattern shows.

A verdict with findings (of a policy not in ``test`` mode) goes to ``rep-candidates``
keyed by ``findings:<rep id>``, so the worker that owns that key's partition holds the
rep's recent findings (in the assignee table, same transactions as everything else)
and decides training interventions (engine.training) exactly once.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from engine.conditions import micros
from engine.interventions import intervention_id
from engine.training import Findings, tally
from schemas.codec import compliance_verdict_codec, encode_intervention
from schemas.models import (
    ComplianceVerdict,
    Explanation,
    InterventionCommand,
    InterventionKind,
    Match,
    Priority,
)
from schemas.partitioning import customer_partition
from schemas.topics import INTERVENTIONS

from .state_codec import SentCodec
from .writer import OutRecord

if TYPE_CHECKING:
    from .parts import Warroom

FINDINGS_PREFIX = "findings:"
TRAINING_VERSION = 1
CODEC = SentCodec()


def findings_key(verdict: ComplianceVerdict) -> str | None:
    """The rep-stage key of a verdict worth counting, or None (nothing found, or only by
    policies in test mode)."""
    if any(p.findings for p in verdict.policies if p.mode != "test"):
        return f"{FINDINGS_PREFIX}{verdict.rep_id}"
    return None


def is_findings(value: bytes | None) -> bool:
    return value is not None and compliance_verdict_codec().avro.knows(value)


def train_reps(
    warroom: Warroom, values: Sequence[tuple[int, bytes]]
) -> tuple[list[OutRecord], list[tuple[int, dict[str, Any]]]]:
    """Count each verdict's findings for its rep; training interventions and their audit
    entries for the rules that fire. ``values``: (partition, verdict record)."""
    settings = warroom.settings
    rules = [rule for policy in warroom.pipeline.rulebook.policies for rule in policy.training]
    changed: dict[str, tuple[int, Findings]] = {}
    out: list[OutRecord] = []
    audit: list[tuple[int, dict[str, Any]]] = []
    now = datetime.now(UTC)
    for partition, value in values:
        verdict = compliance_verdict_codec().decode(value)
        key = f"{FINDINGS_PREFIX}{verdict.rep_id}"
        findings = changed[key][1] if key in changed else (warroom.assignees.get(key) or ())
        categories = {f.category for p in verdict.policies if p.mode != "test" for f in p.findings}
        result = tally(findings, micros(verdict.decided_at), verdict.draft_id, categories, rules)
        if result.repeated:
            continue
        changed[key] = (partition, result.findings)
        for fired, count in result.fired:
            rule: Any = fired  # a policy's TrainingRule (engine.compliance)
            command = _training(verdict, rule, count, now)
            out.append(
                OutRecord(
                    settings.topic(INTERVENTIONS),
                    customer_partition(command.customer_id, settings.partitions),
                    command.customer_id.encode(),
                    encode_intervention(command),
                    source_partition=partition,
                )
            )
            warroom.metrics.interventions.labels(command.rule_id, command.kind.value).inc()
            audit.append(
                (
                    partition,
                    {
                        "event": "training_assigned",
                        "rep_id": verdict.rep_id,
                        "intervention_id": command.intervention_id,
                        "lesson_id": rule.lesson_id,
                        "category": rule.category,
                        "findings": count,
                        "within_days": rule.within_days,
                    },
                )
            )
    changelog = warroom.assignees.changelog
    for key, (partition, findings) in changed.items():
        warroom.assignees.put(key, partition, findings)
        out.append(OutRecord(changelog, partition, key.encode(), CODEC.dumps(findings)))
    return out, audit


def _training(
    verdict: ComplianceVerdict, rule: Any, count: int, now: datetime
) -> InterventionCommand:
    rule_id = f"training.{rule.lesson_id}"
    return InterventionCommand(
        intervention_id=intervention_id(
            rule_id, TRAINING_VERSION, verdict.customer_id, (verdict.draft_id,)
        ),
        customer_id=verdict.customer_id,
        rep_id=verdict.rep_id,
        rule_id=rule_id,
        rule_version=TRAINING_VERSION,
        kind=InterventionKind.TRAINING,
        priority=Priority.NORMAL,
        title=rule.title[:500],
        body=rule.body[:20_000],
        due_at=now + timedelta(days=7),
        explanation=Explanation(
            matched=[
                Match(
                    condition=(
                        f"{rule.category} findings within {rule.within_days}d >= {rule.at_least}"
                    ),
                    observed=str(count),
                )
            ],
            triggering_event_ids=[verdict.draft_id],
        ),
        created_at=now,
    )
