"""Every Kafka topic Warroom uses: its name, how it is partitioned and its configs.

The worker, the CLI, the connectors and the benchmarks ask this registry; no
other module spells a topic name. Customer topics are keyed by customer id (or,
for ``rep-candidates``, by assignee) and share one partition count so that one
worker owns a customer on all of them; shared topics have one partition and are
read whole.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class Partitioning(StrEnum):
    CUSTOMER = "customer"
    """``WARROOM_PARTITIONS`` partitions, keyed by customer id (co-partitioned)."""
    SINGLE = "single"
    """One partition, read whole by every worker or by people and tools."""


@dataclass(frozen=True, slots=True)
class Topic:
    name: str
    partitioning: Partitioning
    configs: dict[str, str] = field(default_factory=dict)
    purpose: str = ""

    def full_name(self, prefix: str) -> str:
        return f"{prefix}{self.name}"


TOUCHPOINTS = Topic("touchpoints", Partitioning.CUSTOMER, purpose="touchpoints from connectors")
TIMERS = Topic("timers", Partitioning.CUSTOMER, purpose="deadline ticks the worker sends itself")
INTERVENTIONS = Topic("interventions", Partitioning.CUSTOMER, purpose="commands for CRMs")
DLQ = Topic("dlq", Partitioning.CUSTOMER, purpose="rejected input with a reason")
FEEDBACK = Topic("intervention-feedback", Partitioning.CUSTOMER, purpose="CRM outcomes")
REP_CANDIDATES = Topic(
    "rep-candidates", Partitioning.CUSTOMER, purpose="interventions keyed by assignee for rep caps"
)
RULES = Topic(
    "rules", Partitioning.SINGLE, {"cleanup.policy": "compact"}, purpose="rule bundles by name"
)
RULES_ACCEPTED = Topic(
    "rules-accepted",
    Partitioning.SINGLE,
    {"cleanup.policy": "compact"},
    purpose="the bundle version each name last had accepted, written by the workers",
)
CONSENTS = Topic(
    "consents", Partitioning.CUSTOMER, purpose="grants and revocations per customer and purpose"
)
MESSAGE_DRAFTS = Topic(
    "message-drafts",
    Partitioning.CUSTOMER,
    purpose="rep messages to check before sending, gate answers and manager reviews",
)
COMPLIANCE_VERDICTS = Topic(
    "compliance-verdicts", Partitioning.CUSTOMER, purpose="the gate's verdict on each draft, once"
)
AUDIT = Topic(
    "audit",
    Partitioning.CUSTOMER,
    {"retention.ms": "-1"},
    purpose="hash-chained decision log, one chain per partition (engine.audit)",
)
METRICS = Topic("metrics", Partitioning.SINGLE, purpose="business metrics as JSON")
SCORING_EXAMPLES = Topic(
    "scoring-examples",
    Partitioning.SINGLE,
    purpose="labelled examples keyed by score name, in the order the learner folds them",
)
MODELS = Topic(
    "models",
    Partitioning.SINGLE,
    {"cleanup.policy": "compact"},
    purpose="the latest model version per score name, as plain data (streams.scoring)",
)
SCORE_LEADERS = Topic(
    "score-leaders",
    Partitioning.SINGLE,
    {"cleanup.policy": "compact"},
    purpose="each partition's top customers per score and rep, keyed by score/partition",
)

ALL_TOPICS: tuple[Topic, ...] = (
    TOUCHPOINTS,
    TIMERS,
    INTERVENTIONS,
    DLQ,
    FEEDBACK,
    REP_CANDIDATES,
    CONSENTS,
    MESSAGE_DRAFTS,
    COMPLIANCE_VERDICTS,
    RULES,
    RULES_ACCEPTED,
    AUDIT,
    METRICS,
    SCORING_EXAMPLES,
    MODELS,
    SCORE_LEADERS,
)
CUSTOMER_TOPICS: tuple[Topic, ...] = tuple(
    t for t in ALL_TOPICS if t.partitioning is Partitioning.CUSTOMER
)
TAILABLE: tuple[Topic, ...] = (INTERVENTIONS, DLQ, METRICS, AUDIT, COMPLIANCE_VERDICTS)
"""Topics ``warroom tail`` can follow."""


def by_name(name: str) -> Topic:
    """The registered topic called ``name`` (without prefix)."""
    for topic in ALL_TOPICS:
        if topic.name == name:
            return topic
    known = ", ".join(t.name for t in ALL_TOPICS)
    raise KeyError(f"no topic {name!r}; expected one of {known}")
