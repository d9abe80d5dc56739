"""Schema registry support: the Confluent wire format on Warroom's Avro topics.

With ``WARROOM_SCHEMA_REGISTRY_URL`` set, a process writes each Avro record as
``00`` + the 4-byte big-endian schema id the registry gave its schema + the Avro body,
and reads both that and the single-object encoding (``C3 01``). Without it, the
single-object encoding is used and the registry never asked.

At start, :func:`use_registry` registers every schema the process writes under its
topic's subject, after asking the registry whether the schema is compatible with the
subject's latest version; it refuses (:class:`IncompatibleWithRegistry`) when not, so
a worker never writes records its consumers cannot read. Subjects follow Confluent's
TopicNameStrategy, ``<topic>-value``; a topic that carries a second record type
(batches on ``touchpoints``; verdicts and reviews on ``message-drafts``) registers it
under ``<topic>-<record full name>`` (TopicRecordNameStrategy), since one subject's
compatibility check would refuse an unrelated record type.

A reader meets a schema id it has not seen: it fetches the schema once
(``GET /schemas/ids/{id}``), keeps it, and resolves it into its own schema by Avro's
rules. That fetch blocks the caller for at most the registry timeout.

Errors (none is a :class:`schemas.errors.SchemaError`: a registry that does not answer
says nothing about the record, which must not be dead-lettered for it)::

    RegistryError
    ├── RegistryUnavailable        no answer, or a 5xx: retry later
    ├── RegistryRefused            a 4xx answer, with Confluent's error code
    └── IncompatibleWithRegistry   a schema this process writes is refused: do not start

The password is a :class:`pydantic.SecretStr`; no message built here contains it, nor
does the URL (credentials in it are refused).
"""

from __future__ import annotations

import base64
import json
import logging
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from schemas.codec import AvroSchema, packaged_schema
from schemas.codec import use_registry as _use_registry_framing
from schemas.codec import use_single_object as _use_single_object
from schemas.errors import UnknownSchemaIdError
from schemas.registry_settings import RegistrySettings
from schemas.topics import (
    COMPLIANCE_VERDICTS,
    CONSENTS,
    DLQ,
    INTERVENTIONS,
    MESSAGE_DRAFTS,
    REP_CANDIDATES,
    TOUCHPOINTS,
    Topic,
)

__all__ = [
    "CONNECTOR_WRITES",
    "VALUE_SCHEMAS",
    "WORKER_WRITES",
    "IncompatibleWithRegistry",
    "RegistryClient",
    "RegistryError",
    "RegistryRefused",
    "RegistrySchemas",
    "RegistrySettings",
    "RegistryUnavailable",
    "register_writes",
    "subject_of",
    "topic_writes",
    "use_registry",
    "use_single_object",
]

log = logging.getLogger(__name__)

CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"

VALUE_SCHEMAS: Mapping[str, tuple[str, ...]] = {
    TOUCHPOINTS.name: ("touchpoint_event", "touchpoint_batch"),
    INTERVENTIONS.name: ("intervention_command",),
    REP_CANDIDATES.name: ("intervention_command",),
    DLQ.name: ("dead_letter",),
    CONSENTS.name: ("consent_change",),
    MESSAGE_DRAFTS.name: ("message_draft", "compliance_verdict", "draft_review"),
    COMPLIANCE_VERDICTS.name: ("compliance_verdict",),
}
"""Avro topics and the packaged schemas (``schemas/avro/<stem>.avsc``) of their values;
the first is the topic's own, registered under ``<topic>-value``."""

WORKER_WRITES: tuple[Topic, ...] = (INTERVENTIONS, REP_CANDIDATES, DLQ, COMPLIANCE_VERDICTS)
"""The Avro topics a worker writes."""
CONNECTOR_WRITES: tuple[Topic, ...] = (TOUCHPOINTS,)
"""The Avro topic an intake connector writes."""


class RegistryError(Exception):
    """Root of the errors of this module."""


class RegistryUnavailable(RegistryError):
    """The registry did not answer, or answered with a server error."""


class RegistryRefused(RegistryError):
    def __init__(self, message: str, status: int, error_code: int | None) -> None:
        super().__init__(message)
        self.status = status
        self.error_code = error_code


class IncompatibleWithRegistry(RegistryError):
    """A schema this process writes is not compatible with its subject's registered
    versions. Operators: register a compatible version first, change the subject's
    compatibility level on purpose, or roll this process back."""


@dataclass(frozen=True, slots=True)
class RegisteredVersion:
    subject: str
    version: int
    schema_id: int
    schema: str


