"""Running the chat connector against Kafka."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from aiohttp import web

from .chat import ChatMessage, create_http_app, publish_messages
from .publisher import KafkaTouchpointSink
from .settings import IntakeSettings


async def serve(settings: IntakeSettings, host: str, port: int) -> None:
    """Serve ``POST /v1/messages``, ``/healthz`` and ``/readyz`` until cancelled."""
    sink = KafkaTouchpointSink(settings)
    await sink.start()
    runner = web.AppRunner(create_http_app(sink))
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    print(
        f"chat connector listening on http://{host}:{port}/v1/messages "
        f"(producer {sink.readiness().transactional_id})",
        flush=True,
    )
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
        await sink.stop()


async def publish_file(settings: IntakeSettings, messages: Sequence[ChatMessage]) -> int:
    sink = KafkaTouchpointSink(settings)
    await sink.start()
    try:
        return len(await publish_messages(sink, messages))
    finally:
        await sink.stop()
