"""The audit trail's hash chains: every kind of tampering is named at the right record."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine import (
    AuditVerifier,
    BreakKind,
    ChainHead,
    InvalidAuditEntry,
    VerifyReport,
    append,
    genesis,
    verify,
)

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
Record = tuple[int, int, bytes | None]


def build(chain: int, count: int, start_offset: int = 0) -> tuple[list[Record], ChainHead]:
    """``count`` chained records of ``chain`` as read from partition ``chain``."""
    head = genesis(chain)
    records: list[Record] = []
    for n in range(count):
        entry = {"event": "verdict", "customer_id": f"c{n % 3}", "n": n, "terms": ["保本"]}
        value, head = append(head, chain, entry, T0 + timedelta(seconds=n))
        records.append((chain, start_offset + n, value))
    return records, head


def renumber(records: list[Record]) -> list[Record]:
    """The records as a topic would hold them after the tampering: consecutive offsets."""
    return [(p, n, v) for n, (p, _, v) in enumerate(records)]


def body(value: bytes | None) -> dict[str, Any]:
    assert value is not None
    loaded: dict[str, Any] = orjson.loads(value)
    return loaded


def encode(record: dict[str, Any]) -> bytes:
    return orjson.dumps(record, option=orjson.OPT_SORT_KEYS)


def rehash(record: dict[str, Any]) -> bytes:
    """What a forger who knows the format writes: a correct hash over the new content."""
    content = {k: v for k, v in record.items() if k != "hash"}
    digest = hashlib.sha256(encode(content)).hexdigest()
    return encode({**content, "hash": digest})


def only_break(report: VerifyReport, chain: int = 0) -> tuple[BreakKind, int | None, int | None]:
    assert not report.ok
    result = report.chains[chain]
    assert result.first_break is not None, str(report)
    found = result.first_break
    return found.kind, found.offset, found.seq


# --- append -------------------------------------------------------------------------


def test_append_links_records_and_returns_the_new_head() -> None:
    head = genesis(2)
    value, new_head = append(head, 2, {"event": "verdict", "customer_id": "c1"}, T0)
    record = body(value)
    assert record["chain"] == 2
    assert record["seq"] == 1
    assert record["prev"] == head.hash
    assert record["event"] == "verdict"
    assert record["customer_id"] == "c1"
    assert record["at"] == "2026-03-01T09:00:00.000000+00:00"
    content = {k: v for k, v in record.items() if k != "hash"}
    assert record["hash"] == hashlib.sha256(encode(content)).hexdigest()
    assert new_head == ChainHead(1, record["hash"])
    assert value == encode(record), "the stored value is the canonical JSON"

    second, third_head = append(new_head, 2, {"event": "suppressed"}, T0)
    assert body(second)["prev"] == new_head.hash
    assert third_head.seq == 2


def test_genesis_differs_per_chain_and_is_stable() -> None:
    assert genesis(0) == genesis(0)
    assert genesis(0).seq == 0
    assert genesis(0).hash != genesis(1).hash
    assert len(genesis(7).hash) == 64


def test_append_normalises_the_time_to_utc() -> None:
    east = timezone(timedelta(hours=8))
    value, _ = append(genesis(0), 0, {"event": "verdict"}, datetime(2026, 3, 1, 17, tzinfo=east))
    assert body(value)["at"] == "2026-03-01T09:00:00.000000+00:00"


@pytest.mark.parametrize("key", ["chain", "seq", "prev", "at", "hash"])
def test_append_refuses_reserved_keys(key: str) -> None:
    with pytest.raises(InvalidAuditEntry, match=f"'{key}'") as refused:
        append(genesis(0), 0, {"event": "verdict", key: 1}, T0)
    assert isinstance(refused.value, ValueError)
    assert "reserved" in str(refused.value)


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ({"customer_id": "c1"}, "expected an 'event'"),
        ({"event": 3}, "expected 'event' to be a non-empty string, found 3"),
        ({"event": ""}, "expected 'event' to be a non-empty string"),
        ({"event": "verdict", "blob": object()}, "expected JSON-able values"),
        ({"event": "verdict", 1: "x"}, "expected string keys, found 1"),
    ],
)
def test_append_refuses_entries_that_cannot_be_audited(entry: Any, expected: str) -> None:
    with pytest.raises(InvalidAuditEntry, match=expected):
        append(genesis(0), 0, entry, T0)


def test_append_refuses_a_naive_time_and_a_head_of_another_shape() -> None:
    with pytest.raises(InvalidAuditEntry, match="time zone"):
        append(genesis(0), 0, {"event": "verdict"}, datetime(2026, 3, 1))
    with pytest.raises(InvalidAuditEntry, match="chain"):
        append(genesis(0), -1, {"event": "verdict"}, T0)
    with pytest.raises(InvalidAuditEntry, match="seq"):
        append(ChainHead(-1, genesis(0).hash), 0, {"event": "verdict"}, T0)


# --- intact chains --------------------------------------------------------------------


def interleave(*chains: list[Record]) -> Iterator[Record]:
    longest = max(len(c) for c in chains)
    for n in range(longest):
        for chain in chains:
            if n < len(chain):
                yield chain[n]


def test_intact_interleaved_chains_pass_and_name_their_heads() -> None:
    zero, head0 = build(0, 5)
    one, head1 = build(1, 7)
    two, head2 = build(2, 1)
    report = verify(interleave(zero, one, two), {0: head0, 1: head1, 2: head2})
    assert report.ok, str(report)
    assert {c: r.head for c, r in report.chains.items()} == {0: head0, 1: head1, 2: head2}
    assert report.chains[1].records == 7
    text = str(report)
    assert f"chain 1: 7 records, intact, head seq 7 hash {head1.hash[:12]}…" in text


def test_a_chain_with_no_records_is_listed_when_asked_for() -> None:
    report = verify([], chains=[0, 3])
    assert report.ok
    assert sorted(report.chains) == [0, 3]
    assert "chain 3: 0 records, intact" in str(report)


def test_a_head_the_worker_stored_before_more_records_were_appended_passes() -> None:
    records, _ = build(0, 6)
    stored = ChainHead(4, body(records[3][2])["hash"])
    report = verify(records, {0: stored})
    assert report.ok
    assert "passes the stored head seq 4 and goes 2 records past it" in str(report)


def test_thousands_separators_in_the_summary() -> None:
    records, _ = build(0, 1234)
    assert "chain 0: 1,234 records, intact, head seq 1234" in str(verify(records))


# --- tampering ------------------------------------------------------------------------


def test_an_edited_field_is_a_hash_mismatch_at_that_record() -> None:
    records, _ = build(0, 10)
    edited = body(records[4][2]) | {"customer_id": "someone-else"}
    records[4] = (0, 4, encode(edited))
    report = verify(records)
    assert only_break(report) == (BreakKind.EDITED, 4, 5)
    assert "hash mismatch: the record was edited" in str(report)
    assert "chain 0: BROKEN at offset 4 (seq 5)" in str(report)


def test_an_edited_record_whose_hash_was_recomputed_is_named() -> None:
    records, _ = build(0, 10)
    records[4] = (0, 4, rehash(body(records[4][2]) | {"customer_id": "someone-else"}))
    report = verify(records)
    assert only_break(report) == (BreakKind.EDITED, 4, 5)
    assert "offset 5 (seq 6), links to" in str(report)
    assert report.chains[0].head == ChainHead(4, body(records[3][2])["hash"])
    assert "4 intact records before it" in str(report)


def test_an_edited_last_record_with_a_recomputed_hash_is_caught_by_the_stored_head() -> None:
    records, head = build(0, 10)
    records[9] = (0, 9, rehash(body(records[9][2]) | {"event": "nothing_happened"}))
    assert verify(records).ok, "without the stored head the last record cannot be checked"
    assert only_break(verify(records, {0: head})) == (BreakKind.REWRITTEN, 9, 10)


def test_a_record_deleted_in_the_middle_is_a_gap() -> None:
    records, _ = build(0, 10)
    del records[5]
    report = verify(renumber(records))
    assert only_break(report) == (BreakKind.DELETED, 5, 7)
    assert "expected seq 6 after seq 5 (offset 4), found seq 7" in str(report)


def test_several_deleted_records_are_counted() -> None:
    records, _ = build(0, 10)
    del records[2:5]
    report = verify(renumber(records))
    assert only_break(report) == (BreakKind.DELETED, 2, 6)
    assert "3 records (seq 3 to 5) deleted" in str(report)


def test_a_deleted_first_record_is_a_gap_from_the_start() -> None:
    records, _ = build(0, 4)
    report = verify(renumber(records[1:]))
    assert only_break(report) == (BreakKind.DELETED, 0, 2)


def test_a_deleted_last_record_is_found_only_with_the_stored_head() -> None:
    records, head = build(0, 10)
    truncated = records[:-1]
    assert verify(truncated).ok
    report = verify(truncated, {0: head})
    kind, offset, seq = only_break(report)
    assert (kind, offset, seq) == (BreakKind.TRUNCATED, None, 10)
    assert "stored head is seq 10" in str(report)
    assert "chain ends at seq 9 (offset 8)" in str(report)


def test_a_chain_emptied_entirely_is_found_with_the_stored_head() -> None:
    _, head = build(1, 3)
    report = verify([], {1: head})
    assert only_break(report, 1) == (BreakKind.TRUNCATED, None, 1)


def test_two_swapped_records_are_reordered() -> None:
    records, _ = build(0, 10)
    records[3], records[4] = records[4], records[3]
    report = verify(renumber(records))
    assert only_break(report) == (BreakKind.REORDERED, 3, 5)
    assert "seq 4 is at offset 4" in str(report)


def test_a_record_moved_far_back_is_reordered_not_deleted() -> None:
    records, _ = build(0, 12)
    moved = records.pop(2)
    records.append(moved)
    report = verify(renumber(records))
    assert only_break(report) == (BreakKind.REORDERED, 2, 4)
    assert "seq 3 is at offset 11" in str(report)


def test_a_forged_record_with_its_own_hash_but_a_wrong_link_is_inserted() -> None:
    records, _ = build(0, 8)
    forged = body(records[4][2]) | {"event": "override", "prev": "0" * 64}
    records.insert(4, (0, 4, rehash(forged)))
    report = verify(renumber(records))
    assert only_break(report) == (BreakKind.INSERTED, 4, 5)


def test_a_forged_record_that_links_correctly_is_named_by_the_repeat_after_it() -> None:
    records, _ = build(0, 8)
    forged = body(records[4][2]) | {"event": "override", "customer_id": "c9"}
    records.insert(4, (0, 4, rehash(forged)))
    report = verify(renumber(records))
    assert only_break(report) == (BreakKind.INSERTED, 4, 5)
    assert "the chain continues from offset 5" in str(report)
    assert report.chains[0].head.seq == 4


def test_a_copy_of_an_earlier_record_inserted_later_is_named() -> None:
    records, _ = build(0, 8)
    records.insert(6, records[1])
    report = verify(renumber(records))
    assert only_break(report) == (BreakKind.INSERTED, 6, 2)
    assert "seq goes back from 6 (offset 5) to 2" in str(report)


def test_a_copy_of_the_previous_record_is_a_repeat() -> None:
    records, _ = build(0, 8)
    records.insert(4, records[3])
    report = verify(renumber(records))
    assert only_break(report) == (BreakKind.INSERTED, 4, 4)


def test_another_chains_record_is_foreign() -> None:
    mine, _ = build(0, 6)
    theirs, _ = build(1, 6)
    mine.insert(3, (0, 3, theirs[3][2]))
    report = verify(renumber(mine))
    assert only_break(report) == (BreakKind.FOREIGN, 3, 4)
    assert "a record of chain 1 in partition 0" in str(report)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (b"\x00\xff garbage", "not JSON"),
        (b"[1, 2]", "expected a JSON object, found list"),
        (None, "expected a JSON audit record, found no value"),
    ],
)
def test_undecodable_records_are_named(value: bytes | None, expected: str) -> None:
    records, _ = build(0, 6)
    records[2] = (0, 2, value)
    report = verify(records)
    kind, offset, _ = only_break(report)
    assert (kind, offset) == (BreakKind.UNDECODABLE, 2)
    assert expected in str(report)


def test_a_chain_record_with_a_missing_or_mistyped_field_is_malformed() -> None:
    records, _ = build(0, 4)
    broken = body(records[1][2]) | {"seq": "two"}
    records[1] = (0, 1, encode(broken))
    report = verify(records)
    assert only_break(report)[:2] == (BreakKind.MALFORMED, 1)
    assert "field 'seq': expected a positive integer, found 'two'" in str(report)


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("at", "yesterday", "field 'at': expected an ISO 8601 time with a time zone"),
        ("at", "2026-03-01T09:00:00", "field 'at': expected an ISO 8601 time with a time zone"),
        ("prev", "A" * 64, "field 'prev': expected a hex SHA-256 hash, found 'AAAA"),
        ("hash", "12ab", "field 'hash': expected a hex SHA-256 hash, found '12ab'"),
        ("chain", True, "field 'chain': expected a chain number of 0 or more, found True"),
    ],
)
def test_each_chain_field_is_checked_by_type(field: str, value: Any, expected: str) -> None:
    records, _ = build(0, 4)
    changed = body(records[2][2]) | {field: value}
    records[2] = (0, 2, encode(changed) if field == "hash" else rehash(changed))
    report = verify(records)
    assert only_break(report) == (BreakKind.MALFORMED, 2, 3)
    assert expected in str(report)


def test_only_the_first_break_of_each_chain_is_named_and_other_chains_stay_intact() -> None:
    zero, _ = build(0, 8)
    one, _ = build(1, 8)
    zero[2] = (0, 2, b"junk")
    zero[5] = (0, 5, b"more junk")
    report = verify(interleave(zero, one))
    assert only_break(report, 0)[:2] == (BreakKind.UNDECODABLE, 2)
    assert report.chains[1].ok
    assert report.chains[0].records == 8
    assert report.chains[0].head.seq == 2
    assert "1 of 2 chains broken" in str(report)


# --- records written before chains existed -------------------------------------------


LEGACY = orjson.dumps({"event": "bundle_activated", "bundle": "deals", "at": "2026-01-01"})


def test_unchained_records_before_the_chain_are_counted_not_fatal() -> None:
    records, _ = build(0, 4, start_offset=2)
    report = verify([(0, 0, LEGACY), (0, 1, LEGACY), *records])
    assert report.ok, str(report)
    assert report.chains[0].unchained == 2
    assert report.chains[0].records == 4
    assert "2 unchained records before it" in str(report)


def test_an_unchained_record_inside_the_chain_is_an_insertion() -> None:
    records, _ = build(0, 6)
    records.insert(3, (0, 3, LEGACY))
    report = verify(renumber(records))
    assert only_break(report) == (BreakKind.INSERTED, 3, None)
    assert "without a chain" in str(report)


def test_records_fed_out_of_offset_order_are_a_caller_error() -> None:
    verifier = AuditVerifier()
    verifier.feed(0, 5, LEGACY)
    with pytest.raises(ValueError, match="expected offsets above 5"):
        verifier.feed(0, 5, LEGACY)


# --- properties -----------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)
entries = st.dictionaries(
    st.text(max_size=12).filter(lambda k: k not in {"chain", "seq", "prev", "at", "hash"}),
    json_values,
    max_size=5,
).map(lambda extra: {**extra, "event": "verdict"})


@settings(max_examples=60, deadline=None)
@given(st.lists(entries, min_size=1, max_size=8), st.data())
def test_any_chain_of_json_entries_verifies_and_any_single_deletion_is_found(
    chain_entries: list[dict[str, Any]], data: st.DataObject
) -> None:
    head = genesis(3)
    records: list[Record] = []
    for n, entry in enumerate(chain_entries):
        value, head = append(head, 3, entry, T0 + timedelta(minutes=n))
        records.append((3, n, value))
    assert verify(records, {3: head}).ok
    gone = data.draw(st.integers(min_value=0, max_value=len(records) - 1))
    kept = renumber(records[:gone] + records[gone + 1 :])
    report = verify(kept, {3: head})
    assert not report.ok
    found = report.chains[3].first_break
    assert found is not None
    assert found.seq == gone + 2 if gone < len(records) - 1 else found.seq == gone + 1


# --- partitions whose oldest records retention removed ----------------------------------


def test_a_trimmed_partition_breaks_at_its_first_record_unless_declared_trimmed() -> None:
    records, head = build(0, 10)
    kept = records[4:]
    report = verify(kept)
    assert only_break(report) == (BreakKind.DELETED, 4, 5)
    assert "expected seq 1 at the start of the chain, found seq 5" in str(report)

    trimmed = verify(kept, {0: head}, trimmed={0: 4})
    assert trimmed.ok, str(trimmed)
    result = trimmed.chains[0]
    assert (result.records, result.head, result.first_seq) == (6, head, 5)
    assert "chain 0: 6 records, intact from seq 5 (offsets below 4 are gone)" in str(trimmed)


def test_a_declared_trimmed_partition_is_still_checked_from_its_first_record_on() -> None:
    records, _ = build(0, 10)
    kept = records[4:]
    kept[0] = (0, 4, encode(body(kept[0][2]) | {"event": "forged"}))
    assert only_break(verify(kept, trimmed={0: 4})) == (BreakKind.EDITED, 4, 5)
    kept = records[4:]
    del kept[3]
    assert only_break(verify(renumber(kept), trimmed={0: 0})) == (BreakKind.DELETED, 3, 9)


def test_a_partition_retention_emptied_passes_when_declared_trimmed() -> None:
    _, head = build(0, 10)
    assert only_break(verify([], {0: head})) == (BreakKind.TRUNCATED, None, 1)
    gone = verify([], {0: head}, trimmed={0: 10})
    assert gone.ok
    assert "chain 0: 0 records (offsets below 10 are gone), intact" in str(gone)
    assert "the stored head seq 10 cannot be checked" in str(gone)


@settings(max_examples=150, deadline=None)
@given(
    st.integers(min_value=3, max_value=30),
    st.sampled_from(["edit", "edit_rehashed", "swap", "delete", "copy_back"]),
    st.data(),
)
def test_tampering_anywhere_in_a_chain_is_named_at_its_place(
    length: int, tampering: str, data: st.DataObject
) -> None:
    """With the stored head, every tampering is named at the record it touched, the last
    one included."""
    records, head = build(0, length)
    values = [v for _, _, v in records]
    last = length - 1
    highest = last - 1 if tampering == "swap" else last
    at = data.draw(st.integers(min_value=0, max_value=highest), label="position")
    expected: tuple[BreakKind, int | None, int | None]
    if tampering == "edit":
        values[at] = encode(body(values[at]) | {"customer_id": "forged"})
        expected = (BreakKind.EDITED, at, at + 1)
    elif tampering == "edit_rehashed":
        values[at] = rehash(body(values[at]) | {"customer_id": "forged"})
        kind = BreakKind.REWRITTEN if at == last else BreakKind.EDITED
        expected = (kind, at, at + 1)
    elif tampering == "swap":
        values[at], values[at + 1] = values[at + 1], values[at]
        expected = (BreakKind.REORDERED, at, at + 2)
    elif tampering == "delete":
        del values[at]
        expected = (
            (BreakKind.TRUNCATED, None, length)
            if at == last
            else (
                BreakKind.DELETED,
                at,
                at + 2,
            )
        )
    else:
        source = data.draw(st.integers(min_value=0, max_value=at), label="copied")
        values.insert(at + 1, values[source])
        expected = (BreakKind.INSERTED, at + 1, source + 1)
    report = verify([(0, n, v) for n, v in enumerate(values)], {0: head})
    assert only_break(report) == expected, str(report)
