"""The full-pipeline workload: touchpoints over 20 kinds, drafts, consents, bundles.

Touchpoints: Zipf-skewed customers, kinds drawn by weight from bench/cases/kinds.py,
message kinds with text. Every outbound message (message_sent, email_sent) is first a
draft on ``message-drafts``, which the worker's compliance gate judges with the running
policy (rules/policies/default.yaml); some words of the texts are ones the policy looks
for. A share of customers grant or revoke consent purposes on ``consents``, which the
generated rules' actions need. The bundles pushed are the example packs, the default
policy, the three scores (lead, win, churn) and 100 generated rules.
"""

from __future__ import annotations

import itertools
import random
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.cases.generated_rules import generate_bundle
from bench.cases.kinds import KINDS, WORDS, Kind

if TYPE_CHECKING:
    from schemas.models import ConsentChange, MessageDraft, TouchpointEvent

REPO_ROOT = Path(__file__).resolve().parents[2]
PACK_FILES = sorted((REPO_ROOT / "rules" / "examples").glob("*.yaml"))
POLICY_FILE = REPO_ROOT / "rules" / "policies" / "default.yaml"
SCORES_BUNDLE = """\
bundle: bench-scores
version: 1
description: The three scores of the full pipeline, untrained until labels arrive.
scoring:
  profile: [plan]
  scores:
    lead:
      labels: {quote_sent: 1}
      timeout: {after: 30d, label: 0}
    win:
      labels: {deal_won: 1, deal_lost: 0}
    churn:
      labels: {churned: 1}
      timeout: {after: 90d, label: 0}
"""
GENERATED_RULES = 100
GENERATED_SEED = 12
CONSENT_PURPOSES = (
    ("marketing", True, 0.30),
    ("contact_by_chat", True, 0.15),
    ("profiling", False, 0.05),
)
"""(purpose, granted, share of customers) of the consent records."""
_INDUSTRIES = ("retail", "saas", "fintech", "healthcare", "logistics", "education", "media")

Record = tuple[int, bytes | None, bytes]


def bundles(rules: int = GENERATED_RULES, seed: int = GENERATED_SEED) -> list[tuple[str, str]]:
    """(source, YAML text) of every bundle the full pipeline runs, in push order."""
    out = [(str(path), path.read_text(encoding="utf-8")) for path in PACK_FILES]
    out.append((str(POLICY_FILE), POLICY_FILE.read_text(encoding="utf-8")))
    out.append(("bench-scores.yaml", SCORES_BUNDLE))
    out.append((f"generated-{rules}-seed{seed}.yaml", generate_bundle(rules, seed)))
    return out


def message_text(rng: random.Random, kind: Kind) -> str:
    sentence = " ".join(rng.sample(WORDS, rng.randint(6, 14))).capitalize()
    if kind.text == "email":
        return "Re: " + " ".join(rng.sample(WORDS, 3)) + " - " + sentence + "."
    return sentence + rng.choice(("?", ".", "!"))


def attributes_for(
    rng: random.Random, kind: Kind, number: int
) -> dict[str, bool | int | float | str]:
    out: dict[str, bool | int | float | str] = {}
    for attribute in kind.attributes:
        if attribute.numbers is not None:
            out[attribute.name] = rng.randint(*attribute.numbers)
        elif attribute.values:
            out[attribute.name] = rng.choice(attribute.values)
        else:
            out[attribute.name] = f"th-{number:06d}-{rng.randrange(40):02d}"
    return out


@dataclass
class Customers:
    """Who the workload's customers are: owner rep and industry, fixed by the seed."""

    count: int
    skew: float
    seed: int
    numbers: list[int] = field(default_factory=list)
    cumulative: list[float] = field(default_factory=list)
    reps: list[str] = field(default_factory=list)
    industries: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        rng = random.Random(self.seed)
        self.numbers = list(range(self.count))
        rng.shuffle(self.numbers)  # rank -> customer number: the heavy customers land anywhere
        self.cumulative = list(
            itertools.accumulate(1.0 / (rank**self.skew) for rank in range(1, self.count + 1))
        )
        self.reps = [f"rep-{rng.randrange(120):03d}" for _ in range(self.count)]
        self.industries = [rng.choice(_INDUSTRIES) for _ in range(self.count)]

    @staticmethod
    def customer_id(number: int) -> str:
        return f"cus-{number:06d}"


def touchpoints(
    n: int, customers: Customers, seed: int, start: datetime, step: timedelta
) -> Iterator[TouchpointEvent]:
    """``n`` touchpoints, the i-th dated ``start + i * step``."""
    from schemas.models import Channel, Direction, TouchpointEvent

    rng = random.Random(seed)
    cum_kinds = list(itertools.accumulate(k.weight for k in KINDS))
    chunk = 10_000
    for base in range(0, n, chunk):
        size = min(chunk, n - base)
        ranks = rng.choices(range(customers.count), cum_weights=customers.cumulative, k=size)
        kinds = rng.choices(KINDS, cum_weights=cum_kinds, k=size)
        for offset, (rank, kind) in enumerate(zip(ranks, kinds, strict=True)):
            number = customers.numbers[rank]
            occurred = start + step * (base + offset)
            human = kind.message or kind.channel in ("call", "meeting", "crm")
            yield TouchpointEvent(
                event_id=str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                customer_id=Customers.customer_id(number),
                occurred_at=occurred,
                received_at=occurred + timedelta(milliseconds=rng.randrange(20, 1500)),
                channel=Channel(kind.channel),
                kind=kind.name,
                direction=Direction(kind.direction),
                rep_id=customers.reps[number] if human else None,
                contact_id=f"ct-{number:06d}-{rng.randrange(3)}" if human else None,
                text=message_text(rng, kind) if kind.message else None,
                attributes=attributes_for(rng, kind, number),
                source="bench-full/1.0",
                industry=customers.industries[number],
            )


