"""How customer state is stored in the table's changelog."""

from __future__ import annotations

from typing import Any

import orjson
import zstandard
from faust.serializers.codecs import Codec

from engine import CustomerState

STATE_ZSTD_LEVEL = 1
"""zstd level of state values: the fastest; a state is written once per customer per
commit (bench/scoring_state.py measures it against the JSON encode)."""
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


class CustomerStateCodec(Codec):
    """CustomerState <-> its JSON (orjson) compressed as one zstd frame.

    Values written before states were compressed are plain JSON objects (they start with
    ``{``) and still load; a zstd frame starts with its magic number, so the first bytes
    tell the two apart. One codec is used by one thread at a time (its zstd contexts are
    reused between values)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._compressor = zstandard.ZstdCompressor(level=STATE_ZSTD_LEVEL)
        self._decompressor = zstandard.ZstdDecompressor()

    def _dumps(self, obj: Any) -> bytes:
        if not isinstance(obj, CustomerState):
            raise TypeError(f"expected CustomerState, found {type(obj).__name__}")
        return self._compressor.compress(orjson.dumps(obj.to_dict()))

    def _loads(self, s: bytes) -> Any:
        if s[:4] == _ZSTD_MAGIC:
            s = self._decompressor.decompress(s)
        elif s[:1] != b"{":
            raise ValueError(
                f"customer state: expected a zstd frame or a JSON object, found {s[:16]!r}"
            )
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
