"""Consent, the compliance gate and the audit chain in the real worker on the real broker,
with a crash in the middle."""

from __future__ import annotations

import asyncio
import io
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from aiokafka import AIOKafkaProducer

from schemas.codec import (
    compliance_verdict_codec,
    consent_change_codec,
    decode_dead_letter,
    decode_intervention,
    draft_review_codec,
    message_draft_codec,
)
from schemas.models import Channel, ConsentChange, DraftReview, MessageDraft
from schemas.partitioning import customer_partition
from streams.audit_cli import AuditCheck, verify_audit
from streams.gate_service import serve
from streams.rules_push import publish_bundle_text, push_bundle
from streams.settings import Settings
from streams.topics import ensure_topics

from .conftest import free_port
from .harness import (
    WorkerProcess,
    produce_raw,
    read_all,
    read_to_end,
    read_topic,
    touchpoint_record,
)

REPO = Path(__file__).resolve().parents[2]
POLICY = (REPO / "rules/policies/default.yaml").read_text(encoding="utf-8")
OFFERS = """\
bundle: offers
version: 1
rules:
  - id: offer.on-message
    when: {event: {kind: message_received}}
    then:
      kind: content_push
      title: "Send {customer_id} the spring offer"
      due_in: 1d
      purposes: [marketing]
"""
PHONE = "13912345678"
RESIDENT_ID = "11010519491231002X"
CARD = "6222020200112233446"  # Luhn-valid
RAW_PII = (PHONE, RESIDENT_ID, CARD)


