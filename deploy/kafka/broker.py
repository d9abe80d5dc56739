#!/usr/bin/env python3
"""Local single-node Apache Kafka (KRaft, broker+controller) for development, tests and CI.

Standard library only: it runs before the project's virtualenv exists. It needs Java 17+
and Maven (``mvn``) on PATH; the jars come from Maven Central via ``deploy/kafka/pom.xml``
and are cached in ``.cache/kafka/<kafka version>/libs``.

    broker.py fetch                                 download the jars (cached)
    broker.py start [--port N|0] [--dir DIR]        start a detached broker, print bootstrap
    broker.py stop [--dir DIR]                      stop it (SIGTERM, SIGKILL after 30 s)
    broker.py status [--dir DIR]                    show it (exit 0 ready, 1 stopped, 2 unready)
    broker.py run [--port N|0] [--dir DIR] -- CMD   broker around CMD, with
                                                    WARROOM_BOOTSTRAP_SERVERS set

Secured listeners (start and run), next to the PLAINTEXT one:
    --scram-user NAME:PASSWORD   SCRAM-SHA-512 and SCRAM-SHA-256 user, created when the
                                 storage is formatted; opens a SASL_PLAINTEXT listener
    --plain-user NAME:PASSWORD   SASL/PLAIN user on the same SASL listener(s)
    --tls-dir DIR                DIR/ca.pem (trusted CA) and DIR/broker.pem (private key,
                                 PKCS#8 unencrypted, then the certificate chain): opens an
                                 SSL listener that requires client certificates (mutual
                                 TLS) and, with SASL users, a SASL_SSL listener
Their addresses are printed by `start` and kept in DIR/broker.json ("listeners").

`start` keeps DIR/data between runs (--fresh wipes it); `run` uses a throw-away folder.
Environment: JAVA_HOME (else `java` on PATH), KAFKA_HEAP_OPTS (default -Xms512m -Xmx1g),
MAVEN_OPTS / ~/.m2/settings.xml for Maven (e.g. a mirror or -Dmaven.repo.local=...).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import ctypes
import fcntl
import hashlib
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from types import FrameType
from typing import Any

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent.parent
POM = HERE / "pom.xml"
CACHE_ROOT = REPO_ROOT / ".cache" / "kafka"
DEFAULT_DIR = CACHE_ROOT / "run"

HOST = "127.0.0.1"
NODE_ID = 1
DEFAULT_PORT = 9092
DEFAULT_TIMEOUT = 90.0
STOP_GRACE = 30.0
BOOTSTRAP_ENV = "WARROOM_BOOTSTRAP_SERVERS"
DEFAULT_HEAP_OPTS = "-Xms512m -Xmx1g"
STATE_FILE = "broker.json"
POM_NS = {"m": "http://maven.apache.org/POM/4.0.0"}

Handler = Callable[[int, FrameType | None], Any] | int | None


class BrokerError(Exception):
    """A failure to report to the user (no traceback)."""


class ProtocolError(Exception):
    """The broker answered something this probe does not understand."""


class Interrupted(Exception):
    """SIGTERM/SIGHUP/SIGINT arrived while we were starting or stopping."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def log(message: str) -> None:
    print(f"[kafka] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- jars


@dataclass(frozen=True)
class Runtime:
    version: str
    libs: Path


def kafka_version() -> str:
    node = ET.parse(POM).getroot().find("m:properties/m:kafka.version", POM_NS)
    text = (node.text or "").strip() if node is not None else ""
    if not text:
        raise BrokerError(f"no <kafka.version> property in {POM}")
    return text


def pom_digest() -> str:
    return hashlib.sha256(POM.read_bytes()).hexdigest()


def require_tool(name: str, hint: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise BrokerError(f"`{name}` is not on PATH ({hint})")
    return path


def java_executable() -> str:
    home = os.environ.get("JAVA_HOME")
    if home and (Path(home) / "bin" / "java").is_file():
        return str(Path(home) / "bin" / "java")
    return require_tool("java", "Kafka 4 needs a Java 17+ runtime")


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def cache_complete(marker: Path, libs: Path, digest: str) -> bool:
    return libs.is_dir() and marker.is_file() and marker.read_text().strip() == digest


def copy_dependencies(target: Path) -> None:
    mvn = require_tool("mvn", "install Maven 3.6+, e.g. `apt-get install maven`")
    cmd = [
        mvn,
        "-B",
        "-q",
        "-f",
        str(POM),
        "dependency:copy-dependencies",
        "-DincludeScope=runtime",
        f"-DoutputDirectory={target}",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        output = (done.stdout + done.stderr).strip().splitlines()
        raise BrokerError("maven could not fetch the Kafka jars:\n" + "\n".join(output[-30:]))
    if not any(target.glob("kafka_2.13-*.jar")):
        raise BrokerError(f"maven succeeded but no kafka_2.13 jar is in {target}")


def fetch_jars() -> Runtime:
    version = kafka_version()
    home = CACHE_ROOT / version
    runtime = Runtime(version, home / "libs")
    marker, digest = home / "complete", pom_digest()
    if cache_complete(marker, runtime.libs, digest):
        return runtime
    home.mkdir(parents=True, exist_ok=True)
    with file_lock(home / ".lock"):
        if cache_complete(marker, runtime.libs, digest):
            return runtime
        log(f"fetching Kafka {version} jars from Maven Central into {runtime.libs}")
        staging = home / "libs.partial"
        for stale in (staging, runtime.libs):
            shutil.rmtree(stale, ignore_errors=True)
        marker.unlink(missing_ok=True)
        copy_dependencies(staging)
        staging.rename(runtime.libs)
        marker.write_text(digest + "\n")
    return runtime


# --------------------------------------------------------------------------- config


@dataclass(frozen=True)
class Security:
    """Secured listeners to open besides PLAINTEXT (the probe and inter-broker use it)."""

    scram_users: tuple[tuple[str, str], ...] = ()
    plain_users: tuple[tuple[str, str], ...] = ()
    tls_dir: Path | None = None

    @property
    def sasl(self) -> bool:
        return bool(self.scram_users or self.plain_users)

    def listener_names(self) -> list[str]:
        """SASL (SASL_PLAINTEXT), SASL_SSL, and MTLS (SSL, client certificate required)."""
        names = ["SASL"] if self.sasl else []
        if self.tls_dir is not None:
            names += ["SASL_SSL", "MTLS"] if self.sasl else ["MTLS"]
        return names


LISTENER_PROTOCOL = {"SASL": "SASL_PLAINTEXT", "SASL_SSL": "SASL_SSL", "MTLS": "SSL"}
SCRAM_MECHANISMS = ("SCRAM-SHA-512", "SCRAM-SHA-256")


def parse_user(text: str) -> tuple[str, str]:
    """NAME:PASSWORD, as kafka-storage --add-scram can take it (no ',', '[', ']', '=', '"')."""
    name, sep, password = text.partition(":")
    bad = set(',[]="\\') & set(text)
    if not sep or not name or not password or bad:
        raise argparse.ArgumentTypeError(
            'expected NAME:PASSWORD, both non-empty, without any of , [ ] = " \\; '
            f"found {'an empty part' if not (sep and name and password) else sorted(bad)}"
        )
    return name, password


@dataclass(frozen=True)
class BrokerConfig:
    dir: Path
    port: int
    controller_port: int
    partitions: int
    security: Security = Security()
    secure_ports: tuple[int, ...] = ()
    """One port per ``security.listener_names()``, in that order."""

    @property
    def listeners(self) -> dict[str, str]:
        """Secured listener name -> host:port."""
        names = self.security.listener_names()
        return {name: f"{HOST}:{port}" for name, port in zip(names, self.secure_ports, strict=True)}

    @property
    def bootstrap(self) -> str:
        return f"{HOST}:{self.port}"

    @property
    def data_dir(self) -> Path:
        return self.dir / "data"

    @property
    def logs_dir(self) -> Path:
        return self.dir / "logs"

    @property
    def properties_file(self) -> Path:
        return self.dir / "server.properties"

    @property
    def log4j_file(self) -> Path:
        return self.dir / "log4j2.properties"


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind((HOST, 0))
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def ensure_port_free(port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # A broker just stopped leaves its closed connections in TIME_WAIT; the JVM binds
        # with SO_REUSEADDR, so only a listening process counts as "in use" here too.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError as exc:
            raise BrokerError(f"{HOST}:{port} is already in use ({exc}); try --port 0") from exc


def security_properties(cfg: BrokerConfig) -> dict[str, str]:
    """Properties of the secured listeners (none without ``cfg.security``)."""
    sec, props = cfg.security, {}
    scram = "org.apache.kafka.common.security.scram.ScramLoginModule required;"
    plain_users = "".join(f' user_{name}="{password}"' for name, password in sec.plain_users)
    plain = f"org.apache.kafka.common.security.plain.PlainLoginModule required{plain_users};"
    for name in cfg.listeners:
        prefix = f"listener.name.{name.lower()}"
        if name == "MTLS":
            props[f"{prefix}.ssl.client.auth"] = "required"
            continue
        mechanisms = [
            *(SCRAM_MECHANISMS if sec.scram_users else ()),
            *(["PLAIN"] if sec.plain_users else []),
        ]
        props[f"{prefix}.sasl.enabled.mechanisms"] = ",".join(mechanisms)
        for mechanism in mechanisms:
            module = plain if mechanism == "PLAIN" else scram
            props[f"{prefix}.{mechanism.lower()}.sasl.jaas.config"] = module
    if sec.tls_dir is not None:
        props.update(
            {
                "ssl.keystore.type": "PEM",
                "ssl.keystore.location": str(sec.tls_dir / "broker.pem"),
                "ssl.truststore.type": "PEM",
                "ssl.truststore.location": str(sec.tls_dir / "ca.pem"),
            }
        )
    return props


def server_properties(cfg: BrokerConfig) -> str:
    secured = cfg.listeners
    extra = "".join(f",{name}://{address}" for name, address in secured.items())
    protocols = "".join(f",{name}:{LISTENER_PROTOCOL[name]}" for name in secured)
    settings = {
        "process.roles": "broker,controller",
        "node.id": str(NODE_ID),
        "controller.quorum.voters": f"{NODE_ID}@{HOST}:{cfg.controller_port}",
        "listeners": (
            f"PLAINTEXT://{HOST}:{cfg.port},CONTROLLER://{HOST}:{cfg.controller_port}{extra}"
        ),
        "advertised.listeners": f"PLAINTEXT://{cfg.bootstrap}{extra}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": (f"CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT{protocols}"),
        "log.dirs": str(cfg.data_dir),
        "num.partitions": str(cfg.partitions),
        "auto.create.topics.enable": "true",
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "1",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "transaction.state.log.num.partitions": "1",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "group.initial.rebalance.delay.ms": "0",
        # The log cleaner looks for compactable logs every second instead of every 15 s,
        # so tests can watch a compacted topic compact.
        "log.cleaner.backoff.ms": "1000",
        **security_properties(cfg),
    }
    return "".join(f"{key}={value}\n" for key, value in settings.items())


def log4j2_properties(logs_dir: Path) -> str:
    pattern = "[%d] %p %m (%c)%n"
    return f"""\
status = warn
name = warroom-kafka
# keep logging while Kafka's own shutdown hook runs
shutdownHook = disable
appender.file.type = RollingFile
appender.file.name = FILE
appender.file.fileName = {logs_dir / "server.log"}
appender.file.filePattern = {logs_dir / "server.log"}.%i
appender.file.policies.type = Policies
appender.file.policies.size.type = SizeBasedTriggeringPolicy
appender.file.policies.size.size = 50MB
appender.file.strategy.type = DefaultRolloverStrategy
appender.file.strategy.max = 3
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = {pattern}
appender.console.type = Console
appender.console.name = CONSOLE
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = {pattern}
appender.console.filter.threshold.type = ThresholdFilter
appender.console.filter.threshold.level = error
rootLogger.level = info
rootLogger.appenderRef.file.ref = FILE
rootLogger.appenderRef.console.ref = CONSOLE
logger.request.name = kafka.request.logger
logger.request.level = warn
logger.statechange.name = state.change.logger
logger.statechange.level = warn
"""


def write_config(cfg: BrokerConfig) -> None:
    for folder in (cfg.dir, cfg.data_dir, cfg.logs_dir):
        folder.mkdir(parents=True, exist_ok=True)
    cfg.properties_file.write_text(server_properties(cfg))
    cfg.log4j_file.write_text(log4j2_properties(cfg.logs_dir))


# --------------------------------------------------------------------------- java


def java_command(runtime: Runtime, cfg: BrokerConfig, main: Sequence[str]) -> list[str]:
    heap = os.environ.get("KAFKA_HEAP_OPTS", DEFAULT_HEAP_OPTS).split()
    return [
        java_executable(),
        *heap,
        "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={cfg.log4j_file}",
        f"-Dkafka.logs.dir={cfg.logs_dir}",
        "-cp",
        str(runtime.libs / "*"),
        *main,
    ]


def new_cluster_id() -> str:
    """What `StorageTool random-uuid` prints (Kafka's Uuid.randomUuid), without a JVM start."""
    while True:
        text = base64.urlsafe_b64encode(os.urandom(16)).rstrip(b"=").decode()
        if not text.startswith("-"):
            return text


def format_storage(runtime: Runtime, cfg: BrokerConfig) -> None:
    if (cfg.data_dir / "meta.properties").is_file():
        return
    main = [
        "kafka.tools.StorageTool",
        "format",
        "-t",
        new_cluster_id(),
        "-c",
        str(cfg.properties_file),
    ]
    for name, password in cfg.security.scram_users:
        for mechanism in SCRAM_MECHANISMS:
            main += ["--add-scram", f"{mechanism}=[name={name},password={password}]"]
    done = subprocess.run(
        java_command(runtime, cfg, main), capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise BrokerError(f"formatting {cfg.data_dir} failed:\n{done.stdout}{done.stderr}")


def die_with_parent() -> None:
    """In the child: get SIGTERM when the process that started us dies (Linux only)."""
    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, int(signal.SIGTERM))


def launch(runtime: Runtime, cfg: BrokerConfig, tie_to_parent: bool) -> subprocess.Popen[bytes]:
    cmd = java_command(runtime, cfg, ["kafka.Kafka", str(cfg.properties_file)])
    preexec = die_with_parent if tie_to_parent and sys.platform.startswith("linux") else None
    with (cfg.logs_dir / "stdout.log").open("ab") as out:
        return subprocess.Popen(
            cmd,
            cwd=cfg.dir,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=preexec,
        )


# --------------------------------------------------------------------------- protocol probe

API_METADATA = 3
API_VERSIONS = 18
METADATA_VERSION = 4  # non-flexible, and still supported by Kafka 4.x (KIP-896 dropped v0-3)


class Reader:
    """Big-endian reader over one Kafka response body."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0

    def _take(self, fmt: str) -> int:
        try:
            (value,) = struct.unpack_from(fmt, self._data, self._pos)
        except struct.error as exc:
            raise ProtocolError(f"short response: {exc}") from exc
        self._pos += struct.calcsize(fmt)
        return int(value)

    def int16(self) -> int:
        return self._take(">h")

    def int32(self) -> int:
        return self._take(">i")

    def string(self) -> str | None:
        size = self.int16()
        if size < 0:
            return None
        raw = self._data[self._pos : self._pos + size]
        self._pos += size
        return raw.decode()


def recv_exact(sock: socket.socket, size: int) -> bytes:
    chunks = bytearray()
    while len(chunks) < size:
        chunk = sock.recv(size - len(chunks))
        if not chunk:
            raise ProtocolError("connection closed by the broker")
        chunks += chunk
    return bytes(chunks)


def request(sock: socket.socket, api_key: int, version: int, corr: int, body: bytes) -> Reader:
    client_id = b"warroom-broker-probe"
    header = struct.pack(">hhih", api_key, version, corr, len(client_id)) + client_id
    sock.sendall(struct.pack(">i", len(header) + len(body)) + header + body)
    (size,) = struct.unpack(">i", recv_exact(sock, 4))
    reader = Reader(recv_exact(sock, size))
    if reader.int32() != corr:
        raise ProtocolError("response correlation id does not match the request")
    return reader


def api_versions(sock: socket.socket) -> dict[int, tuple[int, int]]:
    reader = request(sock, API_VERSIONS, 0, 1, b"")
    error = reader.int16()
    if error != 0:
        raise ProtocolError(f"ApiVersions error code {error}")
    ranges: dict[int, tuple[int, int]] = {}
    for _ in range(reader.int32()):
        key, low, high = reader.int16(), reader.int16(), reader.int16()
        ranges[key] = (low, high)
    return ranges


def metadata_brokers(sock: socket.socket) -> list[tuple[int, str | None, int]]:
    body = struct.pack(">ib", -1, 0)  # all topics (null array), no auto-creation
    reader = request(sock, API_METADATA, METADATA_VERSION, 2, body)
    reader.int32()  # throttle_time_ms
    brokers: list[tuple[int, str | None, int]] = []
    for _ in range(reader.int32()):
        node_id, host, port = reader.int32(), reader.string(), reader.int32()
        reader.string()  # rack
        brokers.append((node_id, host, port))
    return brokers


def broker_ready(port: int, timeout: float = 2.0) -> bool:
    """True once the broker answers Metadata and lists itself (registered and unfenced)."""
    with socket.create_connection((HOST, port), timeout=timeout) as sock:
        low, high = api_versions(sock).get(API_METADATA, (-1, -1))
        if not low <= METADATA_VERSION <= high:
            raise ProtocolError(f"broker supports Metadata v{low}..v{high}, not v4")
        return (NODE_ID, HOST, port) in metadata_brokers(sock)


# --------------------------------------------------------------------------- process state


@dataclass(frozen=True)
class BrokerState:
    pid: int
    bootstrap: str
    port: int
    controller_port: int
    dir: str
    data_dir: str
    log_file: str
    kafka_version: str
    started_at: float
    listeners: dict[str, str]
    """Secured listener name (SASL, SASL_SSL, MTLS) -> host:port."""

    @classmethod
    def load(cls, state_dir: Path) -> BrokerState | None:
        try:
            raw = json.loads((state_dir / STATE_FILE).read_text())
            raw.setdefault("listeners", {})
            return cls(**{field.name: raw[field.name] for field in fields(cls)})
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def save(self) -> None:
        path = Path(self.dir) / STATE_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2) + "\n")
        tmp.replace(path)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has already exited
    return True


def is_kafka_process(pid: int) -> bool:
    """Guard against a recycled pid: only signal a JVM running kafka.Kafka (where checkable)."""
    try:
        return b"kafka.Kafka" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return not Path("/proc/self").exists()
    except OSError:
        return True


def exited(pid: int, child: subprocess.Popen[bytes] | None) -> bool:
    return child.poll() is not None if child is not None else not pid_alive(pid)


def wait_exit(pid: int, child: subprocess.Popen[bytes] | None, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not exited(pid, child):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)
    return True


def kill_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, sig)  # pid == pgid: the broker leads its own session


def terminate(pid: int, child: subprocess.Popen[bytes] | None, grace: float) -> str:
    kill_group(pid, signal.SIGTERM)
    if wait_exit(pid, child, grace):
        return "stopped"
    kill_group(pid, signal.SIGKILL)
    wait_exit(pid, child, 10.0)
    return f"killed (no clean shutdown within {grace:.0f} s)"


def stop_broker(state_dir: Path, child: subprocess.Popen[bytes] | None = None) -> str:
    state = BrokerState.load(state_dir)
    pid = state.pid if state is not None else child.pid if child is not None else None
    outcome = "not running"
    if pid is not None and not exited(pid, child) and (child is not None or is_kafka_process(pid)):
        outcome = terminate(pid, child, STOP_GRACE)
    (state_dir / STATE_FILE).unlink(missing_ok=True)
    return outcome


# --------------------------------------------------------------------------- start


def log_tail(cfg: BrokerConfig, lines: int = 40) -> str:
    parts = []
    for name in ("server.log", "stdout.log"):
        path = cfg.logs_dir / name
        text = path.read_text(errors="replace").splitlines()[-lines:] if path.is_file() else []
        if text:
            parts.append(f"--- last {len(text)} lines of {path} ---\n" + "\n".join(text))
    return "\n".join(parts) or "(the broker wrote no log)"


def wait_ready(child: subprocess.Popen[bytes], cfg: BrokerConfig, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last = "no answer yet"
    while time.monotonic() < deadline:
        code = child.poll()
        if code is not None:
            raise BrokerError(
                f"the broker exited with code {code} during start-up\n" + log_tail(cfg)
            )
        try:
            if broker_ready(cfg.port):
                return
            last = "connected, but the broker has not registered itself yet"
        except (OSError, ProtocolError) as exc:
            last = str(exc) or type(exc).__name__
        time.sleep(0.2)
    raise BrokerError(f"the broker was not ready after {timeout:.0f} s ({last})\n" + log_tail(cfg))


def make_config(
    state_dir: Path, port: int, partitions: int, security: Security = Security()
) -> BrokerConfig:
    secured = len(security.listener_names())
    if port:
        ensure_port_free(port)
        controller_port, *secure_ports = free_ports(1 + secured)
    else:
        port, controller_port, *secure_ports = free_ports(2 + secured)
    return BrokerConfig(
        state_dir.resolve(), port, controller_port, partitions, security, tuple(secure_ports)
    )


def new_state(pid: int, cfg: BrokerConfig, runtime: Runtime) -> BrokerState:
    return BrokerState(
        pid=pid,
        bootstrap=cfg.bootstrap,
        port=cfg.port,
        controller_port=cfg.controller_port,
        dir=str(cfg.dir),
        data_dir=str(cfg.data_dir),
        log_file=str(cfg.logs_dir / "server.log"),
        kafka_version=runtime.version,
        started_at=time.time(),
        listeners=cfg.listeners,
    )


def start_broker(
    state_dir: Path,
    port: int,
    partitions: int,
    timeout: float,
    fresh: bool,
    tie: bool,
    security: Security = Security(),
) -> tuple[BrokerState, subprocess.Popen[bytes]]:
    old = BrokerState.load(state_dir)
    if old is not None and pid_alive(old.pid) and is_kafka_process(old.pid):
        raise BrokerError(
            f"a broker already runs from {state_dir} (pid {old.pid}, "
            f"{old.bootstrap}); stop it first"
        )
    runtime = fetch_jars()
    if security.tls_dir is not None:
        for name in ("ca.pem", "broker.pem"):
            if not (security.tls_dir / name).is_file():
                raise BrokerError(f"--tls-dir: expected {security.tls_dir / name}, found no file")
    cfg = make_config(state_dir, port, partitions, security)
    if fresh:
        shutil.rmtree(cfg.data_dir, ignore_errors=True)
    write_config(cfg)
    format_storage(runtime, cfg)
    child = launch(runtime, cfg, tie)
    try:
        state = new_state(child.pid, cfg, runtime)
        state.save()
        wait_ready(child, cfg, timeout)
    except BaseException:
        stop_broker(cfg.dir, child)
        raise
    return state, child


# --------------------------------------------------------------------------- run


def raise_interrupted(signum: int, _frame: FrameType | None) -> None:
    raise Interrupted(signum)


@contextlib.contextmanager
def signal_handlers(handler: Handler) -> Iterator[None]:
    signums = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {signum: signal.signal(signum, handler) for signum in signums}
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


def terminal_sent_it(signum: int) -> bool:
    """A Ctrl-C from the terminal already reached the child (same foreground process group)."""
    if signum != signal.SIGINT:
        return False
    try:
        return os.tcgetpgrp(sys.stdin.fileno()) == os.getpgrp()
    except (OSError, ValueError):
        return False


def run_child(command: Sequence[str], env: dict[str, str]) -> int:
    try:
        child = subprocess.Popen(list(command), env=env)
    except OSError as exc:
        raise BrokerError(f"cannot run {command[0]!r}: {exc}") from exc

    def forward(signum: int, _frame: FrameType | None) -> None:
        if not terminal_sent_it(signum):
            child.send_signal(signum)

    with signal_handlers(forward):
        code = child.wait()
    return code if code >= 0 else 128 - code


def run_with_broker(args: argparse.Namespace, command: Sequence[str]) -> int:
    keep = args.dir is not None
    state_dir = Path(args.dir) if keep else Path(tempfile.mkdtemp(prefix="warroom-kafka-"))
    child: subprocess.Popen[bytes] | None = None
    try:
        with signal_handlers(raise_interrupted):
            state, child = start_broker(
                state_dir,
                args.port,
                args.partitions,
                args.timeout,
                fresh=True,
                tie=True,
                security=security_of(args),
            )
        log(f"Kafka {state.kafka_version} ready at {state.bootstrap}; running {command[0]}")
        env = {**os.environ, BOOTSTRAP_ENV: state.bootstrap}
        return run_child(command, env)
    finally:
        with signal_handlers(signal.SIG_IGN):
            if child is not None:
                log(f"broker {stop_broker(state_dir, child)}")
            if not keep:
                shutil.rmtree(state_dir, ignore_errors=True)


# --------------------------------------------------------------------------- commands


def security_of(args: argparse.Namespace) -> Security:
    tls_dir = Path(args.tls_dir).resolve() if args.tls_dir is not None else None
    return Security(tuple(args.scram_user), tuple(args.plain_user), tls_dir)


def state_dir_of(args: argparse.Namespace) -> Path:
    return Path(args.dir) if args.dir is not None else DEFAULT_DIR


def cmd_fetch(_args: argparse.Namespace) -> int:
    runtime = fetch_jars()
    print(runtime.libs)
    return 0


def cmd_start(args: argparse.Namespace) -> int:
    with signal_handlers(raise_interrupted):
        state, _ = start_broker(
            state_dir_of(args),
            args.port,
            args.partitions,
            args.timeout,
            args.fresh,
            tie=False,
            security=security_of(args),
        )
    log(f"Kafka {state.kafka_version} pid {state.pid}, logs in {state.log_file}")
    for name, address in state.listeners.items():
        log(f"{name} listener ({LISTENER_PROTOCOL[name]}) at {address}")
    print(state.bootstrap)
    return 0


def cmd_stop(args: argparse.Namespace) -> int:
    log(f"broker {stop_broker(state_dir_of(args))}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    state = BrokerState.load(state_dir_of(args))
    if state is None or not pid_alive(state.pid):
        print(json.dumps({"running": False, "dir": str(state_dir_of(args))}))
        return 1
    try:
        ready = broker_ready(state.port)
    except (OSError, ProtocolError):
        ready = False
    print(json.dumps({"running": True, "ready": ready, **asdict(state)}, indent=2))
    return 0 if ready else 2


def cmd_run(args: argparse.Namespace) -> int:
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        raise BrokerError("run needs a command: broker.py run -- CMD [ARGS...]")
    return run_with_broker(args, command)


def add_dir_option(parser: argparse.ArgumentParser, default: str) -> None:
    parser.add_argument("--dir", default=None, help=f"broker state/data folder (default {default})")


def add_start_options(parser: argparse.ArgumentParser, default_port: int) -> None:
    parser.add_argument(
        "--port",
        type=int,
        default=default_port,
        help=f"PLAINTEXT port on {HOST}; 0 picks a free one (default {default_port})",
    )
    parser.add_argument(
        "--partitions", type=int, default=1, help="num.partitions of auto-created topics"
    )
    parser.add_argument(
        "--timeout", type=float, default=DEFAULT_TIMEOUT, help="seconds to wait until ready"
    )
    parser.add_argument(
        "--scram-user",
        type=parse_user,
        action="append",
        default=[],
        metavar="NAME:PASSWORD",
        help="SCRAM-SHA-512/256 user of a SASL listener (repeatable)",
    )
    parser.add_argument(
        "--plain-user",
        type=parse_user,
        action="append",
        default=[],
        metavar="NAME:PASSWORD",
        help="SASL/PLAIN user of a SASL listener (repeatable)",
    )
    parser.add_argument(
        "--tls-dir",
        default=None,
        metavar="DIR",
        help="ca.pem and broker.pem for the mutual-TLS (and SASL_SSL) listeners",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="broker.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="action", required=True)
    fetch = sub.add_parser("fetch", help="download the Kafka jars (cached)")
    fetch.set_defaults(func=cmd_fetch)
    start = sub.add_parser("start", help="start a detached broker, print its bootstrap address")
    add_start_options(start, DEFAULT_PORT)
    add_dir_option(start, str(DEFAULT_DIR))
    start.add_argument("--fresh", action="store_true", help="wipe DIR/data before starting")
    start.set_defaults(func=cmd_start)
    for name, func in (("stop", cmd_stop), ("status", cmd_status)):
        command = sub.add_parser(name, help=f"{name} the broker started from DIR")
        add_dir_option(command, str(DEFAULT_DIR))
        command.set_defaults(func=func)
    run = sub.add_parser("run", help="run CMD against a throw-away broker")
    add_start_options(run, 0)
    add_dir_option(run, "a fresh temporary folder, deleted afterwards")
    run.add_argument("command", nargs=argparse.REMAINDER, help="-- CMD [ARGS...]")
    run.set_defaults(func=cmd_run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except BrokerError as exc:
        print(f"broker.py: error: {exc}", file=sys.stderr)
        return 1
    except (Interrupted, KeyboardInterrupt) as exc:
        signum = exc.signum if isinstance(exc, Interrupted) else int(signal.SIGINT)
        print(f"broker.py: interrupted by {signal.Signals(signum).name}", file=sys.stderr)
        return 128 + signum


if __name__ == "__main__":
    sys.exit(main())
