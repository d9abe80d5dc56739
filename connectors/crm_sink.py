"""CRM sink: interventions out to a CRM webhook, the CRM's answers back as feedback.

The sink reads ``interventions`` (Avro single-object encoding, read_committed) in a
consumer group and POSTs each command as JSON to the CRM's webhook with the header
``Idempotency-Key: <intervention_id>``. Answers:

* 2xx: delivered. A JSON body ``{"status": "accepted" | "done" | "dismissed" |
  "expired"}`` says what the CRM did with it; any other 2xx counts as ``accepted``.
* 429, 408, 409 (the CRM still works on the same key), 5xx, timeouts and connection
  errors: tried again after an exponential backoff with full jitter; a
  ``Retry-After`` header (seconds or an HTTP date) is waited at least.
* any other answer (4xx, 3xx): never tried again; a dead letter with the status
  and the start of the CRM's answer.

Each answer a CRM gives (in the POST's response, or later through the callback
``POST /v1/crm/feedback``) is written to ``intervention-feedback`` as the JSON the
worker's feedback counter reads (``rule_id``, ``status``, keyed and partitioned by
customer). A poll's offsets are committed only after every one of its commands was
answered and its feedback written; when the group moves partitions away, the poll in
hand is finished and committed first (within the shutdown grace period).

Delivery is at least once, made effectively once in two layers. The sink remembers
the commands the CRM accepted (a bounded recently-sent set); it fills that memory
from the recent feedback of every partition when it starts (before it serves the
callback, so a report that names only an intervention id is understood right after a
restart) and again from the partitions it is given at each rebalance: a command
whose feedback is on the topic is not posted again even though its offset was never
committed. The callback needs ``customer_id`` and ``rule_id`` only for interventions
this memory does not hold (older ones, or ones another replica sent since this one
started). What remains is the
window between the CRM's 2xx and the feedback record reaching Kafka (a crash there,
or Kafka refusing the feedback): the command is posted again, with the same
``Idempotency-Key``, and the CRM answers it from its record of that key instead of
creating a second task.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import hmac
import logging
import random
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

import aiohttp
import orjson
from aiohttp import web
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from schemas.codec import decode_intervention
from schemas.errors import SchemaError
from schemas.models import InterventionCommand
from schemas.partitioning import customer_partition

from .http import problem_response, read_json
from .kafka_io import AckedProducer, PollingConsumer, commit_poll
from .kafka_security import PLAINTEXT, KafkaSecurity
from .problems import describe, validation_problems
from .rejects import DeadLetterSink, KafkaDeadLetterSink, record_dead_letter
from .running import stop_on_signals

log = logging.getLogger(__name__)

SOURCE = "crm-sink/0.1.0"
STATUSES = ("accepted", "done", "dismissed", "expired")
"""What a CRM can say about an intervention; the worker's feedback counter knows these."""
ANSWER_SHOWN = 300
"""A refused command's dead letter keeps this many characters of the CRM's answer."""
ANSWER_READ_MAX = 65_536
"""At most this many bytes of an answer are read; a longer one is cut (and its
connection closed)."""
MAX_REPORTS_PER_REQUEST = 1000
MAX_CALLBACK_BYTES = 1024 * 1024
RETRIED_STATUSES = frozenset({408, 409, 429})

