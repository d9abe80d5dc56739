"""Events that Faust's flow control drops once recovery ends are fetched again.

At the end of a recovery Faust seeks the source partitions to their committed
offsets and only then resumes flow control, which empties every stream buffer
to discard what was read before the seek. Records fetched *after* the seek and
still buffered at that moment are emptied with the rest, and their partitions'
read positions are already past them, so nothing reads them again: on a loaded
worker a restart or a rebalance could lose touchpoints
(tests/integration/test_restart.py restarts under CPU load to catch it).

Here, whenever flow control resumes, each partition of the current assignment
with events in a buffer is sent back to the earliest of them, so they are read
again. Records read twice are dropped by the engine as repeated event ids, and
repeated ticks find nothing left to fire.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

import faust
from faust.types import TP

log = logging.getLogger(__name__)


def install_lossless_resume(app: faust.App) -> None:
    """Make ``app.flow_control.resume`` re-read what it empties; call before start."""
    flow: Any = app.flow_control
    resume = flow.resume

    def resume_and_reread() -> None:
        consumer: Any = app.consumer
        dropped = earliest_buffered(
            _buffered_messages(flow), app.consumer_generation_id, consumer.assignment()
        )
        resume()
        for tp, offset in dropped.items():
            log.info("re-reading %s from offset %d: buffered events were dropped", tp, offset)
            consumer._thread.seek(tp, offset)  # what Faust's own seek does, synchronously
            consumer._read_offset[tp] = offset if offset else None

    resume_and_reread.warroom_patch = True  # type: ignore[attr-defined]
    flow.resume = resume_and_reread


def is_lossless_resume_installed(app: faust.App) -> bool:
    flow: Any = app.flow_control
    return bool(getattr(flow.resume, "warroom_patch", False))


def _buffered_messages(flow: Any) -> Iterable[Any]:
    for queue in list(flow._queues):
        for item in list(queue._queue):
            message = getattr(item, "message", None)
            if message is not None:
                yield message


def earliest_buffered(
    messages: Iterable[Any], generation: int, assigned: Iterable[TP]
) -> Mapping[TP, int]:
    """Per assigned partition, the lowest offset among buffered messages of the current
    generation (older ones belong to an earlier assignment and are rightly dropped)."""
    owned = set(assigned)
    earliest: dict[TP, int] = {}
    for message in messages:
        if message.generation_id != generation or message.tp not in owned:
            continue
        offset = message.offset
        if offset < earliest.get(message.tp, offset + 1):
            earliest[message.tp] = offset
    return earliest
