"""Timer scheduling waits for complete states."""

from __future__ import annotations

from pathlib import Path

from streams.app import create_app
from streams.settings import Settings


def settings(tmp_path: Path) -> Settings:
    return Settings(app_id="timers", data_dir=tmp_path / "w", web_port=16067)


def test_the_timer_schedule_waits_until_rebalancing_and_recovery_are_over(
    tmp_path: Path,
) -> None:
    from streams.timers import schedule_basis

    warroom = create_app(settings(tmp_path))
    app = warroom.app
    app.in_recovery = True
    assert warroom.generation() is None
    assert schedule_basis(warroom.generation(), frozenset({0}), ()) is None
    app.in_recovery = False
    settled = warroom.generation()
    assert settled is not None
    first = schedule_basis(settled, frozenset({0}), ())
    app.rebalancing_count += 1  # a rebalance that gave the same partitions back
    assert schedule_basis(warroom.generation(), frozenset({0}), ()) != first