Status = Literal["accepted", "done", "dismissed", "expired"]
Clock = Callable[[], datetime]
Sleep = Callable[[float], Awaitable[None]]


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class CrmSinkSettings:
    """Plain values the sink needs, handed over by whoever starts it."""

    bootstrap_servers: str
    interventions_topic: str
    feedback_topic: str
    dlq_topic: str
    partitions: int
    """Partition count of the customer topics: feedback goes where the worker expects."""
    group_id: str
    webhook_url: str
    webhook_token: str | None = field(default=None, repr=False)
    """Sent as ``Authorization: Bearer`` to the CRM; never logged."""
    callback_token: str | None = field(default=None, repr=False)
    """Required from the CRM on ``POST /v1/crm/feedback`` when set."""
    max_in_flight: int = 8
    """At most this many POSTs are under way at once."""
    max_records: int = 100
    """At most this many commands are read (and held in memory) per poll."""
    request_timeout_seconds: float = 10.0
    backoff_base_seconds: float = 0.5
    backoff_max_seconds: float = 60.0
    retry_after_max_seconds: float = 600.0
    """A longer Retry-After is cut to this."""
    max_attempts: int | None = None
    """None: retry until the CRM answers (nothing is lost; the partition waits). A
    number: after that many attempts the command becomes a dead letter."""
    remembered: int = 100_000
    """Size of the recently-sent memory."""
    warm_records_per_partition: int = 20_000
    """Feedback records read back per partition when partitions are assigned."""
    security: KafkaSecurity = PLAINTEXT
    """SASL and TLS of the sink's Kafka clients."""
    shutdown_grace_seconds: float = 10.0
    """On stop, the poll in hand gets this long to finish before it is abandoned (not
    committed; its delivered commands are remembered through their feedback)."""

    def __post_init__(self) -> None:
        for name in ("max_in_flight", "max_records", "remembered"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: expected at least 1, found {getattr(self, name)}")
        if self.max_attempts is not None and self.max_attempts < 1:
            raise ValueError(
                f"max_attempts: expected at least 1 or None, found {self.max_attempts}"
            )
        if not self.webhook_url.startswith(("http://", "https://")):
            raise ValueError(f"webhook_url: expected an http(s) URL, found {self.webhook_url!r}")


# --------------------------------------------------------------------------- feedback


@dataclass(frozen=True, slots=True)
class Feedback:
    """One answer of the CRM about one intervention, as written to the feedback topic."""

    intervention_id: str
    customer_id: str
    rule_id: str
    rule_version: int | None
    status: Status
    at: datetime
    via: Literal["webhook", "callback"]

    def to_json(self) -> bytes:
        return orjson.dumps(
            {
                "intervention_id": self.intervention_id,
                "customer_id": self.customer_id,
                "rule_id": self.rule_id,
                "rule_version": self.rule_version,
                "status": self.status,
                "at": self.at.isoformat(),
                "via": self.via,
                "source": SOURCE,
            }
        )


class FeedbackSink(Protocol):
    async def send(self, feedback: Feedback) -> None: ...


class KafkaFeedbackSink(AckedProducer):
    """Writes feedback keyed by customer to its customer's partition; ``send`` returns
    once the broker has it (idempotent producer, acks from all in-sync replicas)."""

    def __init__(
        self,
        bootstrap_servers: str,
        topic: str,
        partitions: int,
        security: KafkaSecurity = PLAINTEXT,
    ) -> None:
        super().__init__(bootstrap_servers, topic, security)
        self._partitions = partitions

    async def send(self, feedback: Feedback) -> None:
        await self._producer.send_and_wait(
            self.topic,
            feedback.to_json(),
            key=feedback.customer_id.encode(),
            partition=customer_partition(feedback.customer_id, self._partitions),
        )


class MemoryFeedbackSink:
    """Keeps feedback in a list: for tests and dry runs."""

    def __init__(self) -> None:
        self.sent: list[Feedback] = []

    async def send(self, feedback: Feedback) -> None:
        self.sent.append(feedback)


# --------------------------------------------------------------------------- memory


@dataclass(frozen=True, slots=True)
class Sent:
    customer_id: str
    rule_id: str
    rule_version: int | None


class RecentlySent:
    """The last ``capacity`` interventions the CRM answered, and the answers recorded for
    them (so a repeated callback is not counted twice). Oldest forgotten first."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._sent: OrderedDict[str, Sent] = OrderedDict()
        self._answers: OrderedDict[tuple[str, str], None] = OrderedDict()

    def __contains__(self, intervention_id: object) -> bool:
        return intervention_id in self._sent

    def __len__(self) -> int:
        return len(self._sent)

    def get(self, intervention_id: str) -> Sent | None:
        return self._sent.get(intervention_id)

    def remember(self, intervention_id: str, sent: Sent, status: str | None = None) -> None:
        self._sent[intervention_id] = sent
        self._sent.move_to_end(intervention_id)
        while len(self._sent) > self.capacity:
            self._sent.popitem(last=False)
        if status is not None:
            self.answered(intervention_id, status)

    def has_answer(self, intervention_id: str, status: str) -> bool:
        return (intervention_id, status) in self._answers

    def answered(self, intervention_id: str, status: str) -> bool:
        """Record an answer; False when it was already recorded."""
        key = (intervention_id, status)
        if key in self._answers:
            return False
        self._answers[key] = None
        while len(self._answers) > self.capacity:
            self._answers.popitem(last=False)
        return True

    def learn(self, value: bytes | None) -> bool:
        """Remember a record read back from the feedback topic; False if not understood."""
        try:
            data = orjson.loads(value or b"")
            intervention_id, customer_id = str(data["intervention_id"]), str(data["customer_id"])
            rule_id, status = str(data["rule_id"]), str(data["status"])
            version = data.get("rule_version")
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return False
        sent = Sent(customer_id, rule_id, version if type(version) is int else None)
        self.remember(intervention_id, sent, status)
        return True


class FeedbackHistory:
    """Reads back the recent feedback of some partitions into a :class:`RecentlySent`."""

    def __init__(
        self,
        bootstrap_servers: str,
        topic: str,
        sent: RecentlySent,
        per_partition: int,
        security: KafkaSecurity = PLAINTEXT,
    ) -> None:
        self._bootstrap_servers = bootstrap_servers
        self._security = security
        self._topic = topic
        self._sent = sent
        self._per_partition = per_partition

    async def warm(self, partitions: Iterable[int] | None = None) -> int:
        """Read the last ``per_partition`` records of each partition (all of the topic's
        when None); how many were read."""
        numbers = None if partitions is None else sorted(set(partitions))
        if numbers == []:
            return 0
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self._bootstrap_servers,
            **self._security.client_options(),
            group_id=None,
            enable_auto_commit=False,
            isolation_level="read_committed",
        )
        await consumer.start()
        try:
            existing = consumer.partitions_for_topic(self._topic)
            if existing is None:
                await consumer._client.force_metadata_update()
                existing = consumer.partitions_for_topic(self._topic) or set()
            wanted = [
                TopicPartition(self._topic, n)
                for n in sorted(existing)
                if numbers is None or n in numbers
            ]
            if not wanted:
                return 0
            consumer.assign(wanted)
            starts = await consumer.beginning_offsets(wanted)
            ends = await consumer.end_offsets(wanted)
            for tp in wanted:
                consumer.seek(tp, max(starts[tp], ends[tp] - self._per_partition))
            read = 0
            while [tp for tp in wanted if await consumer.position(tp) < ends[tp]]:
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    for record in records:
                        read += 1
                        self._sent.learn(record.value)
            return read
        finally:
            await consumer.stop()


# --------------------------------------------------------------------------- webhook


@dataclass(frozen=True, slots=True)
class Delivered:
    status: Status
    http_status: int
    attempts: int


@dataclass(frozen=True, slots=True)
class Refused:
    """The CRM said no for good (4xx other than 408/409/429, or a redirect)."""

    http_status: int
    detail: str
    attempts: int


@dataclass(frozen=True, slots=True)
class Unreachable:
    """No answer after ``max_attempts`` tries."""

    detail: str
    attempts: int


Outcome = Delivered | Refused | Unreachable


@dataclass(frozen=True, slots=True)
class Backoff:
    """Full jitter: attempt ``n`` (1-based) waits uniformly in [0, min(max, base * 2**(n-1))];
    a Retry-After is waited at least (cut to ``retry_after_max``)."""

    base: float = 0.5
    maximum: float = 60.0
    retry_after_max: float = 600.0

    def delay(self, attempt: int, retry_after: float | None, rng: random.Random) -> float:
        ceiling = min(self.maximum, self.base * 2 ** min(attempt - 1, 60))
        jittered = rng.uniform(0, ceiling)
        if retry_after is None:
            return jittered
        return max(min(retry_after, self.retry_after_max), jittered)


def retry_after_seconds(value: str | None, now: datetime) -> float | None:
    """A Retry-After header (delta seconds or an HTTP date) in seconds from ``now``."""
    if value is None:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


class Poster(Protocol):
    async def post(self, command: InterventionCommand) -> Outcome: ...


class CrmWebhook:
    """POSTs commands to the CRM's webhook with retries (see the module docstring)."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        url: str,
        token: str | None = None,
        backoff: Backoff | None = None,
        max_attempts: int | None = None,
        timeout_seconds: float = 10.0,
        sleep: Sleep = asyncio.sleep,
        rng: random.Random | None = None,
        clock: Clock = utc_now,
    ) -> None:
        self._session = session
        self._url = url
        self._token = token
        self._backoff = backoff or Backoff()
        self._max_attempts = max_attempts
        self._timeout = aiohttp.ClientTimeout(total=timeout_seconds)
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._clock = clock
        self.retries: Counter[str] = Counter()
        """Attempts tried again, by cause (``429``, ``5xx``, ``connection``...)."""

    async def post(self, command: InterventionCommand) -> Outcome:
        body = orjson.dumps(command.model_dump(mode="json"))
        headers = {
            "Content-Type": "application/json",
            "Idempotency-Key": command.intervention_id,
            "User-Agent": SOURCE,
        }
        if self._token is not None:
            headers["Authorization"] = f"Bearer {self._token}"
        attempt = 0
        while True:
            attempt += 1
            retry_after: float | None = None
            try:
                async with self._session.post(
                    self._url,
                    data=body,
                    headers=headers,
                    timeout=self._timeout,
                    allow_redirects=False,
                ) as response:
                    code = response.status
                    text = await _answer(response)
                    if 200 <= code < 300:
                        return Delivered(_status_of(text), code, attempt)
                    if code not in RETRIED_STATUSES and code < 500:
                        return Refused(code, _refusal(code, response.reason, text), attempt)
                    retry_after = retry_after_seconds(
                        response.headers.get("Retry-After"), self._clock()
                    )
                    cause = "5xx" if code >= 500 else str(code)
                    last = f"the CRM answered {code} {response.reason or ''}".rstrip()
            except (aiohttp.ClientError, TimeoutError) as exc:
                cause = "connection"
                last = f"no answer from the CRM: {type(exc).__name__}"
            if self._max_attempts is not None and attempt >= self._max_attempts:
                detail = f"expected a 2xx answer within {attempt} attempts, found: {last}"
                return Unreachable(detail, attempt)
            self.retries[cause] += 1
            delay = self._backoff.delay(attempt, retry_after, self._rng)
            log.info(
                "intervention %s: %s; attempt %d again in %.2f s",
                command.intervention_id,
                last,
                attempt + 1,
                delay,
            )
            await self._sleep(delay)


