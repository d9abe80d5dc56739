"""Running the chat connector against Kafka."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from .chat import ChatMessage, create_http_app, publish_messages
from .publisher import KafkaTouchpointSink
from .running import serve_intake
from .settings import IntakeSettings


async def serve(settings: IntakeSettings, host: str, port: int) -> None:
    """Serve ``POST /v1/messages``, ``/healthz`` and ``/readyz`` until cancelled."""
    await serve_intake(
        settings,
        create_http_app,
        host,
        port,
        asyncio.Event(),  # never set: until cancelled
        lambda producer: (
            f"chat connector listening on http://{host}:{port}/v1/messages (producer {producer})"
        ),
    )


async def publish_file(settings: IntakeSettings, messages: Sequence[ChatMessage]) -> int:
    sink = KafkaTouchpointSink(settings)
    await sink.start()
    try:
        return len(await publish_messages(sink, messages))
    finally:
        await sink.stop()
