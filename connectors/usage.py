"""Product-usage connector: video watches, sandbox errors and support messages ->
touchpoints.

Each input event is a JSON object with the product's own ``event_id``, a ``type``
(``video_watched``, ``sandbox_error`` or ``support_chat``), ``customer_id`` and
``occurred_at``; the touchpoint's event id is ``usage:<event_id>``, so a replayed event is
the same touchpoint. Attribute names match ``rules/examples/saas-trial-health.yaml``:
``video``, ``watched_seconds`` and ``plan`` for a video, ``code`` for a sandbox error. A
support message gets ``sentiment`` in [-1, 1] from :mod:`connectors.sentiment`
(offline, Chinese and English) and ``sentiment_language``.

Sources: JSON-lines files, read once or followed (:mod:`connectors.tailing`), and
``POST /v1/usage`` (an object, an array or JSON lines; 422 with every problem, nothing
published, when one is invalid).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import orjson
from aiohttp import web
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from schemas.models import Channel, Direction, TouchpointEvent

from .http import (
    accepted,
    add_probes,
    dumps_lenient,
    json_items,
    problem_response,
    read_body,
    unavailable,
)
from .problems import describe, found_unless, validation_problems
from .publisher import PublishUnavailable, TouchpointSink, UnpublishableTouchpoints
from .rejects import DeadLetterSink
from .sentiment import SentimentScorer
from .tailing import (
    Convert,
    Counts,
    FileFollower,
    PositionStore,
    RawRecord,
    Rejection,
    TouchpointBatches,
    read_to_end,
    split_lines,
)

SOURCE = "usage/0.1.0"
MAX_EVENTS_PER_REQUEST = 1000
MAX_BODY_BYTES = 4 * 1024 * 1024
_FOUND = found_unless({"text", "customer_id", "(event)"})
"""A support message's text is never repeated in a problem."""
_BRANCHES = ("video_watched", "sandbox_error", "support_chat")

Clock = Callable[[], datetime]
AttributeValue = str | int | float | bool


def utc_now() -> datetime:
    return datetime.now(UTC)


class _UsageEvent(BaseModel):
    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        str_strip_whitespace=True,
        allow_inf_nan=False,
        coerce_numbers_to_str=True,  # ids and error codes are often written as numbers
    )

    event_id: str = Field(min_length=1, max_length=96)
    customer_id: str = Field(min_length=1, max_length=128)
    occurred_at: AwareDatetime
    plan: str | None = Field(None, min_length=1, max_length=32)
    rep_id: str | None = Field(None, min_length=1, max_length=128)
    contact_id: str | None = Field(None, min_length=1, max_length=128)
    industry: str | None = Field(None, min_length=1, max_length=64)

    def _common(self) -> dict[str, AttributeValue]:
        return {"plan": self.plan} if self.plan is not None else {}


class VideoWatched(_UsageEvent):
    type: Literal["video_watched"]
    video: str = Field(min_length=1, max_length=128)
    watched_seconds: float = Field(ge=0, le=86_400)
    video_seconds: float | None = Field(None, gt=0, le=86_400)
    """The video's length, when known: gives ``watched_share``."""

    def attributes(self) -> dict[str, AttributeValue]:
        attributes = {
            **self._common(),
            "video": self.video,
            "watched_seconds": _number(self.watched_seconds),
        }
        if self.video_seconds is not None:
            attributes["video_seconds"] = _number(self.video_seconds)
            attributes["watched_share"] = round(
                min(1.0, self.watched_seconds / self.video_seconds), 4
            )
        return attributes


class SandboxError(_UsageEvent):
    type: Literal["sandbox_error"]
    code: str = Field(min_length=1, max_length=64)
    endpoint: str | None = Field(None, min_length=1, max_length=256)
    status: int | None = Field(None, ge=100, le=599)

    def attributes(self) -> dict[str, AttributeValue]:
        attributes: dict[str, AttributeValue] = {**self._common(), "code": self.code}
        if self.endpoint is not None:
            attributes["endpoint"] = self.endpoint
        if self.status is not None:
            attributes["status"] = self.status
        return attributes


class SupportChat(_UsageEvent):
    type: Literal["support_chat"]
    text: str = Field(min_length=1, max_length=20_000)
    sender: Literal["customer", "agent"] = "customer"
    conversation_id: str | None = Field(None, min_length=1, max_length=128)

    def attributes(self) -> dict[str, AttributeValue]:
        attributes: dict[str, AttributeValue] = {**self._common(), "sender": self.sender}
        if self.conversation_id is not None:
            attributes["conversation_id"] = self.conversation_id
        return attributes


UsageEvent = Annotated[VideoWatched | SandboxError | SupportChat, Field(discriminator="type")]
_EVENT: TypeAdapter[VideoWatched | SandboxError | SupportChat] = TypeAdapter(UsageEvent)

ALIASES = {"seconds_watched": "watched_seconds", "video_id": "video", "error_code": "code"}
"""Field names other products use, and the field each one means."""


def _number(value: float) -> int | float:
    return int(value) if value.is_integer() else value


def validate_event(
    raw: Any, **where: int
) -> VideoWatched | SandboxError | SupportChat | list[dict[str, Any]]:
    """A usage event, or the problems with it (located by ``where``); a support message's
    text is never repeated in a problem."""
    if not isinstance(raw, dict):
        message = f"expected a JSON object, found {type(raw).__name__}"
        return [{**where, "field": "(event)", "message": message}]
    fields = {ALIASES.get(str(k), str(k)): v for k, v in raw.items()}
    try:
        return _EVENT.validate_python(fields)
    except ValidationError as exc:
        # a union branch leads the location: the type is already known
        return validation_problems(exc, "(event)", where, found=_FOUND, branches=_BRANCHES)


