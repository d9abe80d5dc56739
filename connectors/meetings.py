"""Meetings connector: a transcript (WebVTT, SRT or JSON utterances) -> one
``meeting_held`` touchpoint with talk-time, question and keyword figures.

Parsing is pure: text in, :class:`Utterance` list out, or :class:`InvalidTranscript`
naming the line (or utterance index) and field. :func:`summarise` turns utterances into
figures and :func:`meeting_touchpoint` into the touchpoint; only :func:`publish_transcripts`
does I/O.

Talk time is counted on the union of a speaker's intervals, so a speaker's own
overlapping cues are never counted twice. When two speakers talk at once, the overlap
counts for both of them (crosstalk is talk for each side); shares are each speaker's
talk time over the sum of all speakers' talk time, so they add up to 1, and
``overlap_seconds`` says how much of the meeting had more than one speaker at once. A
cue that carries several voices splits its time between them in proportion to the
length of each voice's text. Speech with no speaker (a cue without a voice span or
name prefix) counts towards ``unattributed_seconds`` only.
"""

from __future__ import annotations

import hashlib
import html
import logging
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from schemas.models import Channel, Direction, TouchpointEvent

from .problems import describe, validation_problems
from .publisher import TouchpointSink
from .rejects import DeadLetterSink, dead_letter

log = logging.getLogger(__name__)

SOURCE = "meetings/0.1.0"
MAX_TRANSCRIPT_BYTES = 16 * 1024 * 1024
MAX_SPEAKERS_LISTED = 8
"""Per-speaker attributes are given for at most this many speakers (most talk first)."""
MONOLOGUE_MAX_PAUSE_SECONDS = 5.0
"""A customer's consecutive utterances separated by at most this pause (and by nobody
else's speech) are one monologue."""

TranscriptFormat = Literal["webvtt", "srt", "json"]

DEFAULT_KEYWORDS: Mapping[str, Sequence[str]] = {
    "product_talk": ("your product", "our product", "我们的产品", "我们产品"),
    "pain_points": ("your current pain points", "pain point", "您的痛点", "你的痛点", "痛点"),
}
"""Keyword groups counted when none are configured: talking about the product against
talking about the customer's problems."""


@dataclass(frozen=True, slots=True)
class Utterance:
    speaker: str | None
    start: float
    """Seconds from the start of the recording."""
    end: float
    text: str


class InvalidTranscript(ValueError):
    """A transcript that cannot be read; ``problems`` name the line or utterance and field."""

    def __init__(self, problems: list[dict[str, Any]]) -> None:
        self.problems = problems
        super().__init__("; ".join(describe(p, "utterance {}") for p in problems))


# --------------------------------------------------------------------------- parsing

_VTT_TIME = re.compile(r"^(?:(\d{2,}):)?([0-5]\d):([0-5]\d)\.(\d{3})$")
_SRT_TIME = re.compile(r"^(\d{1,}):([0-5]\d):([0-5]\d)[,.](\d{1,3})$")
_TAG = re.compile(r"<[^>]*>")
_VOICE = re.compile(r"<v(?:\.[^\s>]*)?(?:[ \t]+([^>]*))?>", re.IGNORECASE)
_VOICE_END = re.compile(r"</v>", re.IGNORECASE)
_ASS_TAG = re.compile(r"\{\\[^}]*\}")
_SPEAKER_PREFIX = re.compile(
    r"^\s*(?:-\s*)?([^\d\s:\uff1a<>{}][^:\uff1a<>{}]{0,47}?)\s*(?::\s+|:$|\uff1a\s*)(.*)$"
)
"""``Name: text``, or the name and a full-width colon; an ASCII colon must be followed
by a space, so a time such as ``10:30`` is not taken for a speaker."""


def _lines(text: str) -> list[str]:
    """Lines of a transcript: a leading BOM dropped, CRLF, LF and CR all end a line."""
    return text.removeprefix("\ufeff").replace("\r\n", "\n").replace("\r", "\n").split("\n")