async def _answer(response: aiohttp.ClientResponse) -> str:
    """The start of the CRM's answer: at most ANSWER_READ_MAX bytes are read."""
    body = b""
    while len(body) < ANSWER_READ_MAX:
        chunk = await response.content.read(ANSWER_READ_MAX - len(body))
        if not chunk:
            break
        body += chunk
    return body.decode("utf-8", errors="replace")


def _status_of(text: str) -> Status:
    try:
        data = orjson.loads(text) if text.strip() else None
    except orjson.JSONDecodeError:
        return "accepted"
    status = data.get("status") if isinstance(data, dict) else None
    if status in STATUSES:
        return status  # type: ignore[no-any-return]
    return "accepted"


def _refusal(code: int, reason: str | None, text: str) -> str:
    shown = text[:ANSWER_SHOWN] + ("..." if len(text) > ANSWER_SHOWN else "")
    answer = f"{code} {reason}" if reason else str(code)
    return f"expected a 2xx answer from the CRM, found {answer}: {shown or '(empty body)'}"


# --------------------------------------------------------------------------- the sink


SinkConsumer = PollingConsumer
"""The part of :class:`aiokafka.AIOKafkaConsumer` the sink uses."""


@dataclass
class SinkStats:
    delivered: Counter[str] = field(default_factory=Counter)
    """Commands the CRM took, by the status it answered."""
    already_sent: int = 0
    """Commands not posted because the CRM had already answered them."""
    dead_letters: Counter[str] = field(default_factory=Counter)
    commits: int = 0


