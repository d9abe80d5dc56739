"""The changelog value of a customer's state is its JSON compressed with zstd; values
written before (plain JSON) still load, and a value that is neither says so."""

from __future__ import annotations

import orjson
import pytest

from engine.scoring.learner import Snapshot, Snapshots
from engine.state import CustomerState
from streams.state_codec import CustomerStateCodec

STATE = CustomerState(
    "c1",
    touchpoints=3,
    kind_counts={"email_sent": 2, "chat": 1},
    recent_event_ids=("e1", "e2", "e3"),
    snapshots=Snapshots(
        {
            name: tuple(
                Snapshot(10**15 + n, {"touchpoints": float(n), "event_kind": "chat"}, 0.5)
                for n in range(1, 4)
            )
            for name in ("lead", "win", "churn")
        }
    ),
)


def test_a_state_is_written_compressed_and_read_back() -> None:
    codec = CustomerStateCodec()
    written = codec.dumps(STATE)
    plain = orjson.dumps(STATE.to_dict())
    assert written[:4] == b"\x28\xb5\x2f\xfd"  # a zstd frame
    assert len(written) < len(plain)
    assert codec.loads(written) == STATE


def test_a_state_written_as_plain_json_still_loads() -> None:
    assert CustomerStateCodec().loads(orjson.dumps(STATE.to_dict())) == STATE


def test_a_value_that_is_neither_names_what_was_expected() -> None:
    with pytest.raises(ValueError, match="expected a zstd frame or a JSON object, found b'xyz'"):
        CustomerStateCodec().loads(b"xyz")
