"""The consumer lag gauge: high watermark minus the next offset to process."""

from __future__ import annotations

from types import SimpleNamespace
from typing import NamedTuple

from prometheus_client import generate_latest

from streams.metrics import WorkerMetrics
from streams.parts import Warroom


class TP(NamedTuple):
    topic: str
    partition: int


class FakeConsumer:
    def __init__(self, ends: dict[tuple[str, int], int]) -> None:
        self.ends = ends

    def assignment(self) -> set[TP]:
        return {TP(t, p) for t, p in self.ends}

    def highwater(self, tp: TP) -> int:
        return self.ends[(tp.topic, tp.partition)]


def lag_lines(metrics: WorkerMetrics) -> list[str]:
    text = generate_latest(metrics.registry).decode()
    return sorted(line for line in text.splitlines() if line.startswith("warroom_consumer_lag{"))


def test_lag_is_what_is_left_to_process_and_leaves_with_the_partition() -> None:
    metrics = WorkerMetrics.create()
    consumer = FakeConsumer({("touchpoints", 0): 120, ("touchpoints", 1): 40})
    worker = SimpleNamespace(
        app=SimpleNamespace(consumer=consumer),
        metrics=metrics,
        progress={("touchpoints", 0): 100, ("touchpoints", 1): 40},
    )
    Warroom.update_lag(worker)  # type: ignore[arg-type]
    assert lag_lines(metrics) == [
        'warroom_consumer_lag{partition="0",topic="touchpoints"} 20.0',
        'warroom_consumer_lag{partition="1",topic="touchpoints"} 0.0',
    ]
    consumer.ends = {("touchpoints", 1): 45}  # partition 0 went to another worker
    Warroom.update_lag(worker)  # type: ignore[arg-type]
    assert lag_lines(metrics) == ['warroom_consumer_lag{partition="1",topic="touchpoints"} 5.0']
    assert worker.progress == {("touchpoints", 1): 40}
