"""The WeCom callback: the documented URL verification vector, envelopes encrypted here
with the algorithm, and every way a callback is refused; external-contact messages and
events as touchpoints; replays publish nothing twice."""

from __future__ import annotations

import base64
import struct
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
from aiohttp.test_utils import TestClient, TestServer
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from connectors.publisher import MemoryTouchpointSink
from connectors.settings import IntakeSettings
from connectors.wecom import (
    BadEnvelope,
    BadSignature,
    NotATouchpoint,
    WeComCallback,
    WeComRefused,
    WrongReceiver,
    aes_key,
    create_wecom_app,
    decrypt,
    encrypt,
    msg_signature,
    run_callback,
    to_message,
)
from schemas.models import Channel, Direction, TouchpointEvent

DATA = Path(__file__).resolve().parents[2] / "tests" / "data" / "connectors" / "wecom"

# WeCom's documented example app
DOC_TOKEN, DOC_CORP = "QDG6eK", "wx5823bf96d3bd56c7"
DOC_KEY = "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C"

TOKEN, CORP = "wr-callback-token-2026", "ww8f2c1a7e4b5d6c90"
KEY_TEXT = base64.b64encode(bytes(range(32))).decode().rstrip("=")
KEY = aes_key(KEY_TEXT)
NOW = datetime(2025, 11, 30, 8, 0, tzinfo=UTC)
CONTACT = "wmAJ2GCAAAzLtoMxYpW8kC1NnqDkYbqw"


def callback(corp: str = CORP, token: str = TOKEN, key: str = KEY_TEXT) -> WeComCallback:
    return WeComCallback(SecretStr(token), SecretStr(key), corp)


def sample(name: str) -> bytes:
    return (DATA / name).read_bytes()


def envelope(
    message: bytes,
    *,
    at: datetime = NOW,
    nonce: str = "1372623149",
    receive_id: str = CORP,
    token: str = TOKEN,
    encrypted: str | None = None,
) -> tuple[dict[str, str], bytes]:
    """(query, body) of a POST WeCom would make for ``message``."""
    encrypted = encrypted or encrypt(KEY, receive_id, message)
    stamp = str(int(at.timestamp()))
    query = {
        "msg_signature": msg_signature(token, stamp, nonce, encrypted),
        "timestamp": stamp,
        "nonce": nonce,
    }
    body = (
        f"<xml><ToUserName><![CDATA[{CORP}]]></ToUserName>"
        f"<Encrypt><![CDATA[{encrypted}]]></Encrypt>"
        "<AgentID><![CDATA[1000002]]></AgentID></xml>"
    ).encode()
    return query, body


def raw_encrypt(plain: bytes) -> str:
    """AES-256-CBC of exactly ``plain`` (no padding added): for broken envelopes."""
    encryptor = Cipher(algorithms.AES(KEY), modes.CBC(KEY[:16])).encryptor()
    return base64.b64encode(encryptor.update(plain) + encryptor.finalize()).decode()


class Clock:
    def __init__(self) -> None:
        self.now = NOW + timedelta(seconds=2)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def sink() -> MemoryTouchpointSink:
    return MemoryTouchpointSink()


@pytest.fixture
async def client(sink: MemoryTouchpointSink) -> AsyncIterator[TestClient[Any, Any]]:
    async with TestClient(TestServer(create_wecom_app(callback(), sink, Clock()))) as test_client:
        yield test_client


def published(sink: MemoryTouchpointSink) -> list[TouchpointEvent]:
    return [event for batch in sink.published for event in batch]


# --- the protocol ---------------------------------------------------------------------------


def test_the_documented_url_verification_example() -> None:
    line = (DATA / "verify-url.http").read_text().split("\r\n", 1)[0]
    query = dict(parse_qsl(urlsplit(line.split(" ")[1]).query))
    doc = callback(DOC_CORP, DOC_TOKEN, DOC_KEY)
    now = 1409659589 + 10
    assert (
        msg_signature(DOC_TOKEN, query["timestamp"], query["nonce"], query["echostr"])
        == (query["msg_signature"])
    )
    assert (
        doc.verify_url(
            query["msg_signature"], query["timestamp"], query["nonce"], query["echostr"], now
        )
        == "1616140317555161061"
    )


