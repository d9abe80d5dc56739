"""State bytes per customer of the full pipeline, at a given number of customers.

Template customers go through the worker's own batch pipeline (``streams.app.
build_pipeline`` with the full rulebook and the three scores, no Kafka): their consents,
then 6 to 24 touchpoints each over 1 to 30 days (the workload's 20 kinds, drafts of
outbound messages judged too). Each of ``customers`` customers is then a template's
encoded state under its own customer id (as bench/state_store.py does: ids of the same
length, so each customer's record has its template's size), and its changelog record
(key + value, as the worker writes it) is measured.
bench/state_store.py (`make bench-state`) adds the heap and RocksDB disk per customer.
"""

from __future__ import annotations

import random
import statistics
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from bench.cases import full_workload
from bench.cases.kinds import KINDS

if TYPE_CHECKING:
    from schemas.models import TouchpointEvent


@dataclass
class StateBytes:
    customers: int
    templates: int
    touchpoints: int
    mean: float
    p50: int
    p99: int
    largest: int
    total_mib: float
    seconds: float


def _history(
    rng: random.Random, number: int, customers: full_workload.Customers, now: datetime
) -> list[TouchpointEvent]:
    from schemas.models import Channel, Direction, TouchpointEvent

    weights = [k.weight for k in KINDS]
    at = now - timedelta(days=rng.uniform(1, 30))
    out = []
    for kind in rng.choices(KINDS, weights=weights, k=rng.randint(6, 24)):
        at = min(now, at + timedelta(minutes=rng.randint(5, 600)))
        human = kind.message or kind.channel in ("call", "meeting", "crm")
        out.append(
            TouchpointEvent(
                event_id=str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                customer_id=full_workload.Customers.customer_id(number),
                occurred_at=at,
                received_at=at,
                channel=Channel(kind.channel),
                kind=kind.name,
                direction=Direction(kind.direction),
                rep_id=customers.reps[number] if human else None,
                contact_id=f"ct-{number:06d}" if human else None,
                text=full_workload.message_text(rng, kind) if kind.message else None,
                attributes=full_workload.attributes_for(rng, kind, number),
                source="bench-state/1.0",
                industry=customers.industries[number],
            )
        )
    return out


def measure(
    customers: int, templates: int, seed: int, bundles: Sequence[tuple[str, str]]
) -> StateBytes:
    import time

    import orjson
    import zstandard

    from engine.builtin import BUILTIN_BUNDLE
    from engine.bundle import load_bundle
    from engine.rulebook import RuleBook
    from engine.state import CustomerState
    from schemas.codec import consent_change_codec, encode_touchpoint, message_draft_codec
    from schemas.partitioning import customer_partition
    from streams.app import build_pipeline
    from streams.pipeline import RawRecord
    from streams.scoring import Scoring
    from streams.settings import Settings
    from streams.state_codec import STATE_ZSTD_LEVEL, CustomerStateCodec

    started = time.perf_counter()
    book = RuleBook(BUILTIN_BUNDLE, *(load_bundle(text, source) for source, text in bundles))
    settings = Settings(max_clock_skew_seconds=3600)
    pipeline = build_pipeline(settings, book, Scoring(book))
    now = datetime.now(UTC)
    population = full_workload.Customers(templates, 0.9, seed)
    rng = random.Random(seed)
    draft_codec = message_draft_codec()
    consent_codec = consent_change_codec()
    store: dict[str, CustomerState] = {}
    consents = full_workload.consents(population, seed, now - timedelta(days=31))
    count = 0

    def run(topic: str, key: str, value: bytes) -> None:
        partition = customer_partition(key, settings.partitions)
        record = RawRecord(settings.topic(topic), partition, 0, key.encode(), value)
        result = pipeline.process([record], store.get, now)
        if result.dead_letters:
            letter = result.dead_letters[0][1]
            raise RuntimeError(f"expected no dead letters, found {letter.reason}: {letter.detail}")
        for changed in result.states.values():
            store.update(changed)

    for change in consents:
        run("consents", change.customer_id, consent_codec.encode(change))
    for number in range(templates):
        for event in _history(rng, number, population, now):
            draft = full_workload.draft_of(event)
            if draft is not None:
                run("message-drafts", event.customer_id, draft_codec.encode(draft))
            run("touchpoints", event.customer_id, encode_touchpoint(event))
            count += 1
    codec = CustomerStateCodec()
    # The ids are swapped in each template's JSON, which is then compressed as the
    # worker's codec compresses it (in compressed bytes the id cannot be found).
    compressor = zstandard.ZstdCompressor(level=STATE_ZSTD_LEVEL)
    plain = [
        (customer_id.encode(), orjson.dumps(state.to_dict()))
        for customer_id, state in sorted(store.items())
    ]
    first_key, first_value = plain[0]
    if codec.loads(compressor.compress(first_value)) != store[first_key.decode()]:
        raise RuntimeError("expected the compressed JSON to load as the state it came from")
    sizes = []
    for number in range(customers):
        template_key, template_value = plain[number % len(plain)]
        key = full_workload.Customers.customer_id(number).encode()
        value = compressor.compress(template_value.replace(template_key, key))
        sizes.append(len(key) + len(value))
    quantiles = statistics.quantiles(sizes, n=100)
    return StateBytes(
        customers=customers,
        templates=len(plain),
        touchpoints=count,
        mean=round(statistics.fmean(sizes), 1),
        p50=int(quantiles[49]),
        p99=int(quantiles[98]),
        largest=max(sizes),
        total_mib=round(sum(sizes) / 2**20, 1),
        seconds=round(time.perf_counter() - started, 1),
    )


def render(result: StateBytes) -> str:
    return (
        "| customers | distinct histories | changelog B/customer mean | p50 | p99 | largest "
        "| all customers MiB |\n|---:|---:|---:|---:|---:|---:|---:|\n"
        f"| {result.customers:,} | {result.templates:,} ({result.touchpoints:,} touchpoints) "
        f"| {result.mean:,.0f} | {result.p50:,} | {result.p99:,} | {result.largest:,} "
        f"| {result.total_mib:,.1f} |"
    )
