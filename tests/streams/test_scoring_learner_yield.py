"""The learner shares the worker's event loop: however slow its examples are (a forest
challenger takes milliseconds each), it never holds the loop for 50 ms. Measured on a
clock the test drives (each example costs 20 ms of it), not on the wall clock."""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import streams.scoring_learner as scoring_learner
from engine.bundle import load_bundle
from engine.rulebook import RuleBook
from engine.scoring.learner import Example
from streams.metrics import WorkerMetrics
from streams.scoring import encode_example
from streams.settings import Settings

BUNDLE = """\
bundle: scoring
version: 1
scoring:
  scores:
    churn:
      features: [touchpoints]
      labels: {churned: 1, renewed: 0}
"""
EXAMPLE_COST = 0.020
LOOP_BAR = 0.050


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Message:
    offset: int
    key: bytes
    value: bytes


class Consumer:
    """What the learner asks of its consumer: two batches, then nothing."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        examples = [
            Example("churn", f"c{i}", {"touchpoints": float(i)}, i % 2, i, i) for i in range(64)
        ]
        records = [Message(i, b"churn", encode_example(e)) for i, e in enumerate(examples)]
        self.batches = [records[:40], records[40:]]
        self.drained = False

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def assign(self, partitions: Any) -> None: ...

    def seek(self, partition: Any, offset: int) -> None: ...

    async def getmany(self, partition: Any, **kwargs: Any) -> dict[Any, list[Message]]:
        await asyncio.sleep(0)
        if not self.batches:
            self.drained = True
            return {}
        return {partition: self.batches.pop(0)}


class Producer:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes]] = []

    async def send(self, topic: str, value: bytes, key: bytes) -> None:
        self.sent.append((topic, key))

    async def flush(self) -> None: ...


async def test_the_learner_never_holds_the_event_loop_for_50_ms(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    clock = Clock()
    consumers: list[Consumer] = []

    def consumer(*args: Any, **kwargs: Any) -> Consumer:
        consumers.append(Consumer())
        return consumers[-1]

    async def no_models(settings: Settings) -> dict[str, Any]:
        return {}

    fold = scoring_learner.Learner.fold

    def slow_fold(self: scoring_learner.Learner, *args: Any) -> bool:
        clock.now += EXAMPLE_COST
        return fold(self, *args)

    monkeypatch.setattr(scoring_learner, "AIOKafkaConsumer", consumer)
    monkeypatch.setattr(scoring_learner, "read_models", no_models)
    monkeypatch.setattr(scoring_learner.Learner, "fold", slow_fold)
    monkeypatch.setattr(scoring_learner, "clock", clock, raising=False)

    turns: list[float] = []
    done = False

    async def watch() -> None:
        while not done:
            turns.append(clock.now)
            await asyncio.sleep(0)

    watcher = asyncio.create_task(watch())
    await asyncio.sleep(0)
    producer = Producer()
    await scoring_learner._learn_while_owner(
        Settings(data_dir=tmp_path / "w"),
        RuleBook(load_bundle(BUNDLE, "b.yaml")),
        lambda: not consumers or not consumers[-1].drained,
        WorkerMetrics.create(),
        producer,  # type: ignore[arg-type]
    )
    done = True
    await watcher

    assert clock.now == pytest.approx(64 * EXAMPLE_COST)  # every example was learnt
    assert producer.sent  # and the model published
    longest = max(b - a for a, b in itertools.pairwise(turns))
    assert longest < LOOP_BAR, f"expected the loop back within 50 ms, found {longest * 1000:.0f} ms"