def draft_of(event: TouchpointEvent) -> MessageDraft | None:
    """The draft an outbound message was before it was sent (None for other touchpoints)."""
    from schemas.models import MessageDraft

    if event.text is None or event.direction.value != "outbound" or event.rep_id is None:
        return None
    return MessageDraft(
        draft_id=f"draft-{event.event_id}",
        customer_id=event.customer_id,
        rep_id=event.rep_id,
        text=event.text,
        kind="email" if event.channel.value == "email" else "message",
        channel=event.channel,
        created_at=event.occurred_at - timedelta(seconds=5),
    )


def consents(customers: Customers, seed: int, at: datetime) -> list[ConsentChange]:
    """Consent records of a share of the customers, dated ``at``."""
    from schemas.models import ConsentChange

    rng = random.Random(seed + 1)
    out = []
    for number in range(customers.count):
        for purpose, granted, share in CONSENT_PURPOSES:
            if rng.random() < share:
                out.append(
                    ConsentChange(
                        change_id=f"consent-{number:06d}-{purpose}",
                        customer_id=Customers.customer_id(number),
                        purpose=purpose,
                        granted=granted,
                        occurred_at=at,
                        source="bench-full/1.0",
                        segment=customers.industries[number],
                    )
                )
    return out


@dataclass
class Prefix:
    """The first ``events`` touchpoints of a workload, encoded, with their drafts."""

    events: int
    singles: list[Record]
    envelopes: list[Record]
    drafts: list[Record]


@dataclass
class FullWorkload:
    """The full-pipeline input, encoded: touchpoints both ways, drafts and consents."""

    singles: list[Record]
    envelopes: list[Record]
    drafts: list[tuple[int, Record]]
    """(index of the outbound message touchpoint, draft record)."""
    consents: list[Record]
    events: int
    customers: int
    kinds: dict[str, int]
    mean_event_bytes: float
    envelope_ends: dict[int, int] = field(default_factory=dict)
    """Events so far -> envelope records so far, at every envelope chunk's end."""
    seconds: float = 0.0

    def prefix(self, events: int) -> Prefix:
        """The first ``events`` touchpoints (a length ``build`` was asked to cut at)."""
        if events not in self.envelope_ends:
            raise ValueError(
                f"expected a prefix length the envelopes were cut at "
                f"({', '.join(map(str, sorted(self.envelope_ends)))}), found {events}"
            )
        return Prefix(
            events,
            self.singles[:events],
            self.envelopes[: self.envelope_ends[events]],
            [record for index, record in self.drafts if index < events],
        )

    def summary(self) -> dict[str, Any]:
        return {
            "events": self.events,
            "customers": self.customers,
            "single_records": len(self.singles),
            "envelope_records": len(self.envelopes),
            "drafts": len(self.drafts),
            "consents": len(self.consents),
            "kinds": self.kinds,
            "mean_event_bytes": self.mean_event_bytes,
            "generate_seconds": self.seconds,
        }


def build(
    n: int,
    customer_count: int,
    skew: float,
    seed: int,
    now: datetime,
    partitions: int,
    envelope_chunk: int = 2000,
    cuts: Sequence[int] = (),
) -> FullWorkload:
    """``n`` touchpoints over the six hours before ``now``, with their drafts and consents;
    envelopes also end at each of ``cuts`` (see ``FullWorkload.prefix``)."""
    import time

    from connectors.publisher import envelopes
    from schemas.codec import consent_change_codec, encode_touchpoint, message_draft_codec
    from schemas.partitioning import customer_partition

    started = time.perf_counter()
    customers = Customers(customer_count, skew, seed)
    ends = {n, *cuts}
    envelope_ends: dict[int, int] = {}
    start = now - timedelta(hours=6)
    step = timedelta(hours=6) / max(1, n)
    singles: list[Record] = []
    enveloped: list[Record] = []
    drafts: list[tuple[int, Record]] = []
    chunk: list[TouchpointEvent] = []
    kinds: Counter[str] = Counter()
    size = 0
    draft_codec = message_draft_codec()
    for index, event in enumerate(touchpoints(n, customers, seed, start, step)):
        value = encode_touchpoint(event)
        partition = customer_partition(event.customer_id, partitions)
        key = event.customer_id.encode()
        singles.append((partition, key, value))
        size += len(value)
        kinds[event.kind] += 1
        draft = draft_of(event)
        if draft is not None:
            drafts.append((index, (partition, key, draft_codec.encode(draft))))
        chunk.append(event)
        if len(chunk) >= envelope_chunk or index + 1 in ends:
            enveloped.extend(envelopes(chunk, partitions))
            chunk.clear()
            envelope_ends[index + 1] = len(enveloped)
    consent_codec = consent_change_codec()
    consent_records: list[Record] = [
        (
            customer_partition(change.customer_id, partitions),
            change.customer_id.encode(),
            consent_codec.encode(change),
        )
        for change in consents(customers, seed, start - timedelta(hours=1))
    ]
    return FullWorkload(
        singles=singles,
        envelopes=enveloped,
        drafts=drafts,
        consents=consent_records,
        events=n,
        customers=customer_count,
        kinds=dict(kinds.most_common()),
        mean_event_bytes=round(size / max(1, n), 1),
        envelope_ends=envelope_ends,
        seconds=round(time.perf_counter() - started, 1),
    )
