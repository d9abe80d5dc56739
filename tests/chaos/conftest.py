"""Fixtures for the chaos suite: workers, their settings, a broker of its own, and the
figures every scenario reports.

``WARROOM_CHAOS_SCALE=full`` (``make chaos``) runs the loads the scenarios are named
after; by default they run reduced, to fit in ``make test``. ``WARROOM_CHAOS_SEED``
replays a run (every scenario prints the seed it used).
"""

from __future__ import annotations

import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from streams.settings import Settings
from tests.integration.conftest import BOOTSTRAP_ENV, free_port
from tests.integration.harness import REPO, WorkerProcess

from .workload import Scale, scale_from_env

SEED_ENV = "WARROOM_CHAOS_SEED"
WORKER_MEMORY_LIMIT = 3 * 1024**3
"""Address space a chaos worker may take: a bundle that expands in memory kills the
worker, not the machine."""

_FIGURES: list[tuple[str, dict[str, Any]]] = []


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.integration)
            item.add_marker(pytest.mark.chaos)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not _FIGURES:
        return
    terminalreporter.section("chaos figures")
    for name, figures in _FIGURES:
        shown = ", ".join(f"{key}={value}" for key, value in figures.items())
        terminalreporter.write_line(f"{name}: {shown}")


@pytest.fixture
def figures(request: pytest.FixtureRequest) -> Iterator[dict[str, Any]]:
    """What the scenario measured; printed in the run's summary, pass or fail."""
    found: dict[str, Any] = {}
    yield found
    if found:
        _FIGURES.append((request.node.name, found))


@pytest.fixture
def scale() -> Scale:
    return scale_from_env()


@pytest.fixture
def seed(request: pytest.FixtureRequest) -> int:
    given = os.environ.get(SEED_ENV, "").strip()
    value = int(given) if given else random.SystemRandom().randrange(2**32)
    print(f"{request.node.name}: seed {value} (replay with {SEED_ENV}={value})")
    return value


@pytest.fixture
def bootstrap_servers() -> str:
    servers = os.environ.get(BOOTSTRAP_ENV, "").strip()
    if not servers:
        pytest.fail(
            f"{BOOTSTRAP_ENV} is not set: the chaos suite needs a real Kafka broker. Run "
            "`make chaos`, or `python deploy/kafka/broker.py run -- pytest tests/chaos`.",
            pytrace=False,
        )
    return servers


def chaos_settings(bootstrap_servers: str, data_dir: Path) -> Settings:
    run = uuid.uuid4().hex[:8]
    return Settings(
        app_id=f"warroom-chaos-{run}",
        bootstrap_servers=bootstrap_servers,
        topic_prefix=f"chaos-{run}.",
        partitions=4,
        processing_guarantee="exactly_once",
        data_dir=data_dir,
        web_port=free_port(),
        # A crashed worker's partitions move after this long; short, so that kills
        # cost seconds, yet long enough for heartbeats on a busy 2-core machine.
        session_timeout_seconds=6.0,
    )


@pytest.fixture
def settings(bootstrap_servers: str, tmp_path: Path) -> Settings:
    return chaos_settings(bootstrap_servers, tmp_path / "worker")


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (WORKER_MEMORY_LIMIT, WORKER_MEMORY_LIMIT))


class ChaosWorker(WorkerProcess):
    """A worker process whose address space is capped (see WORKER_MEMORY_LIMIT)."""

    def start(self) -> None:
        assert self._process is None, "worker already running"
        from tests.integration.harness import settings_env

        with self.log.open("ab") as out:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "streams.cli", "worker", "--loglevel", "INFO"],
                cwd=REPO,
                env=settings_env(self.settings),
                stdout=out,
                stderr=subprocess.STDOUT,
                preexec_fn=_limit_memory,
            )


@pytest.fixture
def workers(settings: Settings, tmp_path: Path) -> Iterator[Callable[[int], list[ChaosWorker]]]:
    """``workers(n)``: n worker processes of one group (not started), stopped at the end."""
    made: list[ChaosWorker] = []

    def make(n: int) -> list[ChaosWorker]:
        for _ in range(n):
            index = len(made)
            own = settings.model_copy(
                update={
                    "web_port": free_port(),
                    "data_dir": tmp_path / f"worker-{index}",
                }
            )
            made.append(ChaosWorker(own, tmp_path / f"worker-{index}.log"))
        return made[-n:]

    try:
        yield make
    finally:
        for worker in made:
            worker.stop()


BROKER_SCRIPT = REPO / "deploy" / "kafka" / "broker.py"
BROKER = [sys.executable, str(BROKER_SCRIPT)]
_START_REUSING_PORT = f"""
import importlib.util, socket, sys
spec = importlib.util.spec_from_file_location("broker", {str(BROKER_SCRIPT)!r})
broker = sys.modules["broker"] = importlib.util.module_from_spec(spec)
spec.loader.exec_module(broker)

def ensure_port_free(port):
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((broker.HOST, port))

broker.ensure_port_free = ensure_port_free
sys.exit(broker.main(sys.argv[1:]))
"""
"""``broker.py start`` with a port check that ignores the stopped broker's connections
in TIME_WAIT, as the broker's own listener does (SO_REUSEADDR). broker.py checks with a
plain bind, so for a minute after a stop it refuses to start on the same port."""


class OwnBroker:
    """A broker of the scenario's own, on a fixed port and data folder, so it can be
    stopped and started again with its data (``broker.py start --dir --port``)."""

    def __init__(self, folder: Path, port: int) -> None:
        self.folder = folder
        self.port = port
        self.bootstrap = f"127.0.0.1:{port}"

    port_check_bypassed = 0
    """Restarts that needed :data:`_START_REUSING_PORT` (see there)."""

    def start(self) -> None:
        arguments = ["start", "--dir", str(self.folder), "--port", str(self.port)]
        done = subprocess.run([*BROKER, *arguments], capture_output=True, text=True, check=False)
        if done.returncode != 0 and "already in use" in done.stderr:
            self.port_check_bypassed += 1
            done = subprocess.run(
                [sys.executable, "-c", _START_REUSING_PORT, *arguments],
                capture_output=True,
                text=True,
                check=False,
            )
        if done.returncode != 0:
            raise AssertionError(f"broker start failed ({done.returncode}):\n{done.stderr}")

    def stop(self) -> None:
        subprocess.run(
            [*BROKER, "stop", "--dir", str(self.folder)],
            capture_output=True,
            text=True,
            check=False,
        )


@pytest.fixture
def own_broker() -> Iterator[OwnBroker]:
    folder = Path(tempfile.mkdtemp(prefix="warroom-chaos-kafka-"))
    broker = OwnBroker(folder, free_port())
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()
        shutil.rmtree(folder, ignore_errors=True)
