"""The email connector on real message files: charsets, subjects, threads, direction,
attachments, mbox splitting, dead letters and stable event ids."""

from __future__ import annotations

import asyncio
import io
import json
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import pytest
from pydantic import ValidationError

from connectors.email import (
    CustomerBy,
    Decoded,
    EmailSettings,
    RawEmail,
    Reason,
    RejectedEmail,
    ThreadMemory,
    convert,
    decode_bytes,
    decode_header_value,
    html_to_text,
    parse_email,
    parse_subject,
    split_mbox,
    to_touchpoints,
)
from connectors.email_service import (
    EmailPublisher,
    Positioned,
    StateFileError,
    load_settings,
    load_threads,
    publish_files,
    read_file,
    save_threads,
)
from connectors.imap import (
    Cursor,
    Fetched,
    ImapSettings,
    ImapState,
    _meta,
    encode_mailbox_name,
    follow,
    read_new,
)
from connectors.publisher import (
    MemoryTouchpointSink,
    PublishUnavailable,
    UnpublishableTouchpoints,
)
from connectors.rejects import MemoryDeadLetterSink
from engine.bundle import load_bundle
from engine.reducer import apply, apply_timer
from engine.state import CustomerState
from schemas.models import Direction, TouchpointEvent

DATA = Path(__file__).resolve().parents[1] / "data" / "connectors" / "email"
RECEIVED = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
SETTINGS = EmailSettings()


def raw(name: str) -> bytes:
    return (DATA / name).read_bytes()


def touchpoints(name: str, settings: EmailSettings = SETTINGS) -> list[TouchpointEvent]:
    converted = convert([RawEmail(1, raw(name))], settings, ThreadMemory(100), RECEIVED)
    assert not converted.rejections, converted.rejections
    return converted.events


def only(name: str, settings: EmailSettings = SETTINGS) -> TouchpointEvent:
    [event] = touchpoints(name, settings)
    return event


def rejected(name: str) -> RejectedEmail:
    with pytest.raises(RejectedEmail) as caught:
        parse_email(raw(name), SETTINGS)
    return caught.value


# ------------------------------------------------------------------------- charsets


def test_a_gbk_mail_with_a_base64_subject_and_body_decodes() -> None:
    event = only("gbk_base64_reply.eml")
    assert event.kind == "email_received" and event.direction is Direction.INBOUND
    assert event.customer_id == "acme.cn"
    assert event.contact_id == "wang.lei@acme.cn"
    assert event.rep_id == "ana.li@warroom-demo.com"
    assert event.text is not None
    assert event.text.startswith("回复: 回复：报价 Q-2024-0012 [#12345]\n\n李老师您好，")
    assert "请问能否把席位增加到五十个？" in event.text
    assert "写道" not in event.text and "Hello Lei" not in event.text  # the quote is cut
    assert event.attributes["subject_normalised"] == "报价 Q-2024-0012 [#12345]"
    assert event.attributes["ticket"] == "12345"
    assert event.attributes["quote"] == "Q-2024-0012"
    assert event.attributes["is_reply"] is True
    assert "charset_fallback" not in event.attributes


def test_gb18030_quoted_printable_with_a_four_byte_character_split_between_encoded_words() -> None:
    event = only("gb18030_qp_forward.eml")
    assert event.attributes["subject_normalised"] == "关于𠮷野家门店"
    assert event.attributes["is_forward"] is True
    assert event.attributes["is_reply"] is False
    assert event.text is not None and "𠮷野家的订单号 Q-2025-0108 已确认。" in event.text


def test_big5_html_only_mail_is_stripped_to_text_and_lists_its_rfc2231_attachment() -> None:
    event = only("big5_html_forward.eml")
    assert event.text == "轉寄: FW: 報價單\n\n您好，\n\n附件為 報價單，請參閱。\n謝謝&祝好"
    assert event.attributes["is_forward"] is True
    assert event.attributes["subject_normalised"] == "報價單"
    assert event.attributes["attachment_count"] == 1
    assert event.attributes["attachment_types"] == "application/pdf"
    assert event.attributes["attachment_names"] == "報價單.pdf"
    assert event.customer_id == "formosa-trading.com.tw"


def test_utf8_mislabelled_as_gb2312_is_read_as_utf8_and_says_so() -> None:
    event = only("mislabelled_utf8_as_gb2312.eml")
    assert event.text == "答复: 合同草稿\n\n合同草稿我们看过了，没有问题。"
    assert event.attributes["charset_fallback"] == ("subject: gb2312->utf-8; body: gb2312->utf-8")


def test_an_unknown_charset_label_and_a_raw_8bit_gbk_subject_use_the_fallback_order() -> None:
    event = only("unknown_charset_raw_subject.eml")
    assert event.text == "Re: 工单 88231 已处理\n\nThanks — the fix works. 谢谢"
    assert event.attributes["ticket"] == "88231"
    assert event.attributes["charset_fallback"] == (
        "subject: none->gb18030; body: x-made-up->utf-8"
    )


def test_bytes_no_charset_decodes_are_rejected_naming_the_part() -> None:
    error = rejected("broken_charset.eml")
    assert error.reason is Reason.BAD_CHARSET
    assert "body part text/plain" in error.detail
    assert "expected text in charset utf-8" in error.detail
    assert "10 of 32 bytes" in error.detail