async def test_url_verification_over_http() -> None:
    line = (DATA / "verify-url.http").read_text().split("\r\n", 1)[0]
    target = line.split(" ")[1]
    clock = Clock()
    clock.now = datetime.fromtimestamp(1409659589, UTC)
    doc = callback(DOC_CORP, DOC_TOKEN, DOC_KEY)
    app = create_wecom_app(doc, MemoryTouchpointSink(), clock)
    async with TestClient(TestServer(app)) as client:
        response = await client.get(target)
        assert (response.status, await response.text()) == (200, "1616140317555161061")
        tampered = target.replace("nonce=263014780", "nonce=263014781")
        response = await client.get(tampered)
        assert response.status == 401
        assert (await response.json())["problems"][0]["field"] == "msg_signature"


def test_encrypt_then_decrypt_round_trips_with_padding_to_32_bytes() -> None:
    for size in (0, 1, 11, 12, 13, 43, 44, 45, 1000):
        message = bytes([65 + size % 26]) * size
        encrypted = encrypt(KEY, CORP, message)
        cipher = base64.b64decode(encrypted)
        assert len(cipher) % 32 == 0  # WeCom pads to 32, not AES's 16
        assert decrypt(KEY, encrypted) == (message, CORP)


def test_the_plaintext_layout_is_random_length_message_receiver() -> None:
    encrypted = encrypt(KEY, CORP, b"<xml/>", random16=b"r" * 16)
    decryptor = Cipher(algorithms.AES(KEY), modes.CBC(KEY[:16])).decryptor()
    plain = decryptor.update(base64.b64decode(encrypted)) + decryptor.finalize()
    unpadded = plain[: -plain[-1]]
    assert unpadded == b"r" * 16 + struct.pack(">I", 6) + b"<xml/>" + CORP.encode()


@pytest.mark.parametrize(
    "key, expected",
    [
        ("short", "expected 43 characters, found 5"),
        ("!" * 43, "expected base64 characters, found others"),
    ],
)
def test_a_wrong_encoding_aes_key_is_refused_at_start(key: str, expected: str) -> None:
    with pytest.raises(ValueError, match=expected):
        callback(key=key)


def test_settings_never_show_the_secrets() -> None:
    shown = repr(callback())
    assert TOKEN not in shown and KEY_TEXT not in shown


# --- refusals ---------------------------------------------------------------------------------


def open_post(query: dict[str, str], body: bytes, now: datetime = NOW) -> bytes:
    return callback().open_envelope(
        query.get("msg_signature"), query.get("timestamp"), query.get("nonce"), body,
        now.timestamp(),
    )  # fmt: skip


def test_a_valid_envelope_opens() -> None:
    message = sample("external-text-inbound.xml")
    assert open_post(*envelope(message)) == message


def test_a_tampered_signature_is_refused() -> None:
    query, body = envelope(sample("external-text-inbound.xml"))
    query["msg_signature"] = query["msg_signature"][:-1] + (
        "0" if query["msg_signature"][-1] != "0" else "1"
    )
    with pytest.raises(BadSignature, match="found another signature"):
        open_post(query, body)


def test_a_tampered_ciphertext_is_refused_by_the_signature() -> None:
    query, body = envelope(sample("external-text-inbound.xml"))
    encrypted = body.split(b"<![CDATA[")[2].split(b"]]>")[0]
    flipped = encrypted[:10] + (b"A" if encrypted[10:11] != b"A" else b"B") + encrypted[11:]
    with pytest.raises(BadSignature):
        open_post(query, body.replace(encrypted, flipped))


def test_a_signature_made_with_another_token_is_refused() -> None:
    with pytest.raises(BadSignature):
        open_post(*envelope(sample("external-text-inbound.xml"), token="another-token"))


def test_a_message_for_another_corp_is_refused() -> None:
    query, body = envelope(sample("external-text-inbound.xml"), receive_id="ww0000000000000000")
    with pytest.raises(WrongReceiver, match=f"expected the message for corp {CORP}"):
        open_post(query, body)


