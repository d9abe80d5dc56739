"""Round trips of what scoring writes to topics: examples, model records, score leaders.
Whatever a worker writes, a worker (or the learner) reads back the same."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from engine.scoring.learner import Example
from streams.scoring import decode_example, encode_example
from streams.scoring_leaders import Leader, Leaders

names = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=20)
values = st.one_of(st.floats(allow_nan=False, allow_infinity=False, width=64), names)


@given(
    score=names,
    customer=names,
    features=st.dictionaries(names, values, max_size=12),
    label=st.sampled_from([0, 1]),
    at=st.integers(0, 2**62),
    labelled=st.integers(0, 2**62),
)
def test_an_example_reads_back_as_written(
    score: str,
    customer: str,
    features: dict[str, float | str],
    label: int,
    at: int,
    labelled: int,
) -> None:
    example = Example(score, customer, features, label, at, labelled)
    assert decode_example(encode_example(example)) == example


@given(
    entries=st.lists(
        st.tuples(
            names,
            st.floats(0, 1),
            st.one_of(st.none(), names),
            st.one_of(st.none(), names),
            st.integers(0, 2**40),
        ),
        max_size=30,
    ),
    partition=st.integers(0, 255),
)
def test_score_leaders_read_back_as_written(
    entries: list[tuple[str, float, str | None, str | None, int]], partition: int
) -> None:
    record = Leaders(
        "churn",
        partition,
        datetime(2026, 12, 1, tzinfo=UTC),
        tuple(Leader(c, v, r, m, version, partition) for c, v, r, m, version in entries),
    )
    assert Leaders.from_bytes(record.to_bytes()) == record
