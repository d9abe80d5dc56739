"""Signed JSON webhooks: the signature and its freshness, bodies through a mapping, the
answers a sender gets, and replays that publish nothing twice."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from pydantic import SecretStr

from connectors.mapping import load_mapping
from connectors.mapping_service import run_webhooks
from connectors.publisher import MemoryTouchpointSink, PublishUnavailable
from connectors.settings import IntakeSettings
from connectors.webhook import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    BadSignature,
    WebhookSource,
    create_webhook_app,
    signature,
    verify,
)
from schemas.models import TouchpointEvent

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "tests" / "data" / "connectors" / "webhook" / "helpdesk-ticket-created.http"
SECRET = "whsec-helpdesk-test-0123456789"
SIGNED_AT = datetime.fromtimestamp(1764492000, UTC)


def ticket_mapping() -> Any:
    path = ROOT / "connectors" / "mappings" / "service-ticket.yaml"
    return load_mapping(path.read_text(encoding="utf-8"), str(path))


def captured() -> tuple[dict[str, str], bytes]:
    """Headers and body of the captured request (CRLF, as on the wire)."""
    head, body = SAMPLE.read_bytes().split(b"\r\n\r\n", 1)
    lines = head.decode().split("\r\n")[1:]
    return dict(line.split(": ", 1) for line in lines), body


class FlakySink(MemoryTouchpointSink):
    def __init__(self) -> None:
        super().__init__()
        self.fail_next = False

    async def publish(self, events: Any) -> None:
        if self.fail_next:
            self.fail_next = False
            raise PublishUnavailable("not published: broker away; retry", 2.0)
        await super().publish(events)


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def sink() -> FlakySink:
    return FlakySink()


@pytest.fixture
def clock() -> Clock:
    return Clock(SIGNED_AT + timedelta(seconds=3))


@pytest.fixture
async def client(sink: FlakySink, clock: Clock) -> AsyncIterator[TestClient[Any, Any]]:
    source = WebhookSource("helpdesk", SecretStr(SECRET), ticket_mapping())
    async with TestClient(TestServer(create_webhook_app([source], sink, clock))) as test_client:
        yield test_client


def signed(body: bytes, at: datetime = SIGNED_AT, secret: str = SECRET) -> dict[str, str]:
    stamp = str(int(at.timestamp()))
    return {TIMESTAMP_HEADER: stamp, SIGNATURE_HEADER: signature(secret, stamp, body)}


def published(sink: MemoryTouchpointSink) -> list[TouchpointEvent]:
    return [event for batch in sink.published for event in batch]


# --- the signature ----------------------------------------------------------------------


def test_the_captured_request_verifies() -> None:
    headers, body = captured()
    verify(
        SECRET,
        headers[TIMESTAMP_HEADER],
        headers[SIGNATURE_HEADER],
        body,
        SIGNED_AT.timestamp(),
    )


@pytest.mark.parametrize(
    "timestamp, signed_value, body, now, expected",
    [
        (None, "sha256=" + "0" * 64, b"{}", 0, "expected a X-Warroom-Timestamp header"),
        ("12a", "sha256=" + "0" * 64, b"{}", 0, "as Unix seconds, found other text"),
        ("1000", None, b"{}", 1000, "expected X-Warroom-Signature: sha256=<64 hex digits>"),
        ("1000", "md5=abc", b"{}", 1000, "expected X-Warroom-Signature: sha256=<64 hex digits>"),
        ("1000", "sha256=" + "0" * 64, b"{}", 1000, "found another"),
        ("1000", "KEEP", b"{} ", 1000, "found another"),  # body changed after signing
        ("1000", "KEEP", b"{}", 1301, "within 300 s of now, found one 301 s away"),
        ("1000", "KEEP", b"{}", 699, "within 300 s of now, found one 301 s away"),
    ],
)
def test_bad_signatures_and_stale_timestamps_are_refused(
    timestamp: str | None, signed_value: str | None, body: bytes, now: float, expected: str
) -> None:
    if signed_value == "KEEP":
        signed_value = signature(SECRET, "1000", b"{}")
    with pytest.raises(BadSignature, match=expected.replace("(", r"\(").replace("[", r"\[")):
        verify(SECRET, timestamp, signed_value, body, now)


def test_a_signature_with_another_secret_is_refused() -> None:
    stamp = "1000"
    with pytest.raises(BadSignature):
        verify(SECRET, stamp, signature(SECRET + "x", stamp, b"{}"), b"{}", 1000)


def test_a_short_secret_is_refused_and_never_shown() -> None:
    with pytest.raises(ValueError, match="at least 16 characters") as caught:
        WebhookSource("helpdesk", SecretStr("short-secret"), ticket_mapping())
    assert "short-secret" not in str(caught.value)
    source = WebhookSource("helpdesk", SecretStr(SECRET), ticket_mapping())
    assert SECRET not in repr(source)


# --- over HTTP --------------------------------------------------------------------------


async def test_the_captured_request_is_published(
    client: TestClient[Any, Any], sink: FlakySink
) -> None:
    headers, body = captured()
    response = await client.post("/v1/webhooks/helpdesk", data=body, headers=headers)
    answer = await response.json()
    assert response.status == 202, answer
    assert answer == {
        "accepted": 1,
        "skipped": 0,
        "event_ids": ["ticket:48555:ticket.created:2026-11-30T16:40:00+08:00"],
    }
    [event] = published(sink)
    assert (event.customer_id, event.kind, event.rep_id) == (
        "acct-huadong-cold",
        "ticket_opened",
        "rep-li",
    )
    assert event.received_at == SIGNED_AT + timedelta(seconds=3)


async def test_a_replayed_request_publishes_nothing_again(
    client: TestClient[Any, Any], sink: FlakySink
) -> None:
    headers, body = captured()
    first = await client.post("/v1/webhooks/helpdesk", data=body, headers=headers)
    again = await client.post("/v1/webhooks/helpdesk", data=body, headers=headers)
    assert (first.status, again.status) == (202, 200)
    assert (await again.json())["duplicate"] is True
    assert len(published(sink)) == 1


async def test_a_resent_request_with_a_new_signature_makes_the_same_event_ids(
    client: TestClient[Any, Any], sink: FlakySink, clock: Clock
) -> None:
    _, body = captured()
    first = await client.post("/v1/webhooks/helpdesk", data=body, headers=signed(body))
    clock.now += timedelta(seconds=60)
    later = SIGNED_AT + timedelta(seconds=60)
    again = await client.post("/v1/webhooks/helpdesk", data=body, headers=signed(body, later))
    assert (first.status, again.status) == (202, 202)
    ids = [e.event_id for e in published(sink)]
    assert len(ids) == 2 and ids[0] == ids[1]  # the worker drops the second as a repeat


async def test_a_request_that_failed_to_publish_can_be_retried(
    client: TestClient[Any, Any], sink: FlakySink
) -> None:
    headers, body = captured()
    sink.fail_next = True
    refused = await client.post("/v1/webhooks/helpdesk", data=body, headers=headers)
    assert refused.status == 503 and refused.headers["Retry-After"] == "2"
    retried = await client.post("/v1/webhooks/helpdesk", data=body, headers=headers)
    assert retried.status == 202
    assert len(published(sink)) == 1


@pytest.mark.parametrize(
    "headers, expected",
    [
        ({}, "expected a X-Warroom-Timestamp header"),
        ({TIMESTAMP_HEADER: str(int(SIGNED_AT.timestamp()))}, "sha256=<64 hex digits>"),
    ],
)
async def test_unsigned_requests_get_401(
    client: TestClient[Any, Any], sink: FlakySink, headers: dict[str, str], expected: str
) -> None:
    _, body = captured()
    response = await client.post("/v1/webhooks/helpdesk", data=body, headers=headers)
    assert response.status == 401
    answer = await response.json()
    assert expected in answer["problems"][0]["message"]
    assert sink.published == []


async def test_a_tampered_or_stale_request_gets_401(
    client: TestClient[Any, Any], sink: FlakySink
) -> None:
    headers, body = captured()
    tampered = body.replace(b"rep-li", b"rep-xx")
    assert (
        await client.post("/v1/webhooks/helpdesk", data=tampered, headers=headers)
    ).status == 401
    stale = signed(body, SIGNED_AT - timedelta(minutes=6))
    response = await client.post("/v1/webhooks/helpdesk", data=body, headers=stale)
    assert response.status == 401
    assert "found one 363 s away" in (await response.json())["error"]
    assert sink.published == []


async def test_an_unknown_source_is_404(client: TestClient[Any, Any]) -> None:
    response = await client.post("/v1/webhooks/erp", data=b"{}", headers=signed(b"{}"))
    assert response.status == 404
    assert (await response.json())["problems"][0]["message"] == (
        "expected one of the configured sources (helpdesk)"
    )


async def test_invalid_bodies_get_4xx_naming_the_record_and_field(
    client: TestClient[Any, Any], sink: FlakySink
) -> None:
    not_json = b"{not json"
    response = await client.post("/v1/webhooks/helpdesk", data=not_json, headers=signed(not_json))
    assert response.status == 400
    _, good = captured()
    bad_ticket = json.loads(good)
    del bad_ticket["ticket"]["organization"]
    bad_ticket["ticket"]["updated_at"] = "30.11.2026"
    body = json.dumps([json.loads(good), bad_ticket]).encode()
    response = await client.post("/v1/webhooks/helpdesk", data=body, headers=signed(body))
    assert response.status == 422
    problems = (await response.json())["problems"]
    assert [(p["index"], p["field"]) for p in problems] == [
        (1, "customer_id"),
        (1, "occurred_at"),
    ]
    assert problems[1]["message"] == (
        "$.ticket.updated_at: expected a time in the format iso8601, found other text"
    )
    assert sink.published == []  # the valid ticket of that request is not published either


async def test_records_the_filter_leaves_out_are_counted(
    client: TestClient[Any, Any], sink: FlakySink
) -> None:
    _, good = captured()
    comment = dict(json.loads(good), event="ticket.comment_added")
    body = json.dumps([json.loads(good), comment]).encode()
    response = await client.post("/v1/webhooks/helpdesk", data=body, headers=signed(body))
    answer = await response.json()
    assert (response.status, answer["accepted"], answer["skipped"]) == (202, 1, 1)


async def test_a_body_over_the_limit_is_413(client: TestClient[Any, Any]) -> None:
    body = b"[" + b"0," * 600_000 + b"0]"
    response = await client.post("/v1/webhooks/helpdesk", data=body, headers=signed(body))
    assert response.status == 413


@pytest.mark.parametrize("stamp", ["²", "１７６４４９２０００", "9" * 13])
def test_a_timestamp_in_other_digits_or_too_long_is_refused(stamp: str) -> None:
    with pytest.raises(BadSignature, match="as Unix seconds, found other text"):
        verify(SECRET, stamp, signature(SECRET, stamp, b"{}"), b"{}", SIGNED_AT.timestamp())


def test_serving_refuses_to_start_without_a_source_secret_and_names_the_variable(
    capsys: pytest.CaptureFixture[str],
) -> None:
    intake = IntakeSettings("127.0.0.1:1", "touchpoints", 4, "test")
    mapping = str(ROOT / "connectors" / "mappings" / "service-ticket.yaml")
    assert run_webhooks(intake, [f"help-desk={mapping}"], "127.0.0.1", 0, {}) == 2
    assert capsys.readouterr().err == (
        "warroom webhook serve: source help-desk: expected its secret in "
        "WARROOM_WEBHOOK_SECRET_HELP_DESK, found none\n"
    )
    short = {"WARROOM_WEBHOOK_SECRET_HELP_DESK": "too-short"}
    assert run_webhooks(intake, [f"help-desk={mapping}"], "127.0.0.1", 0, short) == 2
    err = capsys.readouterr().err
    assert "at least 16 characters" in err and "too-short" not in err
    assert run_webhooks(intake, ["help-desk"], "127.0.0.1", 0, {}) == 2
    assert "expected NAME=MAPPING.yaml, found 'help-desk'" in capsys.readouterr().err
    assert run_webhooks(intake, [], "127.0.0.1", 0, {}) == 2