def _blocks(lines: list[str], first: int = 0) -> Iterable[tuple[int, list[str]]]:
    """(1-based number of the first line, lines) of each block of non-blank lines."""
    block: list[str] = []
    start = 0
    for number, line in enumerate(lines[first:], start=first + 1):
        if line.strip():
            if not block:
                start = number
            block.append(line)
        elif block:
            yield start, block
            block = []
    if block:
        yield start, block


def _seconds(match: re.Match[str]) -> float:
    hours: str | None = match.group(1)
    fraction: str = match.group(4)
    return float(
        (int(hours) if hours else 0) * 3600
        + int(match.group(2)) * 60
        + int(match.group(3))
        + int(fraction) / 10 ** len(fraction)
    )


def _timing(
    line: str, number: int, pattern: re.Pattern[str], example: str
) -> tuple[float, float] | dict[str, Any]:
    """(start, end) of a timing line, or the problem with it."""
    left, arrow, right = line.partition("-->")
    if not arrow:
        return {"line": number, "field": "timing", "message": f"expected {example}, found {line!r}"}
    start_text = left.strip()
    end_text = right.strip().split()[0] if right.strip() else ""
    start, end = pattern.match(start_text), pattern.match(end_text)
    if start is None or end is None:
        bad = start_text if start is None else end_text
        message = f"expected a timestamp like {example.split(' ')[0]}, found {bad!r}"
        return {"line": number, "field": "timing", "message": message}
    begin, finish = _seconds(start), _seconds(end)
    if finish <= begin:
        message = f"expected an end after the start, found {start_text} --> {end_text}"
        return {"line": number, "field": "timing", "message": message}
    return begin, finish


def _plain(text: str) -> str:
    """Cue text without markup, entities decoded, whitespace collapsed."""
    return " ".join(html.unescape(_TAG.sub("", _ASS_TAG.sub("", text))).split())


def _voices(payload: str, start: float, end: float) -> list[Utterance]:
    """A WebVTT cue payload as utterances, one per voice span (``<v Name>``)."""
    spans: list[tuple[str | None, str]] = []
    position = 0
    speaker: str | None = None
    for match in _VOICE.finditer(payload):
        before = payload[position : match.start()]
        if _plain(before):
            spans.append((speaker, before))
        speaker = (match.group(1) or "").strip() or None
        position = match.end()
    spans.append((speaker, payload[position:]))
    spans = [(who, _VOICE_END.sub("", text)) for who, text in spans]
    return _split_time([(who, _plain(text)) for who, text in spans if _plain(text)], start, end)


def _split_time(spans: list[tuple[str | None, str]], start: float, end: float) -> list[Utterance]:
    """Utterances of one cue: its time shared by its spans in proportion to text length."""
    if not spans:
        return []
    if len(spans) == 1:
        return [Utterance(spans[0][0], start, end, spans[0][1])]
    total = sum(len(text) for _, text in spans)
    utterances: list[Utterance] = []
    at = start
    for n, (who, text) in enumerate(spans):
        until = end if n == len(spans) - 1 else at + (end - start) * len(text) / total
        utterances.append(Utterance(who, at, until, text))
        at = until
    return utterances


def parse_webvtt(text: str) -> list[Utterance]:
    """A WebVTT file (W3C WebVTT: header, optional cue ids, NOTE/STYLE/REGION blocks,
    ``<v Speaker>`` voice spans) -> utterances in file order."""
    lines = _lines(text)
    header = lines[0] if lines else ""
    if not (header == "WEBVTT" or header[:7] in ("WEBVTT ", "WEBVTT\t")):
        message = f"expected the file to start with 'WEBVTT', found {header[:20]!r}"
        raise InvalidTranscript([{"line": 1, "field": "header", "message": message}])
    utterances: list[Utterance] = []
    problems: list[dict[str, Any]] = []
    header_done = False
    for number, block in _blocks(lines, first=1):
        if number == 2 and not header_done and "-->" not in block[0]:
            header_done = True  # header metadata lines directly under WEBVTT
            continue
        header_done = True
        keyword = block[0].split(maxsplit=1)[0] if block[0].split() else ""
        if keyword in ("NOTE", "STYLE", "REGION") and "-->" not in block[0]:
            continue
        timing_at = 0 if "-->" in block[0] else 1
        if timing_at >= len(block) or "-->" not in block[timing_at]:
            found = block[timing_at] if timing_at < len(block) else "end of block"
            message = f"expected a cue timing line 'start --> end', found {found!r}"
            problems.append({"line": number + timing_at, "field": "timing", "message": message})
            continue
        timing = _timing(
            block[timing_at], number + timing_at, _VTT_TIME, "00:01:02.500 --> 00:01:04.000"
        )
        if isinstance(timing, dict):
            problems.append(timing)
            continue
        utterances.extend(_voices("\n".join(block[timing_at + 1 :]), *timing))
    if problems:
        raise InvalidTranscript(problems)
    return utterances


