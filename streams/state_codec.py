"""How customer state is stored in the table's changelog."""

from __future__ import annotations

from typing import Any

import orjson
from faust.serializers.codecs import Codec

from engine import CustomerState


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


class SentCodec(Codec):
    """What an assignee was sent, ((µs, intervention id), ...) <-> JSON list of pairs.

    Values written before ids were kept (a list of times) read as pairs with an empty id.
    """

    def _dumps(self, obj: Any) -> bytes:
        return orjson.dumps([list(entry) for entry in obj])

    def _loads(self, s: bytes) -> Any:
        return tuple(
            (entry, "") if isinstance(entry, int) else (int(entry[0]), str(entry[1]))
            for entry in orjson.loads(s)
        )
