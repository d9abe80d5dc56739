"""Running a connector as a process: stopping on SIGINT or SIGTERM, and serving an
intake app that publishes through a Kafka sink."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable

from aiohttp import web

from .http import add_tracing
from .publisher import KafkaTouchpointSink, TouchpointSink
from .settings import IntakeSettings


def stop_on_signals() -> asyncio.Event:
    """An event set by SIGINT or SIGTERM, so the work in hand finishes before exit."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for number in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(number, stop.set)
    return stop


async def serve_intake(
    settings: IntakeSettings,
    make_app: Callable[[TouchpointSink], web.Application],
    host: str,
    port: int,
    stop: asyncio.Event,
    announce: Callable[[str | None], str],
) -> None:
    """Serve the app on ``host:port`` until ``stop`` is set (or the task is cancelled),
    printing ``announce(<the producer's transactional id>)`` once it listens."""
    sink = KafkaTouchpointSink(settings)
    await sink.start()
    app = make_app(sink)
    add_tracing(app, sink.tracer)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    print(announce(sink.readiness().transactional_id), flush=True)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
        await sink.stop()
