"""The one settings object: read from the environment when built, frozen, validated."""

from __future__ import annotations

import os

import pydantic
import pytest

from streams.settings import Guarantee, Settings


def test_settings_come_from_warroom_environment_variables_when_built(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("WARROOM_PARTITIONS", "8")
    monkeypatch.setenv("WARROOM_PROCESSING_GUARANTEE", "at_least_once")
    monkeypatch.setenv("WARROOM_TOPIC_PREFIX", "staging.")
    settings = Settings()
    assert settings.partitions == 8
    assert settings.processing_guarantee is Guarantee.AT_LEAST_ONCE
    assert settings.topic("touchpoints") == "staging.touchpoints"


def test_defaults_are_exactly_once_on_a_local_broker(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in os.environ if n.startswith("WARROOM_")]:
        monkeypatch.delenv(name)
    settings = Settings()
    assert settings.processing_guarantee is Guarantee.EXACTLY_ONCE
    assert settings.bootstrap_servers == "127.0.0.1:9092"


def test_settings_are_frozen() -> None:
    settings = Settings()
    with pytest.raises(pydantic.ValidationError):
        settings.partitions = 2  # type: ignore[misc]


@pytest.mark.parametrize(
    ("field", "value", "fragment"),
    [
        ("partitions", 0, "greater than or equal to 1"),
        ("app_id", "has spaces", "pattern"),
        ("store", "redis://", "rocksdb://"),
        ("processing_guarantee", "maybe_once", "exactly_once"),
    ],
)
def test_bad_settings_name_the_field(field: str, value: object, fragment: str) -> None:
    with pytest.raises(pydantic.ValidationError) as caught:
        Settings(**{field: value})
    assert field in str(caught.value)
    assert fragment in str(caught.value)
