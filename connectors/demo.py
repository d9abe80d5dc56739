"""Built-in demo input: a chat conversation, two drafts for the gate, and sample files
for the usage, POS, email and meeting connectors, each raising one intervention."""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp


def demo_messages(now: datetime, run: str) -> list[dict[str, Any]]:
    """Two customers: one never answers three messages, one replies in between."""

    def message(n: int, customer: str, sender: str, text: str) -> dict[str, Any]:
        return {
            "message_id": f"demo-{run}-{n}",
            "customer_id": customer,
            "sent_at": (now - timedelta(minutes=30 - n)).isoformat(),
            "sender": sender,
            "rep_id": "rep-ana",
            "text": text,
            "industry": "saas",
        }

    quiet = f"acme-{run}"
    chatty = f"globex-{run}"
    return [
        message(1, quiet, "rep", "Hi! Did the trial workspace set up fine?"),
        message(2, chatty, "rep", "Hi! Any questions about the trial?"),
        message(3, chatty, "customer", "Yes, how do SSO seats work?"),
        message(4, quiet, "rep", "Happy to walk you through the API sandbox."),
        message(5, chatty, "rep", "SSO seats are pooled per workspace."),
        message(6, quiet, "rep", "Shall I book 15 minutes tomorrow?"),
    ]


async def post_demo(url: str, attempts: int = 60) -> int:
    run = uuid.uuid4().hex[:6]
    messages = demo_messages(datetime.now(UTC), run)
    async with aiohttp.ClientSession() as session:
        for attempt in range(attempts):
            try:
                for item in messages:
                    async with session.post(f"{url}/v1/messages", json=item) as response:
                        if response.status != 202:
                            print(
                                f"demo: {response.status} {await response.text()}", file=sys.stderr
                            )
                            return 1
                break
            except aiohttp.ClientConnectionError:
                if attempt == attempts - 1:
                    raise
                await asyncio.sleep(1)
    print(
        f"demo: posted {len(messages)} chat messages for acme-{run} and globex-{run}; "
        f"expect one intervention for acme-{run}",
        flush=True,
    )
    return 0


DEMO_DRAFTS = (
    ("demo-risky", "acme", "本产品保本保息，年化收益率8%，稳赚不赔。"),
    ("demo-fine", "acme", "Thanks for your time today; I will send the proposal by Friday."),
)


async def post_drafts(url: str, attempts: int = 60) -> int:
    """Ask the compliance gate about two drafts, a risky one and a plain one; print the
    verdicts."""
    run = uuid.uuid4().hex[:6]
    async with aiohttp.ClientSession() as session:
        for attempt in range(attempts):
            try:
                async with session.get(f"{url}/readyz") as ready:
                    if ready.status == 200:
                        break
            except aiohttp.ClientConnectionError:
                pass
            if attempt == attempts - 1:
                print(f"demo: the gate at {url} is not ready", file=sys.stderr)
                return 1
            await asyncio.sleep(1)
        for draft_id, customer, text in DEMO_DRAFTS:
            body = {
                "draft_id": f"{draft_id}-{run}",
                "customer_id": f"{customer}-{run}",
                "rep_id": "rep-7",
                "text": text,
            }
            async with session.post(f"{url}/v1/drafts", json=body) as response:
                if response.status != 200:
                    print(f"demo: {response.status} {await response.text()}", file=sys.stderr)
                    return 1
                verdict = await response.json()
            terms = [
                f"{f['term']}@{f['start']}" for p in verdict["policies"] for f in p["findings"]
            ]
            print(
                f"gate: {text!r} -> {verdict['verdict']}"
                + (f" ({', '.join(terms)})" if terms else ""),
                flush=True,
            )
    return 0


def write_sample_files(directory: Path, now: datetime, run: str) -> dict[str, Path]:
    """Files in each connector's own format whose touchpoints make one example pack fire
    (times relative to ``now``, ids unique to ``run``); returns them by connector."""
    directory.mkdir(parents=True, exist_ok=True)
    hour, day = timedelta(hours=1), timedelta(days=1)

    def iso(moment: datetime) -> str:
        return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")

    usage = directory / "usage.jsonl"
    usage.write_text(
        "\n".join(
            json.dumps(line)
            for line in (
                {
                    "event_id": f"vw-{run}",
                    "type": "video_watched",
                    "customer_id": f"trial-{run}",
                    "occurred_at": iso(now - 2 * hour),
                    "plan": "trial",
                    "video": "api-troubleshooting",
                    "watched_seconds": 301,
                },
                {
                    "event_id": f"sb-{run}",
                    "type": "sandbox_error",
                    "customer_id": f"trial-{run}",
                    "occurred_at": iso(now - hour),
                    "plan": "trial",
                    "code": "E_AUTH_401",
                },
            )
        )
        + "\n",
        encoding="utf-8",
    )
    pos = directory / "pos.csv"
    pos.write_text(
        "order_id,line_id,store,member_id,product,quantity,amount,currency,sold_at,kind,"
        "drug,days_supply,chronic\n"
        f"RX-{run},1,S042,patient-{run},Amlodipine 5 mg,1,36.50,CNY,{iso(now - 26 * day)},"
        "prescription_filled,amlodipine,30,true\n",
        encoding="utf-8",
    )
    mail = directory / "quote.eml"
    sent = (now - 4 * day).astimezone(UTC)
    mail.write_text(
        f"Message-ID: <quote-{run}@mail.warroom-demo.com>\n"
        f"Date: {sent.strftime('%a, %d %b %Y %H:%M:%S +0000')}\n"
        'From: "Ana Li" <ana.li@warroom-demo.com>\n'
        f"To: Lei Wang <lei.wang@buyer-{run}.example.com>\n"
        f"Subject: Quote Q-2026-{int(run, 16) % 10000:04d} for the rollout\n"
        "MIME-Version: 1.0\n"
        "Content-Type: text/plain; charset=utf-8\n"
        "\n"
        "Hello Lei,\n\nattached is the quote for 40 seats, valid until the end of the month.\n"
        "\nBest,\nAna\n",
        encoding="utf-8",
    )
    meeting = directory / "discovery.vtt"
    lines = ["WEBVTT", ""]
    cues = [
        ("Ana Li", 0, 95, "Let me walk you through our product, it does everything you need."),
        ("Lei Wang", 95, 110, "Okay."),
        ("Ana Li", 110, 230, "Our product also has dashboards, alerts and a mobile app."),
        ("Lei Wang", 230, 250, "How much does it cost?"),
        ("Ana Li", 250, 330, "Our product is priced per seat; I will send the details."),
    ]
    for n, (speaker, start, end, text) in enumerate(cues, 1):
        lines += [str(n), f"{_vtt(start)} --> {_vtt(end)}", f"<v {speaker}>{text}", ""]
    meeting.write_text("\n".join(lines), encoding="utf-8")
    (directory / "discovery.vtt.meeting.json").write_text(
        json.dumps(
            {
                "meeting_id": f"demo-{run}",
                "customer_id": f"meet-{run}",
                "started_at": iso(now - 2 * hour),
                "reps": {"Ana Li": "rep-ana"},
            }
        ),
        encoding="utf-8",
    )
    return {"usage": usage, "pos": pos, "email": mail, "meetings": meeting}


def _vtt(seconds: int) -> str:
    return f"{seconds // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}.000"
