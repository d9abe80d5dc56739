"""A small schema registry that answers the part of Confluent Schema Registry's REST API
Warroom uses, for tests and local runs where no registry server can be installed.

    python deploy/registry/double.py --port 8081 [--user U --password P]

Endpoints (JSON bodies, ``application/vnd.schemaregistry.v1+json`` or ``application/json``):

- ``POST /subjects/{subject}/versions`` {"schema": "..."} -> {"id": N}; the same schema
  again returns its id; a schema the subject's compatibility level refuses -> 409;
- ``GET /schemas/ids/{id}`` -> {"schema": "..."}; ``GET /subjects``;
- ``GET /subjects/{subject}/versions`` and ``/versions/{version|latest}``;
- ``POST /compatibility/subjects/{subject}/versions/{version|latest}`` (``?verbose=true``)
  -> {"is_compatible": bool, "messages": [...]};
- ``GET|PUT /config`` and ``GET|PUT /config/{subject}`` ({"compatibility": LEVEL}).

Errors are {"error_code": N, "message": "..."} with Confluent's codes: 40401 subject
not found, 40402 version not found, 40403 schema not found, 40408 no subject-level
config, 409 incompatible schema, 42201 invalid schema, 42202 invalid version, 42203
invalid compatibility level, 40101 unauthorized. Only Avro schemas; ids are global, one
per schema (Parsing Canonical Form), as in Confluent's registry. State lives in memory.
Compatibility follows ``schemas.registry_compat`` (Avro's resolution rules).
"""

from __future__ import annotations

import argparse
import base64
import hmac
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from fastavro import parse_schema
from fastavro.schema import to_parsing_canonical_form

from schemas.registry_compat import Compatibility, problems_against

CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"


class RegistryFault(Exception):
    def __init__(self, error_code: int, message: str) -> None:
        super().__init__(message)
        self.error_code = error_code
        self.message = message

    @property
    def status(self) -> int:
        return int(str(self.error_code)[:3])


@dataclass
class _Store:
    schemas: dict[int, str] = field(default_factory=dict)
    """Schema id -> schema text as first registered."""
    ids: dict[str, int] = field(default_factory=dict)
    """Parsing Canonical Form -> schema id."""
    subjects: dict[str, list[int]] = field(default_factory=dict)
    """Subject -> schema ids of its versions 1, 2, ..."""
    level: Compatibility = Compatibility.BACKWARD
    subject_levels: dict[str, Compatibility] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _parsed(text: Any) -> tuple[Any, str]:
    """(schema as JSON, Parsing Canonical Form) or 42201."""
    if not isinstance(text, str):
        raise RegistryFault(42201, f"Invalid schema: expected a string, found {text!r}")
    try:
        definition = json.loads(text)
        canonical = to_parsing_canonical_form(parse_schema(definition))
    except Exception as exc:
        raise RegistryFault(42201, f"Invalid schema {text[:200]!r}: {exc}") from exc
    return definition, canonical