async def produce(settings: Settings, topic: str, records: list[tuple[str, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, acks="all")
    await producer.start()
    try:
        for customer, value in records:
            await producer.send_and_wait(
                settings.topic(topic),
                value,
                key=customer.encode(),
                partition=customer_partition(customer, settings.partitions),
            )
    finally:
        await producer.stop()


def consent(customer: str, purpose: str, granted: bool, at: datetime, n: int) -> bytes:
    return consent_change_codec().encode(
        ConsentChange(
            change_id=f"{customer}-{purpose}-{n}",
            customer_id=customer,
            purpose=purpose,
            granted=granted,
            occurred_at=at,
            source="it",
            segment="retail",
        )
    )


def draft(customer: str, draft_id: str, text: str) -> bytes:
    return message_draft_codec().encode(
        MessageDraft(
            draft_id=draft_id,
            customer_id=customer,
            rep_id="rep-7",
            text=text,
            channel=Channel.CHAT,
            created_at=datetime.now(UTC),
            sender_contacts=["rep-7@warroom-demo.com"],
        )
    )


def message(customer: str, event_id: str, at: datetime) -> tuple[bytes, bytes]:
    return touchpoint_record(
        customer,
        event_id,
        "message_received",
        at,
        channel=Channel.CHAT,
        direction="inbound",
        rep_id="rep-7",
    )


async def audit_entries(settings: Settings) -> tuple[list[dict[str, Any]], int, str]:
    """Every audit record, and what ``warroom audit verify --heads`` says of them."""
    entries = await read_all(settings, "audit", orjson.loads)
    out, err = io.StringIO(), io.StringIO()
    code = await verify_audit(settings, AuditCheck(use_heads=True), out=out, err=err)
    return entries, code, out.getvalue() + err.getvalue()


async def audited(settings: Settings, event: str, worker: WorkerProcess) -> None:
    """Until the audit trail holds a record of ``event``."""
    await read_topic(
        settings, "audit", lambda f: any(e.get("event") == event for e in f), orjson.loads, worker
    )


async def test_consent_gate_and_audit_chain_hold_across_a_crash(
    settings: Settings, worker: WorkerProcess
) -> None:
    await ensure_topics(settings)
    await push_bundle(settings, OFFERS, "offers.yaml")
    await push_bundle(settings, POLICY, "default.yaml")
    worker.start()
    start = datetime.now(UTC) - timedelta(minutes=30)

    # Granted: the offer goes out. Revoked: the next one is suppressed.
    # Consents and touchpoints are separate topics: nothing orders a record of one before
    # a record of the other, so the test waits until the worker has recorded each change.
    await produce(settings, "consents", [("ana", consent("ana", "marketing", True, start, 1))])
    await audited(settings, "consent_granted", worker)
    await produce_raw(settings, [message("ana", "ana-1", start + timedelta(minutes=1))])
    [offer] = await read_topic(
        settings, "interventions", lambda f: len(f) >= 1, decode_intervention, worker
    )
    assert offer.customer_id == "ana" and offer.rule_id == "offer.on-message"
    await produce(
        settings,
        "consents",
        [("ana", consent("ana", "marketing", False, start + timedelta(minutes=2), 2))],
    )
    await audited(settings, "consent_revoked", worker)
    risky = f"本产品保本保息，年利率8%，稳赚不赔。客户王先生的手机 {PHONE}，身份证 {RESIDENT_ID}"
    await produce(settings, "message-drafts", [("bo", draft("bo", "d-1", risky))])
    [first] = await read_topic(
        settings,
        "compliance-verdicts",
        lambda f: len(f) >= 1,
        compliance_verdict_codec().decode,
        worker,
    )
    assert first.verdict.value == "block" and first.decided_by == "worker"
    assert {f.category for p in first.policies for f in p.findings} >= {"third_party_pii"}

    # A crash, then the same draft again, a review of it, and one more message for ana.
    worker.kill()
    await produce(settings, "message-drafts", [("bo", draft("bo", "d-1", risky))])
    review = DraftReview(
        review_id="r-1",
        draft_id="d-1",
        customer_id="bo",
        reviewer_id="mgr-1",
        action="reject",
        note=f"asked the rep to remove the card number {CARD}",
        reviewed_at=datetime.now(UTC),
    )
    await produce(settings, "message-drafts", [("bo", draft_review_codec().encode(review))])
    await produce_raw(settings, [message("ana", "ana-2", start + timedelta(minutes=3))])
    worker.start()

    # The gate over HTTP: the answer in the response, recorded once by the worker.
    port = free_port()
    gate = asyncio.ensure_future(serve(settings, "127.0.0.1", port, None))
    try:
        url = f"http://127.0.0.1:{port}"
        async with aiohttp.ClientSession() as session:
            for _ in range(100):
                try:
                    async with session.get(f"{url}/readyz") as ready:
                        if ready.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.2)
            body = {
                "draft_id": "d-2",
                "customer_id": "cy",
                "rep_id": "rep-7",
                "text": "This plan is risk-free with a guaranteed return of 12% a year.",
            }
            answers = []
            for _ in range(2):  # a client retry
                async with session.post(f"{url}/v1/drafts", json=body) as response:
                    assert response.status == 200, await response.text()
                    answers.append(await response.json())
            async with session.post(f"{url}/v1/drafts", json={"draft_id": "x"}) as bad:
                assert bad.status == 422
                problems = (await bad.json())["problems"]
                assert {p["field"] for p in problems} >= {"customer_id", "rep_id", "text"}
    finally:
        gate.cancel()
        await asyncio.gather(gate, return_exceptions=True)
    assert answers[0]["verdict"] in ("confirm", "block")
    assert answers[0]["policies"][0]["findings"], answers[0]

    verdicts = await read_topic(
        settings,
        "compliance-verdicts",
        lambda f: {v.draft_id for v in f} >= {"d-1", "d-2"},
        compliance_verdict_codec().decode,
        worker,
    )
    await asyncio.sleep(3.0)  # anything written twice would show by now
    verdicts = await read_all(settings, "compliance-verdicts", compliance_verdict_codec().decode)
    assert sorted(v.draft_id for v in verdicts) == ["d-1", "d-2"]
    gate_verdict = next(v for v in verdicts if v.draft_id == "d-2")
    assert gate_verdict.decided_by.startswith("gate:")
    assert gate_verdict.verdict.value == answers[0]["verdict"]

    interventions = await read_all(settings, "interventions", decode_intervention)
    assert [c.customer_id for c in interventions] == ["ana"], "the revoked offer went out"

    entries, code, report = await audit_entries(settings)
    assert code == 0, report
    assert "intact" in report
    events = [e["event"] for e in entries]
    assert events.count("consent_granted") == 1 and events.count("consent_revoked") == 1
    assert events.count("intervention_decided") == 1
    assert events.count("intervention_suppressed") == 1
    assert events.count("draft_verdict") == 2 and events.count("draft_rejected") == 1
    activated = [e["bundle"] for e in entries if e["event"] == "bundle_activated"]
    assert "offers" in activated and len(activated) == 2, activated  # once each, despite the crash

    # No raw personal data anywhere Warroom wrote.
    written: list[bytes] = []
    for topic in ("interventions", "compliance-verdicts", "audit", "metrics", "dlq"):
        for records_of in (await read_to_end(settings, topic)).values():
            written.extend(r.value or b"" for r in records_of)
    letters = await read_all(settings, "dlq", decode_dead_letter)
    written.extend(letter.detail.encode() for letter in letters)
    written.append(worker.log.read_bytes())
    blob = b"\n".join(written).decode("utf-8", "replace")
    for raw in RAW_PII:
        assert raw not in blob, f"{raw} leaked"


async def test_a_policy_runs_in_test_mode_then_enforced_live_and_a_broken_one_is_refused(
    settings: Settings, worker: WorkerProcess
) -> None:
    quick = settings.model_copy(update={"metrics_interval_seconds": 1.0})
    worker.settings = quick
    await ensure_topics(quick)
    shadow = POLICY.replace("mode: enforce", "mode: test", 1)
    assert shadow != POLICY
    await push_bundle(quick, shadow, "default.yaml")
    worker.start()
    promise = "Our fund is risk-free: capital guaranteed and 9% a year."

    async def verdict_of(draft_id: str) -> Any:
        await produce(quick, "message-drafts", [("dee", draft("dee", draft_id, promise))])
        found = await read_topic(
            quick,
            "compliance-verdicts",
            lambda f: any(v.draft_id == draft_id for v in f),
            compliance_verdict_codec().decode,
            worker,
        )
        return next(v for v in found if v.draft_id == draft_id)

    # In test mode the rep is not stopped, but the verdict records what the policy decided
    # and the metrics topic shows it.
    tried = await verdict_of("t-1")
    assert tried.verdict.value == "allow"
    assert [(p.mode, p.verdict.value) for p in tried.policies] == [("test", "block")]
    await read_topic(
        quick,
        "metrics",
        lambda f: any(
            m.get("metric") == "policy_activity" and m["mode"] == "test" and m["decided"]["block"]
            for m in f
        ),
        orjson.loads,
        worker,
    )

    # Enforced: a new version applies within seconds, no restart.
    enforced = POLICY.replace("version: 1", "version: 2", 1)
    await push_bundle(quick, enforced, "default.yaml")
    started = asyncio.get_running_loop().time()
    for attempt in range(100):
        if (await verdict_of(f"e-{attempt}")).verdict.value == "block":
            break
        assert asyncio.get_running_loop().time() - started < 5.0, "not enforced within 5 s"
    # A broken version is refused and audited; version 2 keeps running.
    broken = POLICY.replace("version: 1", "version: 3", 1).replace("mode: enforce", "mode: loud")
    await publish_bundle_text(quick, "compliance-default", broken)
    audit = await read_topic(
        quick,
        "audit",
        lambda f: any(a.get("event") == "bundle_rejected" for a in f),
        orjson.loads,
        worker,
    )
    [rejected] = [a for a in audit if a["event"] == "bundle_rejected"]
    assert rejected["bundle"] == "compliance-default"
    assert any("policy.mode" in p for p in rejected["problems"]), rejected
    assert (await verdict_of("t-after")).verdict.value == "block"
