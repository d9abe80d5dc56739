"""The registry client and the start-up check against the registry double
(deploy/registry/double.py), which follows Confluent's documented REST API."""

from __future__ import annotations

import importlib.util
import json
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from pydantic import SecretStr

from schemas.codec import (
    AvroSchema,
    decode_intervention,
    encode_intervention,
    intervention_codec,
    packaged_schema,
    touchpoint_event_codec,
)
from schemas.errors import UnknownSchemaIdError
from schemas.registry import (
    CONNECTOR_WRITES,
    WORKER_WRITES,
    IncompatibleWithRegistry,
    RegistryClient,
    RegistryRefused,
    RegistrySchemas,
    RegistrySettings,
    RegistryUnavailable,
    register_writes,
    subject_of,
    topic_writes,
    use_registry,
    use_single_object,
)
from schemas.topics import INTERVENTIONS

DOUBLE = Path(__file__).resolve().parents[2] / "deploy" / "registry" / "double.py"


def load_double() -> ModuleType:
    spec = importlib.util.spec_from_file_location("warroom_registry_double", DOUBLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


double = load_double()


@pytest.fixture
def server() -> Iterator[Any]:
    running = double.start()
    try:
        yield running
    finally:
        running.shutdown()
        running.server_close()
        use_single_object()


def call(url: str, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        url + path, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as failed:
        return failed.code, json.loads(failed.read())


def schema_text(definition: Any) -> str:
    return json.dumps(definition)


V1 = {"type": "record", "name": "T", "fields": [{"name": "a", "type": "string"}]}
V2 = {
    "type": "record",
    "name": "T",
    "fields": [{"name": "a", "type": "string"}, {"name": "b", "type": "int", "default": 0}],
}
NO_DEFAULT = {
    "type": "record",
    "name": "T",
    "fields": [{"name": "a", "type": "string"}, {"name": "c", "type": "int"}],
}


# --------------------------------------------------------------------------- the double


def test_double_registers_and_serves_schemas_by_id(server: Any) -> None:
    url = server.url
    assert call(url, "POST", "/subjects/t-value/versions", {"schema": schema_text(V1)}) == (
        200,
        {"id": 1},
    )
    # the same schema again, and under another subject: the same global id
    assert call(url, "POST", "/subjects/t-value/versions", {"schema": schema_text(V1)})[1] == {
        "id": 1
    }
    assert call(url, "POST", "/subjects/u-value/versions", {"schema": schema_text(V1)})[1] == {
        "id": 1
    }
    assert call(url, "POST", "/subjects/t-value/versions", {"schema": schema_text(V2)})[1] == {
        "id": 2
    }
    status, latest = call(url, "GET", "/subjects/t-value/versions/latest")
    assert status == 200
    assert (latest["subject"], latest["version"], latest["id"]) == ("t-value", 2, 2)
    assert json.loads(latest["schema"]) == V2
    assert call(url, "GET", "/subjects/t-value/versions") == (200, [1, 2])
    assert json.loads(call(url, "GET", "/schemas/ids/1")[1]["schema"]) == V1
    assert call(url, "GET", "/subjects") == (200, ["t-value", "u-value"])


def test_double_errors_use_confluent_codes(server: Any) -> None:
    url = server.url
    assert call(url, "GET", "/schemas/ids/99") == (
        404,
        {"error_code": 40403, "message": "Schema 99 not found"},
    )
    assert call(url, "GET", "/subjects/nope/versions/latest") == (
        404,
        {"error_code": 40401, "message": "Subject 'nope' not found."},
    )
    status, body = call(url, "POST", "/subjects/t-value/versions", {"schema": "{not json"})
    assert (status, body["error_code"]) == (422, 42201)
    status, body = call(url, "POST", "/subjects/t-value/versions", {"schema": '{"type": "nope"}'})
    assert (status, body["error_code"]) == (422, 42201)
    call(url, "POST", "/subjects/t-value/versions", {"schema": schema_text(V1)})
    assert call(url, "GET", "/subjects/t-value/versions/3")[1]["error_code"] == 40402
    assert call(url, "GET", "/subjects/t-value/versions/x")[1]["error_code"] == 42202


def test_double_checks_compatibility_before_registering(server: Any) -> None:
    url = server.url
    call(url, "POST", "/subjects/t-value/versions", {"schema": schema_text(V1)})
    path = "/compatibility/subjects/t-value/versions/latest"
    assert call(url, "POST", path, {"schema": schema_text(V2)}) == (200, {"is_compatible": True})
    status, body = call(url, "POST", path + "?verbose=true", {"schema": schema_text(NO_DEFAULT)})
    assert status == 200 and body["is_compatible"] is False
    assert body["messages"] == [
        "new schema cannot read version 1: c: the reader's field has no default and the "
        "writer's T has no such field"
    ]
    status, body = call(
        url, "POST", "/subjects/t-value/versions", {"schema": schema_text(NO_DEFAULT)}
    )
    assert (status, body["error_code"]) == (409, 409)
    assert "c: the reader's field has no default" in body["message"]
    assert (
        call(
            url, "POST", "/compatibility/subjects/new/versions/latest", {"schema": schema_text(V1)}
        )[1]["error_code"]
        == 40401
    )


def test_double_config_global_and_per_subject(server: Any) -> None:
    url = server.url
    assert call(url, "GET", "/config") == (200, {"compatibilityLevel": "BACKWARD"})
    assert call(url, "GET", "/config/t-value")[1]["error_code"] == 40408
    assert call(url, "GET", "/config/t-value?defaultToGlobal=true")[1] == {
        "compatibilityLevel": "BACKWARD"
    }
    assert call(url, "PUT", "/config/t-value", {"compatibility": "NONE"}) == (
        200,
        {"compatibility": "NONE"},
    )
    assert call(url, "PUT", "/config", {"compatibility": "SIDEWAYS"})[1]["error_code"] == 42203
    call(url, "POST", "/subjects/t-value/versions", {"schema": schema_text(V1)})
    # NONE: anything goes
    assert (
        call(url, "POST", "/subjects/t-value/versions", {"schema": schema_text(NO_DEFAULT)})[0]
        == 200
    )


def test_double_requires_basic_auth_when_given_credentials() -> None:
    running = double.start(credentials="alice:s3cret-word")
    try:
        assert call(running.url, "GET", "/subjects")[1]["error_code"] == 40101
        good = RegistryClient(RegistrySettings(running.url, "alice", SecretStr("s3cret-word")))
        assert good.latest("t-value") is None
        bad = RegistryClient(RegistrySettings(running.url, "alice", SecretStr("wrong-word")))
        with pytest.raises(RegistryRefused) as info:
            bad.latest("t-value")
        assert info.value.error_code == 40101
        assert "wrong-word" not in str(info.value) and "s3cret" not in str(info.value)
    finally:
        running.shutdown()
        running.server_close()


# --------------------------------------------------------------------------- the client


def test_settings_refuse_credentials_in_the_url_and_hide_the_password() -> None:
    with pytest.raises(ValueError, match="no credentials in the URL"):
        RegistrySettings("http://alice:pw@registry:8081")
    with pytest.raises(ValueError, match=r"expected http\(s\)://host"):
        RegistrySettings("registry:8081")
    with pytest.raises(ValueError, match="a password needs a user name"):
        RegistrySettings("http://registry:8081", password=SecretStr("x"))
    settings = RegistrySettings("http://registry:8081", "alice", SecretStr("hunter2-secret"))
    assert "hunter2" not in repr(settings)
    assert "hunter2" not in repr(RegistryClient(settings))


def test_unreachable_registry_is_unavailable_not_a_schema_error() -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = RegistryClient(RegistrySettings(f"http://127.0.0.1:{port}", timeout_seconds=2))
    with pytest.raises(RegistryUnavailable) as info:
        client.schema_text(1)
    assert str(info.value).startswith(
        f"schema registry: GET http://127.0.0.1:{port}/schemas/ids/1: expected an answer, found"
    )


def test_registry_schemas_fetch_each_id_once(server: Any) -> None:
    client = RegistryClient(RegistrySettings(server.url))
    schema_id = client.register("x-value", packaged_schema("intervention_command"))
    calls: list[int] = []
    original = client.schema_text

    def counting(number: int) -> str | None:
        calls.append(number)
        return original(number)

    client.schema_text = counting  # type: ignore[method-assign,assignment]
    schemas = RegistrySchemas(client)
    for _ in range(3):
        fetched = schemas.schema_of(schema_id)
        assert fetched.canonical_form == packaged_schema("intervention_command").canonical_form
        with pytest.raises(UnknownSchemaIdError, match="found 404"):
            schemas.schema_of(404)
    assert calls == [schema_id, 404]


def test_subjects_follow_topic_name_strategy() -> None:
    assert subject_of("it.touchpoints", "touchpoint_event", primary=True) == "it.touchpoints-value"
    assert (
        subject_of("it.touchpoints", "touchpoint_batch", primary=False)
        == "it.touchpoints-io.warroom.TouchpointBatch"
    )


def test_use_registry_registers_what_a_worker_writes_and_frames_with_its_ids(
    server: Any,
) -> None:
    ids = use_registry(RegistrySettings(server.url), topic_writes("p.", WORKER_WRITES))
    assert set(ids) == {"intervention_command", "dead_letter", "compliance_verdict"}
    registry = server.registry
    assert registry.subjects() == [
        "p.compliance-verdicts-value",
        "p.dlq-value",
        "p.interventions-value",
        "p.rep-candidates-value",
    ]
    assert registry.version("p.interventions-value", "latest")["id"] == ids["intervention_command"]
    assert intervention_codec().avro.schema_id == ids["intervention_command"]
    assert touchpoint_event_codec().schema_id is None  # a worker does not write touchpoints
    # starting again finds everything registered already: same ids
    assert use_registry(RegistrySettings(server.url), topic_writes("p.", WORKER_WRITES)) == ids
    connector = use_registry(RegistrySettings(server.url), topic_writes("p.", CONNECTOR_WRITES))
    assert registry.subjects()[-2:] == [
        "p.touchpoints-io.warroom.TouchpointBatch",
        "p.touchpoints-value",
    ]
    assert set(connector) == {"touchpoint_event", "touchpoint_batch"}


def test_an_incompatible_registered_schema_refuses_the_start_naming_it(server: Any) -> None:
    client = RegistryClient(RegistrySettings(server.url))
    mine = packaged_schema("intervention_command")
    theirs = json.loads(json.dumps(mine.definition))
    theirs["fields"] = [f for f in theirs["fields"] if f["name"] != "title"]
    client.register("p.interventions-value", AvroSchema.from_dict(theirs))
    with pytest.raises(IncompatibleWithRegistry) as info:
        use_registry(RegistrySettings(server.url), topic_writes("p.", (INTERVENTIONS,)))
    assert str(info.value) == (
        "schema registry subject 'p.interventions-value': expected InterventionCommand v1 "
        f"(0x{mine.fingerprint:016x}) to be BACKWARD-compatible with version 1 (schema id 1), "
        "found it is not: new schema cannot read version 1: title: the reader's field has "
        "no default and the writer's io.warroom.InterventionCommand has no such field"
    )
    # nothing changed: no second version, and the codec still writes single-object
    assert server.registry.versions("p.interventions-value") == [1]
    assert intervention_codec().avro.schema_id is None


def test_a_worker_and_a_plain_reader_agree_through_the_registry(server: Any) -> None:
    from datetime import UTC, datetime

    from schemas.models import Explanation, InterventionCommand, InterventionKind

    command = InterventionCommand(
        intervention_id="iv-1",
        customer_id="c",
        rule_id="r",
        rule_version=1,
        kind=InterventionKind.TASK,
        title="t",
        body="b",
        explanation=Explanation(matched=[], triggering_event_ids=[]),
        created_at=datetime(2024, 5, 1, tzinfo=UTC),
    )
    ids = use_registry(RegistrySettings(server.url), topic_writes("p.", WORKER_WRITES))
    data = encode_intervention(command)
    use_single_object()
    use_registry(RegistrySettings(server.url))  # a reader that writes nothing
    assert data[1:5] == ids["intervention_command"].to_bytes(4, "big")
    assert decode_intervention(data) == command


def test_register_writes_names_a_topic_without_avro_values() -> None:
    from schemas.topics import METRICS

    client = RegistryClient(RegistrySettings("http://127.0.0.1:9"))
    with pytest.raises(ValueError, match="'metrics' has no Avro value schema"):
        register_writes(client, {"metrics": METRICS})
