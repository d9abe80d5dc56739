"""The result file every benchmark worker writes, whatever it runs (no Warroom import)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any


class Clock:
    """Times a worker from its first input to the N-th and writes ``result.json``."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.expected = int(config["expected"])
        self.result_path = Path(config["result_path"])
        self.started_path = Path(config["started_path"])
        self.case = str(config["case"])
        self.count = 0
        self.first: float | None = None
        self.first_cpu = 0.0
        self.done = False
        self.writes_per_event = 0
        """State writes the case makes per input (for the table)."""

    def begin(self) -> None:
        if self.first is None:
            self.first = time.perf_counter()
            self.first_cpu = time.process_time()
            self.started_path.touch()

    def add(self, events: int) -> bool:
        """Count ``events``; True once N were counted (the result is then written)."""
        self.count += events
        if not self.done and self.count >= self.expected:
            self.done = True
            self.finish()
        return self.done

    def finish(self, **extra: Any) -> None:
        ended = time.perf_counter()
        result: dict[str, Any] = {
            "case": self.case,
            "timed_until": "the N-th input decoded and counted",
            "events": self.count,
            "seconds": ended - (self.first or ended),
            "cpu_seconds": time.process_time() - self.first_cpu,
            "processed": self.count,
            "duplicates": 0,
            "dead_letters": 0,
            "interventions": 0,
            "state_writes": self.count * self.writes_per_event,
            "batches": 0,
            "first_batch_events": 0,
            "max_batch_events": 0,
            **extra,
        }
        partial = self.result_path.with_suffix(".partial")
        partial.write_text(json.dumps(result))
        partial.replace(self.result_path)
