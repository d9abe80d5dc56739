"""How customer state is stored in the table's changelog."""

from __future__ import annotations

from typing import Any

import orjson
from faust.serializers.codecs import Codec

from engine.state import CustomerState


class CustomerStateCodec(Codec):
    """CustomerState <-> compact JSON bytes (orjson)."""

    def _dumps(self, obj: Any) -> bytes:
        if not isinstance(obj, CustomerState):
            raise TypeError(f"expected CustomerState, found {type(obj).__name__}")
        return orjson.dumps(obj.to_dict())

    def _loads(self, s: bytes) -> Any:
        return CustomerState.from_dict(orjson.loads(s))


class Utf8Codec(Codec):
    """str <-> UTF-8 bytes, for customer ids as table keys."""

    def _dumps(self, obj: Any) -> bytes:
        if not isinstance(obj, str):
            raise TypeError(f"expected a str key, found {type(obj).__name__}")
        return obj.encode()

    def _loads(self, s: bytes) -> Any:
        return s.decode()


class TimesCodec(Codec):
    """tuple of µs timestamps <-> JSON list, for what an assignee was sent."""

    def _dumps(self, obj: Any) -> bytes:
        return orjson.dumps(list(obj))

    def _loads(self, s: bytes) -> Any:
        return tuple(orjson.loads(s))