class CrmSink:
    """Reads interventions, posts them, writes feedback, commits (see the module doc)."""

    def __init__(
        self,
        consumer: SinkConsumer,
        webhook: Poster,
        feedback: FeedbackSink,
        dead_letters: DeadLetterSink,
        sent: RecentlySent,
        max_in_flight: int = 8,
        max_records: int = 100,
        shutdown_grace_seconds: float = 10.0,
        clock: Clock = utc_now,
    ) -> None:
        self.stats = SinkStats()
        self.sent = sent
        self._consumer = consumer
        self._webhook = webhook
        self._feedback = feedback
        self._dead_letters = dead_letters
        self._slots = asyncio.Semaphore(max_in_flight)
        self._max_records = max_records
        self._grace = shutdown_grace_seconds
        self._clock = clock
        self._in_flight: dict[str, asyncio.Future[None]] = {}
        self._work: asyncio.Task[bool] | None = None

    async def run(self, stop: asyncio.Event) -> None:
        """Poll and deliver until ``stop`` is set; the poll in hand gets the grace period."""
        while not stop.is_set():
            batch = await self._consumer.getmany(timeout_ms=500, max_records=self._max_records)
            if not batch:
                continue
            work = self._work = asyncio.create_task(self.handle(batch))
            stopping = asyncio.create_task(stop.wait())
            try:
                await asyncio.wait({work, stopping}, return_when=asyncio.FIRST_COMPLETED)
                if not work.done():
                    await asyncio.wait({work}, timeout=self._grace)
            finally:
                stopping.cancel()
            if not work.done():
                log.warning(
                    "stopping: a poll not finished within %.1f s is left for the next reader",
                    self._grace,
                )
                work.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await work
                return
            work.result()

    async def settle(self) -> None:
        """Let the poll in hand finish and commit (within the grace period): called when
        the group takes partitions away, so their next reader does not post the same
        commands while this one still waits for the CRM."""
        work = self._work
        if work is not None and not work.done():
            await asyncio.wait({work}, timeout=self._grace)

    async def handle(self, batch: Mapping[TopicPartition, Sequence[Any]]) -> bool:
        """Deliver one poll, then commit its offsets; True when they were committed."""
        async with asyncio.TaskGroup() as group:
            for records in batch.values():
                for record in records:
                    group.create_task(self._one(record))
        # When the partitions moved, their next reader knows the delivered commands from
        # their feedback and does not post them again.
        if not await commit_poll(self._consumer, batch, "the commands", log):
            return False
        self.stats.commits += 1
        return True

    async def _one(self, record: Any) -> None:
        try:
            command = decode_intervention(record.value or b"")
        except SchemaError as exc:
            await self._reject(record, "undecodable", f"expected an InterventionCommand: {exc}")
            return
        key = command.intervention_id
        while key in self._in_flight:  # the same command twice in a poll: once is enough
            await self._in_flight[key]
        if key in self.sent:
            self.stats.already_sent += 1
            return
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._in_flight[key] = done
        try:
            async with self._slots:
                outcome = await self._webhook.post(command)
            await self._settle(record, command, outcome)
        finally:
            del self._in_flight[key]
            done.set_result(None)

    async def _settle(self, record: Any, command: InterventionCommand, outcome: Outcome) -> None:
        if isinstance(outcome, Delivered):
            sent = Sent(command.customer_id, command.rule_id, command.rule_version)
            await self._feedback.send(
                Feedback(
                    command.intervention_id,
                    command.customer_id,
                    command.rule_id,
                    command.rule_version,
                    outcome.status,
                    self._clock(),
                    "webhook",
                )
            )
            self.sent.remember(command.intervention_id, sent, outcome.status)
            self.stats.delivered[outcome.status] += 1
        elif isinstance(outcome, Refused):
            await self._reject(record, "crm_refused", outcome.detail)
        else:
            await self._reject(record, "crm_unreachable", outcome.detail)

    async def _reject(self, record: Any, reason: str, detail: str) -> None:
        self.stats.dead_letters[reason] += 1
        log.warning(
            "dead letter %s at %s[%d]@%d", reason, record.topic, record.partition, record.offset
        )
        await self._dead_letters.send(record_dead_letter(record, reason, detail, self._clock()))