def usage_touchpoint(
    event: VideoWatched | SandboxError | SupportChat,
    received_at: datetime,
    sentiment: SentimentScorer,
) -> TouchpointEvent:
    attributes = event.attributes()
    text: str | None = None
    channel, direction = Channel.PRODUCT, Direction.NONE
    if isinstance(event, SupportChat):
        scored = sentiment.score(event.text)
        attributes["sentiment"] = scored.value
        attributes["sentiment_language"] = scored.language
        text = event.text
        channel = Channel.SUPPORT
        direction = Direction.INBOUND if event.sender == "customer" else Direction.OUTBOUND
    return TouchpointEvent(
        event_id=f"usage:{event.event_id}",
        customer_id=event.customer_id,
        occurred_at=event.occurred_at,
        received_at=received_at,
        channel=channel,
        kind=event.type,
        direction=direction,
        rep_id=event.rep_id,
        contact_id=event.contact_id,
        text=text,
        attributes=attributes,
        source=SOURCE,
        industry=event.industry,
    )


class InvalidUsage(ValueError):
    """Usage input that cannot be read; ``problems`` name the event or line and field."""

    def __init__(self, problems: list[dict[str, Any]]) -> None:
        self.problems = problems
        super().__init__("; ".join(describe(p, "event {}", found=True) for p in problems))


def converter(sentiment: SentimentScorer) -> Convert:
    def convert(record: RawRecord, received_at: datetime) -> TouchpointEvent | Rejection:
        try:
            raw = orjson.loads(record.data)
        except orjson.JSONDecodeError as exc:
            detail = f"line {record.first_line}: expected a JSON object, found: {exc}"
            return Rejection("invalid_usage_event", detail)
        event = validate_event(raw, line=record.first_line)
        if isinstance(event, list):
            return Rejection("invalid_usage_event", str(InvalidUsage(event)))
        return usage_touchpoint(event, received_at, sentiment)

    return convert


def follower(
    path: Path,
    state: Path | None,
    sink: TouchpointSink,
    dead_letters: DeadLetterSink,
    sentiment: SentimentScorer,
    clock: Clock = utc_now,
    keep_ids: bool = False,
    poll_seconds: float = 0.5,
) -> tuple[FileFollower, TouchpointBatches]:
    batches = TouchpointBatches(converter(sentiment), sink, dead_letters, clock, keep_ids)
    store = PositionStore(state) if state is not None else None
    return FileFollower(path, store, split_lines, batches, poll_seconds=poll_seconds), batches


async def read_files(
    paths: Iterable[Path],
    sink: TouchpointSink,
    dead_letters: DeadLetterSink,
    sentiment: SentimentScorer,
    clock: Clock = utc_now,
    keep_ids: bool = False,
) -> Counts:
    """Read whole JSON-lines files once, publishing as it goes."""
    return await read_to_end(
        follower(path, None, sink, dead_letters, sentiment, clock, keep_ids) for path in paths
    )


async def follow_file(
    path: Path,
    state: Path,
    sink: TouchpointSink,
    dead_letters: DeadLetterSink,
    sentiment: SentimentScorer,
    stop: asyncio.Event,
) -> Counts:
    follow, batches = follower(path, state, sink, dead_letters, sentiment)
    await follow.run(stop)
    return batches.counts


# --------------------------------------------------------------------------- HTTP


def parse_request(body: bytes) -> list[VideoWatched | SandboxError | SupportChat]:
    """A JSON object, an array of them, or JSON lines -> events, or raise
    :class:`InvalidUsage` naming every problem."""
    items, problems = json_items(body, "(event)")
    if problems:
        raise InvalidUsage(problems)
    if not items or len(items) > MAX_EVENTS_PER_REQUEST:
        message = f"expected 1 to {MAX_EVENTS_PER_REQUEST} events, found {len(items)}"
        raise InvalidUsage([{"field": "(body)", "message": message}])
    events: list[VideoWatched | SandboxError | SupportChat] = []
    for item, where in items:
        result = validate_event(item, **where)
        if isinstance(result, list):
            problems.extend(result)
        else:
            events.append(result)
    if problems:
        raise InvalidUsage(problems)
    return events


def create_http_app(
    sink: TouchpointSink, sentiment: SentimentScorer, clock: Clock = utc_now
) -> web.Application:
    """``POST /v1/usage``: 202 published; 400 not JSON; 413 too large; 422 an event is
    invalid (nothing published); 503 with Retry-After when Kafka did not take them now."""

    async def post_usage(request: web.Request) -> web.Response:
        body = await read_body(request, MAX_BODY_BYTES, _error)
        if isinstance(body, web.Response):
            return body
        try:
            parsed = parse_request(body)
        except InvalidUsage as exc:
            status = 400 if any(p["field"] == "(body)" for p in exc.problems) else 422
            return _error(status, exc.problems)
        now = clock()
        # sentiment is CPU work: off the event loop, so other requests keep flowing
        events = await asyncio.to_thread(
            lambda: [usage_touchpoint(event, now, sentiment) for event in parsed]
        )
        try:
            await sink.publish(events)
        except UnpublishableTouchpoints as exc:
            return _error(422, [{"field": "(event)", **p} for p in exc.problems])
        except PublishUnavailable as exc:
            return unavailable(_error, exc)
        return accepted([e.event_id for e in events], dumps_lenient)

    app = web.Application(client_max_size=MAX_BODY_BYTES)
    app.router.add_post("/v1/usage", post_usage)
    add_probes(app, sink.readiness, encode=dumps_lenient)
    return app


def _error(status: int, problems: list[dict[str, Any]]) -> web.Response:
    return problem_response(status, problems, str(InvalidUsage(problems)), dumps_lenient)
