"""The rep-cap stage: interventions keyed by assignee, admitted under a daily cap.

Customers of one rep live on many partitions, so interventions of bundles with a
``per_rep_per_day`` cap go to the ``rep-candidates`` topic keyed by assignee; the
worker that owns the assignee's partition reads them in the same agent, batches and
transactions as touchpoints and admits each intervention id at most once
(engine.assignees.admit).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from faust.types import EventT

from engine.assignees import Admission, Sent, admit, assignee_key
from engine.conditions import micros
from schemas.codec import decode_intervention
from schemas.partitioning import customer_partition
from schemas.topics import INTERVENTIONS

from .state_codec import SentCodec
from .tracing import carried
from .writer import OutRecord

if TYPE_CHECKING:
    from .parts import Warroom

SENT_CODEC = SentCodec()


def admit_candidates(warroom: Warroom, events: Sequence[EventT[Any]]) -> list[OutRecord]:
    """The assignee-keyed stage: admit each intervention under its assignee's daily cap."""
    settings = warroom.settings
    interventions = settings.topic(INTERVENTIONS)
    cap = warroom.pipeline.rulebook.per_rep_per_day
    changed: dict[str, tuple[int, Sent]] = {}
    out: list[OutRecord] = []
    fired: list[str] = []
    capped: list[str] = []
    for event in events:
        message = event.message
        command = decode_intervention(message.value or b"")
        key = assignee_key(command)
        sent = changed[key][1] if key in changed else (warroom.assignees.get(key) or ())
        remembered, admission = admit(
            sent, micros(command.created_at), command.intervention_id, cap
        )
        changed[key] = (message.partition, remembered)
        if admission is Admission.REPEATED:
            warroom.metrics.repeated.inc()
        elif admission is Admission.ADMITTED:
            fired.append(command.rule_id)
            warroom.metrics.interventions.labels(command.rule_id, command.kind.value).inc()
            out.append(
                OutRecord(
                    interventions,
                    customer_partition(command.customer_id, settings.partitions),
                    command.customer_id.encode(),
                    message.value,
                    source_partition=message.partition,
                    headers=carried(message.headers),
                )
            )
        else:
            capped.append(command.rule_id)
            warroom.metrics.capped.labels(command.rule_id).inc()
    changelog = warroom.assignees.changelog
    dumps = SENT_CODEC.dumps
    for key, (partition, remembered) in changed.items():
        warroom.assignees.put(key, partition, remembered)
        out.append(OutRecord(changelog, partition, key.encode(), dumps(remembered)))
    warroom.analytics.record((), fired, (), capped)
    return out