@pytest.mark.parametrize("skew", [timedelta(seconds=301), timedelta(seconds=-301)])
def test_a_stale_timestamp_is_refused(skew: timedelta) -> None:
    query, body = envelope(sample("external-text-inbound.xml"), at=NOW - skew)
    with pytest.raises(BadSignature, match="within 300 s of now, found one 301 s away"):
        open_post(query, body)


@pytest.mark.parametrize(
    "plain, expected",
    [
        (b"x" * 16 + struct.pack(">I", 3) + b"abc" + CORP.encode() + b"\x00" * 7, "padding"),
        (b"x" * 31 + b"\x21", "padding"),  # 33 is more than a block
        (b"x" * 30 + b"\x05\x02", "padding"),  # the pad bytes disagree
        (b"x" * 16 + struct.pack(">I", 999) + b"abc" + b"\x09" * 9, "expected a message of 999"),
        (b"x" * 16 + b"\x10" * 16, "expected at least 20 bytes"),
    ],
    ids=["zero-padding", "pad-too-long", "pad-mismatch", "length-past-end", "too-short"],
)
def test_broken_padding_and_lengths_are_refused(plain: bytes, expected: str) -> None:
    query, body = envelope(b"", encrypted=raw_encrypt(plain))
    with pytest.raises(BadEnvelope, match=expected):
        open_post(query, body)


@pytest.mark.parametrize(
    "encrypted, expected",
    [
        ("not*base64", "expected base64"),
        (base64.b64encode(b"x" * 20).decode(), "whole number of 16-byte AES blocks, found 20"),
    ],
)
def test_ciphertexts_that_cannot_be_aes_are_refused(encrypted: str, expected: str) -> None:
    query, body = envelope(b"", encrypted=encrypted)
    with pytest.raises(BadEnvelope, match=expected):
        open_post(query, body)


@pytest.mark.parametrize(
    "body, expected",
    [
        (b"<xml><ToUserName>x</ToUserName></xml>", "expected <Encrypt> in the envelope"),
        (b"<xml><Encrypt>", "expected XML"),
        (b"<json/>", "expected an <xml> root element, found <json>"),
        (
            b'<!DOCTYPE xml [<!ENTITY a "aaaa">]><xml><Encrypt>&a;</Encrypt></xml>',
            "found a DOCTYPE or ENTITY declaration",
        ),
    ],
)
def test_envelopes_that_do_not_parse_are_refused(body: bytes, expected: str) -> None:
    with pytest.raises(BadEnvelope, match=expected):
        open_post({"msg_signature": "x", "timestamp": "1", "nonce": "1"}, body)


def test_a_missing_query_parameter_is_named() -> None:
    _, body = envelope(sample("external-text-inbound.xml"))
    with pytest.raises(BadSignature, match="timestamp missing"):
        open_post({"msg_signature": "abc", "nonce": "1"}, body)


# --- messages -> touchpoints ------------------------------------------------------------------


def test_an_inbound_external_message_is_a_customer_message() -> None:
    message = to_message(sample("external-text-inbound.xml"), CORP, NOW)
    event = message.event
    assert event is not None
    assert (event.customer_id, event.contact_id, event.rep_id) == (CONTACT, CONTACT, "LiWei")
    assert (event.channel, event.kind, event.direction) == (
        Channel.CHAT,
        "message_received",
        Direction.INBOUND,
    )
    assert event.text == "你好，3号冷水机组又报警了，能派人来看看吗？"
    assert event.occurred_at == datetime(2025, 11, 30, 8, 0, tzinfo=UTC)
    assert event.attributes == {"msg_type": "text", "agent_id": "1000002"}
    assert event.event_id.startswith("wecom:") and len(event.event_id) == 38
    assert message.key == "7395012345678901234"


def test_an_outbound_message_is_the_rep_writing() -> None:
    event = to_message(sample("external-text-outbound.xml"), CORP, NOW).event
    assert event is not None
    assert (event.kind, event.direction, event.rep_id) == (
        "message_sent",
        Direction.OUTBOUND,
        "LiWei",
    )


