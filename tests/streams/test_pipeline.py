"""The worker's batch pipeline, fed raw Kafka records without a broker."""

from __future__ import annotations

import dataclasses
import hashlib
from datetime import UTC, datetime, timedelta

from aiokafka.partitioner import DefaultPartitioner

from connectors.publisher import envelopes
from engine.builtin import BUILTIN_BUNDLE
from engine.conditions import Moment
from engine.rulebook import RuleBook
from engine.state import CustomerState
from engine.timestamps import TimestampPolicy
from schemas.codec import (
    decode_touchpoint,
    encode_dead_letter,
    encode_touchpoint,
    encode_touchpoint_batch,
)
from schemas.models import Channel, Direction, TouchpointEvent
from schemas.partitioning import customer_partition
from streams.pipeline import Pipeline, RawRecord

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
PARTITIONS = 4
TOPIC = "touchpoints"


def touchpoint(
    n: int, customer: str, direction: str = "outbound", **changes: object
) -> TouchpointEvent:
    at = NOW - timedelta(hours=1) + timedelta(minutes=n)
    fields: dict[str, object] = {
        "event_id": f"{customer}-{n}",
        "customer_id": customer,
        "occurred_at": at,
        "received_at": at,
        "channel": Channel.EMAIL,
        "kind": "email_sent" if direction == "outbound" else "email_received",
        "direction": Direction(direction),
        "rep_id": "rep-1",
        "source": "test/1",
    }
    fields.update(changes)
    return TouchpointEvent.model_validate(fields)


def records_for(events: list[TouchpointEvent]) -> list[RawRecord]:
    return [
        RawRecord(TOPIC, partition, offset, key, value)
        for offset, (partition, key, value) in enumerate(envelopes(events, PARTITIONS))
    ]


def single(event: TouchpointEvent, offset: int = 0) -> RawRecord:
    partition = customer_partition(event.customer_id, PARTITIONS)
    return RawRecord(TOPIC, partition, offset, event.customer_id.encode(), encode_touchpoint(event))


def pipeline() -> Pipeline:
    return Pipeline(RuleBook(BUILTIN_BUNDLE), TimestampPolicy(), PARTITIONS)


def nothing_stored(customer_id: str) -> CustomerState | None:
    return None


def test_customer_partition_matches_kafkas_default_partitioner() -> None:
    partitioner = DefaultPartitioner()
    partitions = list(range(12))
    for customer in ("acme", "globex", "客户-7", "c" * 100, ""):
        expected = partitioner(customer.encode(), partitions, partitions)
        assert customer_partition(customer, 12) == expected


def test_a_batch_writes_each_changed_customer_once_with_its_final_state() -> None:
    events = [touchpoint(n, f"c{n % 3}") for n in range(30)]
    result = pipeline().process(records_for(events), nothing_stored, NOW)
    states = {cid: s for changed in result.states.values() for cid, s in changed.items()}
    assert sorted(states) == ["c0", "c1", "c2"]
    assert all(s.touchpoints == 10 for s in states.values())
    for partition, changed in result.states.items():
        assert {customer_partition(c, PARTITIONS) for c in changed} == {partition}
    assert result.processed == 30
    assert sorted(c.customer_id for _, c in result.interventions) == ["c0", "c1", "c2"]


def test_stored_state_is_continued_not_restarted() -> None:
    first = pipeline().process(
        records_for([touchpoint(1, "acme"), touchpoint(2, "acme")]), nothing_stored, NOW
    )
    stored = {cid: s for changed in first.states.values() for cid, s in changed.items()}
    second = pipeline().process(records_for([touchpoint(3, "acme")]), stored.get, NOW)
    assert [c.explanation.triggering_event_ids for _, c in second.interventions] == [
        ["acme-1", "acme-2", "acme-3"]
    ]


def test_redelivered_events_are_counted_as_duplicates_and_change_nothing() -> None:
    event = touchpoint(1, "acme")
    result = pipeline().process([single(event, 0), single(event, 1)], nothing_stored, NOW)
    assert (result.processed, result.duplicates) == (1, 1)


