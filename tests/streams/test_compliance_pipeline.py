"""Consents, drafts, gate answers and reviews through the worker's pipeline (no broker)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from engine.builtin import BUILTIN_BUNDLE
from engine.rulebook import RuleBook
from engine.state import CustomerState
from engine.timestamps import TimestampPolicy
from schemas.codec import (
    compliance_verdict_codec,
    consent_change_codec,
    draft_review_codec,
    encode_touchpoint,
    message_draft_codec,
)
from schemas.models import (
    ConsentChange,
    DraftReview,
    MessageDraft,
    ReviewAction,
    TouchpointEvent,
)
from schemas.partitioning import customer_partition
from streams.pipeline import BatchResult, Pipeline, RawRecord

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
PARTITIONS = 4
POLICY = (Path(__file__).resolve().parents[2] / "rules/policies/default.yaml").read_text()
OFFERS = """\
bundle: offers
version: 1
rules:
  - id: offer.on-message
    when: {event: {kind: message_received}}
    then: {kind: content_push, title: "Offer", due_in: 1d, purposes: [marketing]}
"""
PHONE = "13912345678"


def pipeline() -> Pipeline:
    rulebook = RuleBook(BUILTIN_BUNDLE)
    for text, name in ((OFFERS, "offers"), (POLICY, None)):
        verdict = rulebook.offer(text, f"{name}.yaml", name)
        assert verdict.accepted, verdict.problems
    return Pipeline(rulebook=rulebook, timestamps=TimestampPolicy(), partitions=PARTITIONS)


def record(topic: str, customer: str, value: bytes, offset: int = 0) -> RawRecord:
    partition = customer_partition(customer, PARTITIONS)
    return RawRecord(topic, partition, offset, customer.encode(), value)


def consent(customer: str, granted: bool, minutes: int, change_id: str) -> RawRecord:
    change = ConsentChange(
        change_id=change_id,
        customer_id=customer,
        purpose="marketing",
        granted=granted,
        occurred_at=NOW - timedelta(hours=1) + timedelta(minutes=minutes),
        source="test",
        segment="retail",
    )
    return record("consents", customer, consent_change_codec().encode(change))


def message(customer: str, n: int) -> RawRecord:
    at = NOW - timedelta(hours=1) + timedelta(minutes=n)
    event = TouchpointEvent(
        event_id=f"{customer}-{n}",
        customer_id=customer,
        occurred_at=at,
        received_at=at,
        channel="chat",
        kind="message_received",
        direction="inbound",
        rep_id="rep-1",
        source="test/1",
    )
    return record("touchpoints", customer, encode_touchpoint(event))


def draft(customer: str, draft_id: str, text: str) -> RawRecord:
    value = message_draft_codec().encode(
        MessageDraft(
            draft_id=draft_id,
            customer_id=customer,
            rep_id="rep-1",
            text=text,
            created_at=NOW,
        )
    )
    return record("message-drafts", customer, value)


def run(pipe: Pipeline, records: list[RawRecord]) -> tuple[BatchResult, dict[str, CustomerState]]:
    stored: dict[str, CustomerState] = {}
    result = BatchResult()
    for item in records:
        pipe.process([item], stored.get, NOW, into=result)
        for changed in result.states.values():
            stored.update(changed)
    return result, stored


def test_consent_decides_whether_the_offer_goes_out_and_every_step_is_audited() -> None:
    result, _ = run(
        pipeline(),
        [
            message("ana", 1),
            consent("ana", True, 2, "c-1"),
            message("ana", 3),
            consent("ana", False, 4, "c-2"),
            consent("ana", False, 4, "c-2"),  # redelivered
            message("ana", 5),
        ],
    )
    offers = [c for _, c in result.interventions if c.rule_id == "offer.on-message"]
    assert [c.explanation.triggering_event_ids for c in offers] == [["ana-3"]]
    assert [d.suppressed for _, d in result.suppressed] == [("marketing",), ("marketing",)]
    events = [entry["event"] for _, entry in result.audit]
    assert events.count("consent_granted") == 1 and events.count("consent_revoked") == 1
    assert events.count("intervention_suppressed") == 2
    assert result.duplicates == 1


def test_a_draft_gets_one_verdict_and_no_raw_personal_data_leaves() -> None:
    text = f"保本保息，年利率8%。另外张三的手机是 {PHONE}"
    result, _ = run(pipeline(), [draft("bo", "d-1", text), draft("bo", "d-1", text)])
    [(partition, verdict)] = result.verdicts
    assert partition == customer_partition("bo", PARTITIONS)
    assert verdict.verdict.value == "block" and verdict.decided_by == "worker"
    assert PHONE not in compliance_verdict_codec().encode(verdict).decode("utf-8", "replace")
    assert result.duplicates == 1
    [(_, entry)] = [(p, e) for p, e in result.audit if e["event"] == "draft_verdict"]
    assert entry["verdict"] == "block" and entry["draft_id"] == "d-1"


def test_a_gate_answer_is_recorded_as_given_and_a_review_is_audited_with_its_note_masked() -> None:
    pipe = pipeline()
    decided, _ = run(pipe, [draft("cy", "d-9", "guaranteed return of 12% a year")])
    [(_, given)] = decided.verdicts
    gate_answer = given.model_copy(update={"decided_by": "gate:g-1"})
    review = DraftReview(
        review_id="r-1",
        draft_id="d-9",
        customer_id="cy",
        reviewer_id="mgr-1",
        action=ReviewAction.OVERRIDE,
        note=f"approved after a call, his number is {PHONE}",
        reviewed_at=NOW,
    )
    result, _ = run(
        pipe,
        [
            record("message-drafts", "cy", compliance_verdict_codec().encode(gate_answer)),
            record("message-drafts", "cy", draft_review_codec().encode(review)),
            record("message-drafts", "cy", draft_review_codec().encode(review)),
        ],
    )
    assert [v.decided_by for _, v in result.verdicts] == ["gate:g-1"]
    overrides = [e for _, e in result.audit if e["event"] == "draft_overridden"]
    assert len(overrides) == 1 and PHONE not in overrides[0]["note"]


def test_an_invalid_draft_goes_to_the_dead_letters_with_personal_data_masked() -> None:
    # Valid Avro, but the text is longer than the contract allows: the validation error
    # would quote the text, phone number included.
    value = message_draft_codec().avro.encode(
        {
            "draft_id": "d-long",
            "customer_id": "bo",
            "rep_id": "rep-1",
            "text": f"call {PHONE} " + "x" * 20_000,
            "kind": "message",
            "channel": "chat",
            "created_at": NOW,
            "sender_contacts": [],
            "recipient_contacts": [],
        }
    )
    result, _ = run(pipeline(), [record("message-drafts", "bo", value)])
    [(_, letter)] = result.dead_letters
    assert letter.reason == "invalid_event"
    assert "text" in letter.detail and PHONE not in letter.detail
    assert not result.verdicts
