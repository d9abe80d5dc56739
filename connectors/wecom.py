"""WeCom (企业微信) callback connector: the documented encrypted callback protocol, and
conversations with external contacts as touchpoints.

The protocol, as WeCom documents it for an app's callback URL:

- ``GET ?msg_signature&timestamp&nonce&echostr`` verifies the URL: the signature is
  the SHA-1 hex digest of the sorted, concatenated ``[token, timestamp, nonce,
  echostr]``; ``echostr`` is decrypted and its message returned as plain text.
- ``POST ?msg_signature&timestamp&nonce`` carries ``<xml><ToUserName/><AgentID/>
  <Encrypt/></xml>``; the signature covers ``Encrypt`` instead of ``echostr``.
- Encryption is AES-256-CBC with key ``base64(EncodingAESKey + "=")`` (43 characters
  make 32 bytes), IV the key's first 16 bytes, PKCS#7 padding to 32-byte blocks. The
  plaintext is 16 random bytes, the message length (4 bytes, network order), the
  message, and the receiver id (the corp id), which must be ours.

On top of the protocol this connector refuses timestamps outside a freshness window
and answers a replayed ``MsgId`` without publishing it again (WeCom retries a callback
it got no answer to within 5 s, with the same ``MsgId``).

Messages become touchpoints when they are between an employee and an external contact
(a customer): the decrypted message names the employee (``UserID``) and the external
contact (``ExternalUserID``), and ``FromUserName`` says who wrote. WeCom's own
``change_external_contact`` events become ``contact_added`` / ``contact_removed`` /
``contact_edited``. Anything else (employees writing to the app, other events) is
acknowledged and counted, not published. The customer is the external contact.

Answers: 200 (URL verified, or message taken: empty body, as WeCom expects); 400 an
envelope or message that does not parse (bad XML, base64, padding or length); 401 a
signature that does not match or a stale timestamp; 403 a message for another corp;
422 a message that is not a touchpoint as it says it is; 503 with Retry-After when
Kafka did not take it now.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import logging
import os
import re
import struct
import sys
import xml.etree.ElementTree as ET
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from pydantic import SecretStr, ValidationError

from schemas.models import Channel, Direction, TouchpointEvent

from .http import add_probes, problem_response, with_retry_after
from .mapping_service import serve_http
from .publisher import PublishUnavailable, TouchpointSink, UnpublishableTouchpoints
from .settings import IntakeSettings

log = logging.getLogger(__name__)

SOURCE = "wecom-callback/0.1.0"
FRESHNESS_SECONDS = 300
MAX_BODY_BYTES = 256 * 1024
BLOCK = 32
"""WeCom pads to 32-byte blocks (PKCS#7 with block size 32)."""
SEEN_MAX = 100_000
"""Message keys remembered for replay protection (oldest forgotten first)."""
CONTACT_CHANGES = {
    "add_external_contact": "contact_added",
    "add_half_external_contact": "contact_added",
    "edit_external_contact": "contact_edited",
    "del_external_contact": "contact_removed",
    "del_follow_user": "contact_removed",
}
"""``change_external_contact`` change types -> touchpoint kinds."""
MESSAGE_TYPES = frozenset({"text", "image", "voice", "video", "file", "link", "location"})

Clock = Callable[[], datetime]
_UNIX_SECONDS = re.compile(r"[0-9]{1,12}")
_LAST_SECOND = 253_402_300_799  # 9999-12-31T23:59:59Z


def utc_now() -> datetime:
    return datetime.now(UTC)


class WeComRefused(Exception):
    """A callback that cannot be taken; ``status`` is the HTTP answer, ``field`` names
    what is wrong, the message says what was expected and found."""

    status = 400

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(message)


class BadEnvelope(WeComRefused):
    status = 400


class BadSignature(WeComRefused):
    status = 401


class WrongReceiver(WeComRefused):
    status = 403


class NotATouchpoint(WeComRefused):
    status = 422


# --- the protocol ------------------------------------------------------------------------


def aes_key(encoding_aes_key: str) -> bytes:
    """The 32-byte AES key of a 43-character EncodingAESKey."""
    if len(encoding_aes_key) != 43:
        raise ValueError(f"EncodingAESKey: expected 43 characters, found {len(encoding_aes_key)}")
    try:
        key = base64.b64decode(encoding_aes_key + "=", validate=True)
    except binascii.Error:
        raise ValueError("EncodingAESKey: expected base64 characters, found others") from None
    if len(key) != 32:
        raise ValueError(f"EncodingAESKey: expected 32 bytes once decoded, found {len(key)}")
    return key


def msg_signature(token: str, timestamp: str, nonce: str, encrypted: str) -> str:
    """SHA-1 hex of the sorted, concatenated token, timestamp, nonce and ciphertext."""
    return hashlib.sha1("".join(sorted([token, timestamp, nonce, encrypted])).encode()).hexdigest()


def encrypt(key: bytes, receive_id: str, message: bytes, random16: bytes | None = None) -> str:
    """The base64 ciphertext WeCom would send (used for replies and by tests)."""
    prefix = os.urandom(16) if random16 is None else random16
    plain = prefix + struct.pack(">I", len(message)) + message + receive_id.encode()
    pad = BLOCK - len(plain) % BLOCK
    plain += bytes([pad]) * pad
    encryptor = Cipher(algorithms.AES(key), modes.CBC(key[:16])).encryptor()
    return base64.b64encode(encryptor.update(plain) + encryptor.finalize()).decode()


def decrypt(key: bytes, encrypted: str) -> tuple[bytes, str]:
    """(message, receive id) of a ciphertext, or BadEnvelope saying what is wrong."""
    try:
        cipher_text = base64.b64decode(encrypted, validate=True)
    except (binascii.Error, ValueError):
        raise BadEnvelope("Encrypt", "expected base64, found other characters") from None
    if not cipher_text or len(cipher_text) % 16:
        raise BadEnvelope(
            "Encrypt",
            f"expected a whole number of 16-byte AES blocks, found {len(cipher_text)} bytes",
        )
    decryptor = Cipher(algorithms.AES(key), modes.CBC(key[:16])).decryptor()
    plain = decryptor.update(cipher_text) + decryptor.finalize()
    pad = plain[-1]
    if not 1 <= pad <= BLOCK or plain[-pad:] != bytes([pad]) * pad:
        raise BadEnvelope(
            "Encrypt",
            f"expected PKCS#7 padding of 1 to {BLOCK} bytes, found a last byte of {pad} "
            "that does not pad (wrong EncodingAESKey, or a damaged message)",
        )
    plain = plain[:-pad]
    if len(plain) < 20:
        raise BadEnvelope("Encrypt", f"expected at least 20 bytes of plaintext, found {len(plain)}")
    (length,) = struct.unpack(">I", plain[16:20])
    if 20 + length > len(plain):
        raise BadEnvelope(
            "Encrypt",
            f"expected a message of {length} bytes, found only {len(plain) - 20} after the header",
        )
    message, receive_id = plain[20 : 20 + length], plain[20 + length :]
    try:
        return message, receive_id.decode()
    except UnicodeDecodeError:
        raise BadEnvelope("Encrypt", "expected a UTF-8 receiver id, found other bytes") from None


@dataclass(frozen=True)
class WeComCallback:
    """One app's callback settings: what WeCom's admin console shows for it."""

    token: SecretStr
    encoding_aes_key: SecretStr
    corp_id: str
    """The receiver id every message must carry (the suite id for a third-party app)."""
    freshness_seconds: float = FRESHNESS_SECONDS
    key: bytes = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not self.corp_id:
            raise ValueError("corp_id: expected the corp id, found ''")
        if not self.token.get_secret_value():
            raise ValueError("token: expected the callback token, found ''")
        object.__setattr__(self, "key", aes_key(self.encoding_aes_key.get_secret_value()))

    def check(
        self,
        signature: str | None,
        timestamp: str | None,
        nonce: str | None,
        encrypted: str,
        now: float,
    ) -> None:
        """BadSignature unless the signature matches and the timestamp is fresh."""
        if not signature or not timestamp or nonce is None:
            raise BadSignature(
                "msg_signature",
                "expected msg_signature, timestamp and nonce in the query, found "
                + ", ".join(
                    f"{name} {'missing' if value is None or value == '' else 'present'}"
                    for name, value in (
                        ("msg_signature", signature),
                        ("timestamp", timestamp),
                        ("nonce", nonce),
                    )
                ),
            )
        expected = msg_signature(self.token.get_secret_value(), timestamp, nonce, encrypted)
        if not hmac.compare_digest(expected.encode(), signature.lower().encode()):
            raise BadSignature(
                "msg_signature",
                "expected the SHA-1 of the sorted token, timestamp, nonce and ciphertext, "
                "found another signature",
            )
        if not _UNIX_SECONDS.fullmatch(timestamp):
            raise BadSignature("timestamp", "expected Unix seconds, found other text")
        skew = abs(now - int(timestamp))
        if skew > self.freshness_seconds:
            raise BadSignature(
                "timestamp",
                f"expected a timestamp within {self.freshness_seconds:g} s of now, "
                f"found one {skew:.0f} s away",
            )

    def open(self, encrypted: str) -> bytes:
        """The decrypted message, or BadEnvelope / WrongReceiver."""
        message, receive_id = decrypt(self.key, encrypted)
        if not hmac.compare_digest(receive_id.encode(), self.corp_id.encode()):
            raise WrongReceiver(
                "ReceiveId",
                f"expected the message for corp {self.corp_id}, found one for another receiver",
            )
        return message

    def verify_url(
        self,
        signature: str | None,
        timestamp: str | None,
        nonce: str | None,
        echostr: str | None,
        now: float,
    ) -> str:
        """The plaintext to answer WeCom's URL verification with."""
        if not echostr:
            raise BadEnvelope("echostr", "expected echostr in the query, found none")
        self.check(signature, timestamp, nonce, echostr, now)
        try:
            return self.open(echostr).decode()
        except UnicodeDecodeError:
            raise BadEnvelope(
                "echostr", "expected UTF-8 text once decrypted, found other"
            ) from None

    def open_envelope(
        self,
        signature: str | None,
        timestamp: str | None,
        nonce: str | None,
        body: bytes,
        now: float,
    ) -> bytes:
        """The decrypted message XML of a POSTed envelope."""
        envelope = parse_xml(body, "envelope")
        encrypted = envelope.get("Encrypt")
        if not encrypted:
            raise BadEnvelope("Encrypt", "expected <Encrypt> in the envelope, found none")
        self.check(signature, timestamp, nonce, encrypted, now)
        return self.open(encrypted)


def parse_xml(data: bytes, what: str) -> dict[str, str]:
    """The child elements of a flat ``<xml>`` document as a dict (first of each name)."""
    head = data[:4096].lower()
    if b"<!doctype" in head or b"<!entity" in head:
        raise BadEnvelope(f"({what})", "expected plain XML, found a DOCTYPE or ENTITY declaration")
    try:
        root = ET.fromstring(data)  # entities refused above; expat bounds expansion
    except (ET.ParseError, LookupError, ValueError) as exc:  # also encodings expat lacks
        raise BadEnvelope(f"({what})", f"expected XML, found: {exc}") from None
    if root.tag != "xml":
        raise BadEnvelope(f"({what})", f"expected an <xml> root element, found <{root.tag[:40]}>")
    fields: dict[str, str] = {}
    for child in root:
        fields.setdefault(child.tag, (child.text or "").strip())
    return fields


# --- messages -> touchpoints -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WeComMessage:
    """What a decrypted callback message says, as far as touchpoints care."""

    key: str
    """Identifies the message for replay protection: its MsgId, or for an event the
    fields WeCom says identify it."""
    event: TouchpointEvent | None
    """None for messages that are not about an external contact."""
    msg_type: str


def event_id(corp_id: str, key: str) -> str:
    return "wecom:" + hashlib.sha256(f"{corp_id}\n{key}".encode()).hexdigest()[:32]


def to_message(xml: bytes, corp_id: str, received_at: datetime) -> WeComMessage:
    """Map one decrypted message; NotATouchpoint when it says it is one but does not fit."""
    fields = parse_xml(xml, "message")
    msg_type = fields.get("MsgType", "")
    created = fields.get("CreateTime", "")
    if not _UNIX_SECONDS.fullmatch(created) or int(created) > _LAST_SECOND:
        raise NotATouchpoint(
            "CreateTime", "expected Unix seconds (ASCII digits, before 10000), found other"
        )
    occurred_at = datetime.fromtimestamp(int(created), UTC)
    user_id, external = fields.get("UserID", ""), fields.get("ExternalUserID", "")
    if msg_type == "event":
        event = fields.get("Event", "")
        change = fields.get("ChangeType", "")
        key = "|".join((event, change, user_id, external, created))
        if event != "change_external_contact" or change not in CONTACT_CHANGES:
            return WeComMessage(key, None, f"event:{event[:40]}")
        if not external:
            raise NotATouchpoint("ExternalUserID", "expected the external contact, found none")
        touchpoint = _touchpoint(
            event_id(corp_id, key),
            external,
            occurred_at,
            received_at,
            CONTACT_CHANGES[change],
            Direction.NONE,
            user_id or None,
            None,
            {"change_type": change, **({"state": fields["State"]} if fields.get("State") else {})},
        )
        return WeComMessage(key, touchpoint, f"event:{event}")
    msg_id = fields.get("MsgId", "")
    if not msg_id:
        raise NotATouchpoint("MsgId", "expected the message id, found none")
    if not (user_id and external) or msg_type not in MESSAGE_TYPES:
        return WeComMessage(msg_id, None, msg_type[:40] or "(none)")
    sender = fields.get("FromUserName", "")
    if sender == external:
        direction, kind = Direction.INBOUND, "message_received"
    elif sender == user_id:
        direction, kind = Direction.OUTBOUND, "message_sent"
    else:
        raise NotATouchpoint(
            "FromUserName",
            "expected the sender to be the UserID or the ExternalUserID of the message, "
            "found someone else",
        )
    text = fields.get("Content") if msg_type == "text" else None
    touchpoint = _touchpoint(
        event_id(corp_id, msg_id),
        external,
        occurred_at,
        received_at,
        kind,
        direction,
        user_id,
        text,
        {
            "msg_type": msg_type,
            **({"agent_id": fields["AgentID"]} if fields.get("AgentID") else {}),
        },
    )
    return WeComMessage(msg_id, touchpoint, msg_type)


def _touchpoint(
    event_id: str,
    external: str,
    occurred_at: datetime,
    received_at: datetime,
    kind: str,
    direction: Direction,
    rep_id: str | None,
    text: str | None,
    attributes: dict[str, str | int | float | bool],
) -> TouchpointEvent:
    try:
        return TouchpointEvent(
            event_id=event_id,
            customer_id=external,
            occurred_at=occurred_at,
            received_at=received_at,
            channel=Channel.CHAT,
            kind=kind,
            direction=direction,
            rep_id=rep_id,
            contact_id=external,
            text=text,
            attributes=attributes,
            source=SOURCE,
        )
    except ValidationError as exc:
        item = exc.errors(include_url=False)[0]
        name = {
            "customer_id": "ExternalUserID",
            "contact_id": "ExternalUserID",
            "rep_id": "UserID",
            "text": "Content",
        }.get(str(item["loc"][0]), str(item["loc"][0]))
        raise NotATouchpoint(name, f"does not fit a touchpoint: {item['msg']}") from None


class _Seen:
    """Keys of messages published recently, at most ``limit``."""

    def __init__(self, limit: int = SEEN_MAX) -> None:
        self._limit = limit
        self._keys: OrderedDict[str, None] = OrderedDict()

    def __contains__(self, key: str) -> bool:
        return key in self._keys

    def add(self, key: str) -> None:
        self._keys[key] = None
        self._keys.move_to_end(key)
        while len(self._keys) > self._limit:
            self._keys.popitem(last=False)


@dataclass
class Counts:
    published: int = 0
    replayed: int = 0
    ignored: int = 0
    refused: int = 0


def create_wecom_app(
    callback: WeComCallback, sink: TouchpointSink, clock: Clock = utc_now
) -> web.Application:
    """``GET`` and ``POST /v1/wecom/callback``; ``/healthz`` and ``/readyz``."""
    seen = _Seen()
    counts = Counts()

    async def verify(request: web.Request) -> web.Response:
        query = request.query
        try:
            plain = callback.verify_url(
                query.get("msg_signature"),
                query.get("timestamp"),
                query.get("nonce"),
                query.get("echostr"),
                clock().timestamp(),
            )
        except WeComRefused as refused:
            counts.refused += 1
            log.warning("wecom URL verification refused: %s: %s", refused.field, refused)
            return _error(refused)
        return web.Response(text=plain, content_type="text/plain")

    async def receive(request: web.Request) -> web.Response:
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            refused = BadEnvelope("(body)", f"expected at most {MAX_BODY_BYTES} bytes, found more")
            return _error(refused, 413)
        now = clock()
        query = request.query
        try:
            xml = callback.open_envelope(
                query.get("msg_signature"),
                query.get("timestamp"),
                query.get("nonce"),
                body,
                now.timestamp(),
            )
            message = to_message(xml, callback.corp_id, now)
        except WeComRefused as refused:
            counts.refused += 1
            log.warning("wecom callback refused: %s: %s", refused.field, refused)
            return _error(refused)
        if message.key in seen:
            counts.replayed += 1
            return web.Response(text="")
        if message.event is None:
            counts.ignored += 1
            log.info("wecom %s message taken, not a touchpoint", message.msg_type)
            seen.add(message.key)
            return web.Response(text="")
        try:
            await sink.publish([message.event])
        except UnpublishableTouchpoints as exc:
            detail = "; ".join(p["message"] for p in exc.problems)
            return _error(NotATouchpoint("(message)", f"does not encode: {detail}"))
        except PublishUnavailable as exc:
            response = _error(BadEnvelope("(kafka)", str(exc)), 503)
            return with_retry_after(response, exc.retry_after_seconds)
        seen.add(message.key)
        counts.published += 1
        return web.Response(text="")

    app = web.Application(client_max_size=MAX_BODY_BYTES)
    app.router.add_get("/v1/wecom/callback", verify)
    app.router.add_post("/v1/wecom/callback", receive)
    add_probes(app, sink.readiness, counts=lambda: counts.__dict__)
    return app


def _error(refused: WeComRefused, status: int | None = None) -> web.Response:
    problem: dict[str, Any] = {"field": refused.field, "message": str(refused)}
    return problem_response(status or refused.status, [problem], f"{refused.field}: {refused}")


TOKEN_VARIABLE = "WARROOM_WECOM_TOKEN"
AES_KEY_VARIABLE = "WARROOM_WECOM_AES_KEY"
CORP_ID_VARIABLE = "WARROOM_WECOM_CORP_ID"


def callback_from_environment(environ: Mapping[str, str]) -> WeComCallback:
    """The callback settings from WARROOM_WECOM_TOKEN, WARROOM_WECOM_AES_KEY (the
    43-character EncodingAESKey) and WARROOM_WECOM_CORP_ID; ValueError naming what is
    missing or wrong (never its value)."""
    missing = [
        name
        for name in (TOKEN_VARIABLE, AES_KEY_VARIABLE, CORP_ID_VARIABLE)
        if not environ.get(name)
    ]
    if missing:
        raise ValueError(f"expected {', '.join(missing)} in the environment, found none")
    return WeComCallback(
        SecretStr(environ[TOKEN_VARIABLE]),
        SecretStr(environ[AES_KEY_VARIABLE]),
        environ[CORP_ID_VARIABLE],
    )


def run_callback(settings: IntakeSettings, host: str, port: int, environ: Mapping[str, str]) -> int:
    """``warroom wecom serve``: the callback URL until SIGINT or SIGTERM."""
    try:
        callback = callback_from_environment(environ)
    except ValueError as exc:
        print(f"warroom wecom serve: {exc}", file=sys.stderr)
        return 2
    asyncio.run(
        serve_http(
            settings,
            lambda sink: create_wecom_app(callback, sink),
            host,
            port,
            f"wecom callback /v1/wecom/callback of corp {callback.corp_id} listening",
        )
    )
    return 0