def test_undecodable_records_become_dead_letters_and_the_rest_is_processed() -> None:
    good = [touchpoint(n, "acme") for n in (1, 2, 3)]
    garbage = RawRecord(TOPIC, customer_partition("acme", PARTITIONS), 7, b"acme", b"\x00\x01junk")
    tombstone = RawRecord(TOPIC, 0, 8, b"x", None)
    result = pipeline().process([garbage, tombstone, *map(single, good)], nothing_stored, NOW)
    assert [(d.reason, d.offset, d.raw_value) for _, d in result.dead_letters] == [
        ("undecodable", 7, b"\x00\x01junk"),
        ("undecodable", 8, b""),
    ]
    assert "C3 01" in result.dead_letters[0][1].detail
    assert result.dead_letters[0][1].raw_key == b"acme"
    assert len(result.interventions) == 1


def test_bad_timestamps_in_a_batch_reject_only_that_event() -> None:
    future = touchpoint(2, "acme", occurred_at=NOW + timedelta(hours=3), received_at=NOW)
    events = [touchpoint(1, "acme"), future, touchpoint(3, "acme")]
    [record] = records_for(events)
    result = pipeline().process([record], nothing_stored, NOW)
    [(partition, letter)] = result.dead_letters
    assert letter.reason == "bad_timestamp"
    assert letter.detail.startswith("event 1 of the batch: occurred_at")
    assert letter.raw_value == encode_touchpoint(future)
    assert letter.partition == partition == record.partition
    assert result.processed == 2


def test_an_invalid_event_inside_a_batch_rejects_only_that_event() -> None:
    good = touchpoint(1, "acme")
    record = single(good)
    batch = encode_touchpoint_batch([good, touchpoint(2, "acme")])
    # Corrupt the second event's kind after encoding: the Avro still parses but
    # the model refuses the value.
    second = batch.index(b"email_sent", batch.index(b"email_sent") + 1)
    broken = batch[:second] + b"Email Sent" + batch[second + len(b"email_sent") :]
    result = pipeline().process(
        [RawRecord(TOPIC, record.partition, 0, None, broken)], nothing_stored, NOW
    )
    assert [d.reason for _, d in result.dead_letters] == ["invalid_event"]
    assert "event 1" in result.dead_letters[0][1].detail
    assert result.processed == 1


def test_a_customer_on_the_wrong_partition_is_refused() -> None:
    event = touchpoint(1, "acme")
    right = customer_partition("acme", PARTITIONS)
    wrong = (right + 1) % PARTITIONS
    result = pipeline().process(
        [RawRecord(TOPIC, wrong, 0, b"acme", encode_touchpoint(event))], nothing_stored, NOW
    )
    [(_, letter)] = result.dead_letters
    assert letter.reason == "wrong_partition"
    assert f"belongs on partition {right}" in letter.detail
    assert result.states == {wrong: {}}


def test_touchpoints_later_than_the_allowed_lateness_go_to_the_dlq() -> None:
    newest = touchpoint(50, "acme")
    in_time = touchpoint(1, "acme", occurred_at=newest.occurred_at - timedelta(minutes=59))
    too_late = touchpoint(2, "acme", occurred_at=newest.occurred_at - timedelta(minutes=61))
    result = pipeline().process(
        [single(newest), single(in_time, 1), single(too_late, 2)], nothing_stored, NOW
    )
    [(_, letter)] = result.dead_letters
    assert (letter.reason, letter.offset) == ("late_event", 2)
    assert "behind the customer's newest touchpoint" in letter.detail
    assert "the allowed lateness is 1:00:00" in letter.detail
    assert result.processed == 2


def test_a_redelivered_touchpoint_is_a_duplicate_however_late_it_comes_back() -> None:
    old = touchpoint(1, "acme", occurred_at=NOW - timedelta(hours=5))
    newest = touchpoint(50, "acme")
    result = pipeline().process(
        [single(old), single(newest, 1), single(old, 2)], nothing_stored, NOW
    )
    assert result.dead_letters == []
    assert (result.processed, result.duplicates) == (2, 1)


# --- per-event isolation and record sizes ---------------------------------------


@dataclasses.dataclass(frozen=True)
class _Exploding:
    """A condition that raises for one customer, as a bug in a rule would."""

    customer: str

    def step(self, memory: object, moment: Moment) -> tuple[object, None]:
        if moment.state.customer_id == self.customer:
            raise ZeroDivisionError("division by zero")
        return memory, None

    def deadline(self, memory: object) -> None:
        return None

    def describe(self, memory: object, moment: Moment) -> str:
        return "explodes"


def _with_exploding_rule(customer: str) -> Pipeline:
    [builtin] = BUILTIN_BUNDLE.rules
    boom = dataclasses.replace(builtin, rule_id="boom", condition=_Exploding(customer))
    bundle = dataclasses.replace(
        BUILTIN_BUNDLE, rules=(builtin, boom), rule_ids=frozenset({builtin.rule_id, "boom"})
    )
    return Pipeline(RuleBook(bundle), TimestampPolicy(), PARTITIONS)


