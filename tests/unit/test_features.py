"""Features for scoring, from customer state and the feature memory."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.features import (
    SENTIMENTS_KEPT,
    FeatureMemory,
    features,
    observe,
)
from engine.reducer import apply
from engine.state import CustomerState
from schemas.models import TouchpointEvent

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
NOW = T0 + timedelta(days=400)


def touchpoint(
    n: int, at: datetime, kind: str = "message_received", **fields: Any
) -> TouchpointEvent:
    data: dict[str, Any] = {
        "event_id": f"e{n}",
        "customer_id": "c1",
        "occurred_at": at,
        "received_at": at,
        "channel": "chat",
        "kind": kind,
        "direction": "inbound",
        "source": "test/1",
    }
    data.update(fields)
    return TouchpointEvent.model_validate(data)


def fold(
    events: list[TouchpointEvent], profile: tuple[str, ...] = ()
) -> tuple[CustomerState, FeatureMemory]:
    state: CustomerState | None = None
    memory: FeatureMemory | None = None
    for event in events:
        new_state, _ = apply(state, event, NOW, rules=())
        if new_state is not state:
            memory = observe(memory, event, profile)
        state = new_state
    assert state is not None and memory is not None
    return state, memory


def test_recency_and_frequency_come_from_the_state() -> None:
    state, memory = fold(
        [
            touchpoint(1, T0, direction="outbound", kind="message_sent"),
            touchpoint(2, T0 + timedelta(days=2)),
            touchpoint(3, T0 + timedelta(days=3), channel="email", kind="email_received"),
        ]
    )
    got = features(state, memory, T0 + timedelta(days=10))
    assert got["days_since_first_seen"] == pytest.approx(10.0)
    assert got["days_since_last_event"] == pytest.approx(7.0)
    assert got["days_since_last_inbound"] == pytest.approx(7.0)
    assert got["days_since_last_outbound"] == pytest.approx(10.0)
    assert got["touchpoints"] == 3.0
    assert got["count.message_received"] == 1.0
    assert got["count.email_received"] == 1.0
    assert got["channel.chat"] == 2.0
    assert got["channel.email"] == 1.0
    assert got["touchpoints_per_week"] == pytest.approx(3 / (10 / 7))


def test_never_is_left_out_not_zero() -> None:
    state, memory = fold([touchpoint(1, T0, direction="outbound", kind="message_sent")])
    got = features(state, memory, T0 + timedelta(days=1))
    for absent in (
        "days_since_last_inbound",
        "reply_latency_hours",
        "amount_mean",
        "customer_talk_share",
        "support_sentiment",
        "stage",
        "days_in_stage",
    ):
        assert absent not in got, absent


def test_reply_latency_and_unanswered_streak() -> None:
    state, memory = fold(
        [
            touchpoint(1, T0, direction="outbound", kind="message_sent"),
            touchpoint(2, T0 + timedelta(hours=1), direction="outbound", kind="message_sent"),
            touchpoint(3, T0 + timedelta(hours=4)),  # replies 4 h after the first
            touchpoint(4, T0 + timedelta(hours=5), direction="outbound", kind="message_sent"),
            touchpoint(5, T0 + timedelta(hours=7)),  # 2 h
            touchpoint(6, T0 + timedelta(hours=8), direction="outbound", kind="message_sent"),
            touchpoint(7, T0 + timedelta(hours=9), direction="outbound", kind="message_sent"),
        ]
    )
    got = features(state, memory, T0 + timedelta(hours=10))
    assert got["reply_latency_hours"] == pytest.approx(3.0)
    assert got["replies"] == 2.0
    assert got["unanswered_outbound"] == 2.0


def test_monetary_meeting_usage_sentiment_and_stage() -> None:
    state, memory = fold(
        [
            touchpoint(1, T0, channel="pos", kind="purchase", attributes={"amount": 30.5}),
            touchpoint(2, T0, channel="pos", kind="purchase", attributes={"amount": 10}),
            touchpoint(3, T0, channel="pos", kind="purchase", attributes={"amount": "n/a"}),
            touchpoint(
                4,
                T0,
                channel="meeting",
                kind="meeting_held",
                attributes={"customer_talk_share": 0.25},
            ),
            touchpoint(
                5,
                T0,
                channel="meeting",
                kind="meeting_held",
                attributes={"customer_talk_share": 0.75},
            ),
            touchpoint(
                6, T0, channel="product", kind="video_watched", attributes={"watched_seconds": 272}
            ),
            touchpoint(7, T0, channel="product", kind="sandbox_error", attributes={"code": "E1"}),
            touchpoint(
                8,
                T0,
                channel="crm",
                kind="stage_changed",
                direction="none",
                attributes={"stage": "proposal"},
            ),
        ]
        + [
            touchpoint(
                10 + i,
                T0 + timedelta(minutes=i),
                channel="support",
                kind="support_chat",
                attributes={"sentiment": float(i)},
            )
            for i in range(SENTIMENTS_KEPT + 2)
        ]
    )
    got = features(state, memory, T0 + timedelta(days=3))
    assert got["amount_total"] == pytest.approx(40.5)
    assert got["purchases"] == 2.0
    assert got["amount_mean"] == pytest.approx(20.25)
    assert got["customer_talk_share"] == pytest.approx(0.5)
    assert got["meetings"] == 2.0
    assert got["video_seconds"] == 272.0
    assert got["sandbox_errors"] == 1.0
    kept = range(2, SENTIMENTS_KEPT + 2)  # the newest SENTIMENTS_KEPT
    assert got["support_sentiment"] == pytest.approx(sum(kept) / SENTIMENTS_KEPT)
    assert got["stage"] == "proposal"
    assert got["days_in_stage"] == pytest.approx(3.0)


def test_days_in_stage_restarts_only_when_the_stage_changes() -> None:
    def stage(n: int, days: int, name: str) -> TouchpointEvent:
        return touchpoint(
            n,
            T0 + timedelta(days=days),
            channel="crm",
            kind="stage_changed",
            direction="none",
            attributes={"stage": name},
        )

    state, memory = fold([stage(1, 0, "qualify"), stage(2, 5, "proposal"), stage(3, 8, "proposal")])
    assert features(state, memory, T0 + timedelta(days=10))["days_in_stage"] == pytest.approx(5.0)


def test_profile_keeps_the_latest_value_by_event_time_of_declared_attributes_only() -> None:
    state, memory = fold(
        [
            touchpoint(1, T0 + timedelta(days=2), attributes={"plan": "gold", "seats": 12}),
            touchpoint(2, T0, attributes={"plan": "free"}),  # late, older: ignored
            touchpoint(3, T0 + timedelta(days=3), attributes={"region": "north", "seats": True}),
        ],
        profile=("plan", "seats"),
    )
    got = features(state, memory, T0 + timedelta(days=4))
    assert got["profile.plan"] == "gold"
    assert got["profile.seats"] == 1.0
    assert "profile.region" not in got


def test_the_current_touchpoint_adds_its_kind_and_channel() -> None:
    event = touchpoint(1, T0, channel="email", kind="email_received")
    state, memory = fold([event])
    got = features(state, memory, T0, event)
    assert got["event_kind"] == "email_received"
    assert got["event_channel"] == "email"
    assert "event_kind" not in features(state, memory, T0)


def test_features_are_pure_and_the_memory_round_trips() -> None:
    state, memory = fold(
        [
            touchpoint(1, T0, direction="outbound", kind="message_sent"),
            touchpoint(2, T0 + timedelta(hours=3), attributes={"plan": "gold", "amount": 5}),
            touchpoint(
                3, T0, channel="support", kind="support_chat", attributes={"sentiment": -0.4}
            ),
        ],
        profile=("plan",),
    )
    at = T0 + timedelta(days=1)
    first = features(state, memory, at)
    assert features(state, memory, at) == first
    again = FeatureMemory.from_json(memory.to_json())
    assert again == memory
    assert features(state, again, at) == first


def test_a_memory_of_an_unknown_shape_is_refused_naming_the_field() -> None:
    with pytest.raises(ValueError, match="found \\['colour'\\]"):
        FeatureMemory.from_json({"colour": 1})


def test_no_memory_still_gives_state_features() -> None:
    state, _ = fold([touchpoint(1, T0)])
    got = features(state, None, T0 + timedelta(days=1))
    assert got["days_since_last_event"] == pytest.approx(1.0)
    assert got["unanswered_outbound"] == 0.0


EVENT_SHAPES = st.tuples(
    st.integers(0, 600),  # minutes after the previous touchpoint
    st.sampled_from(["inbound", "outbound", "none"]),
    st.sampled_from(["chat", "email", "pos", "support"]),
    st.one_of(st.none(), st.floats(-1e4, 1e4, allow_nan=False)),  # amount
    st.one_of(st.none(), st.floats(-1, 1, allow_nan=False)),  # sentiment
)


@settings(max_examples=60, deadline=None)
@given(st.lists(EVENT_SHAPES, min_size=1, max_size=40))
def test_folded_features_equal_a_brute_force_count(
    shapes: list[tuple[int, str, str, float | None, float | None]],
) -> None:
    events: list[TouchpointEvent] = []
    at = T0
    for n, (minutes, direction, channel, amount, sentiment) in enumerate(shapes):
        at += timedelta(minutes=minutes)
        attributes: dict[str, Any] = {}
        if amount is not None:
            attributes["amount"] = amount
        if sentiment is not None:
            attributes["sentiment"] = sentiment
        events.append(
            touchpoint(n, at, "note", direction=direction, channel=channel, attributes=attributes)
        )
    state, memory = fold(events)
    got = features(state, memory, at)

    amounts = [e.attributes["amount"] for e in events if "amount" in e.attributes]
    assert got["purchases"] == len(amounts)
    assert got["amount_total"] == pytest.approx(sum(amounts))  # type: ignore[arg-type]
    last_inbound = max(
        (i for i, e in enumerate(events) if e.direction.value == "inbound"), default=-1
    )
    assert got["unanswered_outbound"] == sum(
        1 for e in events[last_inbound + 1 :] if e.direction.value == "outbound"
    )
    latencies: list[float] = []
    waiting: datetime | None = None
    for e in events:
        if e.direction.value == "outbound" and waiting is None:
            waiting = e.occurred_at
        elif e.direction.value == "inbound":
            if waiting is not None:
                latencies.append((e.occurred_at - waiting) / timedelta(hours=1))
            waiting = None
    assert got["replies"] == len(latencies)
    if latencies:
        assert got["reply_latency_hours"] == pytest.approx(sum(latencies) / len(latencies))
    else:
        assert "reply_latency_hours" not in got
    for channel in ("chat", "email", "pos", "support"):
        count = sum(1 for e in events if e.channel.value == channel)
        assert got.get(f"channel.{channel}", 0.0) == count
    support = [
        e.attributes["sentiment"]
        for e in events
        if e.channel.value == "support" and "sentiment" in e.attributes
    ][-SENTIMENTS_KEPT:]
    if support:
        assert got["support_sentiment"] == pytest.approx(sum(support) / len(support))  # type: ignore[arg-type]
    else:
        assert "support_sentiment" not in got
