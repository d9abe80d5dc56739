"""Running the chat connector against Kafka."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from aiohttp import web

from streams.settings import Settings

from .chat import ChatMessage, create_http_app, publish_messages
from .publisher import KafkaTouchpointSink


def _sink(settings: Settings, client_id: str) -> KafkaTouchpointSink:
    return KafkaTouchpointSink(
        settings.bootstrap_servers, settings.topic("touchpoints"), settings.partitions, client_id
    )


async def serve(settings: Settings, host: str, port: int) -> None:
    sink = _sink(settings, f"{settings.app_id}-chat-http")
    await sink.start()
    runner = web.AppRunner(create_http_app(sink))
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    print(f"chat connector listening on http://{host}:{port}/v1/messages", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
        await sink.stop()


async def publish_file(settings: Settings, messages: Sequence[ChatMessage]) -> int:
    sink = _sink(settings, f"{settings.app_id}-chat-file")
    await sink.start()
    try:
        return len(await publish_messages(sink, messages))
    finally:
        await sink.stop()
