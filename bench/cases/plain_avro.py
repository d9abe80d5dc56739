"""Avro single-object decoding with fastavro alone: no Warroom import, no validation.

Used by the ceiling case and by the Quix Streams case (which runs under .venv-bench,
where Warroom is not installed), so both decode exactly what Warroom's worker decodes,
the touchpoint schema shipped in schemas/avro/, at fastavro's cost only.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

from fastavro import parse_schema, schemaless_reader

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas" / "avro"
MARKER = b"\xc3\x01"
HEADER_BYTES = 10
"""The single-object header: the C3 01 marker and the 8-byte CRC-64-AVRO fingerprint."""


class PlainDecoder:
    """Decode records written with one packaged schema (``stem``.avsc) to dicts."""

    def __init__(self, stem: str = "touchpoint_event") -> None:
        raw = json.loads((SCHEMAS / f"{stem}.avsc").read_text(encoding="utf-8"))
        self.schema = parse_schema(raw)
        self.stem = stem

    def __call__(self, data: bytes) -> dict[str, Any]:
        if data[:2] != MARKER:
            raise ValueError(
                f"expected an Avro single-object record of {self.stem} (C3 01 marker), "
                f"found {data[:2].hex()!r}"
            )
        record = schemaless_reader(io.BytesIO(data[HEADER_BYTES:]), self.schema, None)
        if not isinstance(record, dict):
            raise ValueError(f"expected a {self.stem} record, found {type(record).__name__}")
        return record
