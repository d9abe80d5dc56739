"""Patches of Faust and aiokafka internals: all installed, or the worker does not start."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

import streams.cli
import streams.patches
from streams.app import create_app
from streams.patches import PatchError, check, missing_internals
from streams.settings import Settings


def settings(tmp_path: Path) -> Settings:
    return Settings(app_id="patch-check", data_dir=tmp_path / "w", web_port=16066)


def test_every_patch_is_installed_on_a_new_worker(tmp_path: Path) -> None:
    warroom = create_app(settings(tmp_path))
    assert missing_internals() == []
    check(warroom.app, exactly_once=True)


def test_a_private_name_gone_from_the_library_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    warroom = create_app(settings(tmp_path))
    monkeypatch.delattr(AIOKafkaConsumerThread, "_highwaters")
    with pytest.raises(PatchError) as refused:
        check(warroom.app, exactly_once=True)
    message = str(refused.value)
    assert "AIOKafkaConsumerThread._highwaters (needed by commit_lock)" in message
    assert "tested with: faust-streaming" in message


def test_a_patch_not_installed_is_named(tmp_path: Path) -> None:
    warroom = create_app(settings(tmp_path))
    flow = warroom.app.flow_control
    flow.resume = type(flow).resume.__get__(flow)  # what Faust ships, not ours
    with pytest.raises(PatchError, match="lossless_resume is not installed"):
        check(warroom.app, exactly_once=True)


def test_the_worker_refuses_to_start_when_a_patch_does_not_apply(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("WARROOM_DATA_DIR", str(tmp_path / "w"))
    monkeypatch.setenv("WARROOM_BOOTSTRAP_SERVERS", "127.0.0.1:1")  # never reached
    monkeypatch.setattr(
        streams.patches, "missing_internals", lambda: ["faust.x.Y._z (needed by test)"]
    )
    code = streams.cli._worker(argparse.Namespace(loglevel="WARNING"))
    assert code == 3
    assert "not starting" in capsys.readouterr().err


def test_the_livelock_check_skips_partitions_without_a_position(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from types import SimpleNamespace

    from faust.types import TP

    from streams.patches.transactions import _WarroomConsumerThread

    checked: list[TP] = []
    monkeypatch.setattr(
        AIOKafkaConsumerThread, "verify_event_path", lambda self, now, tp: checked.append(tp)
    )
    positioned = {"t": True, "u": False}

    def state_value(tp: object) -> SimpleNamespace:
        return SimpleNamespace(has_valid_position=positioned[tp.topic])  # type: ignore[attr-defined]

    subscription = SimpleNamespace(assignment=SimpleNamespace(state_value=state_value))
    consumer = SimpleNamespace(
        _fetcher=SimpleNamespace(_subscriptions=SimpleNamespace(subscription=subscription))
    )
    thread = SimpleNamespace(_ensure_consumer=lambda: consumer)
    _WarroomConsumerThread.verify_event_path(thread, 0.0, TP("u", 0))  # type: ignore[arg-type]
    _WarroomConsumerThread.verify_event_path(thread, 0.0, TP("t", 0))  # type: ignore[arg-type]
    assert checked == [TP("t", 0)]
