"""The Confluent wire format on the real broker, with the registry double
(deploy/registry/double.py, Confluent's REST API): chat connector -> worker ->
interventions, every record framed 00 + schema id, read back by a plain consumer that
resolves the id through the registry; and a worker that refuses to start when the
registry holds an incompatible schema for a topic it writes."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from io import BytesIO
from pathlib import Path
from typing import Any

import aiohttp
import fastavro
import pytest
from aiohttp.test_utils import TestServer

from connectors.chat import create_http_app
from connectors.publisher import KafkaTouchpointSink
from connectors.settings import IntakeSettings
from schemas.codec import AvroSchema, packaged_schema
from schemas.registry import RegistryClient, use_single_object
from schemas.topics import TOUCHPOINTS
from streams.settings import Settings
from streams.topics import ensure_topics

from .harness import REPO, WorkerProcess, read_all, read_topic, worker_exit_code


def load_double() -> Any:
    path = REPO / "deploy" / "registry" / "double.py"
    spec = importlib.util.spec_from_file_location("warroom_registry_double", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def registry() -> Iterator[Any]:
    server = load_double().start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        use_single_object()  # the in-process chat connector switched this process


@pytest.fixture
def registered(settings: Settings, registry: Any) -> Settings:
    return settings.model_copy(update={"schema_registry_url": registry.url})


@pytest.fixture
def registry_worker(registered: Settings, tmp_path: Path) -> Iterator[WorkerProcess]:
    process = WorkerProcess(registered, tmp_path / "worker.log")
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture
async def chat_url(registered: Settings) -> AsyncIterator[str]:
    await ensure_topics(registered)
    registry = registered.schema_registry()
    assert registry is not None
    sink = KafkaTouchpointSink(
        IntakeSettings(
            registered.bootstrap_servers,
            registered.topic(TOUCHPOINTS),
            registered.partitions,
            "it-chat-registry",
            schema_registry=registry,
        )
    )
    await sink.start()
    server = TestServer(create_http_app(sink), host="127.0.0.1")
    await server.start_server()
    try:
        yield str(server.make_url("/v1/messages"))
    finally:
        await server.close()
        await sink.stop()


def chat(n: int, customer: str) -> dict[str, Any]:
    return {
        "message_id": f"{customer}-{n}",
        "customer_id": customer,
        "sent_at": (datetime.now(UTC) - timedelta(minutes=30 - n)).isoformat(),
        "sender": "rep",
        "rep_id": "rep-ana",
        "text": f"message {n}",
    }


async def post(url: str, body: Any) -> None:
    async with aiohttp.ClientSession() as session, session.post(url, json=body) as response:
        assert response.status == 202, await response.text()


class PlainConsumer:
    """What a consumer in any language does with the Confluent wire format: magic byte,
    schema id, ``GET /schemas/ids/{id}``, then the Avro body with that schema."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.ids: list[int] = []

    def decode(self, value: bytes) -> dict[str, Any]:
        assert value[:1] == b"\x00", f"expected magic byte 00, found {value[:5].hex(' ')}"
        schema_id = int.from_bytes(value[1:5], "big")
        self.ids.append(schema_id)
        with urllib.request.urlopen(f"{self.url}/schemas/ids/{schema_id}", timeout=5) as answer:
            schema = fastavro.parse_schema(json.loads(json.loads(answer.read())["schema"]))
        record = fastavro.schemaless_reader(BytesIO(value[5:]), schema, None)
        assert isinstance(record, dict)
        return record


async def test_chat_to_intervention_in_confluent_framing(
    registered: Settings, registry: Any, registry_worker: WorkerProcess, chat_url: str
) -> None:
    registry_worker.start()
    await post(chat_url, [chat(1, "acme"), chat(2, "acme")])  # one TouchpointBatch record
    await post(chat_url, chat(3, "acme"))  # one TouchpointEvent record
    plain = PlainConsumer(registry.url)
    [command] = await read_topic(
        registered,
        "interventions",
        lambda found: bool(found),
        plain.decode,
        registry_worker,
        within=60,
    )
    assert command["rule_id"] == "builtin.unanswered-outbound"
    assert command["explanation"]["triggering_event_ids"] == [
        "chat:acme-1",
        "chat:acme-2",
        "chat:acme-3",
    ]
    prefix = registered.topic_prefix
    state = registry.registry
    assert plain.ids == [state.version(f"{prefix}interventions-value", "latest")["id"]]

    touchpoints = PlainConsumer(registry.url)
    records = await read_all(registered, "touchpoints", touchpoints.decode)
    assert sorted(len(r.get("events", [r])) for r in records) == [1, 2]
    assert set(touchpoints.ids) == {
        state.version(f"{prefix}touchpoints-value", "latest")["id"],
        state.version(f"{prefix}touchpoints-io.warroom.TouchpointBatch", "latest")["id"],
    }
    assert f"{prefix}dlq-value" in state.subjects()  # registered by the worker at start


async def test_an_incompatible_registered_schema_keeps_the_worker_from_starting(
    registered: Settings, registry: Any, registry_worker: WorkerProcess
) -> None:
    await ensure_topics(registered)
    mine = packaged_schema("intervention_command")
    theirs = json.loads(json.dumps(mine.definition))
    theirs["fields"] = [f for f in theirs["fields"] if f["name"] != "title"]
    subject = f"{registered.topic_prefix}interventions-value"
    registry_settings = registered.schema_registry()
    assert registry_settings is not None
    RegistryClient(registry_settings).register(subject, AvroSchema.from_dict(theirs))

    registry_worker.start()
    deadline = time.monotonic() + 60
    while worker_exit_code(registry_worker) is None:
        assert time.monotonic() < deadline, registry_worker.tail_log()
        await asyncio.sleep(0.2)
    assert worker_exit_code(registry_worker) == 3, registry_worker.tail_log()
    log = registry_worker.tail_log()
    assert (
        f"warroom worker: not starting: schema registry subject '{subject}': expected "
        f"InterventionCommand v1 (0x{mine.fingerprint:016x}) to be BACKWARD-compatible with "
        "version 1 (schema id 1), found it is not: new schema cannot read version 1: title: "
        "the reader's field has no default and the writer's io.warroom.InterventionCommand "
        "has no such field"
    ) in log
    assert registry.registry.versions(subject) == [1]  # nothing registered over it