def parse_srt(text: str) -> list[Utterance]:
    """A SubRip file (index, ``00:00:01,000 --> 00:00:02,500``, text lines) with the
    speaker as a ``Name:`` prefix (full-width colon too) of a text line."""
    utterances: list[Utterance] = []
    problems: list[dict[str, Any]] = []
    for number, block in _blocks(_lines(text)):
        timing_at = 1 if block[0].strip().isdigit() else 0
        if timing_at == 0 and "-->" not in block[0]:
            message = f"expected a cue number or a timing line, found {block[0][:40]!r}"
            problems.append({"line": number, "field": "index", "message": message})
            continue
        if timing_at >= len(block):
            problems.append(
                {"line": number, "field": "timing", "message": "expected a timing line, found none"}
            )
            continue
        timing = _timing(
            block[timing_at], number + timing_at, _SRT_TIME, "00:01:02,500 --> 00:01:04,000"
        )
        if isinstance(timing, dict):
            problems.append(timing)
            continue
        spans: list[tuple[str | None, str]] = []
        speaker: str | None = None
        for line in block[timing_at + 1 :]:
            plain = _plain(line)
            prefix = _SPEAKER_PREFIX.match(plain)
            if prefix:
                speaker, plain = prefix.group(1).strip(), prefix.group(2)
            if not plain:
                continue
            if spans and spans[-1][0] == speaker:
                spans[-1] = (speaker, f"{spans[-1][1]} {plain}")
            else:
                spans.append((speaker, plain))
        utterances.extend(_split_time(spans, *timing))
    if problems:
        raise InvalidTranscript(problems)
    return utterances