class RegistryClient:
    """The registry's REST API, the calls Warroom makes (blocking; standard library)."""

    def __init__(self, settings: RegistrySettings) -> None:
        self.settings = settings
        self._base = settings.url.rstrip("/")
        self._headers = {
            "Accept": f"{CONTENT_TYPE}, application/json",
            "Content-Type": CONTENT_TYPE,
        }
        if settings.username is not None:
            secret = settings.password.get_secret_value() if settings.password else ""
            token = base64.b64encode(f"{settings.username}:{secret}".encode()).decode()
            self._headers["Authorization"] = f"Basic {token}"

    def __repr__(self) -> str:
        return f"RegistryClient({self._base!r})"

    def register(self, subject: str, schema: AvroSchema) -> int:
        answer = self._call(
            "POST", f"/subjects/{_segment(subject)}/versions", {"schema": _text(schema)}
        )
        return int(answer["id"])

    def schema_text(self, schema_id: int) -> str | None:
        """The schema registered with ``schema_id``; None if the registry has none."""
        try:
            answer = self._call("GET", f"/schemas/ids/{schema_id}")
        except RegistryRefused as refused:
            if refused.error_code == 40403 or refused.status == 404:
                return None
            raise
        return str(answer["schema"])

    def latest(self, subject: str) -> RegisteredVersion | None:
        """The subject's latest version; None if the subject has none."""
        try:
            answer = self._call("GET", f"/subjects/{_segment(subject)}/versions/latest")
        except RegistryRefused as refused:
            if refused.error_code == 40401:
                return None
            raise
        return RegisteredVersion(
            str(answer["subject"]), int(answer["version"]), int(answer["id"]), answer["schema"]
        )

    def incompatibilities(self, subject: str, schema: AvroSchema) -> list[str] | None:
        """Why ``schema`` may not become the subject's next version (empty when it may);
        None if the subject has no version yet."""
        path = f"/compatibility/subjects/{_segment(subject)}/versions/latest?verbose=true"
        try:
            answer = self._call("POST", path, {"schema": _text(schema)})
        except RegistryRefused as refused:
            if refused.error_code in (40401, 40402):
                return None
            raise
        if answer.get("is_compatible") is True:
            return []
        messages = answer.get("messages") or ["the registry gave no reason"]
        return [str(m) for m in messages]

    def compatibility_level(self, subject: str) -> str | None:
        try:
            answer = self._call("GET", f"/config/{_segment(subject)}?defaultToGlobal=true")
        except RegistryError:
            return None
        level = answer.get("compatibilityLevel") or answer.get("compatibility")
        return None if level is None else str(level)

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        url = self._base + path
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(url, data=data, method=method, headers=self._headers)
        where = f"{method} {self._base}{path.split('?')[0]}"
        try:
            with urllib.request.urlopen(request, timeout=self.settings.timeout_seconds) as answer:
                return json.loads(answer.read() or b"null")
        except urllib.error.HTTPError as failed:
            raise _refusal(failed, where) from None
        except (OSError, ValueError) as exc:  # URLError, timeouts, resets, bad JSON
            msg = f"schema registry: {where}: expected an answer, found {type(exc).__name__}: {exc}"
            raise RegistryUnavailable(msg) from None


def _refusal(failed: urllib.error.HTTPError, where: str) -> RegistryError:
    try:
        body = json.loads(failed.read() or b"{}")
    except ValueError:
        body = {}
    code = body.get("error_code") if isinstance(body, dict) else None
    message = body.get("message") if isinstance(body, dict) else None
    text = f"schema registry: {where}: HTTP {failed.code}"
    if code is not None:
        text += f", error {code}"
    if message:
        text += f": {message}"
    if failed.code >= 500:
        return RegistryUnavailable(text)
    return RegistryRefused(text, failed.code, code if isinstance(code, int) else None)


def _segment(subject: str) -> str:
    return quote(subject, safe="")


def _text(schema: AvroSchema) -> str:
    return json.dumps(schema.definition, separators=(",", ":"))


