"""Throughput of the meetings, POS and product-usage connectors: parse + convert + Avro
encode (the records the Kafka sink would send), no broker.

    .venv/bin/python bench/connector_files.py [--lines 50000]

Each figure is the best of three runs over generated input in the real formats; the
in-memory sink encodes every batch exactly as the Kafka sink does before sending.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from connectors.meetings import (
    DEFAULT_KEYWORDS,
    KeywordGroups,
    MeetingInfo,
    meeting_touchpoint,
    parse_transcript,
)
from connectors.pos import PosDefaults, read_files
from connectors.publisher import MemoryTouchpointSink
from connectors.rejects import MemoryDeadLetterSink
from connectors.sentiment import LexiconSentiment
from connectors.usage import read_files as read_usage

START = datetime(2026, 11, 1, tzinfo=UTC)
ENGLISH = [
    "The sandbox keeps rejecting my token, this is frustrating.",
    "Thanks, that fixed it! Great support.",
    "Where do I find the export settings?",
]
CHINESE = ["沙箱一直报错，太失望了", "问题解决了，谢谢你们的帮助！", "导出设置在哪里？"]


def pos_csv(path: Path, lines: int) -> None:
    rng = random.Random(1)
    with path.open("w", encoding="utf-8-sig", newline="") as out:
        out.write("order_id,line_id,store,member_id,product,quantity,amount,currency,sold_at\r\n")
        for n in range(lines):
            at = (START + timedelta(seconds=n)).isoformat()
            out.write(
                f"O-{n // 3},{n % 3 + 1},S{rng.randrange(50)},M-{rng.randrange(100_000)},"
                f'"Tea, green {n % 40}",{rng.randrange(1, 5)},{rng.randrange(100, 9999) / 100},'
                f"CNY,{at}\r\n"
            )


def usage_jsonl(path: Path, lines: int, texts: list[str] | None) -> None:
    import orjson

    with path.open("wb") as out:
        for n in range(lines):
            event: dict[str, object] = {
                "event_id": f"e{n}",
                "customer_id": f"c{n % 5000}",
                "occurred_at": (START + timedelta(seconds=n)).isoformat(),
                "plan": "trial",
            }
            if texts is None:
                event |= {"type": "video_watched", "video": "api", "watched_seconds": n % 600}
            else:
                event |= {"type": "support_chat", "text": texts[n % len(texts)]}
            out.write(orjson.dumps(event) + b"\n")


def transcript(utterances: int) -> bytes:
    cues = ["WEBVTT", ""]
    for n in range(utterances):
        start, end = n * 4.0, n * 4.0 + 4.5
        who = "Li Wei" if n % 3 == 0 else "Dana Chen"
        text = "What does your team use today?" if who == "Li Wei" else "We use spreadsheets."
        cues += [f"{_ts(start)} --> {_ts(end)}", f"<v {who}>{text}", ""]
    return "\n".join(cues).encode()


def _ts(seconds: float) -> str:
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{int(h):02d}:{int(m):02d}:{s:06.3f}"


def best(runs: int, work: Callable[[], Coroutine[Any, Any, int]]) -> tuple[int, float]:
    times = []
    count = 0
    for _ in range(runs):
        began = time.perf_counter()
        count = asyncio.run(work())
        times.append(time.perf_counter() - began)
    return count, min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--lines", type=int, default=50_000)
    parser.add_argument("--chat-lines", type=int, default=3_000)
    parser.add_argument("--tmp", type=Path, default=Path("/tmp"))
    args = parser.parse_args()
    sentiment = LexiconSentiment()
    loading = time.perf_counter()
    sentiment.warm_up()
    print(f"sentiment models loaded in {time.perf_counter() - loading:.2f} s")
    csv_path = args.tmp / "bench-pos.csv"
    pos_csv(csv_path, args.lines)
    video_path = args.tmp / "bench-usage-video.jsonl"
    usage_jsonl(video_path, args.lines, None)
    english_path = args.tmp / "bench-usage-en.jsonl"
    usage_jsonl(english_path, args.chat_lines, ENGLISH)
    chinese_path = args.tmp / "bench-usage-zh.jsonl"
    usage_jsonl(chinese_path, args.chat_lines, CHINESE)

    async def pos() -> int:
        counts = await read_files(
            [csv_path], MemoryTouchpointSink(), MemoryDeadLetterSink(), PosDefaults()
        )
        return counts.published

    def usage(path: Path) -> Callable[[], Coroutine[Any, Any, int]]:
        async def run() -> int:
            counts = await read_usage(
                [path], MemoryTouchpointSink(), MemoryDeadLetterSink(), sentiment
            )
            return counts.published

        return run

    data = transcript(600)  # a 40-minute meeting
    info = MeetingInfo(customer_id="acme", started_at=START)
    keywords = KeywordGroups(DEFAULT_KEYWORDS)

    async def meetings() -> int:
        sink = MemoryTouchpointSink()
        for _ in range(200):
            event = meeting_touchpoint(
                info, data, parse_transcript(data, "webvtt"), "webvtt", keywords, START
            )
            await sink.publish([event])
        return 200

    rows = [
        ("POS CSV lines (BOM, quoted commas, CRLF)", *best(3, pos)),
        ("usage video_watched JSON lines", *best(3, usage(video_path))),
        ("usage support_chat, English (VADER)", *best(3, usage(english_path))),
        ("usage support_chat, Chinese (SnowNLP)", *best(3, usage(chinese_path))),
        ("meeting transcripts (WebVTT, 600 cues each)", *best(3, meetings)),
    ]
    print(f"{'input':48} {'events':>8} {'seconds':>8} {'events/s':>10}")
    for name, count, seconds in rows:
        print(f"{name:48} {count:>8} {seconds:>8.2f} {count / seconds:>10,.0f}")
    for path in (csv_path, video_path, english_path, chinese_path):
        path.unlink()


if __name__ == "__main__":
    main()
