"""Fixtures for tests that run Warroom against the real local Kafka broker."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from streams.settings import Settings

from .harness import WorkerProcess

BOOTSTRAP_ENV = "WARROOM_BOOTSTRAP_SERVERS"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.integration)


@pytest.fixture
def bootstrap_servers() -> str:
    servers = os.environ.get(BOOTSTRAP_ENV, "").strip()
    if not servers:
        pytest.fail(
            f"{BOOTSTRAP_ENV} is not set: integration tests need a real Kafka broker. Run "
            "`make test`, or `python deploy/kafka/broker.py run -- pytest tests/integration`.",
            pytrace=False,
        )
    return servers


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def settings(bootstrap_servers: str, tmp_path: Path) -> Settings:
    """A fresh app id and topic prefix per test, so tests never see each other's data."""
    run = uuid.uuid4().hex[:8]
    return Settings(
        app_id=f"warroom-it-{run}",
        bootstrap_servers=bootstrap_servers,
        topic_prefix=f"it-{run}.",
        partitions=4,
        processing_guarantee="exactly_once",
        data_dir=tmp_path / "worker",
        web_port=free_port(),
        admin_token=f"test-admin-token-{run}",
    )


@pytest.fixture
def worker(settings: Settings, tmp_path: Path) -> Iterator[WorkerProcess]:
    process = WorkerProcess(settings, tmp_path / "worker.log")
    try:
        yield process
    finally:
        process.stop()
