#!/usr/bin/env python3
"""Quix Streams keeping a per-customer touchpoint counter in its RocksDB state.

    .venv-bench/bin/python bench/cases/quix_counter.py CONFIG.json

Run by bench/throughput.py under .venv-bench (Quix Streams pins an older pydantic than
Warroom's, so it has a venv of its own). It reads the same one-record-per-event
touchpoints topic as the naive and ceiling cases, decodes each record with fastavro
(the touchpoint schema in schemas/avro/), and counts touchpoints per customer in a
stateful ``apply`` (RocksDB, changelog topic), exactly-once, committing every 0.5 s like
Warroom's worker. No Warroom import.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

sys.path.append(str(Path(__file__).resolve().parents[2]))

from quixstreams import Application, State
from quixstreams.models.serializers import Deserializer, SerializationContext

from bench.cases.plain_avro import PlainDecoder
from bench.cases.worker_result import Clock


class TouchpointDeserializer(Deserializer):  # type: ignore[misc]  # untyped in .venv
    def __init__(self) -> None:
        super().__init__()
        self.decode = PlainDecoder()

    def __call__(self, value: bytes, ctx: SerializationContext) -> dict[str, Any]:
        return self.decode(value)


def main(config_path: Path) -> int:
    config = json.loads(config_path.read_text())
    clock = Clock(config)
    clock.writes_per_event = 1
    app = Application(
        broker_address=config["bootstrap"],
        consumer_group=config["app_id"],
        auto_offset_reset="earliest",
        processing_guarantee="exactly-once"
        if config["guarantee"] == "exactly_once"
        else "at-least-once",
        commit_interval=float(config.get("commit_interval", 0.5)),
        state_dir=config["data_dir"],
        loglevel=logging.WARNING,
        auto_create_topics=True,
    )
    topic = app.topic(
        f"{config['topic_prefix']}touchpoints",
        key_deserializer="str",
        value_deserializer=TouchpointDeserializer(),
    )
    touchpoints = app.dataframe(topic)

    def count(value: dict[str, Any], state: State) -> int:
        clock.begin()
        seen: int = state.get("touchpoints", 0) + 1
        state.set("touchpoints", seen)
        if clock.add(1):
            app.stop()
        return seen

    touchpoints = touchpoints.apply(count, stateful=True)
    app.run()
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