class Registry:
    """The registry's state and rules, apart from HTTP."""

    def __init__(self) -> None:
        self._store = _Store()

    def level_of(self, subject: str) -> Compatibility:
        return self._store.subject_levels.get(subject, self._store.level)

    def _versions(self, subject: str) -> list[int]:
        versions = self._store.subjects.get(subject)
        if not versions:
            raise RegistryFault(40401, f"Subject '{subject}' not found.")
        return versions

    def _version(self, subject: str, version: str) -> tuple[int, int]:
        versions = self._versions(subject)
        if version == "latest" or version == "-1":
            return len(versions), versions[-1]
        if not version.isdigit() or int(version) < 1:
            raise RegistryFault(42202, f"The specified version '{version}' is not a valid version")
        number = int(version)
        if number > len(versions):
            raise RegistryFault(40402, f"Version {number} not found.")
        return number, versions[number - 1]

    def register(self, subject: str, text: Any) -> int:
        definition, canonical = _parsed(text)
        store = self._store
        with store.lock:
            versions = store.subjects.setdefault(subject, [])
            known = store.ids.get(canonical)
            if known is not None and known in versions:
                return known
            older = [json.loads(store.schemas[i]) for i in versions]
            problems = problems_against(self.level_of(subject), definition, older)
            if problems:
                if not versions:
                    del store.subjects[subject]
                raise RegistryFault(
                    409,
                    f"Schema being registered is incompatible with an earlier schema for "
                    f"subject '{subject}' ({self.level_of(subject)}): " + "; ".join(problems),
                )
            if known is None:
                known = len(store.schemas) + 1
                store.schemas[known] = text
                store.ids[canonical] = known
            versions.append(known)
            return known

    def schema(self, schema_id: int) -> str:
        text = self._store.schemas.get(schema_id)
        if text is None:
            raise RegistryFault(40403, f"Schema {schema_id} not found")
        return text

    def subjects(self) -> list[str]:
        return sorted(s for s, v in self._store.subjects.items() if v)

    def versions(self, subject: str) -> list[int]:
        return list(range(1, len(self._versions(subject)) + 1))

    def version(self, subject: str, version: str) -> dict[str, Any]:
        number, schema_id = self._version(subject, version)
        return {
            "subject": subject,
            "version": number,
            "id": schema_id,
            "schema": self._store.schemas[schema_id],
        }

    def compatibility(self, subject: str, version: str, text: Any) -> list[str]:
        definition, _ = _parsed(text)
        number, _ = self._version(subject, version)
        # versions 1..number: a transitive level checks them all, the others the last
        older = [json.loads(self._store.schemas[i]) for i in self._versions(subject)[:number]]
        return problems_against(self.level_of(subject), definition, older)

    def config(self, subject: str | None, default_to_global: bool) -> str:
        if subject is None:
            return self._store.level.value
        level = self._store.subject_levels.get(subject)
        if level is None:
            if default_to_global:
                return self._store.level.value
            raise RegistryFault(
                40408, f"Subject '{subject}' does not have subject-level compatibility configured"
            )
        return level.value

    def set_config(self, subject: str | None, body: Any) -> str:
        value = body.get("compatibility") if isinstance(body, dict) else None
        try:
            level = Compatibility(str(value).upper())
        except ValueError:
            levels = ", ".join(c.value for c in Compatibility)
            raise RegistryFault(
                42203, f"Invalid compatibility level {value!r}; expected one of {levels}"
            ) from None
        if subject is None:
            self._store.level = level
        else:
            self._store.subject_levels[subject] = level
        return level.value


_ROUTES: list[tuple[str, re.Pattern[str], str]] = [
    ("POST", re.compile(r"^/subjects/(?P<subject>[^/]+)/versions/?$"), "register"),
    ("GET", re.compile(r"^/subjects/?$"), "subjects"),
    ("GET", re.compile(r"^/subjects/(?P<subject>[^/]+)/versions/?$"), "versions"),
    ("GET", re.compile(r"^/subjects/(?P<subject>[^/]+)/versions/(?P<version>[^/]+)$"), "version"),
    ("GET", re.compile(r"^/schemas/ids/(?P<id>[^/]+)$"), "schema"),
    (
        "POST",
        re.compile(r"^/compatibility/subjects/(?P<subject>[^/]+)/versions/(?P<version>[^/]+)$"),
        "compatibility",
    ),
    ("GET", re.compile(r"^/config/?$"), "config"),
    ("PUT", re.compile(r"^/config/?$"), "set_config"),
    ("GET", re.compile(r"^/config/(?P<subject>[^/]+)$"), "config"),
    ("PUT", re.compile(r"^/config/(?P<subject>[^/]+)$"), "set_config"),
]


