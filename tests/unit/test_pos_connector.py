"""The POS connector: real CSV and JSON-lines files, following, restarts, rotation, HTTP."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import given
from hypothesis import strategies as st

from connectors.pos import (
    PosDefaults,
    create_http_app,
    follower,
    read_files,
    validate_line,
)
from connectors.publisher import MemoryTouchpointSink, PublishUnavailable
from connectors.rejects import MemoryDeadLetterSink
from connectors.tailing import MAX_CSV_RECORD_LINES, PositionStore, split_csv, split_lines
from schemas.models import Channel, Direction, TouchpointEvent

DATA = Path(__file__).resolve().parents[1] / "data" / "connectors" / "pos"
RECEIVED = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
HEADER = "order_id,line_id,store,member_id,product,quantity,amount,currency,sold_at\n"


def clock() -> datetime:
    return RECEIVED


def ids(sink: MemoryTouchpointSink) -> list[str]:
    return [e.event_id for batch in sink.published for e in batch]


def events(sink: MemoryTouchpointSink) -> list[TouchpointEvent]:
    return [e for batch in sink.published for e in batch]


def csv_line(n: int, member: str = "M-1") -> str:
    return f'O-{n},1,S1,{member},"Item, no. {n}",1,{n}.50,CNY,2026-11-20T10:00:00Z\n'


class FailingSink(MemoryTouchpointSink):
    """Takes ``good`` batches, then Kafka is unavailable: like a connector that dies."""

    def __init__(self, good: int) -> None:
        super().__init__()
        self.good = good

    async def publish(self, events: Sequence[TouchpointEvent]) -> None:
        if len(self.published) >= self.good:
            raise PublishUnavailable("broker gone")
        await super().publish(events)


# --------------------------------------------------------------------------- sample files


async def test_csv_with_bom_crlf_quoted_commas_and_a_quoted_newline() -> None:
    sink, letters = MemoryTouchpointSink(), MemoryDeadLetterSink()
    counts = await read_files(
        [DATA / "store-0042.csv"], sink, letters, PosDefaults(), clock, keep_ids=True
    )
    assert ids(sink) == [
        "pos:S042/ORD-1001/1",
        "pos:S042/ORD-1001/2",
        "pos:S042/ORD-1003/1",
        "pos:S042/ORD-1006/1",
    ]
    first, second, fill, gift = events(sink)
    assert first.attributes["product"] == "Vitamin C, 1000 mg"
    assert second.attributes["product"] == 'Blood pressure monitor "Pro"'
    assert (first.customer_id, first.kind, first.channel, first.direction) == (
        "M-10086",
        "purchase",
        Channel.POS,
        Direction.INBOUND,
    )
    assert first.attributes["quantity"] == 2 and first.attributes["amount"] == 59.8
    assert first.occurred_at == datetime(2026, 11, 20, 2, 15, tzinfo=UTC)
    assert fill.kind == "prescription_filled"
    assert (fill.attributes["days_supply"], fill.attributes["chronic"]) == (30, True)
    assert gift.attributes["product"] == "Gift set\r\n(holiday edition)"
    assert gift.attributes["currency"] == "CNY"
    assert (counts.published, counts.skipped, counts.rejected) == (4, 1, 2)
    assert [(d.source_topic, d.offset, d.reason) for d in letters.letters] == [
        ("file:store-0042.csv", 6, "invalid_purchase"),
        ("file:store-0042.csv", 7, "invalid_purchase"),
    ]
    assert "line 6: quantity" in letters.letters[0].detail
    assert "found 'two'" in letters.letters[0].detail
    assert "expected a time with a timezone" in letters.letters[1].detail
    assert letters.letters[0].raw_value.startswith(b"ORD-1004,1,S042,M-20417,Hand cream,two")


async def test_a_configured_timezone_reads_times_written_without_one() -> None:
    sink = MemoryTouchpointSink()
    defaults = PosDefaults(timezone=ZoneInfo("Asia/Shanghai"))
    counts = await read_files([DATA / "store-0042.csv"], sink, MemoryDeadLetterSink(), defaults)
    syrup = next(e for e in events(sink) if e.event_id == "pos:S042/ORD-1005/1")
    assert syrup.occurred_at == datetime(2026, 11, 20, 2, 40, tzinfo=UTC)
    assert counts.rejected == 1


async def test_jsonl_prescription_fills_match_the_refill_pack_attributes() -> None:
    sink, letters = MemoryTouchpointSink(), MemoryDeadLetterSink()
    await read_files([DATA / "pharmacy.jsonl"], sink, letters, PosDefaults(), clock)
    metformin, amoxicillin, strips = events(sink)
    assert metformin.kind == "prescription_filled"
    # rules/examples/refill-due.yaml reads attributes.chronic and attributes.days_supply
    assert metformin.attributes["days_supply"] == 90 and metformin.attributes["chronic"] is True
    assert metformin.attributes["drug"] == "metformin" and metformin.attributes["amount"] == 42.0
    assert amoxicillin.attributes["chronic"] is False
    assert strips.kind == "purchase" and strips.attributes["quantity"] == 2
    assert [(d.offset, d.reason) for d in letters.letters] == [
        (4, "invalid_purchase"),
        (5, "invalid_purchase"),
    ]
    assert "expected a JSON object" in letters.letters[0].detail
    assert "needs days_supply" in letters.letters[1].detail


async def test_re_reading_a_file_gives_the_same_event_ids() -> None:
    first, second = MemoryTouchpointSink(), MemoryTouchpointSink()
    for sink in (first, second):
        await read_files(
            [DATA / "store-0042.csv", DATA / "pharmacy.jsonl"],
            sink,
            MemoryDeadLetterSink(),
            PosDefaults(),
        )
    assert ids(first) == ids(second) and len(set(ids(first))) == len(ids(first)) == 7


def test_a_member_id_never_appears_in_a_problem() -> None:
    line = {"order_id": "1", "line_id": "1", "store": "s", "member_id": "9" * 200}
    problems = validate_line(line, PosDefaults(), line=1)
    assert isinstance(problems, list)
    member = next(p for p in problems if p["field"] == "member_id")
    assert "found" not in member and "9" * 50 not in str(problems)


# --------------------------------------------------------------------------- splitting


def test_split_keeps_a_last_line_without_newline_until_final() -> None:
    data = b'a,"x\ny",1\r\nb,2\nc,3'
    records, used, lines = split_csv(data, 1, final=False)
    assert [(r.first_line, r.data) for r in records] == [(1, b'a,"x\ny",1'), (3, b"b,2")]
    assert (used, lines) == (len(data) - 3, 3)
    records, used, lines = split_csv(data, 1, final=True)
    assert records[-1].data == b"c,3" and (used, lines) == (len(data), 4)
    records, used, _ = split_lines(b'{"a": 1}\n\n{"b"', 7, final=False)
    assert [(r.first_line, r.data) for r in records] == [(7, b'{"a": 1}')] and used == 10


def test_an_unclosed_quote_is_one_bad_line_not_the_rest_of_the_file() -> None:
    lines = ['a,"open,1\n'] + [f"b{n},2\n" for n in range(MAX_CSV_RECORD_LINES + 5)]
    records, _, _ = split_csv("".join(lines).encode(), 1, final=False)
    assert records[0].problem is not None and records[0].data == b'a,"open,1'
    assert [r.data for r in records[1:3]] == [b"b0,2", b"b1,2"]
    assert records[1].first_line == 2


# --------------------------------------------------------------------------- following


async def test_a_partial_last_line_waits_until_it_is_complete(tmp_path: Path) -> None:
    path, state = tmp_path / "sales.csv", tmp_path / "sales.position"
    path.write_text(HEADER + csv_line(1) + csv_line(2)[:20])
    sink = MemoryTouchpointSink()
    follow, _ = follower(path, state, sink, MemoryDeadLetterSink(), PosDefaults(), clock)
    while await follow.step():
        pass
    assert ids(sink) == ["pos:S1/O-1/1"]
    saved = PositionStore(state).load()
    assert saved is not None and saved.offset == len(HEADER + csv_line(1)) and saved.line == 2
    with path.open("a") as out:
        out.write(csv_line(2)[20:] + csv_line(3))
    while await follow.step():
        pass
    assert ids(sink) == ["pos:S1/O-1/1", "pos:S1/O-2/1", "pos:S1/O-3/1"]
    follow.close()


async def test_a_restart_after_a_failed_publish_neither_skips_nor_repeats(tmp_path: Path) -> None:
    path, state = tmp_path / "sales.csv", tmp_path / "sales.position"
    path.write_text(HEADER + "".join(csv_line(n) for n in range(1, 41)))
    crashing = FailingSink(good=2)
    follow, _ = follower(
        path, state, crashing, MemoryDeadLetterSink(), PosDefaults(), clock, max_batch_bytes=300
    )
    with pytest.raises(PublishUnavailable):
        while await follow.step():
            pass
    follow.close()
    before = ids(crashing)
    assert 0 < len(before) < 40
    restarted = MemoryTouchpointSink()
    follow, _ = follower(
        path, state, restarted, MemoryDeadLetterSink(), PosDefaults(), clock, max_batch_bytes=300
    )
    while await follow.step():
        pass
    follow.close()
    after = ids(restarted)
    assert before + after == [f"pos:S1/O-{n}/1" for n in range(1, 41)]


async def test_a_crash_before_the_position_is_stored_repeats_only_the_same_event_ids(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, state = tmp_path / "sales.csv", tmp_path / "sales.position"
    path.write_text(HEADER + "".join(csv_line(n) for n in range(1, 21)))
    sink = MemoryTouchpointSink()
    follow, _ = follower(
        path, state, sink, MemoryDeadLetterSink(), PosDefaults(), clock, max_batch_bytes=300
    )
    assert await follow.step() and await follow.step()
    saves = 0
    original = PositionStore.save

    def crash_on_save(self: PositionStore, *args: object) -> None:
        nonlocal saves
        saves += 1
        raise OSError("killed before the position was written")

    monkeypatch.setattr(PositionStore, "save", crash_on_save)
    with pytest.raises(OSError):
        await follow.step()
    follow.close()
    monkeypatch.setattr(PositionStore, "save", original)
    follow, _ = follower(
        path, state, sink, MemoryDeadLetterSink(), PosDefaults(), clock, max_batch_bytes=300
    )
    while await follow.step():
        pass
    published = ids(sink)
    assert sorted(set(published)) == sorted(f"pos:S1/O-{n}/1" for n in range(1, 21))
    repeated = [i for i in set(published) if published.count(i) > 1]
    assert 0 < len(repeated) == len(published) - 20  # only the unsaved batch, same ids


async def test_rotation_reads_the_old_file_to_its_end_then_the_new_one(tmp_path: Path) -> None:
    path, state = tmp_path / "sales.csv", tmp_path / "sales.position"
    path.write_text(HEADER + csv_line(1))
    sink = MemoryTouchpointSink()
    follow, _ = follower(path, state, sink, MemoryDeadLetterSink(), PosDefaults(), clock)
    while await follow.step():
        pass
    os.rename(path, tmp_path / "sales.csv.1")
    with (tmp_path / "sales.csv.1").open("a") as late:  # the writer still had it open
        late.write(csv_line(2).rstrip("\n"))  # and its last line has no newline
    path.write_text(HEADER + csv_line(3))
    while await follow.step():
        pass
    follow.close()
    assert ids(sink) == ["pos:S1/O-1/1", "pos:S1/O-2/1", "pos:S1/O-3/1"]


async def test_rotation_while_stopped_finishes_the_rotated_file_first(tmp_path: Path) -> None:
    path, state = tmp_path / "sales.jsonl", tmp_path / "sales.position"
    shutil.copy(DATA / "pharmacy.jsonl", path)
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:2]))
    sink = MemoryTouchpointSink()
    follow, _ = follower(path, state, sink, MemoryDeadLetterSink(), PosDefaults(), clock)
    while await follow.step():
        pass
    follow.close()
    with path.open("ab") as more:
        more.write(lines[5])  # RX-77005 is written before the rotation
    os.rename(path, tmp_path / "sales.jsonl.1")
    path.write_bytes(lines[1].replace(b"RX-77002", b"RX-88002"))
    follow, _ = follower(path, state, sink, MemoryDeadLetterSink(), PosDefaults(), clock)
    while await follow.step():
        pass
    follow.close()
    assert ids(sink) == [
        "pos:P-SH-3/RX-77001/1",
        "pos:P-SH-3/RX-77002/1",
        "pos:P-SH-3/RX-77005/2",
        "pos:P-SH-3/RX-88002/1",
    ]


async def test_truncation_reads_the_file_again_from_its_start(tmp_path: Path) -> None:
    path, state = tmp_path / "sales.csv", tmp_path / "sales.position"
    path.write_text(HEADER + csv_line(1) + csv_line(2))
    sink = MemoryTouchpointSink()
    follow, _ = follower(path, state, sink, MemoryDeadLetterSink(), PosDefaults(), clock)
    while await follow.step():
        pass
    with path.open("r+") as out:
        out.truncate(0)
        out.write(HEADER + csv_line(7))
    while await follow.step():
        pass
    follow.close()
    assert ids(sink) == ["pos:S1/O-1/1", "pos:S1/O-2/1", "pos:S1/O-7/1"]


async def test_a_line_longer_than_a_batch_is_a_dead_letter_and_the_next_lines_go_on(
    tmp_path: Path,
) -> None:
    path = tmp_path / "sales.jsonl"
    huge = b'{"order_id": "' + b"x" * 5000 + b'"}\n'
    good = (DATA / "pharmacy.jsonl").read_bytes().splitlines(keepends=True)[0]
    path.write_bytes(good + huge + good.replace(b"RX-77001", b"RX-77009"))
    sink, letters = MemoryTouchpointSink(), MemoryDeadLetterSink()
    follow, _ = follower(path, None, sink, letters, PosDefaults(), clock, max_batch_bytes=1024)
    while await follow.step():
        pass
    follow.close()
    assert ids(sink) == ["pos:P-SH-3/RX-77001/1", "pos:P-SH-3/RX-77009/1"]
    [letter] = letters.letters
    assert (letter.offset, letter.reason) == (2, "unreadable_record")
    assert "expected a record of at most 1024 bytes" in letter.detail


# --------------------------------------------------------------------------- HTTP


@pytest.fixture
async def client() -> AsyncIterator[
    tuple[TestClient[web.Request, web.Application], MemoryTouchpointSink]
]:
    sink = MemoryTouchpointSink()
    app = create_http_app(sink, PosDefaults(currency="CNY"), clock=clock)
    async with TestClient(TestServer(app)) as test:
        yield test, sink


def purchase(n: int, **changes: object) -> dict[str, object]:
    body: dict[str, object] = {
        "order_id": f"W-{n}",
        "line_id": "1",
        "store": "web",
        "member_id": "M-1",
        "product": "Tea",
        "quantity": 1,
        "amount": 9.9,
        "occurred_at": "2026-11-20T10:00:00Z",
    }
    body.update(changes)
    return body


async def test_http_accepts_an_array_and_json_lines_and_replays_to_the_same_ids(
    client: tuple[TestClient[web.Request, web.Application], MemoryTouchpointSink],
) -> None:
    http, sink = client
    answer = await http.post("/v1/purchases", json=[purchase(1), purchase(2, member_id=None)])
    assert answer.status == 202
    assert await answer.json() == {"accepted": 1, "anonymous": 1, "event_ids": ["pos:web/W-1/1"]}
    lines = b"\n".join(orjson.dumps(purchase(n)) for n in (1, 3))
    replay = await http.post(
        "/v1/purchases", data=lines, headers={"Content-Type": "application/x-ndjson"}
    )
    assert replay.status == 202
    assert (await replay.json())["event_ids"] == ["pos:web/W-1/1", "pos:web/W-3/1"]
    assert events(sink)[0].attributes["currency"] == "CNY"  # the configured default


async def test_http_rejects_invalid_lines_with_every_problem_and_publishes_nothing(
    client: tuple[TestClient[web.Request, web.Application], MemoryTouchpointSink],
) -> None:
    http, sink = client
    answer = await http.post(
        "/v1/purchases",
        json=[purchase(1), purchase(2, quantity=0), purchase(3, kind="prescription_filled")],
    )
    assert answer.status == 422
    problems = (await answer.json())["problems"]
    assert [(p["index"], p["field"]) for p in problems] == [(1, "quantity"), (2, "(line)")]
    assert problems[0]["found"] == 0
    assert "needs drug and days_supply" in problems[1]["message"]
    assert sink.published == []
    not_json = await http.post("/v1/purchases", data=b"{nope")
    assert not_json.status == 400
    assert "expected JSON" in (await not_json.json())["problems"][0]["message"]
    bad_line = await http.post("/v1/purchases", data=b'{"a": 1}\n{nope\n')
    body = await bad_line.json()
    assert bad_line.status == 422 and body["problems"][0]["line"] == 2


async def test_reading_a_whole_file_in_small_batches_never_cuts_a_line(tmp_path: Path) -> None:
    path = tmp_path / "sales.csv"
    path.write_text(HEADER + "".join(csv_line(n) for n in range(1, 31)))
    sink, letters = MemoryTouchpointSink(), MemoryDeadLetterSink()
    follow, _ = follower(path, None, sink, letters, PosDefaults(), clock, max_batch_bytes=256)
    await follow.read_to_end()
    assert letters.letters == []
    assert ids(sink) == [f"pos:S1/O-{n}/1" for n in range(1, 31)]


async def test_a_file_truncated_and_refilled_past_the_position_is_read_from_its_start(
    tmp_path: Path,
) -> None:
    path, state = tmp_path / "sales.csv", tmp_path / "sales.position"
    path.write_text(HEADER + csv_line(1) + csv_line(2))
    sink = MemoryTouchpointSink()
    follow, _ = follower(path, state, sink, MemoryDeadLetterSink(), PosDefaults(), clock)
    while await follow.step():
        pass
    follow.close()
    with path.open("r+") as out:  # copytruncate, then the writer carries on: same inode
        out.truncate(0)
        out.write(HEADER + "".join(csv_line(n) for n in range(10, 16)))
    follow, _ = follower(path, state, sink, MemoryDeadLetterSink(), PosDefaults(), clock)
    while await follow.step():
        pass
    follow.close()
    assert ids(sink)[2:] == [f"pos:S1/O-{n}/1" for n in range(10, 16)]


async def test_a_running_follower_sees_a_refilled_file_too(tmp_path: Path) -> None:
    path = tmp_path / "sales.csv"
    path.write_text(HEADER + csv_line(1) + csv_line(2))
    sink = MemoryTouchpointSink()
    follow, _ = follower(path, None, sink, MemoryDeadLetterSink(), PosDefaults(), clock)
    while await follow.step():
        pass
    with path.open("r+") as out:
        out.truncate(0)
        out.write(HEADER + "".join(csv_line(n) for n in range(10, 16)))
    while await follow.step():
        pass
    follow.close()
    assert ids(sink)[2:] == [f"pos:S1/O-{n}/1" for n in range(10, 16)]


async def test_numeric_ids_in_json_are_read_as_text(
    client: tuple[TestClient[web.Request, web.Application], MemoryTouchpointSink],
) -> None:
    http, sink = client
    answer = await http.post(
        "/v1/purchases", json=purchase(1, order_id=20261120, line_id=2, member_id=10086)
    )
    assert answer.status == 202, await answer.text()
    [event] = events(sink)
    assert (event.event_id, event.customer_id) == ("pos:web/20261120/2", "10086")


async def test_a_quote_inside_an_unquoted_field_is_a_character_not_an_opening(
    tmp_path: Path,
) -> None:
    path = tmp_path / "sales.csv"
    tv = 'O-{n},1,S1,M-1,TV 55" stand,1,99.00,CNY,2026-11-20T10:00:00Z\n'
    path.write_text(HEADER + tv.format(n=1) + csv_line(2) + csv_line(3) + tv.format(n=4))
    sink, letters = MemoryTouchpointSink(), MemoryDeadLetterSink()
    await read_files([path], sink, letters, PosDefaults())
    assert letters.letters == []
    assert ids(sink) == [f"pos:S1/O-{n}/1" for n in range(1, 5)]
    assert events(sink)[0].attributes["product"] == 'TV 55" stand'


def test_csv_records_split_where_an_rfc_4180_reader_would() -> None:
    data = b'a,"x ""quoted"", y\nz",1\nb,5" tv,2\n"c",3\n'
    records, used, lines = split_csv(data, 1, final=False)
    assert [r.data for r in records] == [b'a,"x ""quoted"", y\nz",1', b'b,5" tv,2', b'"c",3']
    assert [r.first_line for r in records] == [1, 3, 4]
    assert (used, lines) == (len(data), 4)


@given(
    rows=st.lists(
        st.lists(st.text(alphabet='ab ,"\n\u00e9', max_size=8), min_size=1, max_size=4),
        min_size=1,
        max_size=8,
    ),
    terminator=st.sampled_from(["\n", "\r\n"]),
)
def test_csv_split_agrees_with_the_csv_module_on_any_written_rows(
    rows: list[list[str]], terminator: str
) -> None:
    import csv
    import io

    buffer = io.StringIO()
    csv.writer(buffer, lineterminator=terminator).writerows(rows)
    records, used, _ = split_csv(buffer.getvalue().encode(), 1, final=False)
    assert used == len(buffer.getvalue().encode())
    parsed = [
        next(csv.reader(io.StringIO(r.data.decode(), newline=""))) if r.data else [""]
        for r in records
    ]

    def written(row: list[str]) -> str:
        one = io.StringIO()
        csv.writer(one, lineterminator=terminator).writerow(row)
        return one.getvalue()

    expected = [row for row in rows if written(row).strip()]  # blank lines are skipped
    assert [r.problem for r in records] == [None] * len(records)
    assert parsed == expected
