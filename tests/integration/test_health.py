"""Probes that tell the truth on the real broker: readiness goes false while the group
rebalances and comes back, and a worker stopped with SIGTERM hands its partitions over
at once instead of after the session timeout."""

from __future__ import annotations

import asyncio
import time

import aiohttp

from streams.settings import Settings
from streams.topics import ensure_topics

from .conftest import free_port
from .harness import WorkerProcess


async def probe(session: aiohttp.ClientSession, port: int, path: str) -> tuple[int, dict]:  # type: ignore[type-arg]
    try:
        async with session.get(f"http://127.0.0.1:{port}{path}") as response:
            return response.status, await response.json()
    except aiohttp.ClientError:
        return 0, {}


async def until(
    session: aiohttp.ClientSession,
    port: int,
    path: str,
    wanted: int,
    within: float,
    worker: WorkerProcess,
) -> dict:  # type: ignore[type-arg]
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        worker.assert_alive()
        status, body = await probe(session, port, path)
        if status == wanted:
            return body
        await asyncio.sleep(0.05)
    raise AssertionError(f"{path} on port {port} never answered {wanted}\n{worker.tail_log()}")


async def test_readiness_follows_a_rebalance_and_sigterm_hands_partitions_over(
    settings: Settings, worker: WorkerProcess, tmp_path: object
) -> None:
    await ensure_topics(settings)
    first = settings.web_port
    worker.start()
    async with aiohttp.ClientSession() as session:
        status, _ = await probe(session, first, "/healthz")
        body = await until(session, first, "/readyz", 200, 60.0, worker)
        assert body["partitions"] == [0, 1, 2, 3]
        assert (await probe(session, first, "/startupz"))[0] == 200
        assert (await probe(session, first, "/healthz"))[0] == 200

        # A second worker joins: the first one says it is not ready while the group
        # rebalances, and why, then is ready again with its share.
        second_port = free_port()
        second = WorkerProcess(
            settings.model_copy(
                update={"web_port": second_port, "data_dir": settings.data_dir.parent / "w2"}
            ),
            worker.log.parent / "worker-2.log",
        )
        second.start()
        try:
            body = await until(session, first, "/readyz", 503, 60.0, worker)
            assert any("rebalancing" in r or "recovered" in r for r in body["reasons"]), body
            assert (await probe(session, first, "/healthz"))[0] == 200  # alive all along
            mine = (await until(session, first, "/readyz", 200, 60.0, worker))["partitions"]
            theirs = (await until(session, second_port, "/readyz", 200, 60.0, second))["partitions"]
            assert sorted(mine + theirs) == [0, 1, 2, 3] and mine and theirs

            # SIGTERM: the first worker commits, leaves the group, and the second takes
            # every partition well before the session timeout would have passed.
            stopped = time.monotonic()
            worker.stop()
            deadline = stopped + settings.session_timeout_seconds
            while True:
                status, body = await probe(session, second_port, "/readyz")
                if status == 200 and body["partitions"] == [0, 1, 2, 3]:
                    break
                assert time.monotonic() < deadline, "partitions waited for the session timeout"
                await asyncio.sleep(0.1)
        finally:
            second.stop()