def test_an_image_has_no_text_but_its_type() -> None:
    event = to_message(sample("external-image-inbound.xml"), CORP, NOW).event
    assert event is not None and event.text is None and event.attributes["msg_type"] == "image"


def test_a_new_external_contact_event() -> None:
    event = to_message(sample("add-external-contact.xml"), CORP, NOW).event
    assert event is not None
    assert (event.kind, event.direction, event.rep_id, event.customer_id) == (
        "contact_added",
        Direction.NONE,
        "LiWei",
        CONTACT,
    )
    assert event.attributes == {
        "change_type": "add_external_contact",
        "state": "expo-2026-booth-12",
    }


def test_an_employee_writing_to_the_app_is_not_a_touchpoint() -> None:
    message = to_message(sample("employee-to-app.xml"), CORP, NOW)
    assert message.event is None and message.msg_type == "text"


def test_a_sender_who_is_neither_side_is_refused() -> None:
    with pytest.raises(NotATouchpoint, match="expected the sender to be the UserID or"):
        to_message(sample("external-text-stranger.xml"), CORP, NOW)


@pytest.mark.parametrize(
    "remove, expected",
    [
        ("<MsgId>7395012345678901234</MsgId>", "MsgId"),
        ("<CreateTime>1764489600</CreateTime>", "CreateTime"),
    ],
)
def test_a_message_without_its_id_or_time_is_refused(remove: str, expected: str) -> None:
    xml = sample("external-text-inbound.xml").replace(remove.encode(), b"")
    with pytest.raises(NotATouchpoint) as caught:
        to_message(xml, CORP, NOW)
    assert caught.value.field == expected


def test_event_ids_come_from_the_msgid_and_the_corp() -> None:
    first = to_message(sample("external-text-inbound.xml"), CORP, NOW).event
    again = to_message(sample("external-text-inbound.xml"), CORP, NOW + timedelta(hours=1)).event
    other_corp = to_message(sample("external-text-inbound.xml"), "ww-other", NOW).event
    assert first is not None and again is not None and other_corp is not None
    assert first.event_id == again.event_id != other_corp.event_id


# --- over HTTP --------------------------------------------------------------------------------


async def test_a_message_is_published_and_a_replay_is_not(
    client: TestClient[Any, Any], sink: MemoryTouchpointSink
) -> None:
    query, body = envelope(sample("external-text-inbound.xml"))
    first = await client.post("/v1/wecom/callback", params=query, data=body)
    assert (first.status, await first.text()) == (200, "")
    replay = await client.post("/v1/wecom/callback", params=query, data=body)
    assert replay.status == 200
    # WeCom's own retry: same MsgId, new nonce and signature
    retry_query, retry_body = envelope(sample("external-text-inbound.xml"), nonce="99")
    retry = await client.post("/v1/wecom/callback", params=retry_query, data=retry_body)
    assert retry.status == 200
    [event] = published(sink)
    assert event.kind == "message_received"
    health = await (await client.get("/healthz")).json()
    assert (health["published"], health["replayed"]) == (1, 2)


@pytest.mark.parametrize(
    "make, status, field",
    [
        (
            lambda: envelope(sample("external-text-inbound.xml"), token="wrong"),
            401,
            "msg_signature",
        ),
        (
            lambda: envelope(sample("external-text-inbound.xml"), at=NOW - timedelta(hours=1)),
            401,
            "timestamp",
        ),
        (
            lambda: envelope(sample("external-text-inbound.xml"), receive_id="ww-else"),
            403,
            "ReceiveId",
        ),
        (lambda: envelope(b"", encrypted=raw_encrypt(b"x" * 32)), 400, "Encrypt"),
        (lambda: envelope(sample("external-text-stranger.xml")), 422, "FromUserName"),
    ],
    ids=["signature", "stale", "corp", "padding", "stranger"],
)
async def test_refusals_over_http(
    client: TestClient[Any, Any],
    sink: MemoryTouchpointSink,
    make: Any,
    status: int,
    field: str,
) -> None:
    query, body = make()
    response = await client.post("/v1/wecom/callback", params=query, data=body)
    assert response.status == status
    answer = await response.json()
    assert answer["problems"][0]["field"] == field
    assert CONTACT not in answer["error"]
    assert sink.published == []


