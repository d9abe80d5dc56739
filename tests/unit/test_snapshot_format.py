"""How feature snapshots are kept in a customer's state: one feature vector for every score
that took it at the same touchpoint, values positional and against the previous vector,
today's form still read; thinning to one snapshot per score per interval."""

from __future__ import annotations

from datetime import timedelta

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.bundle import InvalidBundle, load_bundle
from engine.features import BASE_FEATURES, FeatureValue
from engine.scoring.learner import (
    FIXED_FEATURE_NAMES,
    Snapshot,
    Snapshots,
    remember,
)
from engine.state import CustomerState

HOUR = 3_600_000_000
AT = 1_795_914_286_081_397


def features_at(n: int) -> dict[str, FeatureValue]:
    return {
        "touchpoints": float(n),
        "days_since_first_seen": n / 7,
        "days_since_last_event": 0.0,
        "purchases": 0.0,
        "event_kind": "email_sent",
        "count.email_sent": float(n),
        "channel.email": float(n),
        "profile.plan": "pro",
    }


def three_scores(count: int) -> Snapshots:
    kept: Snapshots | None = None
    for n in range(1, count + 1):
        for score in ("lead", "win", "churn"):
            kept = remember(kept, score, Snapshot(AT + n * HOUR, features_at(n), 0.5, 3), 8)
    assert kept is not None
    return kept


def encoded(state: CustomerState) -> bytes:
    return orjson.dumps(state.to_dict())


def test_three_scores_that_took_the_same_features_store_them_once() -> None:
    state = CustomerState("c1", snapshots=three_scores(1))
    text = encoded(state)
    assert text.count(b"count.email_sent") == 1
    assert text.count(b"1.0") <= 3  # touchpoints, count, channel: each once
    assert CustomerState.from_dict(orjson.loads(text)) == state


def test_an_unchanged_value_is_not_written_again_in_the_next_snapshot() -> None:
    one = len(encoded(CustomerState("c1", snapshots=three_scores(1))))
    eight = len(encoded(CustomerState("c1", snapshots=three_scores(8))))
    # each later vector carries its time, 4 changed values and the three scores' entries;
    # the old form wrote all 8 features with their names for every score again
    assert eight - one < 7 * 130


def test_a_state_written_in_the_earlier_form_loads() -> None:
    written = {
        "customer_id": "c1",
        "touchpoints": 2,
        "snapshots": {
            "lead": [
                [AT, {"touchpoints": 1.0, "event_kind": "email_sent"}, 0.5, 0],
                [AT + HOUR, {"touchpoints": 2.0, "event_kind": "chat"}, 0.25, 4],
            ],
            "churn": [[AT + HOUR, {"touchpoints": 2.0, "event_kind": "chat"}, 0.75, 4]],
        },
    }
    state = CustomerState.from_dict(orjson.loads(orjson.dumps(written)))
    assert state.snapshots == Snapshots(
        {
            "lead": (
                Snapshot(AT, {"touchpoints": 1.0, "event_kind": "email_sent"}, 0.5, 0),
                Snapshot(AT + HOUR, {"touchpoints": 2.0, "event_kind": "chat"}, 0.25, 4),
            ),
            "churn": (Snapshot(AT + HOUR, {"touchpoints": 2.0, "event_kind": "chat"}, 0.75, 4),),
        }
    )
    again = CustomerState.from_dict(orjson.loads(encoded(state)))
    assert again == state
    assert "snapshots" not in orjson.loads(encoded(state))  # written in the new form


def test_the_fixed_names_keep_their_places() -> None:
    # a name's place is written in states: it may be appended to, never moved
    assert FIXED_FEATURE_NAMES[:22] == (
        "touchpoints", "touchpoints_per_week", "days_since_first_seen",
        "days_since_last_event", "days_since_last_inbound", "days_since_last_outbound",
        "amount_total", "amount_mean", "purchases", "reply_latency_hours", "replies",
        "unanswered_outbound", "meetings", "customer_talk_share", "video_seconds", "videos",
        "sandbox_errors", "support_sentiment", "stage", "days_in_stage", "event_kind",
        "event_channel",
    )  # fmt: skip
    assert set(BASE_FEATURES) <= set(FIXED_FEATURE_NAMES)


def test_a_broken_snapshot_table_names_what_was_expected() -> None:
    data = CustomerState("c1", snapshots=three_scores(2)).to_dict()
    data["feature_snapshots"]["x"][1][1] = 7  # a key list that does not exist
    with pytest.raises(ValueError, match="feature_snapshots"):
        CustomerState.from_dict(data)


