"""The HTTP gate without a broker: answers, refusals and what it records."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from engine.builtin import BUILTIN_BUNDLE
from engine.rulebook import RuleBook
from schemas.codec import compliance_verdict_codec, decode_gate_input
from schemas.models import ComplianceVerdict, DraftReview
from schemas.partitioning import customer_partition
from streams.gate_service import Gate, create_gate_app

POLICY = (Path(__file__).resolve().parents[2] / "rules/policies/default.yaml").read_text()
NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
TOKEN = "gate-token-for-tests-0123"
PHONE = "13912345678"


class Recorder:
    def __init__(self) -> None:
        self.records: list[tuple[int, bytes, bytes]] = []
        self.broken = False

    async def publish(self, partition: int, key: bytes, value: bytes) -> None:
        if self.broken:
            raise ConnectionError("broker gone")
        self.records.append((partition, key, value))


@pytest.fixture
async def gate() -> AsyncIterator[tuple[TestClient, Recorder]]:  # type: ignore[type-arg]
    rulebook = RuleBook(BUILTIN_BUNDLE)
    assert rulebook.offer(POLICY, "default.yaml").accepted
    recorder = Recorder()
    app = create_gate_app(Gate(rulebook, recorder.publish, 4, "g-1", TOKEN, clock=lambda: NOW))
    async with TestClient(TestServer(app)) as client:
        yield client, recorder


AUTH = {"Authorization": f"Bearer {TOKEN}"}


async def test_a_risky_draft_is_answered_and_recorded_before_the_answer(
    gate: tuple[TestClient, Recorder],  # type: ignore[type-arg]
) -> None:
    client, recorder = gate
    body = {
        "draft_id": "d-1",
        "customer_id": "cy",
        "rep_id": "rep-1",
        "text": f"保本保息，年化收益率 8%，有问题打张三电话 {PHONE}",
    }
    response = await client.post("/v1/drafts", json=body, headers=AUTH)
    assert response.status == 200
    answer = await response.json()
    assert answer["verdict"] == "block" and answer["severity"] == "red"
    findings = [f for p in answer["policies"] for f in p["findings"]]
    assert {f["category"] for f in findings} >= {"principal_protection", "third_party_pii"}
    for finding in findings:
        assert finding["excerpt"] and PHONE not in finding["excerpt"]
    assert PHONE not in answer["masked_text"]
    assert any(p["templates"] for p in answer["policies"])
    [(partition, key, value)] = recorder.records
    assert (partition, key) == (customer_partition("cy", 4), b"cy")
    recorded = decode_gate_input(value)
    assert isinstance(recorded, ComplianceVerdict)
    assert recorded.model_dump(mode="json") == answer
    assert PHONE not in value.decode("utf-8", "replace")


async def test_a_plain_draft_is_allowed(gate: tuple[TestClient, Recorder]) -> None:  # type: ignore[type-arg]
    client, _ = gate
    body = {"draft_id": "d-2", "customer_id": "cy", "rep_id": "rep-1", "text": "See you at 3pm."}
    answer = await (await client.post("/v1/drafts", json=body, headers=AUTH)).json()
    assert answer["verdict"] == "allow" and answer["severity"] is None


async def test_refusals_say_what_was_expected(gate: tuple[TestClient, Recorder]) -> None:  # type: ignore[type-arg]
    client, recorder = gate
    body = {"draft_id": "d-3", "customer_id": "cy", "rep_id": "rep-1", "text": "hi"}
    assert (await client.post("/v1/drafts", json=body)).status == 401
    wrong = {"Authorization": "Bearer nope"}
    assert (await client.post("/v1/drafts", json=body, headers=wrong)).status == 401
    bad = await client.post("/v1/drafts", data=b"{", headers=AUTH)
    assert bad.status == 400 and "JSON" in (await bad.json())["error"]
    missing = await client.post("/v1/drafts", json={"text": "hi"}, headers=AUTH)
    assert missing.status == 422
    fields = {p["field"] for p in (await missing.json())["problems"]}
    assert fields == {"draft_id", "customer_id", "rep_id"}
    assert recorder.records == []


async def test_no_answer_without_a_record(gate: tuple[TestClient, Recorder]) -> None:  # type: ignore[type-arg]
    client, recorder = gate
    recorder.broken = True
    body = {"draft_id": "d-4", "customer_id": "cy", "rep_id": "rep-1", "text": "risk-free!"}
    response = await client.post("/v1/drafts", json=body, headers=AUTH)
    assert response.status == 503 and "retry" in (await response.json())["error"]


async def test_a_review_is_recorded_with_its_note_masked(gate: tuple[TestClient, Recorder]) -> None:  # type: ignore[type-arg]
    client, recorder = gate
    body = {
        "review_id": "r-1",
        "customer_id": "cy",
        "reviewer_id": "mgr-1",
        "action": "confirm",
        "note": f"called him on {PHONE}, fine",
    }
    response = await client.post("/v1/drafts/d-1/reviews", json=body, headers=AUTH)
    assert response.status == 202
    [(_, _, value)] = recorder.records
    review = decode_gate_input(value)
    assert isinstance(review, DraftReview)
    assert review.draft_id == "d-1" and PHONE not in review.note
    assert compliance_verdict_codec().avro.knows(value) is False


async def test_the_gate_measures_each_answer_by_verdict(gate: tuple[TestClient, Recorder]) -> None:  # type: ignore[type-arg]
    client, recorder = gate
    body = {"draft_id": "d-5", "customer_id": "cy", "rep_id": "rep-1", "text": "risk-free!"}
    assert (await client.post("/v1/drafts", json=body, headers=AUTH)).status == 200
    recorder.broken = True
    body["draft_id"] = "d-6"
    assert (await client.post("/v1/drafts", json=body, headers=AUTH)).status == 503
    text = await (await client.get("/metrics")).text()
    answered = [
        line for line in text.splitlines() if line.startswith("warroom_gate_decision_seconds_count")
    ]
    assert sorted(answered) == [
        'warroom_gate_decision_seconds_count{verdict="block"} 1.0',
        'warroom_gate_decision_seconds_count{verdict="error"} 1.0',
    ]