def test_a_few_bad_bytes_become_replacement_characters_within_the_ratio() -> None:
    data = ("价格" * 100).encode("utf-8") + b"\xff"
    decoded = decode_bytes(data, "utf-8", max_bad_ratio=0.01)
    assert decoded.text == "价格" * 100 + "\ufffd"
    assert decoded.note == "utf-8 with 1 replaced byte(s)"
    with pytest.raises(ValueError, match="1 of 601 bytes"):
        decode_bytes(data, "utf-8", max_bad_ratio=0.0)


@pytest.mark.parametrize(
    ("label", "text"),
    [("gb2312", "镕"), ("big5", "香港"), ("BIG5", "滙豐"), ("windows-1252", "naïve"), (None, "ok")],
)
def test_declared_charsets_are_read_as_their_superset(label: str | None, text: str) -> None:
    codec = {"gb2312": "gbk", "big5": "big5hkscs", "BIG5": "big5hkscs"}.get(
        label or "", label or "ascii"
    )
    assert decode_bytes(text.encode(codec), label, 0.0).text == text


def test_a_codec_that_is_not_a_text_encoding_is_treated_as_unknown() -> None:
    decoded = decode_bytes("好".encode(), "zlib", 0.0)
    assert (decoded.text, decoded.note) == ("好", "zlib->utf-8")


def test_encoded_words_adjacent_same_charset_are_joined_and_text_between_kept() -> None:
    value = "Re: =?utf-8?B?5L2g?=\r\n =?utf-8?B?5aW9?= and =?iso-8859-1?Q?caf=E9?= end"
    assert decode_header_value(value, 0.0).text == "Re: 你好 and café end"


# ------------------------------------------------------------------------- subjects


@pytest.mark.parametrize(
    ("subject", "normalised", "is_reply", "is_forward"),
    [
        ("Re: Re: RE: pricing", "pricing", True, False),
        ("Fwd: Re: pricing", "pricing", False, True),
        ("FW: pricing", "pricing", False, True),
        ("回复：答复: 转发: 价格", "价格", True, False),
        ("转发：回复: 价格", "价格", False, True),
        ("Re[2]: Re^3: AW: pricing", "pricing", True, False),
        ("[EXTERNAL] Re:  pricing   list", "pricing list", True, False),
        ("[#12345] Re: pricing", "[#12345] Re: pricing", False, False),
        ("Regarding: pricing", "Regarding: pricing", False, False),
        ("Re:", "", True, False),
    ],
)
def test_subject_prefixes_nested_in_any_language(
    subject: str, normalised: str, is_reply: bool, is_forward: bool
) -> None:
    parsed = parse_subject(subject, SETTINGS)
    assert (parsed.normalised, parsed.is_reply, parsed.is_forward) == (
        normalised,
        is_reply,
        is_forward,
    )


@pytest.mark.parametrize(
    ("subject", "ticket", "quote"),
    [
        ("Re: [#12345] login fails", "12345", None),
        ("Ticket 12345 - login fails", "12345", None),
        ("ticket #778899: invoice", "778899", None),
        ("回复: 工单号：88231 已处理", "88231", None),
        ("Quote Q-2024-0012 attached", None, "Q-2024-0012"),
        ("Re: Q-2024-0012 / [#999] follow-up", "999", "Q-2024-0012"),
        ("Order 12345 shipped", None, None),
    ],
)
def test_ticket_and_quote_numbers(subject: str, ticket: str | None, quote: str | None) -> None:
    parsed = parse_subject(subject, SETTINGS)
    assert (parsed.ticket, parsed.quote) == (ticket, quote)


def test_patterns_and_prefixes_are_configurable() -> None:
    settings = EmailSettings(
        ticket_patterns=(r"INC(\d{7})",),
        quote_patterns=(r"ANG-\d{5}",),
        reply_prefixes=("odp",),
        forward_prefixes=("pd",),
    )
    parsed = parse_subject("Odp: PD: INC0012345 ANG-00042", settings)
    assert (parsed.ticket, parsed.quote, parsed.normalised) == (
        "0012345",
        "ANG-00042",
        "INC0012345 ANG-00042",
    )
    assert parsed.is_reply and not parsed.is_forward
    assert parse_subject("Re: x", settings).normalised == "Re: x"