# --------------------------------------------------------------------------- callback


class FeedbackReport(BaseModel):
    """What a CRM posts to ``/v1/crm/feedback`` about one intervention. ``customer_id``
    and ``rule_id`` may be left out for interventions this sink sent recently."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    intervention_id: str = Field(min_length=1, max_length=128)
    status: Status
    customer_id: str | None = Field(None, min_length=1, max_length=128)
    rule_id: str | None = Field(None, min_length=1, max_length=128)
    rule_version: int | None = Field(None, ge=0)
    at: AwareDatetime | None = None


def feedback_from_reports(
    payload: Any, sent: RecentlySent, now: datetime
) -> tuple[list[Feedback], list[dict[str, Any]]]:
    """The reports of a callback body (one object or a list) as feedback, or the problems
    naming each report's index and field."""
    items = payload if isinstance(payload, list) else [payload]
    if not items or len(items) > MAX_REPORTS_PER_REQUEST:
        message = f"expected 1 to {MAX_REPORTS_PER_REQUEST} reports, found {len(items)}"
        return [], [{"field": "(body)", "message": message}]
    found: list[Feedback] = []
    problems: list[dict[str, Any]] = []
    for index, item in enumerate(items):
        try:
            report = FeedbackReport.model_validate(item)
        except ValidationError as exc:
            problems.extend(validation_problems(exc, "(report)", {"index": index}))
            continue
        known = sent.get(report.intervention_id)
        customer_id = report.customer_id or (known.customer_id if known else None)
        rule_id = report.rule_id or (known.rule_id if known else None)
        if customer_id is None or rule_id is None:
            missing = " and ".join(
                name
                for name, value in (("customer_id", customer_id), ("rule_id", rule_id))
                if value is None
            )
            message = (
                f"expected {missing} for intervention {report.intervention_id}, which this "
                f"sink has not sent recently; found none"
            )
            problems.append({"index": index, "field": missing.split(" ")[0], "message": message})
            continue
        version = report.rule_version
        if version is None and known is not None:
            version = known.rule_version
        found.append(
            Feedback(
                report.intervention_id,
                customer_id,
                rule_id,
                version,
                report.status,
                report.at.astimezone(UTC) if report.at else now,
                "callback",
            )
        )
    return found, problems


