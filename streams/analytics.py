"""Business metrics for analysts, published as JSON to the ``metrics`` topic.

Every interval each worker publishes, per running rule, what happened on its
partitions during the interval:

* ``customers_evaluated``: distinct customers whose touchpoints or timers were
  evaluated (every running rule is evaluated for each of them);
* ``fired`` / ``shadowed`` / ``capped``: interventions emitted, recorded by rules in
  shadow mode, held back by a daily cap;
* ``trigger_rate``: fired / customers_evaluated;
* ``feedback``: statuses the CRM reported on ``intervention-feedback``
  (accepted, done, dismissed, expired) for the rule's interventions;
* ``closed_loop_rate``: (accepted + done) / all feedback received, or null.

And per journey and variant (``journey_activity``): customers who ``entered``,
interventions its steps decided (``intervened``; a daily cap may have held some
back), customers who ``completed`` the steps, ``converted`` or ``exited``, the
``conversion_rate`` (converted / entered, within the interval) and the
``signal_coverage`` (customers whose journey's ``required_signals`` all arrived /
entered).

And for compliance and consent:

* ``policy_activity`` per policy and mode: what the policy decided for the drafts of the
  interval (``allow``/``remind``/``confirm``/``block`` counts), whatever its mode, so a
  policy in ``test`` mode shows what it would have blocked before it is enforced;
* ``rep_compliance`` per rep: findings by category in the rep's drafts (sum the
  intervals of the last 30 days for a rep's profile);
* ``consent_activity`` per segment and purpose: grants, revocations and the
  ``completion_rate`` (grants / answers) of the interval.

Records of several workers for the same interval add up: sum the counts, then
divide. Counts are exact for interventions (they come from committed batches)
and at-least-once for feedback.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer

from connectors.kafka_security import PLAINTEXT, KafkaSecurity
from engine.journeys import JourneySignal
from schemas.models import ComplianceVerdict, ConsentChange

log = logging.getLogger(__name__)

STATUSES = ("accepted", "done", "dismissed", "expired")
VERDICTS = ("allow", "remind", "confirm", "block")
JOURNEY_SIGNALS = ("entered", "intervened", "completed", "converted", "exited", "covered")


@dataclass
class RuleTally:
    fired: int = 0
    shadowed: int = 0
    capped: int = 0
    feedback: Counter[str] = field(default_factory=Counter)


@dataclass
class Analytics:
    """Tallies of one worker for the current interval."""

    worker: str
    started: datetime = field(default_factory=lambda: datetime.now(UTC))
    customers: set[str] = field(default_factory=set)
    rules: defaultdict[str, RuleTally] = field(default_factory=lambda: defaultdict(RuleTally))
    invalid_feedback: int = 0
    journeys: defaultdict[tuple[str, str], Counter[str]] = field(
        default_factory=lambda: defaultdict(Counter)
    )
    policies: defaultdict[tuple[str, str], Counter[str]] = field(
        default_factory=lambda: defaultdict(Counter)
    )
    reps: defaultdict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    consents: defaultdict[tuple[str, str], Counter[str]] = field(
        default_factory=lambda: defaultdict(Counter)
    )

    def record_verdicts(self, verdicts: Iterable[ComplianceVerdict]) -> None:
        for verdict in verdicts:
            for outcome in verdict.policies:
                self.policies[(outcome.policy_id, outcome.mode)][outcome.verdict.value] += 1
                if outcome.mode != "test":
                    for finding in outcome.findings:
                        self.reps[verdict.rep_id][finding.category] += 1

    def record_consents(self, changes: Iterable[ConsentChange]) -> None:
        for change in changes:
            tally = self.consents[(change.segment or "unknown", change.purpose)]
            tally["granted" if change.granted else "revoked"] += 1

    def record_signals(self, signals: Iterable[JourneySignal]) -> None:
        for signal in signals:
            self.journeys[(signal.journey_id, signal.variant)][signal.what] += 1

    def record(
        self,
        customers: Iterable[str],
        fired: Iterable[str],
        shadowed: Iterable[str],
        capped: Iterable[str],
    ) -> None:
        """Account for a batch: customers evaluated and rule ids of its decisions."""
        self.customers.update(customers)
        for rule_id in fired:
            self.rules[rule_id].fired += 1
        for rule_id in shadowed:
            self.rules[rule_id].shadowed += 1
        for rule_id in capped:
            self.rules[rule_id].capped += 1

    def record_feedback(self, value: bytes | None) -> None:
        try:
            data = orjson.loads(value or b"")
            rule_id, status = str(data["rule_id"]), str(data["status"])
        except (orjson.JSONDecodeError, KeyError, TypeError):
            self.invalid_feedback += 1
            return
        if status not in STATUSES:
            self.invalid_feedback += 1
            return
        self.rules[rule_id].feedback[status] += 1

    def flush(self, rule_ids: Iterable[str], now: datetime) -> list[dict[str, Any]]:
        """One record per running rule (and any rule with feedback), then start afresh."""
        evaluated = len(self.customers)
        records = []
        for rule_id in sorted(set(rule_ids) | set(self.rules)):
            tally = self.rules.get(rule_id, RuleTally())
            answered = sum(tally.feedback.values())
            acted = tally.feedback["accepted"] + tally.feedback["done"]
            records.append(
                {
                    "metric": "rule_activity",
                    "rule_id": rule_id,
                    "worker": self.worker,
                    "interval_start": self.started.isoformat(),
                    "interval_end": now.isoformat(),
                    "customers_evaluated": evaluated,
                    "fired": tally.fired,
                    "shadowed": tally.shadowed,
                    "capped": tally.capped,
                    "trigger_rate": tally.fired / evaluated if evaluated else None,
                    "feedback": {status: tally.feedback[status] for status in STATUSES},
                    "closed_loop_rate": acted / answered if answered else None,
                }
            )
        for (journey_id, variant), counts in sorted(self.journeys.items()):
            entered = counts["entered"]
            records.append(
                {
                    "metric": "journey_activity",
                    "journey_id": journey_id,
                    "variant": variant,
                    "worker": self.worker,
                    "interval_start": self.started.isoformat(),
                    "interval_end": now.isoformat(),
                    **{what: counts[what] for what in JOURNEY_SIGNALS},
                    "conversion_rate": counts["converted"] / entered if entered else None,
                    "signal_coverage": counts["covered"] / entered if entered else None,
                }
            )
        records.extend(self._compliance_records(now))
        if self.invalid_feedback:
            log.warning("%d feedback records were not understood", self.invalid_feedback)
        self.started = now
        self.customers = set()
        self.rules = defaultdict(RuleTally)
        self.invalid_feedback = 0
        self.journeys = defaultdict(Counter)
        self.policies = defaultdict(Counter)
        self.reps = defaultdict(Counter)
        self.consents = defaultdict(Counter)
        return records

    def _compliance_records(self, now: datetime) -> list[dict[str, Any]]:
        interval = {
            "worker": self.worker,
            "interval_start": self.started.isoformat(),
            "interval_end": now.isoformat(),
        }
        records: list[dict[str, Any]] = []
        for (policy_id, mode), counts in sorted(self.policies.items()):
            records.append(
                {
                    "metric": "policy_activity",
                    "policy_id": policy_id,
                    "mode": mode,
                    **interval,
                    "decided": {v: counts[v] for v in VERDICTS},
                }
            )
        for rep_id, categories in sorted(self.reps.items()):
            records.append(
                {
                    "metric": "rep_compliance",
                    "rep_id": rep_id,
                    **interval,
                    "findings": dict(sorted(categories.items())),
                }
            )
        for (segment, purpose), counts in sorted(self.consents.items()):
            answers = counts["granted"] + counts["revoked"]
            records.append(
                {
                    "metric": "consent_activity",
                    "segment": segment,
                    "purpose": purpose,
                    **interval,
                    "granted": counts["granted"],
                    "revoked": counts["revoked"],
                    "completion_rate": counts["granted"] / answers if answers else None,
                }
            )
        return records


async def publish_metrics(
    bootstrap_servers: str,
    topic: str,
    analytics: Analytics,
    rule_ids: Callable[[], Iterable[str]],
    interval: float,
    security: KafkaSecurity = PLAINTEXT,
) -> None:
    """Every ``interval`` seconds, write the worker's tallies to the metrics topic."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap_servers, acks="all", **security.client_options()
    )
    await producer.start()
    try:
        while True:
            await asyncio.sleep(interval)
            for record in analytics.flush(rule_ids(), datetime.now(UTC)):
                key = str(
                    record.get("rule_id")
                    or record.get("journey_id")
                    or record.get("policy_id")
                    or record.get("rep_id")
                    or record.get("segment")
                )
                await producer.send(topic, orjson.dumps(record), key=key.encode())
            await producer.flush()
    finally:
        await producer.stop()