_NAMES = st.sampled_from(
    [*BASE_FEATURES[:6], "event_kind", "stage", "count.email_sent", "channel.chat", "profile.x"]
)
_VALUES = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([0.0, 1.0, 2.0, 0.5]),
    st.text(max_size=5),
)
_FEATURES = st.dictionaries(_NAMES, _VALUES, max_size=8)
_SNAPSHOT = st.builds(
    Snapshot,
    st.integers(min_value=0, max_value=2**62),
    _FEATURES,
    st.floats(min_value=0, max_value=1),
    st.integers(min_value=0, max_value=10**9),
)


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["lead", "win", "churn", "v", "x"]),
        st.lists(st.one_of(_SNAPSHOT, st.just(None)), min_size=1, max_size=5),
        max_size=4,
    ),
    st.data(),
)
def test_snapshots_survive_the_round_trip_with_their_feature_order(
    drawn: dict[str, list[Snapshot | None]], data: st.DataObject
) -> None:
    # None: reuse a snapshot already drawn for another score (a shared vector)
    pool: list[Snapshot] = []
    by_score: dict[str, tuple[Snapshot, ...]] = {}
    for name, items in drawn.items():
        kept: list[Snapshot] = []
        for item in items:
            if item is None:
                if not pool:
                    continue
                item = pool[data.draw(st.integers(0, len(pool) - 1))]
            pool.append(item)
            kept.append(item)
        by_score[name] = tuple(kept)
    state = CustomerState("c1", snapshots=Snapshots(by_score))
    back = CustomerState.from_dict(orjson.loads(encoded(state)))
    assert back == state
    assert back.snapshots is not None
    for name, kept_snaps in by_score.items():
        for mine, theirs in zip(kept_snaps, back.snapshots.by_score[name], strict=True):
            assert list(theirs.features.items()) == list(mine.features.items())
            assert [type(v) for v in theirs.features.values()] == [
                type(v) for v in mine.features.values()
            ]


def test_one_snapshot_per_score_per_interval_the_newest_kept() -> None:
    kept: Snapshots | None = None
    for minutes in (0, 10, 50, 70, 200):  # intervals from the epoch: [0, 60), [60, 120) ...
        at = AT - AT % HOUR + minutes * 60_000_000
        kept = remember(kept, "lead", Snapshot(at, {"m": float(minutes)}, 0.5), 8, every=HOUR)
    assert kept is not None
    assert [s.features["m"] for s in kept.by_score["lead"]] == [50.0, 70.0, 200.0]


def test_without_an_interval_every_moved_snapshot_is_kept() -> None:
    kept: Snapshots | None = None
    for minutes in (0, 10, 50):
        at = AT + minutes * 60_000_000
        kept = remember(kept, "lead", Snapshot(at, {"m": float(minutes)}, 0.5), 8)
    assert kept is not None and len(kept.by_score["lead"]) == 3


SCORING = """\
bundle: b
version: 1
scoring:
  snapshot_every: {every}
  scores:
    lead:
      labels: {{quote_sent: 1, deal_lost: 0}}
"""


def test_a_bundle_sets_the_snapshot_interval() -> None:
    bundle = load_bundle(SCORING.format(every="1h"), "b.yaml")
    assert bundle.scoring is not None
    assert bundle.scoring.snapshot_every == timedelta(hours=1) // timedelta(microseconds=1)
    text = SCORING.format(every="1h").replace("  snapshot_every: 1h\n", "")
    plain = load_bundle(text, "b.yaml")
    assert plain.scoring is not None and plain.scoring.snapshot_every == 0


def test_a_snapshot_interval_that_is_not_a_duration_is_refused_with_its_line() -> None:
    with pytest.raises(InvalidBundle, match=r"b\.yaml:4: scoring\.snapshot_every"):
        load_bundle(SCORING.format(every="soon"), "b.yaml")


def test_a_value_json_cannot_hold_loads_as_the_earlier_form_loaded_it() -> None:
    # orjson writes inf and nan as null: the state must still load (the earlier form
    # read null as None too), not stop the worker at recovery
    snap = Snapshot(AT, {"amount_total": float("inf"), "touchpoints": 1.0}, 0.5)
    state = CustomerState("c1", snapshots=Snapshots({"lead": (snap,)}))
    earlier = {"customer_id": "c1", "snapshots": Snapshots({"lead": (snap,)}).to_json()}
    expected = CustomerState.from_dict(orjson.loads(orjson.dumps(earlier)))
    assert CustomerState.from_dict(orjson.loads(encoded(state))) == expected
