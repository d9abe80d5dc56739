"""Settings that reach the Faust app as they should."""

from __future__ import annotations

from pathlib import Path

from streams.app import create_app
from streams.settings import Settings


def test_static_membership_is_off_unless_a_worker_is_named(tmp_path: Path) -> None:
    dynamic = create_app(Settings(data_dir=tmp_path / "a"))
    assert dynamic.app.conf.consumer_group_instance_id is None
    static = create_app(Settings(data_dir=tmp_path / "b", group_instance_id="warroom-worker-2"))
    assert static.app.conf.consumer_group_instance_id == "warroom-worker-2"