async def test_messages_that_are_not_touchpoints_are_taken_and_counted(
    client: TestClient[Any, Any], sink: MemoryTouchpointSink
) -> None:
    query, body = envelope(sample("employee-to-app.xml"))
    response = await client.post("/v1/wecom/callback", params=query, data=body)
    assert response.status == 200
    assert sink.published == []
    assert (await (await client.get("/healthz")).json())["ignored"] == 1


@pytest.mark.parametrize(
    "body",
    [
        b'<?xml version="1.0" encoding="bogus"?><xml><Encrypt>x</Encrypt></xml>',
        b'<?xml version="1.0" encoding="gbk"?><xml><Encrypt>\xc4\xe3</Encrypt></xml>',
        b'<?xml version="1.0" encoding="utf-16"?><xml/>',
        b"\xff\xfe<\x00x\x00",
        b"",
    ],
    ids=["unknown-encoding", "multi-byte-encoding", "wrong-encoding", "utf-16-bytes", "empty"],
)
def test_xml_in_encodings_expat_cannot_read_is_refused(body: bytes) -> None:
    with pytest.raises(BadEnvelope, match="expected XML"):
        open_post({"msg_signature": "x", "timestamp": "1", "nonce": "1"}, body)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300) | st.text(max_size=200).map(str.encode))
def test_any_body_is_taken_or_refused_with_a_reason(body: bytes) -> None:
    try:
        open_post({"msg_signature": "x", "timestamp": "1", "nonce": "1"}, body)
    except WeComRefused as refused:
        assert refused.field and str(refused)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300) | st.text(max_size=200).map(str.encode))
def test_any_decrypted_message_maps_or_is_refused_with_a_reason(message: bytes) -> None:
    try:
        to_message(open_post(*envelope(message)), CORP, NOW)
    except WeComRefused as refused:
        assert refused.field and str(refused)


@pytest.mark.parametrize("created", ["999999999999", "²", "１７６４４８９６００"])
def test_a_create_time_out_of_range_or_in_other_digits_is_refused(created: str) -> None:
    xml = sample("external-text-inbound.xml").replace(b"1764489600", created.encode())
    with pytest.raises(NotATouchpoint) as caught:
        to_message(xml, CORP, NOW)
    assert caught.value.field == "CreateTime"


@pytest.mark.parametrize("stamp", ["²", "１７６４４８９６００"])
def test_a_timestamp_in_other_digits_is_refused(stamp: str) -> None:
    query, body = envelope(sample("external-text-inbound.xml"))
    encrypted = body.split(b"<![CDATA[")[2].split(b"]]>")[0].decode()
    query["timestamp"] = stamp
    query["msg_signature"] = msg_signature(TOKEN, stamp, query["nonce"], encrypted)
    with pytest.raises(BadSignature, match="expected Unix seconds"):
        open_post(query, body)


def test_serving_refuses_to_start_without_its_settings_and_never_shows_them(
    capsys: pytest.CaptureFixture[str],
) -> None:
    intake = IntakeSettings("127.0.0.1:1", "touchpoints", 4, "test")
    assert run_callback(intake, "127.0.0.1", 0, {"WARROOM_WECOM_TOKEN": TOKEN}) == 2
    assert capsys.readouterr().err == (
        "warroom wecom serve: expected WARROOM_WECOM_AES_KEY, WARROOM_WECOM_CORP_ID in the "
        "environment, found none\n"
    )
    environ = {
        "WARROOM_WECOM_TOKEN": TOKEN,
        "WARROOM_WECOM_AES_KEY": KEY_TEXT[:-1],
        "WARROOM_WECOM_CORP_ID": CORP,
    }
    assert run_callback(intake, "127.0.0.1", 0, environ) == 2
    err = capsys.readouterr().err
    assert "EncodingAESKey: expected 43 characters, found 42" in err
    assert KEY_TEXT[:-1] not in err and TOKEN not in err
