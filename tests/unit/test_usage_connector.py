"""The product-usage connector and offline sentiment, on a real JSON-lines sample."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path

import orjson
import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from connectors.publisher import MemoryTouchpointSink
from connectors.rejects import MemoryDeadLetterSink
from connectors.sentiment import LexiconSentiment, Sentiment
from connectors.usage import create_http_app, follower, read_files
from schemas.models import Channel, Direction, TouchpointEvent

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "tests" / "data" / "connectors" / "usage"
RECEIVED = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def sentiment() -> LexiconSentiment:
    scorer = LexiconSentiment()
    scorer.warm_up()
    return scorer


def clock() -> datetime:
    return RECEIVED


def published(sink: MemoryTouchpointSink) -> dict[str, TouchpointEvent]:
    return {e.event_id: e for batch in sink.published for e in batch}


async def test_the_sample_file_becomes_touchpoints_and_dead_letters(
    sentiment: LexiconSentiment,
) -> None:
    sink, letters = MemoryTouchpointSink(), MemoryDeadLetterSink()
    counts = await read_files(
        [DATA / "trial-events.jsonl"], sink, letters, sentiment, clock, keep_ids=True
    )
    events = published(sink)
    assert list(events) == [
        "usage:vw-9001",
        "usage:sb-9002",
        "usage:sc-9003",
        "usage:sc-9004",
        "usage:sc-9005",
        "usage:sc-9006",
        "usage:sc-9007",
        "usage:vw-9008",
    ]
    video = events["usage:vw-9001"]
    assert (video.kind, video.channel, video.direction) == (
        "video_watched",
        Channel.PRODUCT,
        Direction.NONE,
    )
    assert video.attributes == {
        "plan": "trial",
        "video": "api-troubleshooting",
        "watched_seconds": 301.5,
        "video_seconds": 420,
        "watched_share": 0.7179,
    }
    error = events["usage:sb-9002"]
    assert error.kind == "sandbox_error"
    assert error.attributes == {
        "plan": "trial",
        "code": "E_AUTH_401",
        "endpoint": "/v1/orders",
        "status": 401,
    }
    assert events["usage:vw-9008"].attributes == {"video": "onboarding", "watched_seconds": 95}
    agent = events["usage:sc-9004"]
    assert (agent.channel, agent.direction, agent.rep_id) == (
        Channel.SUPPORT,
        Direction.OUTBOUND,
        "rep-ana",
    )
    assert events["usage:sc-9003"].direction is Direction.INBOUND
    assert (counts.published, counts.rejected) == (8, 4)
    assert [(d.source_topic, d.offset) for d in letters.letters] == [
        ("file:trial-events.jsonl", 9),
        ("file:trial-events.jsonl", 10),
        ("file:trial-events.jsonl", 11),
        ("file:trial-events.jsonl", 12),
    ]
    details = [d.detail for d in letters.letters]
    assert "line 9: watched_seconds" in details[0] and "'a while'" in details[0]
    assert "type" in details[1] and "page_viewed" in details[1]
    assert "line 11: code: Field required" in details[2]
    assert "occurred_at" in details[2]
    assert "expected a JSON object" in details[3]


async def test_sentiment_attributes_in_both_languages(sentiment: LexiconSentiment) -> None:
    sink = MemoryTouchpointSink()
    await read_files([DATA / "trial-events.jsonl"], sink, MemoryDeadLetterSink(), sentiment)
    events = published(sink)

    def scored(event_id: str) -> tuple[float, str]:
        attributes = events[event_id].attributes
        value, language = attributes["sentiment"], attributes["sentiment_language"]
        assert isinstance(value, float) and isinstance(language, str)
        assert -1.0 <= value <= 1.0
        return value, language

    assert scored("usage:sc-9003")[0] < -0.5 and scored("usage:sc-9003")[1] == "en"
    assert scored("usage:sc-9004")[0] > 0.5
    assert scored("usage:sc-9005")[0] < -0.5 and scored("usage:sc-9005")[1] == "zh"
    assert scored("usage:sc-9006")[0] > 0.3 and scored("usage:sc-9006")[1] == "zh"
    assert scored("usage:sc-9007")[0] < 0 and scored("usage:sc-9007")[1] == "mixed"
    assert events["usage:sc-9003"].text is not None  # the message is the touchpoint's text
    assert "sentiment" not in events["usage:vw-9001"].attributes


def test_sentiment_of_no_words_is_neutral(sentiment: LexiconSentiment) -> None:
    assert sentiment.score("") == Sentiment(0.0, "none")
    assert sentiment.score("12345 !!! ???") == Sentiment(0.0, "none")


def test_sentiment_data_ships_inside_the_packages_and_needs_no_network(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert resources.files("vaderSentiment").joinpath("vader_lexicon.txt").is_file()
    assert resources.files("snownlp.sentiment").joinpath("sentiment.marshal.3").is_file()

    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("sentiment tried to open a network connection")

    monkeypatch.setattr(socket, "socket", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    fresh = LexiconSentiment()
    assert fresh.score("服务太差了").value < 0
    assert fresh.score("great, thanks").value > 0


async def test_attribute_names_match_the_saas_trial_pack(sentiment: LexiconSentiment) -> None:
    pack = yaml.safe_load((REPO / "rules" / "examples" / "saas-trial-health.yaml").read_text())
    steps = pack["rules"][0]["when"]["sequence"]["steps"]
    sink = MemoryTouchpointSink()
    await read_files([DATA / "trial-events.jsonl"], sink, MemoryDeadLetterSink(), sentiment)
    video = published(sink)["usage:vw-9001"]
    assert [s["kind"] for s in steps] == [video.kind, "sandbox_error"]
    wanted = {k.removeprefix("attributes."): v for k, v in steps[0].items() if "." in k}
    assert set(wanted) == {"plan", "video", "watched_seconds"}
    assert video.attributes["plan"] == wanted["plan"]
    assert video.attributes["video"] == wanted["video"]
    assert video.attributes["watched_seconds"] > wanted["watched_seconds"]["gt"]


async def test_following_resumes_and_replays_to_the_same_ids(
    tmp_path: Path, sentiment: LexiconSentiment
) -> None:
    path, state = tmp_path / "usage.jsonl", tmp_path / "usage.position"
    lines = (DATA / "trial-events.jsonl").read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:3]))
    sink = MemoryTouchpointSink()
    follow, _ = follower(path, state, sink, MemoryDeadLetterSink(), sentiment, clock)
    while await follow.step():
        pass
    follow.close()
    with path.open("ab") as more:
        more.write(b"".join(lines[3:8]))
    follow, _ = follower(path, state, sink, MemoryDeadLetterSink(), sentiment, clock)
    while await follow.step():
        pass
    follow.close()
    ids = [e.event_id for batch in sink.published for e in batch]
    assert ids == [f"usage:{orjson.loads(line)['event_id']}" for line in lines[:8]]
    again = MemoryTouchpointSink()
    await read_files([path], again, MemoryDeadLetterSink(), sentiment)
    assert [e.event_id for batch in again.published for e in batch] == ids


@pytest.fixture
async def client(
    sentiment: LexiconSentiment,
) -> AsyncIterator[tuple[TestClient[web.Request, web.Application], MemoryTouchpointSink]]:
    sink = MemoryTouchpointSink()
    async with TestClient(TestServer(create_http_app(sink, sentiment, clock))) as test:
        yield test, sink


async def test_http_publishes_valid_events_and_names_every_problem(
    client: tuple[TestClient[web.Request, web.Application], MemoryTouchpointSink],
) -> None:
    http, sink = client
    lines = (DATA / "trial-events.jsonl").read_bytes().splitlines()
    good = [orjson.loads(line) for line in lines[:3]]
    answer = await http.post("/v1/usage", json=good)
    assert answer.status == 202
    assert (await answer.json())["event_ids"] == ["usage:vw-9001", "usage:sb-9002", "usage:sc-9003"]
    bad = [*good[:1], orjson.loads(lines[8]), orjson.loads(lines[2]) | {"customer_id": ""}]
    refused = await http.post("/v1/usage", json=bad)
    assert refused.status == 422
    problems = (await refused.json())["problems"]
    assert [(p["index"], p["field"]) for p in problems] == [
        (1, "watched_seconds"),
        (2, "customer_id"),
    ]
    assert "found" not in problems[1]
    assert len(sink.published) == 1
    assert (await http.post("/v1/usage", data=b"[")).status == 400


async def test_numeric_ids_in_usage_events_are_read_as_text(
    client: tuple[TestClient[web.Request, web.Application], MemoryTouchpointSink],
) -> None:
    http, sink = client
    event = {
        "event_id": 123456,
        "type": "sandbox_error",
        "customer_id": 42,
        "occurred_at": "2026-11-19T09:12:00Z",
        "code": 500,
    }
    answer = await http.post("/v1/usage", json=event)
    assert answer.status == 202, await answer.text()
    [[published]] = sink.published
    assert (published.event_id, published.customer_id) == ("usage:123456", "42")
    assert published.attributes["code"] == "500"