def test_an_exception_in_one_touchpoint_dead_letters_it_and_the_rest_of_the_batch_goes_on() -> None:
    # Three unanswered outbound messages for each of 20 customers fire the built-in rule;
    # one more customer's touchpoint makes a rule raise, in the same envelopes.
    events = [touchpoint(n, f"c{k}") for k in range(20) for n in range(3)]
    events.insert(17, touchpoint(1, "bad"))
    result = _with_exploding_rule("bad").process(records_for(events), nothing_stored, NOW)
    assert sorted(c.customer_id for _, c in result.interventions) == sorted(
        f"c{k}" for k in range(20)
    )
    [(_, letter)] = result.dead_letters
    assert letter.reason == "processing_error"
    assert "rule 'boom'" in letter.detail and "ZeroDivisionError" in letter.detail
    assert decode_touchpoint(letter.raw_value).event_id == "bad-1"
    assert "bad" not in {cid for changed in result.states.values() for cid in changed}


def test_an_intervention_the_broker_would_refuse_dead_letters_its_touchpoint() -> None:
    events = [touchpoint(n, "acme") for n in range(3)]
    small = Pipeline(RuleBook(BUILTIN_BUNDLE), TimestampPolicy(), PARTITIONS, max_record_bytes=300)
    result = small.process([single(e, i) for i, e in enumerate(events)], nothing_stored, NOW)
    assert result.interventions == []
    [(_, letter)] = result.dead_letters
    assert letter.reason == "too_large"
    assert "intervention" in letter.detail and "300" in letter.detail


def test_dead_letters_keep_a_bounded_prefix_with_the_length_and_digest_of_the_whole() -> None:
    raw = b"\xc3\x01" + b"x" * 100_000
    bounded = Pipeline(
        RuleBook(BUILTIN_BUNDLE), TimestampPolicy(), PARTITIONS, dead_letter_raw_bytes=1024
    )
    result = bounded.process([RawRecord(TOPIC, 0, 7, b"k" * 5000, raw)], nothing_stored, NOW)
    [(_, letter)] = result.dead_letters
    assert letter.raw_value == raw[:1024]
    assert letter.raw_length == len(raw)
    assert letter.raw_sha256 == hashlib.sha256(raw).hexdigest()
    assert letter.raw_key is not None and len(letter.raw_key) == 1024
    assert len(encode_dead_letter(letter)) < 4096


# --- retention ---------------------------------------------------------------------


def test_an_expiry_tick_removes_a_quiet_customer_and_spares_an_active_one() -> None:
    from streams.timers import encode_expiry

    quiet = CustomerState("quiet", touchpoints=3, last_event_at=NOW - timedelta(days=401))
    active = CustomerState("active", touchpoints=3, last_event_at=NOW - timedelta(days=2))
    stored = {"quiet": quiet, "active": active}
    aging = Pipeline(
        RuleBook(BUILTIN_BUNDLE), TimestampPolicy(), PARTITIONS, customer_ttl=timedelta(days=400)
    )
    ticks = [
        RawRecord("timers", customer_partition(c, PARTITIONS), n, c.encode(), encode_expiry(c))
        for n, c in enumerate(("quiet", "active", "never-seen"))
    ]
    result = aging.process(ticks, stored.get, NOW)
    assert [(p, c) for p, c, _ in result.expired] == [
        (customer_partition("quiet", PARTITIONS), "quiet")
    ]
    [(_, _, last)] = result.expired
    assert last == quiet.last_event_at
    assert result.dead_letters == []
    assert all("active" not in changed for changed in result.states.values())


def test_a_customer_who_came_back_in_the_same_batch_is_not_expired() -> None:
    from streams.timers import encode_expiry

    quiet = CustomerState("acme", touchpoints=3, last_event_at=NOW - timedelta(days=401))
    aging = Pipeline(
        RuleBook(BUILTIN_BUNDLE), TimestampPolicy(), PARTITIONS, customer_ttl=timedelta(days=400)
    )
    partition = customer_partition("acme", PARTITIONS)
    back = single(touchpoint(1, "acme"))
    tick = RawRecord("timers", partition, 1, b"acme", encode_expiry("acme"))
    result = aging.process([back, tick], {"acme": quiet}.get, NOW)
    assert result.expired == []
    assert result.states[partition]["acme"].touchpoints == 4
