"""The meetings connector on real transcript files: WebVTT, SRT and JSON utterances."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from connectors.meetings import (
    DEFAULT_KEYWORDS,
    InvalidTranscript,
    KeywordGroups,
    MeetingInfo,
    Utterance,
    count_questions,
    meeting_touchpoint,
    parse_json_utterances,
    parse_srt,
    parse_transcript,
    parse_webvtt,
    publish_transcripts,
    read_meeting_info,
    sidecar_path,
    summarise,
)
from connectors.publisher import MemoryTouchpointSink
from connectors.rejects import MemoryDeadLetterSink
from schemas.models import Channel, Direction

DATA = Path(__file__).resolve().parents[1] / "data" / "connectors" / "meetings"
RECEIVED = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
KEYWORDS = KeywordGroups(DEFAULT_KEYWORDS)


def read(name: str) -> str:
    return (DATA / name).read_text(encoding="utf-8")


def test_webvtt_skips_header_note_and_style_blocks_and_reads_voices_ids_and_short_times() -> None:
    utterances = parse_webvtt(read("discovery-call.vtt"))
    assert [(u.speaker, u.start, u.end) for u in utterances[:4]] == [
        ("Li Wei", 0.0, 6.0),
        ("Dana Chen", 5.0, 20.0),
        ("Dana Chen", 20.5, 30.0),
        ("Li Wei", 28.0, 32.0),
    ]
    assert utterances[3].text == "How many drivers do you have? Is it the same & every day?"
    assert utterances[1].text.startswith("We use spreadsheets and a lot of phone calls. Our")
    # mm:ss.ttt without hours
    assert (utterances[-2].start, utterances[-2].end) == (60.0, 70.0)
    assert utterances[-1].text == "Sorry, one more thing."
    assert all("Kind" not in u.text and "::cue" not in u.text for u in utterances)


def test_a_cue_with_two_voices_splits_its_time_by_text_length() -> None:
    utterances = parse_webvtt(read("discovery-call.vtt"))
    dana, li = utterances[4], utterances[5]
    assert (dana.speaker, dana.text, dana.start) == ("Dana Chen", "About forty.", 32.0)
    assert (li.speaker, li.text, li.end) == ("Li Wei", "our product handles that", 40.0)
    # "About forty." is 12 characters of 36
    assert dana.end == pytest.approx(32 + 8 * 12 / 36) and li.start == dana.end


def test_overlapping_cues_count_once_per_speaker_and_crosstalk_counts_for_both() -> None:
    figures = summarise(parse_webvtt(read("discovery-call.vtt")), ["li wei"], KEYWORDS)
    by_name = {s.name: s for s in figures.speakers}
    # Li Wei: 0-6, 28-32, 34.67-40 and 60-70 (65-68 lies inside 60-70, not added again)
    assert by_name["Li Wei"].talk_seconds == pytest.approx(6 + 4 + (40 - 32 - 8 / 3) + 10, abs=1e-3)
    assert by_name["Dana Chen"].talk_seconds == pytest.approx(15 + 9.5 + 8 / 3, abs=1e-3)
    assert (by_name["Li Wei"].role, by_name["Dana Chen"].role) == ("rep", "customer")
    assert figures.overlap_seconds == pytest.approx(3.0)  # 5-6 and 28-30
    assert by_name["Li Wei"].share + by_name["Dana Chen"].share == pytest.approx(1.0, abs=1e-3)
    assert figures.rep_share == pytest.approx(25.3333 / 52.5, abs=1e-3)
    assert figures.duration_seconds == 70.0
    assert figures.unattributed_seconds == 0.0


def test_webvtt_figures_questions_monologue_and_keywords() -> None:
    figures = summarise(parse_webvtt(read("discovery-call.vtt")), ["Li Wei"], KEYWORDS)
    assert figures.rep_questions == 3
    assert figures.customer_questions == 0
    # Dana talks from 5 s, pauses 0.5 s, and is cut when Li Wei starts at 28 s
    assert figures.longest_customer_monologue_seconds == pytest.approx(23.0)
    assert figures.keywords_rep == {"product_talk": 3, "pain_points": 0}
    assert figures.keywords_customer == {"product_talk": 0, "pain_points": 1}


def test_srt_with_bom_crlf_chinese_names_full_width_colons_and_tags() -> None:
    data = (DATA / "store-visit.srt").read_bytes()
    assert data.startswith(b"\xef\xbb\xbf") and b"\r\n" in data
    utterances = parse_srt(data.decode("utf-8"))
    assert [u.speaker for u in utterances] == ["王经理", "张女士", "王经理", "王经理"]
    assert (
        utterances[1].text
        == "我们还在用纸质卡片，最大的痛点是找不到老客户的购买记录。 每次都要翻很久。"
    )
    assert utterances[2].text == "明白。那您的痛点主要是查询慢吗"  # {\an8} dropped
    # a time of day in the text is not a speaker; an unprefixed line continues the speaker
    assert utterances[3].text == "我们的产品可以一键查询，下午10:30以后也能用。 您觉得怎么样"
    figures = summarise(utterances, ["王经理"], KEYWORDS)
    assert figures.rep_talk_seconds == pytest.approx(16.0)
    assert figures.customer_talk_seconds == pytest.approx(10.5)
    assert figures.overlap_seconds == pytest.approx(1.0)
    assert figures.rep_questions == 3
    assert figures.customer_questions == 0
    assert figures.longest_customer_monologue_seconds == pytest.approx(9.5)
    # "您的痛点" counts once, not again as "痛点"
    assert figures.keywords_rep == {"product_talk": 1, "pain_points": 1}
    assert figures.keywords_customer == {"product_talk": 0, "pain_points": 1}


def test_json_utterances_with_a_configured_rep_list_and_unattributed_speech() -> None:
    utterances = parse_json_utterances((DATA / "trial-checkin.json").read_bytes())
    figures = summarise(utterances, ["Ana Souza"], KEYWORDS)
    assert figures.rep_talk_seconds == pytest.approx(19.5)
    assert figures.customer_talk_seconds == pytest.approx(66.5)
    assert figures.rep_share == pytest.approx(19.5 / 86, abs=1e-3)
    assert figures.unattributed_seconds == pytest.approx(2.0)
    assert figures.rep_questions == 2  # one with "?", one "can you ..." without
    # 6-40 and 42-70 are one monologue (2 s pause); the rep starts at 69
    assert figures.longest_customer_monologue_seconds == pytest.approx(63.0)
    assert figures.keywords_rep == {"product_talk": 1, "pain_points": 1}


def test_questions_in_english_and_chinese() -> None:
    assert count_questions("What is your budget") == 1
    assert count_questions("Do you have a budget? We can help.") == 1
    assert count_questions("您预算多少？我们可以帮忙。") == 1
    assert count_questions("您考虑过会员卡吗") == 1
    assert count_questions("我不知道是什么。") == 0
    assert count_questions("Doing well. Thanks!") == 0
    assert count_questions("Ｗｈａｔ ａｂｏｕｔ Ｆｒｉｄａｙ") == 1  # full-width letters


def test_the_touchpoint_carries_the_figures_and_reuses_its_event_id_on_re_reading() -> None:
    path = DATA / "discovery-call.vtt"
    info = read_meeting_info(sidecar_path(path))
    data = path.read_bytes()
    first = meeting_touchpoint(
        info, data, parse_transcript(data, "webvtt"), "webvtt", KEYWORDS, RECEIVED
    )
    again = meeting_touchpoint(
        info,
        data,
        parse_transcript(data, "webvtt"),
        "webvtt",
        KEYWORDS,
        datetime(2026, 11, 23, tzinfo=UTC),
    )
    assert first.event_id == again.event_id == "meeting:zoom-8842113"
    assert (first.kind, first.channel, first.direction) == (
        "meeting_held",
        Channel.MEETING,
        Direction.NONE,
    )
    assert first.customer_id == "acme-logistics" and first.rep_id == "rep-li"
    assert first.occurred_at == datetime(2026, 11, 20, 1, 1, 10, tzinfo=UTC)  # start + 70 s
    attributes = first.attributes
    assert attributes["rep_questions"] == 3
    assert attributes["longest_customer_monologue_seconds"] == 23.0
    assert attributes["keyword_product_talk_rep"] == 3
    # speakers are named by rep id, or customer-<n>: people's names stay off the touchpoint
    assert (attributes["speaker_1_id"], attributes["speaker_1_role"]) == ("customer-1", "customer")
    assert (attributes["speaker_2_id"], attributes["speaker_2_role"]) == ("rep-li", "rep")
    assert not any(v in ("Dana Chen", "Li Wei") for v in attributes.values())
    assert attributes["transcript_format"] == "webvtt"
    assert first.text is None  # the transcript itself is not carried


def test_without_a_meeting_id_the_event_id_is_the_transcript_hash() -> None:
    data = (DATA / "store-visit.srt").read_bytes()
    info = read_meeting_info(sidecar_path(DATA / "store-visit.srt"))
    event = meeting_touchpoint(info, data, parse_transcript(data, "srt"), "srt", KEYWORDS, RECEIVED)
    other = meeting_touchpoint(
        info, data + b"\r\n", parse_transcript(data, "srt"), "srt", KEYWORDS, RECEIVED
    )
    assert event.event_id.startswith("meeting:") and len(event.event_id) == 8 + 32
    assert event.event_id != other.event_id
    assert event.rep_id == "rep-wang"


def test_broken_timings_are_reported_with_their_line() -> None:
    with pytest.raises(InvalidTranscript) as raised:
        parse_webvtt(read("broken-timing.vtt"))
    problems = raised.value.problems
    assert [(p["line"], p["field"]) for p in problems] == [(8, "timing"), (12, "timing")]
    assert "expected an end after the start" in problems[0]["message"]
    assert "'0:10.000'" in problems[1]["message"]
    assert "line 8: timing" in str(raised.value)


def test_other_invalid_transcripts() -> None:
    with pytest.raises(InvalidTranscript, match="start with 'WEBVTT'"):
        parse_webvtt("1\n00:00:00.000 --> 00:00:01.000\nhi\n")
    with pytest.raises(InvalidTranscript) as raised:
        parse_json_utterances(b'[{"speaker": "a", "start": 3, "end": 2, "text": "x"}, {"end": 1}]')
    assert [(p["index"], p["field"]) for p in raised.value.problems] == [
        (0, "(utterance)"),
        (1, "start"),
    ]
    with pytest.raises(InvalidTranscript, match=r"line 2: .*expected UTF-8"):
        parse_transcript(b"1\n\xff\xfe", "srt")


def test_keyword_groups_are_checked_when_configured() -> None:
    with pytest.raises(ValueError, match="expected a lower-case name"):
        KeywordGroups({"Bad Name": ["x"]})
    with pytest.raises(ValueError, match="expected phrases"):
        KeywordGroups({"empty": [" "]})


def test_meeting_info_needs_a_timezone() -> None:
    with pytest.raises(ValueError, match="expected a time with a timezone"):
        MeetingInfo.model_validate({"customer_id": "c", "started_at": "2026-11-20T09:00:00"})


def test_a_speaker_talking_alone_has_the_whole_share() -> None:
    figures = summarise(
        [Utterance("Rep", 0, 10, "hi"), Utterance("Rep", 5, 12, "so")], ["rep"], KEYWORDS
    )
    assert figures.rep_talk_seconds == 12.0 and figures.rep_share == 1.0
    assert figures.overlap_seconds == 0.0 and figures.longest_customer_monologue_seconds == 0.0


async def test_reading_files_publishes_the_good_ones_and_dead_letters_the_broken_one() -> None:
    sink, letters = MemoryTouchpointSink(), MemoryDeadLetterSink()
    paths = [DATA / n for n in ("discovery-call.vtt", "broken-timing.vtt", "trial-checkin.json")]
    result = await publish_transcripts(
        paths, sink, letters, KEYWORDS, RECEIVED, extra_reps={"Ana Souza": "rep-ana"}
    )
    assert [e.event_id for e in result.published] == [
        "meeting:zoom-8842113",
        "meeting:meet-2026-11-19-bo",
    ]
    assert result.published[1].rep_id == "rep-ana"
    assert result.rejected == 1
    [letter] = letters.letters
    assert (letter.source_topic, letter.offset, letter.reason) == (
        "file:broken-timing.vtt",
        8,
        "invalid_transcript",
    )
    assert "line 8: timing" in letter.detail
    again = await publish_transcripts(
        paths, sink, MemoryDeadLetterSink(), KEYWORDS, RECEIVED, extra_reps={"Ana Souza": "rep-ana"}
    )
    assert [e.event_id for e in again.published] == [e.event_id for e in result.published]


async def test_many_transcripts_are_published_in_bounded_batches(tmp_path: Path) -> None:
    sink = MemoryTouchpointSink()
    paths = [DATA / "discovery-call.vtt", DATA / "store-visit.srt", DATA / "trial-checkin.json"]
    result = await publish_transcripts(
        paths, sink, MemoryDeadLetterSink(), KEYWORDS, RECEIVED, batch_size=2
    )
    assert [len(batch) for batch in sink.published] == [2, 1]
    assert len(result.published) == 3


async def test_a_transcript_over_the_size_limit_is_refused_before_it_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import connectors.meetings as meetings

    monkeypatch.setattr(meetings, "MAX_TRANSCRIPT_BYTES", 100)
    letters = MemoryDeadLetterSink()
    result = await publish_transcripts(
        [DATA / "discovery-call.vtt"], MemoryTouchpointSink(), letters, KEYWORDS, RECEIVED
    )
    assert result.rejected == 1
    assert "expected at most 100 bytes" in letters.letters[0].detail
    assert letters.letters[0].raw_value == b""  # not read into memory


def test_the_warroom_command_has_the_meetings_pos_and_usage_actions() -> None:
    from streams.cli import _parser

    parser = _parser()
    meetings = parser.parse_args(["meetings", "read", "a.vtt", "b.srt", "--rep", "Li Wei=rep-li"])
    assert meetings.files == [Path("a.vtt"), Path("b.srt")] and meetings.rep == ["Li Wei=rep-li"]
    follow = parser.parse_args(
        ["pos", "follow", "s.csv", "--state", "s.position", "--currency", "CNY"]
    )
    assert (follow.file, follow.state, follow.currency) == (
        Path("s.csv"),
        Path("s.position"),
        "CNY",
    )
    usage = parser.parse_args(["usage", "serve", "--port", "9000"])
    assert usage.port == 9000
    assert all(callable(a.run) for a in (meetings, follow, usage))
    with pytest.raises(SystemExit):
        parser.parse_args(["pos", "follow", "s.csv"])  # --state is required


def test_a_malformed_rep_option_is_refused_before_anything_is_published(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from streams.cli import _parser

    args = _parser().parse_args(["meetings", "read", "a.vtt", "--rep", "no-equals-sign"])
    assert args.run(args) == 2
    assert "expected NAME=REP_ID, found 'no-equals-sign'" in capsys.readouterr().err
