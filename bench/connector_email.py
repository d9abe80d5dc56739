"""Email connector without a broker: how fast raw messages become encoded touchpoint
records.

    .venv/bin/python bench/connector_email.py --messages 20000

Builds an mbox of ``--messages`` messages from the sample files in
``tests/data/connectors/email`` (each copy with its own Message-ID, so thread memory
and event ids work as on real mail: plain ASCII, GBK base64, GB18030 quoted-printable,
Big5 HTML, multipart with attachments, a thread), then times, in one process:

- split: ``split_mbox`` over the file's bytes;
- parse + convert: ``convert`` in batches of ``--batch`` (MIME parsing, charset
  decoding, subjects, threads, touchpoints);
- encode: ``envelopes`` of each batch (Avro, grouped by partition as the publisher
  writes them).

Prints messages/s for each stage and for the whole path.
"""

from __future__ import annotations

import argparse
import io
import re
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from connectors.email import (  # noqa: E402
    EmailSettings,
    RawEmail,
    ThreadMemory,
    convert,
    split_mbox,
)
from connectors.publisher import envelopes  # noqa: E402

DATA = REPO / "tests" / "data" / "connectors" / "email"
SAMPLES = (
    "outbound_quote.eml",
    "gbk_base64_reply.eml",
    "gb18030_qp_forward.eml",
    "big5_html_forward.eml",
    "multipart_attachments.eml",
    "mislabelled_utf8_as_gb2312.eml",
    "unknown_charset_raw_subject.eml",
)
_ID = re.compile(rb"^(Message-ID: <)", re.MULTILINE | re.IGNORECASE)


def build_mbox(count: int) -> bytes:
    thread = (DATA / "thread.mbox").read_bytes()
    thread_messages = [m.data for m in split_mbox(io.BytesIO(thread), 10**7)]
    bodies = [(DATA / name).read_bytes().replace(b"\r\n", b"\n") for name in SAMPLES]
    bodies += [m for m in thread_messages if b"Message-ID" in m]
    out = io.BytesIO()
    for number in range(count):
        body = _ID.sub(rb"\1n%d." % number, bodies[number % len(bodies)], count=1)
        body = re.sub(rb"^From ", b">From ", body, flags=re.MULTILINE)
        out.write(b"From sender@example.com Mon Jul 14 01:00:00 2025\n")
        out.write(body if body.endswith(b"\n") else body + b"\n")
        out.write(b"\n")
    return out.getvalue()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=200)
    parser.add_argument("--partitions", type=int, default=12)
    args = parser.parse_args()
    data = build_mbox(args.messages)
    settings = EmailSettings()
    received = datetime.now(UTC)

    started = time.perf_counter()
    messages = [
        RawEmail(m.number, m.data, m.separator_date)
        for m in split_mbox(io.BytesIO(data), settings.max_message_bytes)
    ]
    split_seconds = time.perf_counter() - started

    threads = ThreadMemory(settings.thread_memory)
    convert_seconds = encode_seconds = 0.0
    events = rejected = records = 0
    for start in range(0, len(messages), args.batch):
        batch = messages[start : start + args.batch]
        began = time.perf_counter()
        converted = convert(batch, settings, threads, received)
        converted_at = time.perf_counter()
        records += len(envelopes(converted.events, args.partitions))
        encode_seconds += time.perf_counter() - converted_at
        convert_seconds += converted_at - began
        events += len(converted.events)
        rejected += len(converted.rejections)

    total = split_seconds + convert_seconds + encode_seconds
    count = len(messages)
    print(f"{count} messages, {len(data) / 1e6:.1f} MB mbox -> {events} touchpoints "
          f"in {records} records, {rejected} rejected")  # fmt: skip
    print(f"split mbox      {count / split_seconds:>10,.0f} messages/s")
    print(f"parse + convert {count / convert_seconds:>10,.0f} messages/s")
    print(f"encode          {events / encode_seconds:>10,.0f} touchpoints/s")
    print(f"whole path      {count / total:>10,.0f} messages/s ({total:.2f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
