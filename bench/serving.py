"""What the benchmarks that start a server process need: a free local port, and a wait
until the process answers ``GET /readyz`` with 200."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import time

import aiohttp


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def wait_ready(
    url: str, process: subprocess.Popen[bytes], name: str, within: float = 60.0
) -> None:
    """Poll ``{url}/readyz`` until it answers 200; exit the benchmark when ``process``
    (called ``name`` in the message) exits first or is not ready ``within`` seconds."""
    deadline = time.monotonic() + within
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise SystemExit(f"{name} exited with {process.returncode}")
            try:
                async with session.get(f"{url}/readyz") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.2)
    raise SystemExit(f"{name} not ready within {within} s")