class _Handler(BaseHTTPRequestHandler):
    server: RegistryServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.verbose:
            super().log_message(format, *args)

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def _handle(self, method: str) -> None:
        try:
            body = self._body()
            self._authorise()
            status, answer = self._route(method, body)
        except RegistryFault as fault:
            status, answer = (
                fault.status,
                {"error_code": fault.error_code, "message": fault.message},
            )
        except Exception as exc:  # a bug in the double: say so, as the registry would
            status, answer = 500, {"error_code": 50001, "message": f"{type(exc).__name__}: {exc}"}
        data = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", CONTENT_TYPE)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if not raw:
            return None
        try:
            return json.loads(raw)
        except ValueError as exc:
            raise RegistryFault(42201, f"expected a JSON body, found {raw[:80]!r}") from exc

    def _authorise(self) -> None:
        expected = self.server.credentials
        if expected is None:
            return
        given = self.headers.get("Authorization", "")
        if not given.startswith("Basic "):
            raise RegistryFault(40101, "Unauthorized: expected HTTP basic authentication")
        try:
            pair = base64.b64decode(given[6:]).decode()
        except ValueError:
            pair = ""
        if not hmac.compare_digest(pair.encode(), expected.encode()):
            raise RegistryFault(40101, "Unauthorized: wrong user name or password")

    def _route(self, method: str, body: Any) -> tuple[int, Any]:
        parts = urlsplit(self.path)
        query = parse_qs(parts.query)
        registry = self.server.registry
        for verb, pattern, action in _ROUTES:
            found = pattern.match(parts.path)
            if verb != method or found is None:
                continue
            args = {k: unquote(v) for k, v in found.groupdict().items()}
            subject = args.get("subject")
            schema_text = body.get("schema") if isinstance(body, dict) else None
            if isinstance(body, dict) and body.get("schemaType", "AVRO") != "AVRO":
                raise RegistryFault(42201, f"Invalid schema type {body['schemaType']!r}")
            if action == "register":
                assert subject is not None
                return 200, {"id": registry.register(subject, schema_text)}
            if action == "subjects":
                return 200, registry.subjects()
            if action == "versions":
                assert subject is not None
                return 200, registry.versions(subject)
            if action == "version":
                assert subject is not None
                return 200, registry.version(subject, args["version"])
            if action == "schema":
                if not args["id"].isdigit():
                    raise RegistryFault(40403, f"Schema {args['id']} not found")
                return 200, {"schema": registry.schema(int(args["id"]))}
            if action == "compatibility":
                assert subject is not None
                problems = registry.compatibility(subject, args["version"], schema_text)
                answer: dict[str, Any] = {"is_compatible": not problems}
                if query.get("verbose", ["false"])[0].lower() == "true":
                    answer["messages"] = problems
                return 200, answer
            if action == "config":
                default = query.get("defaultToGlobal", ["false"])[0].lower() == "true"
                return 200, {"compatibilityLevel": registry.config(subject, default)}
            return 200, {"compatibility": registry.set_config(subject, body)}
        raise RegistryFault(404, f"HTTP 404 Not Found: no route {method} {parts.path}")


class RegistryServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self, host: str, port: int, credentials: str | None = None, verbose: bool = False
    ) -> None:
        super().__init__((host, port), _Handler)
        self.registry = Registry()
        self.credentials = credentials
        self.verbose = verbose

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"


def start(host: str = "127.0.0.1", port: int = 0, credentials: str | None = None) -> RegistryServer:
    """A registry serving on a background thread; ``shutdown()`` stops it."""
    server = RegistryServer(host, port, credentials)
    serve = threading.Thread(
        target=server.serve_forever, args=(0.05,), name="registry-double", daemon=True
    )
    serve.start()
    return server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8081)
    parser.add_argument("--user", help="require HTTP basic authentication with this user")
    parser.add_argument("--password", help="... and this password")
    parser.add_argument("--verbose", action="store_true", help="log every request")
    args = parser.parse_args()
    credentials = f"{args.user}:{args.password}" if args.user else None
    server = RegistryServer(args.host, args.port, credentials, args.verbose)
    print(f"schema registry double listening on {server.url}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