def create_callback_app(
    feedback: FeedbackSink,
    sent: RecentlySent,
    token: str | None = None,
    clock: Clock = utc_now,
) -> web.Application:
    """``POST /v1/crm/feedback``: 202 written (a repeated answer is acknowledged, not
    written again); 400 not JSON; 401 without the token; 413 too large; 422 a report is
    invalid (nothing written); 503 Kafka did not take it (retry). ``GET /healthz``."""

    async def post_feedback(request: web.Request) -> web.Response:
        if token is not None and not _authorised(request, token):
            return _problem(
                401, [{"field": "Authorization", "message": "expected the CRM's bearer token"}]
            )
        payload = await read_json(request, MAX_CALLBACK_BYTES, _problem)
        if isinstance(payload, web.Response):
            return payload
        reports, problems = feedback_from_reports(payload, sent, clock())
        if problems:
            return _problem(422, problems)
        written = repeated = 0
        for report in reports:
            if sent.has_answer(report.intervention_id, report.status):
                repeated += 1
                continue
            try:
                await feedback.send(report)
            except KafkaError as exc:
                response = _problem(
                    503, [{"field": "(kafka)", "message": f"not written: {exc!r}; retry"}]
                )
                response.headers["Retry-After"] = "1"
                return response
            sent.answered(report.intervention_id, report.status)
            written += 1
        return web.json_response({"written": written, "repeated": repeated}, status=202)

    async def health(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app = web.Application(client_max_size=MAX_CALLBACK_BYTES)
    app.router.add_post("/v1/crm/feedback", post_feedback)
    app.router.add_get("/healthz", health)
    return app


def _authorised(request: web.Request, token: str) -> bool:
    given = request.headers.get("Authorization", "")
    return hmac.compare_digest(given.encode(), f"Bearer {token}".encode())


def _problem(status: int, problems: list[dict[str, Any]]) -> web.Response:
    return problem_response(status, problems, "; ".join(describe(p, "report {}") for p in problems))


# --------------------------------------------------------------------------- running


class _Rebalances(ConsumerRebalanceListener):  # type: ignore[misc]
    """Partitions leave after the poll in hand is committed; partitions that arrive
    bring their recent feedback into the recently-sent memory."""

    def __init__(self, history: FeedbackHistory) -> None:
        self._history = history
        self.sink: CrmSink | None = None

    async def on_partitions_revoked(self, revoked: Any) -> None:
        if self.sink is not None:
            await self.sink.settle()

    async def on_partitions_assigned(self, assigned: Any) -> None:
        read = await self._history.warm(tp.partition for tp in assigned)
        log.info("recently-sent memory refilled from %d feedback record(s)", read)


async def run_sink(
    settings: CrmSinkSettings,
    stop: asyncio.Event,
    callback: tuple[str, int] | None = None,
    on_ready: Callable[[], None] | None = None,
) -> SinkStats:
    """Deliver interventions until ``stop`` is set; serve the feedback callback on
    ``callback`` (host, port) meanwhile."""
    sent = RecentlySent(settings.remembered)
    history = FeedbackHistory(
        settings.bootstrap_servers,
        settings.feedback_topic,
        sent,
        settings.warm_records_per_partition,
        settings.security,
    )
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers,
        **settings.security.client_options(),
        group_id=settings.group_id,
        enable_auto_commit=False,
        isolation_level="read_committed",
        auto_offset_reset="earliest",
    )
    rebalances = _Rebalances(history)
    consumer.subscribe([settings.interventions_topic], listener=rebalances)
    feedback = KafkaFeedbackSink(
        settings.bootstrap_servers, settings.feedback_topic, settings.partitions, settings.security
    )
    dead_letters = KafkaDeadLetterSink(
        settings.bootstrap_servers, settings.dlq_topic, settings.security
    )
    runner: web.AppRunner | None = None
    # Before the callback is served: a CRM that reports right after a restart names
    # interventions sent before it.
    read = await history.warm()
    log.info("recently-sent memory filled from %d feedback record(s)", read)
    async with contextlib.AsyncExitStack() as stack:
        await feedback.start()
        stack.push_async_callback(feedback.stop)
        await dead_letters.start()
        stack.push_async_callback(dead_letters.stop)
        session = await stack.enter_async_context(aiohttp.ClientSession())
        if callback is not None:
            runner = web.AppRunner(create_callback_app(feedback, sent, settings.callback_token))
            await runner.setup()
            stack.push_async_callback(runner.cleanup)
            await web.TCPSite(runner, callback[0], callback[1]).start()
        await consumer.start()
        stack.push_async_callback(consumer.stop)
        webhook = CrmWebhook(
            session,
            settings.webhook_url,
            settings.webhook_token,
            Backoff(
                settings.backoff_base_seconds,
                settings.backoff_max_seconds,
                settings.retry_after_max_seconds,
            ),
            settings.max_attempts,
            settings.request_timeout_seconds,
        )
        sink = CrmSink(
            consumer,
            webhook,
            feedback,
            dead_letters,
            sent,
            settings.max_in_flight,
            settings.max_records,
            settings.shutdown_grace_seconds,
        )
        rebalances.sink = sink
        if on_ready is not None:
            on_ready()
        await sink.run(stop)
    return sink.stats


async def serve(settings: CrmSinkSettings, callback: tuple[str, int] | None) -> SinkStats:
    """:func:`run_sink` until SIGINT or SIGTERM, then finish the poll in hand and report."""
    stop = stop_on_signals()
    where = ""
    if callback is not None:
        where = f"; feedback callback on http://{callback[0]}:{callback[1]}/v1/crm/feedback"
    url = settings.webhook_url.split("?", 1)[0]  # a query may carry a credential
    print(
        f"crm sink: {settings.interventions_topic} -> {url} as group {settings.group_id}{where}",
        flush=True,
    )
    stats = await run_sink(settings, stop, callback)
    print(
        f"crm sink: delivered {dict(stats.delivered)}, not posted again "
        f"{stats.already_sent}, dead letters {dict(stats.dead_letters)}",
        flush=True,
    )
    return stats
