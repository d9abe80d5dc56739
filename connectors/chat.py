"""Chat connector: chat messages as JSON over HTTP or from a JSONL file -> touchpoints.

A request is validated, converted and encoded as a whole before anything is
published, and published in one Kafka transaction, so a client never sees half of
a request land. Answers: 202 published; 400 not JSON; 413 body too large; 422 a
message is invalid or does not convert (each problem names the message and
field); 503 with Retry-After only when Kafka did not take it now.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from aiohttp import web
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from schemas.models import Channel, Direction, TouchpointEvent

from .http import accepted, add_probes, dumps, problem_response, read_json, unavailable
from .problems import describe, found_always, unencodable, validation_problems
from .publisher import PublishUnavailable, TouchpointSink, UnpublishableTouchpoints

log = logging.getLogger(__name__)

SOURCE = "chat-http/0.1.0"
MAX_MESSAGES_PER_REQUEST = 1000
MAX_BODY_BYTES = 4 * 1024 * 1024

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


class ChatMessage(BaseModel):
    """One message of a chat conversation between a customer and a rep."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    message_id: str = Field(min_length=1, max_length=96)
    customer_id: str = Field(min_length=1, max_length=128)
    sent_at: AwareDatetime
    sender: Literal["customer", "rep"]
    rep_id: str | None = Field(None, min_length=1, max_length=128)
    contact_id: str | None = Field(None, min_length=1, max_length=128)
    text: str | None = Field(None, max_length=20000)
    attributes: dict[str, str | int | float | bool] = Field(default_factory=dict)
    industry: str | None = Field(None, max_length=64)

    def to_touchpoint(self, received_at: datetime) -> TouchpointEvent:
        from_rep = self.sender == "rep"
        return TouchpointEvent(
            event_id=f"chat:{self.message_id}",
            customer_id=self.customer_id,
            occurred_at=self.sent_at,
            received_at=received_at,
            channel=Channel.CHAT,
            kind="message_sent" if from_rep else "message_received",
            direction=Direction.OUTBOUND if from_rep else Direction.INBOUND,
            rep_id=self.rep_id,
            contact_id=self.contact_id,
            text=self.text,
            attributes=self.attributes,
            source=SOURCE,
            industry=self.industry,
        )


class InvalidChatInput(ValueError):
    """Input that is not a chat message (or list of them); ``problems`` name each field."""

    def __init__(self, problems: list[dict[str, Any]]) -> None:
        self.problems = problems
        super().__init__("; ".join(describe(p, "message {}") for p in problems))


def _problems(error: ValidationError, **where: int) -> list[dict[str, Any]]:
    return validation_problems(error, "(message)", where, found=found_always(_shown))


def _shown(value: Any) -> Any:
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return type(value).__name__


def parse_messages(payload: Any) -> list[ChatMessage]:
    """A JSON object (one message) or a list of them -> validated messages, or raise."""
    items = payload if isinstance(payload, list) else [payload]
    if not items:
        raise InvalidChatInput([{"field": "(body)", "message": "expected at least one message"}])
    if len(items) > MAX_MESSAGES_PER_REQUEST:
        raise InvalidChatInput(
            [
                {
                    "field": "(body)",
                    "message": f"expected at most {MAX_MESSAGES_PER_REQUEST} messages, "
                    f"found {len(items)}",
                }
            ]
        )
    return _validated(
        ((item, {"index": index}) for index, item in enumerate(items)),
        ChatMessage.model_validate,
    )


def parse_jsonl(lines: Iterable[str]) -> list[ChatMessage]:
    """One chat message per line (blank lines skipped); every bad line is reported."""
    return _validated(
        ((line, {"line": number}) for number, line in enumerate(lines, start=1) if line.strip()),
        ChatMessage.model_validate_json,
    )


def _validated(
    inputs: Iterable[tuple[Any, dict[str, int]]], validate: Callable[[Any], ChatMessage]
) -> list[ChatMessage]:
    """Validate every input; raise once, naming every problem and where it is."""
    messages: list[ChatMessage] = []
    problems: list[dict[str, Any]] = []
    for value, where in inputs:
        try:
            messages.append(validate(value))
        except ValidationError as exc:
            problems.extend(_problems(exc, **where))
    if problems:
        raise InvalidChatInput(problems)
    return messages


def read_jsonl(path: Path) -> list[ChatMessage]:
    with path.open(encoding="utf-8") as lines:
        return parse_jsonl(lines)


_CHAT_FIELD = {"event_id": "message_id", "occurred_at": "sent_at"}
"""Touchpoint fields named as the chat message calls them."""


def to_touchpoints(messages: Sequence[ChatMessage], received_at: datetime) -> list[TouchpointEvent]:
    """Every message as a touchpoint; raise once, naming every message that does not
    convert and why."""
    events: list[TouchpointEvent] = []
    problems: list[dict[str, Any]] = []
    for index, message in enumerate(messages):
        try:
            events.append(message.to_touchpoint(received_at))
        except ValidationError as exc:
            for problem in _problems(exc, index=index):
                head, _, rest = problem["field"].partition(".")
                field = _CHAT_FIELD.get(head, head) + (f".{rest}" if rest else "")
                message_text = f"does not convert to a touchpoint: {problem['message']}"
                problems.append({**problem, "field": field, "message": message_text})
    if problems:
        raise InvalidChatInput(problems)
    return events


async def publish_messages(
    sink: TouchpointSink, messages: Sequence[ChatMessage], clock: Clock = utc_now
) -> list[TouchpointEvent]:
    """Convert and publish; raises InvalidChatInput for messages that cannot be published
    (never worth retrying) and PublishUnavailable when Kafka did not take them now."""
    events = to_touchpoints(messages, clock())
    try:
        await sink.publish(events)
    except UnpublishableTouchpoints as exc:
        event_ids = [event.event_id for event in events]
        raise InvalidChatInput(unencodable(event_ids, exc.problems, "(message)")) from exc
    return events


def create_http_app(sink: TouchpointSink, clock: Clock = utc_now) -> web.Application:
    """``POST /v1/messages`` takes one message or a JSON list of them; ``GET /healthz``
    says the process is up (liveness), ``GET /readyz`` whether it can publish now."""

    async def post_messages(request: web.Request) -> web.Response:
        payload = await read_json(request, MAX_BODY_BYTES, _error)
        if isinstance(payload, web.Response):
            return payload
        try:
            messages = parse_messages(payload)
            events = await publish_messages(sink, messages, clock)
        except InvalidChatInput as exc:
            return _error(422, exc.problems)
        except PublishUnavailable as exc:  # the transaction was aborted: nothing landed
            return unavailable(_error, exc)
        return accepted([e.event_id for e in events])

    app = web.Application(client_max_size=MAX_BODY_BYTES)
    app.router.add_post("/v1/messages", post_messages)
    add_probes(app, sink.readiness, detail=True, encode=dumps)
    return app


def _error(status: int, problems: list[dict[str, Any]]) -> web.Response:
    return problem_response(status, problems, InvalidChatInput(problems).args[0])