@dataclass
class RegistrySchemas:
    """Writer schemas by registry id, each fetched at most once (a schema id never
    changes meaning in a registry)."""

    client: RegistryClient
    _known: dict[int, AvroSchema] = field(default_factory=dict)
    _missing: set[int] = field(default_factory=set)

    def remember(self, schema_id: int, schema: AvroSchema) -> None:
        self._known[schema_id] = schema

    def schema_of(self, schema_id: int) -> AvroSchema:
        """Raises UnknownSchemaIdError if the registry has no such id, RegistryError if
        it cannot be asked."""
        known = self._known.get(schema_id)
        if known is not None:
            return known
        if schema_id in self._missing:
            raise _missing(schema_id, self.client)
        text = self.client.schema_text(schema_id)
        if text is None:
            self._missing.add(schema_id)
            raise _missing(schema_id, self.client)
        try:
            schema = AvroSchema.from_dict(json.loads(text))
        except ValueError as exc:
            msg = f"schema id {schema_id}: expected a JSON Avro schema from the registry: {exc}"
            raise UnknownSchemaIdError(msg, schema_id) from exc
        log.info("schema id %d is %s", schema_id, schema.label)
        self._known[schema_id] = schema
        return schema


def _missing(schema_id: int, client: RegistryClient) -> UnknownSchemaIdError:
    msg = f"expected a schema id the registry at {client._base} knows, found {schema_id}"
    return UnknownSchemaIdError(msg, schema_id)


def subject_of(topic: str, stem: str, primary: bool) -> str:
    """The subject ``stem``'s schema is registered under on ``topic`` (full name)."""
    if primary:
        return f"{topic}-value"
    parsed = packaged_schema(stem).parsed
    return f"{topic}-{parsed['name']}"


def topic_writes(prefix: str, topics: Iterable[Topic]) -> dict[str, Topic]:
    """Full topic name -> topic, for ``topics`` under ``prefix``."""
    return {topic.full_name(prefix): topic for topic in topics}


def register_writes(client: RegistryClient, writes: Mapping[str, Topic]) -> dict[str, int]:
    """Check and register the schemas written to ``writes`` (full topic name -> topic):
    stem -> schema id.

    Raises :class:`IncompatibleWithRegistry` before registering anything more once one
    schema is refused.
    """
    ids: dict[str, int] = {}
    where: dict[str, str] = {}
    for full, topic in writes.items():
        stems = VALUE_SCHEMAS.get(topic.name)
        if stems is None:
            known = ", ".join(VALUE_SCHEMAS)
            msg = f"topic {topic.name!r} has no Avro value schema; expected one of {known}"
            raise ValueError(msg)
        for index, stem in enumerate(stems):
            subject = subject_of(full, stem, index == 0)
            schema_id = _register_checked(client, subject, packaged_schema(stem))
            if stem in ids and ids[stem] != schema_id:
                msg = (
                    f"schema registry: expected one id for {packaged_schema(stem).label} in "
                    f"every subject, found {ids[stem]} under {where[stem]!r} and {schema_id} "
                    f"under {subject!r}"
                )
                raise IncompatibleWithRegistry(msg)
            ids[stem] = schema_id
            where[stem] = subject
    return ids


def _register_checked(client: RegistryClient, subject: str, schema: AvroSchema) -> int:
    problems = client.incompatibilities(subject, schema)
    if problems:
        raise _incompatible(client, subject, schema, problems)
    try:
        schema_id = client.register(subject, schema)
    except RegistryRefused as refused:
        if refused.status == 409:  # another version was registered meanwhile
            raise _incompatible(client, subject, schema, [str(refused)]) from None
        raise
    log.info("subject %s: %s has schema id %d", subject, schema.label, schema_id)
    return schema_id


def _incompatible(
    client: RegistryClient, subject: str, schema: AvroSchema, problems: list[str]
) -> IncompatibleWithRegistry:
    latest = client.latest(subject)
    level = client.compatibility_level(subject) or "the configured"
    against = "the latest registered version"
    if latest is not None:
        against = f"version {latest.version} (schema id {latest.schema_id})"
    msg = (
        f"schema registry subject {subject!r}: expected {schema.label} to be {level}-"
        f"compatible with {against}, found it is not: {'; '.join(problems)}"
    )
    return IncompatibleWithRegistry(msg)


def use_registry(
    settings: RegistrySettings, writes: Mapping[str, Topic] | None = None
) -> dict[str, int]:
    """Register (after checking) the schemas of the topics this process writes (full
    name -> topic, see :func:`topic_writes`), then frame every Avro record of this
    process the Confluent way and read both framings.

    Call at start, before any record is encoded; returns stem -> schema id.
    """
    client = RegistryClient(settings)
    ids = register_writes(client, writes or {})
    schemas = RegistrySchemas(client)
    for stem, schema_id in ids.items():
        schemas.remember(schema_id, packaged_schema(stem))
    _use_registry_framing(schemas, ids)
    return ids


def use_single_object() -> None:
    """Back to the default: single-object encoding, no registry."""
    _use_single_object()