@pytest.mark.parametrize(
    ("patterns", "message"),
    [
        ((r"(a)\1",), "expected an RE2 pattern"),
        ((r"(?=x)y",), "expected an RE2 pattern"),
        ((r"(\d+)-(\d+)",), "expected at most one capture group"),
        (("x" * 501,), "expected a pattern of at most 500"),
    ],
)
def test_bad_patterns_are_refused_when_the_settings_are_built(
    patterns: tuple[str, ...], message: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        EmailSettings(ticket_patterns=patterns)
    [error] = caught.value.errors()
    assert error["loc"] == ("ticket_patterns",)
    assert message in error["msg"]


def test_bad_domains_are_refused_naming_the_field() -> None:
    with pytest.raises(ValidationError) as caught:
        EmailSettings(company_domains=("warroom-demo.com", "not a domain"))
    assert caught.value.errors()[0]["loc"] == ("company_domains",)
    assert "found 'not a domain'" in caught.value.errors()[0]["msg"]


# ------------------------------------------------------------------------- direction


def test_outbound_mail_makes_one_touchpoint_per_customer_with_stable_distinct_ids() -> None:
    events = touchpoints("outbound_quote.eml")
    assert [e.customer_id for e in events] == ["acme.cn"]  # two contacts, one customer
    [event] = events
    assert event.kind == "email_sent" and event.direction is Direction.OUTBOUND
    assert event.rep_id == "ana.li@warroom-demo.com"
    assert event.contact_id == "wang.lei@acme.cn"
    assert event.attributes["quote"] == "Q-2024-0012"

    by_address = EmailSettings(customer_by=CustomerBy.ADDRESS)
    events = touchpoints("outbound_quote.eml", by_address)
    assert [e.customer_id for e in events] == ["wang.lei@acme.cn", "procurement@acme.cn"]
    assert events[0].event_id == only("outbound_quote.eml").event_id
    assert events[1].event_id.startswith(events[0].event_id + "-")
    assert events[1].event_id == touchpoints("outbound_quote.eml", by_address)[1].event_id


def test_personal_mail_domains_name_the_address_and_explicit_ids_win() -> None:
    assert only("no_message_id.eml").customer_id == "li.wei@gmail.com"
    mapped = EmailSettings(customer_ids={"li.wei@gmail.com": "cust-7", "acme.cn": "cust-1"})
    assert only("no_message_id.eml", mapped).customer_id == "cust-7"
    assert only("gbk_base64_reply.eml", mapped).customer_id == "cust-1"


def test_mail_between_company_addresses_only_is_counted_not_published() -> None:
    converted = convert(
        [RawEmail(1, raw("internal_only.eml"))], SETTINGS, ThreadMemory(9), RECEIVED
    )
    assert (converted.events, converted.rejections, converted.internal) == ([], [], 1)


def test_company_subdomains_are_the_company() -> None:
    settings = EmailSettings(company_domains=("warroom-demo.com", "example.org"))
    parsed = parse_email(raw("internal_only.eml"), settings)
    assert parsed.recipients == ("bo.zhang@sales.warroom-demo.com",)
    assert to_touchpoints(parsed, ThreadMemory(9), settings, RECEIVED) == []


# ------------------------------------------------------------------------- structure


def test_plain_text_is_preferred_attachments_listed_inline_images_and_signatures_not() -> None:
    event = only("multipart_attachments.eml")
    assert event.text == (
        "[EXTERNAL] RE: Fwd: TPS reports - Ticket 4711\n\n"
        "Hi Ana,\n\nthe TPS cover sheets are attached. Café on Friday?"
    )
    assert event.attributes["attachment_count"] == 2
    assert event.attributes["attachment_names"] == "报价单-第二版.xlsx; original.eml"
    assert event.attributes["attachment_types"] == (
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet,message/rfc822"
    )
    assert event.attributes["ticket"] == "4711"
    assert event.attributes["subject_normalised"] == "TPS reports - Ticket 4711"
    assert event.occurred_at == datetime(2025, 7, 10, 21, 5, 9, tzinfo=UTC)


def test_html_to_text_drops_head_scripts_and_styles_and_decodes_entities_once() -> None:
    markup = (
        "<html><head><title>x</title><style>p{}</style></head><body>"
        "<p>A&amp;B &amp;lt;tag&amp;gt;</p><div>line<br>two</div><script>bad()</script>"
    )
    assert html_to_text(markup) == "A&B &lt;tag&gt;\n\nline\ntwo"


def test_the_body_is_bounded() -> None:
    settings = EmailSettings(body_max_chars=10)
    event = only("outbound_quote.eml", settings)
    assert event.text == "Quote Q-2024-0012 for the Acme rollout\n\nHello Lei,"


def test_a_date_nobody_can_read_is_rejected_naming_the_header() -> None:
    error = rejected("bad_date.eml")
    assert error.reason is Reason.BAD_DATE
    assert error.detail.startswith("Date: expected an RFC 5322 date")
    assert "found 'yesterday afternoon'" in error.detail


def test_an_unreadable_date_takes_the_source_date_when_there_is_one() -> None:
    imap_date = datetime(2025, 7, 14, 8, 0, tzinfo=UTC)
    converted = convert(
        [RawEmail(7, raw("bad_date.eml"), imap_date)], SETTINGS, ThreadMemory(9), RECEIVED
    )
    [event] = converted.events
    assert (event.occurred_at, event.attributes["date_fallback"]) == (imap_date, True)


def test_a_settings_file_that_is_missing_or_wrong_is_refused_naming_file_and_field(
    tmp_path: Path,
) -> None:
    with pytest.raises(ValueError, match="expected a readable settings file"):
        load_settings(tmp_path / "missing.yaml")
    path = tmp_path / "email.yaml"
    path.write_text("company_domains: [warroom-demo.com, 'bad domain']\nbody_max_chars: -1\n")
    with pytest.raises(ValueError) as caught:
        load_settings(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: company_domains: ")
    assert "found 'bad domain'" in message and "body_max_chars: " in message
    path.write_text("ticket_patterns: ['INC(\\d+)']\ncustomer_by: address\n")
    loaded = load_settings(path, company_domains=["example.org"])
    assert loaded.company_domains == ("example.org",)
    assert loaded.customer_by is CustomerBy.ADDRESS
    assert parse_subject("INC0042 down", loaded).ticket == "0042"


def test_a_message_larger_than_the_limit_is_rejected_before_parsing() -> None:
    settings = EmailSettings(max_message_bytes=1024)
    with pytest.raises(RejectedEmail) as caught:
        parse_email(raw("multipart_attachments.eml"), settings)
    assert caught.value.reason is Reason.TOO_LARGE


def test_text_that_is_not_a_message_is_rejected() -> None:
    with pytest.raises(RejectedEmail) as caught:
        parse_email(b"\x00\x01 just some bytes\n\nmore", SETTINGS)
    assert caught.value.reason is Reason.NOT_EMAIL


# ------------------------------------------------------------------------- threads


def mbox_items(data: bytes) -> list[RawEmail]:
    return [
        RawEmail(m.number, m.data, m.separator_date) for m in split_mbox(io.BytesIO(data), 10**6)
    ]


def by_event(events: Sequence[TouchpointEvent]) -> dict[str, dict[str, object]]:
    return {e.event_id: dict(e.attributes) for e in events}


def test_an_mbox_thread_gets_its_root_latencies_and_the_sender_less_message_a_reason() -> None:
    converted = convert(mbox_items(raw("thread.mbox")), SETTINGS, ThreadMemory(100), RECEIVED)
    assert [(r.position, r.reason) for r in converted.rejections] == [(4, Reason.MISSING_SENDER)]
    assert "From: expected a mail address" in converted.rejections[0].detail
    events = converted.events
    assert [e.kind for e in events] == [
        "email_sent",
        "email_received",
        "email_sent",
        "email_received",
    ]
    assert {e.attributes["thread_id"] for e in events} == {"t1@mail.warroom-demo.com"}
    assert [e.attributes.get("reply_latency_seconds") for e in events] == [
        None,
        9000.0,
        1800.0,
        7200.0,
    ]
    assert [e.attributes["is_reply"] for e in events] == [False, True, True, True]
    assert {e.attributes["ticket"] for e in events} == {"12345"}
    # message 3 has no Date header: the mbox separator line's date stands in
    assert events[2].occurred_at == datetime(2025, 7, 14, 4, 0, tzinfo=UTC)
    assert [e.attributes.get("date_fallback") for e in events] == [None, None, True, None]
    # mboxrd: ">From" lost one ">"; "From the meeting" after text did not start a message
    assert events[0].text is not None and "\nFrom our side the price" in events[0].text
    assert events[3].text is not None and events[3].text.endswith("seats stay at 40.")


def test_threads_and_latency_do_not_depend_on_the_order_within_a_batch() -> None:
    items = mbox_items(raw("thread.mbox"))
    forward = convert(items, SETTINGS, ThreadMemory(100), RECEIVED)
    backward = convert(items[::-1], SETTINGS, ThreadMemory(100), RECEIVED)
    assert by_event(forward.events) == by_event(backward.events)


def test_a_reply_whose_parent_came_in_an_earlier_batch_finds_it() -> None:
    items = mbox_items(raw("thread.mbox"))
    threads = ThreadMemory(100)
    convert(items[:1], SETTINGS, threads, RECEIVED)
    [reply] = convert(items[1:2], SETTINGS, threads, RECEIVED).events
    assert reply.attributes["reply_latency_seconds"] == 9000.0


def test_the_thread_memory_is_bounded_and_forgets_the_oldest() -> None:
    items = mbox_items(raw("thread.mbox"))
    threads = ThreadMemory(2)
    convert(items[:3], SETTINGS, threads, RECEIVED)
    assert len(threads) == 2
    [last] = convert(items[4:], SETTINGS, threads, RECEIVED).events
    assert last.attributes["reply_latency_seconds"] == 7200.0  # t3 still remembered
    [second] = convert(items[1:2], SETTINGS, ThreadMemory(1), RECEIVED).events
    assert "reply_latency_seconds" not in second.attributes  # parent never seen


def test_a_reply_dated_before_its_parent_has_no_latency() -> None:
    items = mbox_items(raw("thread.mbox"))
    early = RawEmail(
        2, items[1].data.replace(b"11:30:00 +0800", b"08:00:00 +0800"), items[1].fallback_date
    )
    [_, reply] = convert([items[0], early], SETTINGS, ThreadMemory(9), RECEIVED).events
    assert "reply_latency_seconds" not in reply.attributes


def test_mbox_separators_need_a_blank_line_before_and_a_date() -> None:
    data = (
        b"From a@acme.cn Mon Jul 14 01:00:00 2025\nFrom: a@acme.cn\nDate: Mon, 14 Jul 2025"
        b" 01:00:00 +0000\n\nbody\nFrom here on, no new message\n\nFrom me to you\n\n"
        b">>From stays quoted once\n\nFrom b@acme.cn Mon Jul 14 02:00:00 2025\r\n"
        b"From: b@acme.cn\r\n\r\nsecond\r\n"
    )
    found = list(split_mbox(io.BytesIO(data), 10**6))
    assert [(m.number, m.offset) for m in found] == [(1, 0), (2, data.index(b"From b@"))]
    assert found[0].data.endswith(
        b"body\nFrom here on, no new message\n\nFrom me to you\n\n>From stays quoted once\n"
    )
    assert found[1].data == b"From: b@acme.cn\r\n\r\nsecond\r\n"
    assert found[1].separator_date == datetime(2025, 7, 14, 2, 0, tzinfo=UTC)


def test_a_too_large_mbox_message_keeps_its_head_and_the_next_one_still_reads() -> None:
    big = b"x" * 5000 + b"\n"
    data = (
        b"From a@acme.cn Mon Jul 14 01:00:00 2025\nFrom: a@acme.cn\n\n" + big * 3 + b"\n"
        b"From b@acme.cn Mon Jul 14 02:00:00 2025\nFrom: b@acme.cn\n\nsmall\n"
    )
    first, second = split_mbox(io.BytesIO(data), 8000)
    size = data.index(b"From b@") - data.index(b"From: a@")
    assert (first.complete, first.size, len(first.data) <= 8000) == (False, size, True)
    assert first.data.startswith(b"From: a@acme.cn")
    assert (second.complete, second.data) == (True, b"From: b@acme.cn\n\nsmall\n")


# ------------------------------------------------------------------------- files


async def test_re_reading_the_same_files_gives_identical_event_ids(tmp_path: Path) -> None:
    files = [*sorted(DATA.glob("*.eml")), DATA / "thread.mbox"]

    async def read_all() -> tuple[list[str], MemoryDeadLetterSink]:
        sink, letters = MemoryTouchpointSink(), MemoryDeadLetterSink()
        publisher = EmailPublisher(SETTINGS, sink, letters, clock=lambda: RECEIVED)
        await publish_files(files, publisher, batch_size=3)
        return [e.event_id for batch in sink.published for e in batch], letters

    first, letters = await read_all()
    second, _ = await read_all()
    assert first == second
    assert len(first) == len(set(first)) == 14
    assert {(letter.source_topic, letter.offset, letter.reason) for letter in letters.letters} == {
        ("file:bad_date.eml", 1, "bad_date"),
        ("file:broken_charset.eml", 1, "bad_charset"),
        ("file:thread.mbox", 4, "missing_sender"),
    }
    mbox_letter = next(x for x in letters.letters if x.source_topic == "file:thread.mbox")
    assert mbox_letter.detail.startswith("message 4 at byte ")
    assert mbox_letter.raw_value.startswith(b"Subject: delivery report without a sender")


async def test_counts_say_what_happened_to_every_message() -> None:
    sink, letters = MemoryTouchpointSink(), MemoryDeadLetterSink()
    publisher = EmailPublisher(SETTINGS, sink, letters, clock=lambda: RECEIVED)
    counts = await publish_files(
        [DATA / "thread.mbox", DATA / "internal_only.eml", DATA / "outbound_quote.eml"],
        publisher,
    )
    assert dict(counts) == {
        "read": 7,
        "touchpoints": 5,
        "missing_sender": 1,
        "internal": 1,
    }


class RefusingSink(MemoryTouchpointSink):
    """Refuses touchpoints of one customer as Kafka refuses a record over its limit."""

    def __init__(self, customer: str) -> None:
        super().__init__()
        self.customer = customer

    async def publish(self, events: Sequence[TouchpointEvent]) -> None:
        bad = [e.event_id for e in events if e.customer_id == self.customer]
        if bad:
            raise UnpublishableTouchpoints(
                [{"event_id": e, "message": "expected at most 10 bytes, found 11"} for e in bad]
            )
        await super().publish(events)


async def test_a_touchpoint_kafka_refuses_is_a_dead_letter_and_the_rest_publish() -> None:
    sink, letters = RefusingSink("initech.com"), MemoryDeadLetterSink()
    publisher = EmailPublisher(SETTINGS, sink, letters, clock=lambda: RECEIVED)
    items = [raw("gbk_base64_reply.eml"), raw("multipart_attachments.eml")]
    batch = [Positioned("file:x.mbox", RawEmail(n, d), f"message {n}") for n, d in enumerate(items)]
    await publisher.publish(batch)
    assert [[e.customer_id for e in b] for b in sink.published] == [["acme.cn"]]
    [letter] = letters.letters
    assert (letter.source_topic, letter.offset, letter.reason) == (
        "file:x.mbox",
        1,
        "unpublishable",
    )
    assert letter.detail == (
        "message 1: expected a touchpoint Kafka takes, found: expected at most 10 bytes, found 11"
    )
    assert letter.raw_value == items[1]
    assert publisher.counts["unpublishable"] == 1 and publisher.counts["touchpoints"] == 1


def test_an_eml_file_larger_than_the_limit_is_one_too_large_message(tmp_path: Path) -> None:
    path = tmp_path / "big.eml"
    path.write_bytes(raw("outbound_quote.eml") + b"z" * 5000)
    settings = EmailSettings(max_message_bytes=2048)
    [found] = read_file(path, settings)
    assert found.item.size == path.stat().st_size
    converted = convert([found.item], settings, ThreadMemory(9), RECEIVED)
    assert [(r.reason, r.detail) for r in converted.rejections] == [
        (Reason.TOO_LARGE, f"expected at most 2048 bytes, found {path.stat().st_size}")
    ]


# ------------------------------------------------------------------------- IMAP


class FakeMailboxes:
    """An in-memory IMAP server: mailboxes of (UIDVALIDITY, {uid: message})."""

    def __init__(self) -> None:
        self.boxes: dict[str, tuple[int, dict[int, bytes]]] = {}
        self.connections = 0
        self.closed = 0
        self.fetches: list[list[int]] = []

    def append(self, mailbox: str, data: bytes) -> int:
        _, messages = self.boxes.setdefault(mailbox, (1000 + len(self.boxes), {}))
        uid = max(messages, default=0) + 1
        messages[uid] = data
        return uid

    def recreate(self, mailbox: str) -> None:
        validity, messages = self.boxes[mailbox]
        self.boxes[mailbox] = (validity + 1, dict(enumerate(messages.values(), start=1)))

    def connect(self) -> FakeClient:
        self.connections += 1
        return FakeClient(self)


class FakeClient:
    def __init__(self, server: FakeMailboxes) -> None:
        self.server = server
        self.selected = ""

    def select(self, mailbox: str) -> int:
        self.selected = mailbox
        self.server.boxes.setdefault(mailbox, (2000, {}))
        return self.server.boxes[mailbox][0]

    def uids_after(self, last_uid: int) -> list[int]:
        return sorted(u for u in self.server.boxes[self.selected][1] if u > last_uid)

    def fetch(self, uids: Sequence[int], max_bytes: int) -> list[Fetched]:
        self.server.fetches.append(list(uids))
        messages = self.server.boxes[self.selected][1]
        return [
            Fetched(
                u,
                messages[u][:max_bytes],
                RECEIVED,
                len(messages[u]),
                len(messages[u]) <= max_bytes,
            )
            for u in uids
            if u in messages
        ]

    def close(self) -> None:
        self.server.closed += 1


def imap_settings(tmp_path: Path, **changes: object) -> ImapSettings:
    fields: dict[str, object] = {
        "host": "imap.example",
        "username": "sales",
        "password": "secret",
        "mailboxes": ("INBOX", "已发送"),
        "state_file": tmp_path / "imap-state.json",
        "fetch_batch": 2,
    }
    fields.update(changes)
    return ImapSettings(**fields)  # type: ignore[arg-type]


def thread_messages() -> list[bytes]:
    return [item.data for item in mbox_items(raw("thread.mbox"))]


async def imap_run(
    settings: ImapSettings, server: FakeMailboxes, stop: asyncio.Event | None = None
) -> tuple[list[str], MemoryDeadLetterSink, Counter[str]]:
    sink, letters = MemoryTouchpointSink(), MemoryDeadLetterSink()
    publisher = EmailPublisher(SETTINGS, sink, letters, clock=lambda: RECEIVED)
    state = ImapState.load(settings.state_file)
    counts = await read_new(settings, server.connect, publisher, state, stop)
    return [e.event_id for batch in sink.published for e in batch], letters, counts


async def test_imap_resumes_after_the_last_published_uid_per_mailbox(tmp_path: Path) -> None:
    server = FakeMailboxes()
    first, second, third, fourth, fifth = thread_messages()
    for data in (first, second, third):
        server.append("INBOX", data)
    server.append("已发送", fifth)
    settings = imap_settings(tmp_path)
    ids, _, _ = await imap_run(settings, server)
    assert len(ids) == 4 and server.fetches == [[1, 2], [3], [1]]
    saved = json.loads(settings.state_file.read_text())
    assert saved["mailboxes"] == {
        "sales@imap.example:993/INBOX": {"uidvalidity": 1000, "last_uid": 3},
        "sales@imap.example:993/已发送": {"uidvalidity": 1001, "last_uid": 1},
    }
    again, _, counts = await imap_run(settings, server)
    assert again == [] and counts["read"] == 0  # nothing new: nothing repeated
    server.append("INBOX", fourth)  # the sender-less message: a dead letter, not a gap
    server.append("INBOX", first.replace(b"<t1@", b"<t9@"))
    more, letters, counts = await imap_run(settings, server)
    assert len(more) == 1 and counts["missing_sender"] == 1
    [letter] = letters.letters
    assert (letter.source_topic, letter.offset) == ("imap:imap.example/INBOX", 4)
    assert letter.detail.startswith("uid 4: From: expected a mail address")
    assert server.connections == server.closed == 3


async def test_a_new_uidvalidity_reads_the_mailbox_again_with_the_same_event_ids(
    tmp_path: Path,
) -> None:
    server = FakeMailboxes()
    for data in thread_messages()[:3]:
        server.append("INBOX", data)
    settings = imap_settings(tmp_path, mailboxes=("INBOX",))
    first, _, _ = await imap_run(settings, server)
    server.recreate("INBOX")
    again, _, counts = await imap_run(settings, server)
    assert again == first and counts["uidvalidity_changed"] == 1
    state = ImapState.load(settings.state_file)
    assert state.cursors["sales@imap.example:993/INBOX"] == Cursor(1001, 3)


async def test_a_stop_ends_reading_after_a_saved_batch_and_the_rest_follows_later(
    tmp_path: Path,
) -> None:
    server = FakeMailboxes()
    for data in thread_messages():
        server.append("INBOX", data)
    settings = imap_settings(tmp_path, mailboxes=("INBOX",))
    stop = asyncio.Event()
    stop.set()
    first, _, _ = await imap_run(settings, server, stop)
    assert ImapState.load(settings.state_file).cursors[settings.key("INBOX")].last_uid == 2
    rest, _, _ = await imap_run(settings, server)
    assert len(first) == 2 and len(rest) == 2 and not set(first) & set(rest)


async def test_a_failed_publish_leaves_the_state_where_it_was(tmp_path: Path) -> None:
    class Unavailable(MemoryTouchpointSink):
        async def publish(self, events: Sequence[TouchpointEvent]) -> None:
            raise PublishUnavailable("not published: broker down; retry")

    server = FakeMailboxes()
    for data in thread_messages()[:3]:
        server.append("INBOX", data)
    settings = imap_settings(tmp_path, mailboxes=("INBOX",), fetch_batch=10)
    publisher = EmailPublisher(SETTINGS, Unavailable(), MemoryDeadLetterSink())
    with pytest.raises(PublishUnavailable):
        await read_new(settings, server.connect, publisher, ImapState(settings.state_file))
    assert not settings.state_file.exists() and server.closed == 1


async def test_a_message_over_the_size_limit_is_fetched_as_its_head_and_rejected(
    tmp_path: Path,
) -> None:
    server = FakeMailboxes()
    server.append("INBOX", raw("multipart_attachments.eml"))
    sink, letters = MemoryTouchpointSink(), MemoryDeadLetterSink()
    publisher = EmailPublisher(EmailSettings(max_message_bytes=1024), sink, letters)
    settings = imap_settings(tmp_path, mailboxes=("INBOX",))
    await read_new(settings, server.connect, publisher, ImapState(settings.state_file))
    [letter] = letters.letters
    assert letter.reason == "too_large" and len(letter.raw_value) == 1024
    assert (
        letter.detail
        == f"uid 1: expected at most 1024 bytes, found {len(raw('multipart_attachments.eml'))}"
    )


def test_a_damaged_state_file_is_refused_saying_what_was_expected(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_text('{"version": 1, "mailboxes": {"k": {"uidvalidity": "x"}}}')
    with pytest.raises(StateFileError, match="expected an IMAP state file"):
        ImapState.load(path)


@pytest.mark.parametrize(
    ("name", "encoded"),
    [
        ("INBOX", '"INBOX"'),
        ("已发送", '"&XfJT0ZAB-"'),
        ("Entwürfe", '"Entw&APw-rfe"'),
        ('A&B "x"', '"A&-B \\"x\\""'),
        ("~peter/mail/台北/日本語", '"~peter/mail/&U,BTFw-/&ZeVnLIqe-"'),
    ],
)
def test_mailbox_names_are_modified_utf7_and_quoted(name: str, encoded: str) -> None:
    assert encode_mailbox_name(name) == encoded


def test_fetch_metadata_is_read_from_the_server_answer() -> None:
    line = b'12 (UID 4711 RFC822.SIZE 2048 INTERNALDATE "02-Dec-2026 13:09:51 +0800")'
    assert _meta(line) == (4711, 2048, datetime(2026, 12, 2, 5, 9, 51, tzinfo=UTC))


# ------------------------------------------------------------------------- the rule pack

PACK = Path(__file__).resolve().parents[2] / "rules" / "examples" / "email-follow-up.yaml"


def mail(number: int, sender: str, to: str, subject: str, sent: datetime) -> RawEmail:
    data = (
        f"Message-ID: <pack-{number}@example.com>\r\nDate: {format_datetime(sent)}\r\n"
        f"From: {sender}\r\nTo: {to}\r\nSubject: {subject}\r\n\r\nbody\r\n"
    ).encode()
    return RawEmail(number, data)


def run_pack(items: list[RawEmail], until: datetime) -> list[tuple[str, str]]:
    """Rule ids and customers the email-follow-up pack fires for, touchpoint by touchpoint,
    then at ``until`` (a deadline tick)."""
    bundle = load_bundle(PACK.read_text(encoding="utf-8"), str(PACK))
    converted = convert(items, SETTINGS, ThreadMemory(100), RECEIVED)
    assert not converted.rejections
    states: dict[str, CustomerState] = {}
    fired: list[tuple[str, str]] = []
    for event in sorted(converted.events, key=lambda e: e.occurred_at):
        state, decisions = apply(states.get(event.customer_id), event, until, bundle.rules)
        states[event.customer_id] = state
        fired.extend((d.intervention.rule_id, event.customer_id) for d in decisions)
    for customer, state in states.items():
        _, decisions = apply_timer(state, until, until, bundle.rules)
        fired.extend((d.intervention.rule_id, customer) for d in decisions)
    return fired


def test_the_email_pack_calls_about_an_unanswered_quote_but_not_an_answered_one() -> None:
    t0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
    rep = "ana.li@warroom-demo.com"
    quotes = [
        mail(1, rep, "li@acme.cn", "Quote Q-2026-0001", t0),
        mail(2, rep, "bo@globex.com", "Quote Q-2026-0002", t0),
        mail(3, "bo@globex.com", rep, "Re: Quote Q-2026-0002", t0 + timedelta(days=2)),
        mail(4, rep, "ed@initech.com", "Lunch next week?", t0),  # no quote number
    ]
    assert run_pack(quotes, t0 + timedelta(days=4)) == [("email.quote-unanswered-3d", "acme.cn")]
    assert run_pack(quotes, t0 + timedelta(days=2, hours=23)) == []


def test_the_email_pack_alerts_on_the_third_ticket_mail_in_a_week() -> None:
    t0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
    rep = "ana.li@warroom-demo.com"
    tickets = [
        mail(n, "it@acme.cn", rep, f"Re: [#4711] export fails ({n})", t0 + timedelta(days=n))
        for n in (1, 3, 5)
    ]
    # globex writes three times too, but over eight days: never three within a week
    spread = [(7, 0), (8, 4), (9, 8)]
    tickets += [
        mail(n, "it@globex.com", rep, "[#9901] slow", t0 + timedelta(days=day)) for n, day in spread
    ]
    assert run_pack(tickets, t0 + timedelta(days=30)) == [("email.ticket-mail-repeated", "acme.cn")]
    spread[2] = (9, 6)
    closer = tickets[:3] + [
        mail(n, "it@globex.com", rep, "[#9901] slow", t0 + timedelta(days=day)) for n, day in spread
    ]
    assert sorted(run_pack(closer, t0 + timedelta(days=30))) == [
        ("email.ticket-mail-repeated", "acme.cn"),
        ("email.ticket-mail-repeated", "globex.com"),
    ]


def test_a_truncated_base64_body_decodes_its_complete_part_instead_of_showing_base64() -> None:
    event = only("truncated_base64.eml")
    assert event.text is not None
    assert event.text.startswith("contract\n\n王经理您好，合同第三页的付款条款需要修改")
    assert "5" not in event.text.split("\n\n", 1)[1][:10]  # no base64 letters
    assert event.attributes["charset_fallback"] == "body: incomplete base64, 1 character(s) dropped"


@pytest.mark.parametrize(
    ("data", "label", "text", "note"),
    [
        (
            "价格表".encode("gbk")[:-1],
            "gbk",
            "价格",
            "gbk, 1 trailing byte(s) of a cut character dropped",
        ),
        (
            "价格表".encode()[:-2],
            "utf-8",
            "价格",
            "utf-8, 1 trailing byte(s) of a cut character dropped",
        ),
        (
            "价格表".encode() + b"\xff" + "。".encode() * 200,
            "gbk",
            "价格表\ufffd" + "。" * 200,
            "gbk->utf-8 with 1 replaced byte(s)",
        ),
        (
            "价格表".encode("gbk") + b"\xff" + "。".encode("gbk") * 200,
            "gbk",
            "价格表\ufffd" + "。" * 200,
            "gbk with 1 replaced byte(s)",
        ),
    ],
)
def test_cut_characters_and_stray_bytes_keep_the_right_charset(
    data: bytes, label: str, text: str, note: str
) -> None:
    assert decode_bytes(data, label, 0.01) == Decoded(text, note)


def test_addresses_come_from_the_header_not_from_encoded_display_names() -> None:
    # The sender's display name is "sales@acme-partner.cn (Li, Lei)" once decoded
    parsed = parse_email(raw("display_name_with_address.eml"), SETTINGS)
    assert parsed.sender == "li.lei@acme.cn"
    assert parsed.recipients == ("ana.li@warroom-demo.com", "bo.zhang@warroom-demo.com")
    event = only("display_name_with_address.eml")
    assert (event.customer_id, event.contact_id) == ("acme.cn", "li.lei@acme.cn")


async def test_following_retries_a_failed_poll_and_picks_up_new_mail(tmp_path: Path) -> None:
    server = FakeMailboxes()
    first, second, *_ = thread_messages()
    server.append("INBOX", first)
    stop = asyncio.Event()
    calls = 0

    def connect() -> FakeClient:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise OSError("connection refused")
        if calls == 3:  # new mail arrives; this is the last poll
            server.append("INBOX", second)
            stop.set()
        return server.connect()

    sink = MemoryTouchpointSink()
    publisher = EmailPublisher(SETTINGS, sink, MemoryDeadLetterSink(), clock=lambda: RECEIVED)
    settings = imap_settings(tmp_path, mailboxes=("INBOX",), poll_seconds=0.001)
    counts = await follow(settings, connect, publisher, ImapState(settings.state_file), stop)
    assert [[e.kind for e in batch] for batch in sink.published] == [
        ["email_sent"],
        ["email_received"],
    ]
    assert (counts["poll_failed"], counts["touchpoints"], calls) == (1, 2, 3)


def test_the_command_refuses_missing_files_and_wrong_settings_before_connecting(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from streams.cli import main

    assert main(["email", "read", str(tmp_path / "nothere.eml"), str(DATA / "thread.mbox")]) == 2
    assert capsys.readouterr().err == (
        f"warroom email: expected readable .eml or mbox files, found none at "
        f"{tmp_path / 'nothere.eml'}\n"
    )
    assert main(["email", "read", "--company-domain", "no domain", str(DATA / "thread.mbox")]) == 2
    assert "company_domains: " in capsys.readouterr().err


@pytest.mark.parametrize(
    "separator",
    [
        b"From 1837263@xxx Mon Jul 14 01:00:00 +0000 2025",  # Gmail Takeout
        b"From - Mon Jul 14 01:00:00 2025",  # Thunderbird
        b"From MAILER-DAEMON Mon Jul 14 09:00:00 +0800 2025",
        b"From ana@warroom-demo.com  Mon Jul 14 01:00:00 2025",  # two spaces (mutt)
    ],
)
def test_separator_dates_of_common_mbox_writers(separator: bytes) -> None:
    data = separator + b"\nFrom: a@acme.cn\n\nbody\n"
    [found] = split_mbox(io.BytesIO(data), 10**6)
    assert found.separator_date == datetime(2025, 7, 14, 1, 0, tzinfo=UTC)


async def test_the_thread_memory_can_be_kept_between_runs(tmp_path: Path) -> None:
    items = mbox_items(raw("thread.mbox"))
    path = tmp_path / "threads.jsonl"
    earlier = ThreadMemory(100)
    convert(items[:3], SETTINGS, earlier, RECEIVED)
    save_threads(path, earlier)
    later = ThreadMemory(2)
    assert load_threads(path, later) == 3 and len(later) == 2  # the oldest is forgotten
    assert later.entries() == earlier.entries()[1:]
    [reply] = convert(items[4:], SETTINGS, later, RECEIVED).events
    assert reply.attributes["reply_latency_seconds"] == 7200.0
    assert reply.attributes["thread_id"] == "t1@mail.warroom-demo.com"


def test_a_damaged_thread_file_is_refused_naming_the_line(tmp_path: Path) -> None:
    path = tmp_path / "threads.jsonl"
    path.write_text('["a@x", "a@x", "2025-07-14T01:00:00+00:00"]\n["b@x", "a@x", "2025-07-14"]\n')
    with pytest.raises(StateFileError, match=r"threads.jsonl:2: expected \[message id"):
        load_threads(path, ThreadMemory(9))
