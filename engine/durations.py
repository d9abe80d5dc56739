"""Durations as people write them in rule bundles: ``90s``, ``15m``, ``4m32s``, ``24h``, ``7d``."""

from __future__ import annotations

import re
from datetime import timedelta

_PART = re.compile(r"(\d+)(ms|s|m|h|d|w)")
_UNITS = {
    "ms": timedelta(milliseconds=1),
    "s": timedelta(seconds=1),
    "m": timedelta(minutes=1),
    "h": timedelta(hours=1),
    "d": timedelta(days=1),
    "w": timedelta(weeks=1),
}


def parse_duration(text: object) -> timedelta:
    """``"4m32s"`` -> 272 s. Raises ValueError naming what was expected."""
    if not isinstance(text, str) or not text:
        raise ValueError(f"expected a duration such as '15m', '24h' or '4m32s', found {text!r}")
    position = 0
    total = timedelta(0)
    for match in _PART.finditer(text):
        if match.start() != position:
            break
        total += int(match.group(1)) * _UNITS[match.group(2)]
        position = match.end()
    if position != len(text.strip()) or position == 0:
        raise ValueError(
            f"expected a duration such as '15m', '24h' or '4m32s' (units ms, s, m, h, d, w), "
            f"found {text!r}"
        )
    return total


def format_duration(value: timedelta) -> str:
    """The shortest form :func:`parse_duration` reads back."""
    micros = value // timedelta(microseconds=1)
    if micros == 0:
        return "0s"
    parts = []
    for unit in ("d", "h", "m", "s", "ms"):
        size = _UNITS[unit] // timedelta(microseconds=1)
        count, micros = divmod(micros, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)