class _JsonUtterance(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore", allow_inf_nan=False)

    speaker: str | None = Field(None, max_length=128)
    start: float = Field(ge=0)
    end: float = Field(ge=0)
    text: str = Field("", max_length=100_000)

    @model_validator(mode="after")
    def _ends_after_start(self) -> _JsonUtterance:
        if self.end <= self.start:
            raise ValueError(f"end: expected more than start {self.start}, found {self.end}")
        return self


def parse_json_utterances(text: str | bytes) -> list[Utterance]:
    """``[{"speaker", "start", "end", "text"}, ...]`` with times in seconds."""
    try:
        payload = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise InvalidTranscript(
            [{"field": "(file)", "message": f"expected JSON, found: {exc}"}]
        ) from None
    if not isinstance(payload, list):
        message = f"expected a JSON list of utterances, found {type(payload).__name__}"
        raise InvalidTranscript([{"field": "(file)", "message": message}])
    utterances: list[Utterance] = []
    problems: list[dict[str, Any]] = []
    for index, item in enumerate(payload):
        try:
            parsed = _JsonUtterance.model_validate(item)
        except ValidationError as exc:
            problems.extend(validation_problems(exc, "(utterance)", {"index": index}))
            continue
        speaker = (parsed.speaker or "").strip() or None
        plain = " ".join(parsed.text.split())
        if plain:
            utterances.append(Utterance(speaker, parsed.start, parsed.end, plain))
    if problems:
        raise InvalidTranscript(problems)
    return utterances


def transcript_format(path: Path) -> TranscriptFormat:
    suffix = path.suffix.lower()
    formats: dict[str, TranscriptFormat] = {".vtt": "webvtt", ".srt": "srt", ".json": "json"}
    if suffix not in formats:
        known = ", ".join(formats)
        raise InvalidTranscript(
            [
                {
                    "field": "(file)",
                    "message": f"expected a name ending in {known}, found {path.name!r}",
                }
            ]
        )
    return formats[suffix]


def parse_transcript(data: bytes, fmt: TranscriptFormat) -> list[Utterance]:
    if len(data) > MAX_TRANSCRIPT_BYTES:
        message = f"expected at most {MAX_TRANSCRIPT_BYTES} bytes, found {len(data)}"
        raise InvalidTranscript([{"field": "(file)", "message": message}])
    if fmt == "json":
        return parse_json_utterances(data)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        message = f"expected UTF-8, found byte 0x{data[exc.start]:02x}"
        raise InvalidTranscript([{"line": line, "field": "(text)", "message": message}]) from None
    return parse_webvtt(text) if fmt == "webvtt" else parse_srt(text)


# --------------------------------------------------------------------------- figures


def _normalised(text: str) -> str:
    return unicodedata.normalize("NFKC", text).casefold()


_SENTENCE_END = re.compile(r"(?<=[?!.;\u3002])\s*|\n")
"""Text is NFKC-normalised first, so full-width ? ! ; are their ASCII forms here."""
_EN_QUESTION_START = re.compile(
    r"^(?:what|why|how|when|where|who|whom|whose|which|"
    r"(?:do|does|did|is|are|was|were|can|could|would|will|should|shall|may|have|has|had)"
    r"\s+(?:you|we|i|they|it|he|she|there|this|that|your|our|the))\b"
)
_ZH_QUESTION = re.compile(
    r"(?:吗|呢|么)[\s。.]*$|什么|怎么|为什么|为何|哪|多少|几|是否|能否|可否|有没有|是不是|要不要|会不会|能不能"
)


def count_questions(text: str) -> int:
    """Questions in a stretch of speech: sentences ending in a question mark (ASCII or
    full-width), or (where the transcript has no question marks) opening with an English
    question word or carrying a Chinese question word or final particle."""
    count = 0
    for sentence in _SENTENCE_END.split(_normalised(text)):
        sentence = sentence.strip()
        if not sentence:
            continue
        asked = sentence.endswith("?") or _EN_QUESTION_START.match(sentence) is not None
        if not asked and not sentence.endswith(("!", ".", "\u3002")):
            asked = _ZH_QUESTION.search(sentence) is not None
        count += asked
    return count


@dataclass(frozen=True, slots=True)
class KeywordGroups:
    """Named groups of phrases; a group's count is the number of non-overlapping
    occurrences of any of its phrases (the longest phrase wins where two overlap), found
    after NFKC normalisation and case folding, with one Aho-Corasick automaton per group
    (time linear in the text, however many phrases)."""

    groups: Mapping[str, Sequence[str]]
    _automata: dict[str, Any] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        import ahocorasick

        automata: dict[str, Any] = {}
        for name, phrases in self.groups.items():
            if not re.fullmatch(r"[a-z][a-z0-9_]{0,39}", name):
                raise ValueError(
                    "keyword group: expected a lower-case name of letters, digits and _ "
                    f"(at most 40), found {name!r}"
                )
            cleaned = {_normalised(p).strip() for p in phrases if p.strip()}
            if not cleaned:
                raise ValueError(f"keyword group {name!r}: expected phrases, found none")
            automaton = ahocorasick.Automaton()
            for phrase in cleaned:
                automaton.add_word(phrase, phrase)
            automaton.make_automaton()
            automata[name] = automaton
        object.__setattr__(self, "_automata", automata)

    def count(self, text: str) -> dict[str, int]:
        normalised = _normalised(text)
        return {
            name: sum(1 for _ in automaton.iter_long(normalised))
            for name, automaton in self._automata.items()
        }


@dataclass(frozen=True, slots=True)
class SpeakerFigures:
    name: str
    role: Literal["rep", "customer"]
    talk_seconds: float
    share: float


@dataclass(frozen=True, slots=True)
class MeetingFigures:
    duration_seconds: float
    speakers: list[SpeakerFigures]
    rep_talk_seconds: float
    customer_talk_seconds: float
    rep_share: float
    customer_share: float
    overlap_seconds: float
    unattributed_seconds: float
    rep_questions: int
    customer_questions: int
    longest_customer_monologue_seconds: float
    keywords_rep: dict[str, int]
    keywords_customer: dict[str, int]


def _union(intervals: Iterable[tuple[float, float]]) -> list[tuple[float, float]]:
    merged: list[tuple[float, float]] = []
    for start, end in sorted(intervals):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def _length(intervals: Iterable[tuple[float, float]]) -> float:
    return sum(end - start for start, end in intervals)


def _overlap(by_speaker: Mapping[str, list[tuple[float, float]]]) -> float:
    """Seconds during which two or more speakers talk (sweep over interval edges)."""
    edges: list[tuple[float, int]] = []
    for intervals in by_speaker.values():
        for start, end in intervals:
            edges.extend(((start, 1), (end, -1)))
    edges.sort(key=lambda edge: (edge[0], edge[1]))
    talking, since, total = 0, 0.0, 0.0
    for at, step in edges:
        if talking >= 2:
            total += at - since
        talking += step
        since = at
    return total


def _longest_monologue(utterances: Sequence[Utterance], customers: set[str]) -> float:
    """The longest stretch one customer-side speaker talks with nobody else starting to
    speak and no pause over :data:`MONOLOGUE_MAX_PAUSE_SECONDS`; someone else starting
    (even over them) ends it there."""
    longest = 0.0
    current: tuple[str, float, float] | None = None  # (speaker, start, end)
    for u in sorted(utterances, key=lambda u: (u.start, u.end)):
        if current is not None:
            who, start, end = current
            if u.speaker == who and u.start - end <= MONOLOGUE_MAX_PAUSE_SECONDS:
                current = (who, start, max(end, u.end))
                continue
            cut = end if u.speaker == who else min(end, u.start)
            longest = max(longest, cut - start)
            current = None
        if u.speaker in customers:
            current = (u.speaker, u.start, u.end)
    if current is not None:
        longest = max(longest, current[2] - current[1])
    return longest


def _rounded(value: float) -> float:
    return round(value, 3)


def summarise(
    utterances: Sequence[Utterance], reps: Iterable[str], keywords: KeywordGroups
) -> MeetingFigures:
    """Talk time, shares, questions, longest customer monologue and keyword counts.
    ``reps`` are the speaker names (compared case-insensitively) that are reps; every
    other named speaker is on the customer's side."""
    rep_names = {_normalised(r).strip() for r in reps}
    by_speaker: dict[str, list[tuple[float, float]]] = {}
    for u in utterances:
        if u.speaker is not None:
            by_speaker.setdefault(u.speaker, []).append((u.start, u.end))
    talk = {name: _length(_union(spans)) for name, spans in by_speaker.items()}
    total = sum(talk.values())
    role: dict[str, Literal["rep", "customer"]] = {
        name: "rep" if _normalised(name).strip() in rep_names else "customer" for name in talk
    }
    speakers = sorted(
        (
            SpeakerFigures(name, role[name], _rounded(t), _rounded(t / total) if total else 0.0)
            for name, t in talk.items()
        ),
        key=lambda s: (-s.talk_seconds, s.name),
    )
    rep_seconds = _length(_union(i for n, s in by_speaker.items() if role[n] == "rep" for i in s))
    customer_seconds = _length(
        _union(i for n, s in by_speaker.items() if role[n] == "customer" for i in s)
    )
    rep_talk = sum(t for n, t in talk.items() if role[n] == "rep")
    customer_talk = total - rep_talk
    named = _length(_union(i for spans in by_speaker.values() for i in spans))
    everything = _length(_union((u.start, u.end) for u in utterances))
    rep_text = "\n".join(u.text for u in utterances if u.speaker and role[u.speaker] == "rep")
    customer_text = "\n".join(
        u.text for u in utterances if u.speaker and role[u.speaker] == "customer"
    )
    starts = [u.start for u in utterances]
    ends = [u.end for u in utterances]
    return MeetingFigures(
        duration_seconds=_rounded(max(ends) - min(starts)) if utterances else 0.0,
        speakers=speakers,
        rep_talk_seconds=_rounded(rep_seconds),
        customer_talk_seconds=_rounded(customer_seconds),
        rep_share=_rounded(rep_talk / total) if total else 0.0,
        customer_share=_rounded(customer_talk / total) if total else 0.0,
        overlap_seconds=_rounded(_overlap({n: _union(s) for n, s in by_speaker.items()})),
        unattributed_seconds=_rounded(everything - named),
        rep_questions=count_questions(rep_text),
        customer_questions=count_questions(customer_text),
        longest_customer_monologue_seconds=_rounded(
            _longest_monologue(utterances, {n for n in talk if role[n] == "customer"})
        ),
        keywords_rep=keywords.count(rep_text),
        keywords_customer=keywords.count(customer_text),
    )


# --------------------------------------------------------------------------- touchpoint


class MeetingInfo(BaseModel):
    """What the transcript does not say: whose meeting it was, when, and who the reps are.
    Given in a ``<transcript>.meeting.json`` file beside the transcript, or on the
    command line."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    customer_id: str = Field(min_length=1, max_length=128)
    started_at: datetime
    meeting_id: str | None = Field(None, min_length=1, max_length=96)
    reps: dict[str, str] = Field(default_factory=dict, max_length=64)
    """Speaker name as the transcript writes it -> rep id."""
    contact_id: str | None = Field(None, min_length=1, max_length=128)
    industry: str | None = Field(None, min_length=1, max_length=64)

    @model_validator(mode="after")
    def _aware(self) -> MeetingInfo:
        if self.started_at.tzinfo is None:
            raise ValueError(
                f"started_at: expected a time with a timezone, found {self.started_at}"
            )
        return self


def meeting_event_id(info: MeetingInfo, transcript: bytes) -> str:
    """``meeting:<meeting id>`` when the meeting has one, else ``meeting:`` and the first
    32 hex digits of the transcript's SHA-256: re-reading a file gives the same id."""
    if info.meeting_id is not None:
        return f"meeting:{info.meeting_id}"
    return f"meeting:{hashlib.sha256(transcript).hexdigest()[:32]}"


def meeting_attributes(
    figures: MeetingFigures, fmt: TranscriptFormat, rep_ids: Mapping[str, str]
) -> dict[str, str | int | float | bool]:
    """The figures as attributes. Speakers are listed by rep id (``rep_ids`` maps
    normalised speaker names to them) or as ``customer-<n>``, never by name."""
    attributes: dict[str, str | int | float | bool] = {
        "transcript_format": fmt,
        "duration_seconds": figures.duration_seconds,
        "speakers": len(figures.speakers),
        "rep_talk_seconds": figures.rep_talk_seconds,
        "customer_talk_seconds": figures.customer_talk_seconds,
        "rep_talk_share": figures.rep_share,
        "customer_talk_share": figures.customer_share,
        "overlap_seconds": figures.overlap_seconds,
        "unattributed_seconds": figures.unattributed_seconds,
        "rep_questions": figures.rep_questions,
        "customer_questions": figures.customer_questions,
        "longest_customer_monologue_seconds": figures.longest_customer_monologue_seconds,
    }
    for name, count in figures.keywords_rep.items():
        attributes[f"keyword_{name}_rep"] = count
    for name, count in figures.keywords_customer.items():
        attributes[f"keyword_{name}_customer"] = count
    customers = 0
    for n, speaker in enumerate(figures.speakers[:MAX_SPEAKERS_LISTED], start=1):
        if speaker.role == "rep":
            label = rep_ids.get(_normalised(speaker.name).strip(), f"rep-speaker-{n}")
        else:
            customers += 1
            label = f"customer-{customers}"
        attributes[f"speaker_{n}_id"] = label
        attributes[f"speaker_{n}_role"] = speaker.role
        attributes[f"speaker_{n}_talk_seconds"] = speaker.talk_seconds
        attributes[f"speaker_{n}_talk_share"] = speaker.share
    return attributes


def meeting_touchpoint(
    info: MeetingInfo,
    transcript: bytes,
    utterances: Sequence[Utterance],
    fmt: TranscriptFormat,
    keywords: KeywordGroups,
    received_at: datetime,
    extra_reps: Mapping[str, str] | None = None,
) -> TouchpointEvent:
    """One ``meeting_held`` touchpoint, occurring when the last utterance ends. Its rep is
    the rep who talked most; ``extra_reps`` (a configured list) adds to ``info.reps``."""
    reps = {**(extra_reps or {}), **info.reps}
    figures = summarise(utterances, reps, keywords)
    rep_ids = {_normalised(name).strip(): rep for name, rep in reps.items()}
    lead = next((s for s in figures.speakers if s.role == "rep"), None)
    ended = max((u.end for u in utterances), default=0.0)
    return TouchpointEvent(
        event_id=meeting_event_id(info, transcript),
        customer_id=info.customer_id,
        occurred_at=info.started_at + timedelta(seconds=ended),
        received_at=received_at,
        channel=Channel.MEETING,
        kind="meeting_held",
        direction=Direction.NONE,
        rep_id=rep_ids.get(_normalised(lead.name).strip()) if lead else None,
        contact_id=info.contact_id,
        attributes=meeting_attributes(figures, fmt, rep_ids),
        source=SOURCE,
        industry=info.industry,
    )


def sidecar_path(transcript: Path) -> Path:
    return transcript.with_name(transcript.name + ".meeting.json")


def read_meeting_info(path: Path) -> MeetingInfo:
    try:
        return MeetingInfo.model_validate_json(path.read_bytes())
    except ValidationError as exc:
        raise InvalidTranscript(
            [
                {
                    "field": f"{path.name}:" + ".".join(str(p) for p in e["loc"]),
                    "message": e["msg"],
                }
                for e in exc.errors(include_url=False)
            ]
        ) from None


@dataclass(slots=True)
class ReadResult:
    published: list[TouchpointEvent] = field(default_factory=list)
    rejected: int = 0


async def publish_transcripts(
    paths: Sequence[Path],
    sink: TouchpointSink,
    dead_letters: DeadLetterSink,
    keywords: KeywordGroups,
    received_at: datetime,
    info: MeetingInfo | None = None,
    extra_reps: Mapping[str, str] | None = None,
    batch_size: int = 100,
) -> ReadResult:
    """Each transcript -> one touchpoint, published ``batch_size`` at a time; a transcript
    that cannot be read (or has no meeting info) becomes a dead letter naming its file and
    line, and the others go on."""
    result = ReadResult()
    events: list[TouchpointEvent] = []
    for path in paths:
        data = b""
        try:
            size = path.stat().st_size
            if size > MAX_TRANSCRIPT_BYTES:
                message = f"expected at most {MAX_TRANSCRIPT_BYTES} bytes, found {size}"
                raise InvalidTranscript([{"field": "(file)", "message": message}])
            data = path.read_bytes()
            fmt = transcript_format(path)
            meeting = info if info is not None else _sidecar_info(path)
            utterances = parse_transcript(data, fmt)
            events.append(
                meeting_touchpoint(
                    meeting, data, utterances, fmt, keywords, received_at, extra_reps
                )
            )
        except (InvalidTranscript, ValidationError, OSError) as exc:
            result.rejected += 1
            problems = exc.problems if isinstance(exc, InvalidTranscript) else []
            line = next((p["line"] for p in problems if "line" in p), 0)
            detail = str(exc) if not isinstance(exc, OSError) else f"unreadable: {exc.strerror}"
            log.warning("transcript %s rejected: %s", path.name, detail)
            await dead_letters.send(
                dead_letter(
                    f"file:{path.name}", line, "invalid_transcript", detail, data, received_at
                )
            )
        if len(events) >= batch_size:
            await sink.publish(events)
            result.published.extend(events)
            events = []
    await sink.publish(events)
    result.published.extend(events)
    return result


def _sidecar_info(path: Path) -> MeetingInfo:
    sidecar = sidecar_path(path)
    if not sidecar.exists():
        message = f"expected meeting details in {sidecar.name} (customer_id, started_at, reps)"
        raise InvalidTranscript([{"field": "(meeting)", "message": message + ", found none"}])
    return read_meeting_info(sidecar)
