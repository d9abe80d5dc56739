"""CRM changes: Debezium envelopes (Postgres connector) -> touchpoints, and the reader."""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord

from connectors.crm_changes import (
    Changed,
    CrmChangeReader,
    CrmMapping,
    InvalidMapping,
    Rejected,
    Skip,
    convert,
    load_mapping,
    read_mapping,
)
from connectors.publisher import (
    MemoryTouchpointSink,
    PublishUnavailable,
    Readiness,
    UnpublishableTouchpoints,
)
from connectors.rejects import MemoryDeadLetterSink
from schemas.models import Channel, Direction, TouchpointEvent

DATA = Path(__file__).parents[1] / "data" / "connectors" / "crm"
RECEIVED = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
TOPIC = "crm.public.deals"


@pytest.fixture
def mapping() -> CrmMapping:
    return read_mapping(DATA / "mapping.yaml")


def sample(name: str) -> bytes:
    return (DATA / name).read_bytes()


def changed(value: bytes | None, mapping: CrmMapping, at: datetime = RECEIVED) -> Changed:
    outcome = convert(value, mapping, at)
    assert isinstance(outcome, Changed), outcome
    return outcome


def rejected(value: bytes | None, mapping: CrmMapping) -> Rejected:
    outcome = convert(value, mapping, RECEIVED)
    assert isinstance(outcome, Rejected), outcome
    return outcome


def edited(name: str, **changes: Any) -> bytes:
    """A sample with top-level payload fields or ``after``/``before``/``source`` fields
    replaced (``after__stage="x"``)."""
    document = orjson.loads(sample(name))
    for key, value in changes.items():
        where, _, column = key.partition("__")
        if column:
            document[where][column] = value
        else:
            document[where] = value
    return orjson.dumps(document)


# --------------------------------------------------------------------------- conversion


def test_a_create_with_the_schema_wrapper_becomes_a_stage_change_with_its_decimal_amount(
    mapping: CrmMapping,
) -> None:
    [event] = changed(sample("pg-create.with-schema.json"), mapping).touchpoints
    assert event.kind == "stage_changed"
    assert (event.customer_id, event.rep_id, event.channel) == ("acme", "rep-ana", Channel.CRM)
    assert event.direction is Direction.NONE
    assert event.occurred_at == datetime(2026, 11, 2, 9, 0, tzinfo=UTC)  # source.ts_ms
    assert event.received_at == RECEIVED
    assert event.industry == "saas"
    # "AL68IA==" is 00 BE BC 20: 12500000 unscaled, scale 2; without the 00 it would
    # read as a negative number.
    assert event.attributes == {"deal_id": "1001", "amount": 125000.0, "stage": "qualification"}
    assert event.event_id.startswith("crm:") and len(event.event_id) == 36


def test_columns_the_mapping_does_not_name_never_reach_the_touchpoint(mapping: CrmMapping) -> None:
    [event] = changed(sample("pg-create.with-schema.json"), mapping).touchpoints
    shown = event.model_dump_json()
    assert "li.wei" not in shown and "13800138000" not in shown


def test_a_stage_update_says_where_the_deal_was_and_for_how_long(mapping: CrmMapping) -> None:
    [event] = changed(sample("pg-update-stage.json"), mapping).touchpoints
    assert event.kind == "stage_changed"
    assert event.attributes["stage"] == "proposal"
    assert event.attributes["previous_stage"] == "qualification"
    # entered qualification 2026-11-02 09:00, left it 2026-11-20 14:30 (source.ts_ms)
    expected = (datetime(2026, 11, 20, 14, 30) - datetime(2026, 11, 2, 9, 0)) / timedelta(days=1)
    assert event.attributes["days_in_previous_stage"] == pytest.approx(expected, abs=1e-3)
    assert event.attributes["amount"] == 130000.0  # decimal.handling.mode=string


def test_reaching_a_won_stage_is_a_stage_change_and_a_won_deal(mapping: CrmMapping) -> None:
    events = changed(sample("pg-update-won.json"), mapping).touchpoints
    assert [e.kind for e in events] == ["stage_changed", "deal_won"]
    assert events[1].attributes["stage"] == "closed_won"
    assert events[0].event_id != events[1].event_id


def test_a_lost_stage_from_the_mapping_is_a_lost_deal(mapping: CrmMapping) -> None:
    value = edited("pg-update-won.json", after__stage="disqualified")
    assert [e.kind for e in changed(value, mapping).touchpoints] == ["stage_changed", "deal_lost"]


def test_moving_between_two_won_stages_does_not_win_the_deal_again() -> None:
    mapping = load_mapping(
        (DATA / "mapping.yaml").read_text().replace("[closed_won]", "[closed_won, renewed]")
    )
    value = edited("pg-update-won.json", before__stage="closed_won", after__stage="renewed")
    assert [e.kind for e in changed(value, mapping).touchpoints] == ["stage_changed"]


def test_an_owner_change_names_both_reps(mapping: CrmMapping) -> None:
    [event] = changed(sample("pg-update-owner.json"), mapping).touchpoints
    assert event.kind == "owner_changed"
    assert event.rep_id == "rep-bo"
    assert event.attributes["previous_rep"] == "rep-ana"
    assert event.attributes["stage"] == "negotiation"
    assert event.attributes["amount"] == 48000.5


def test_an_update_of_other_columns_makes_no_touchpoint(mapping: CrmMapping) -> None:
    assert changed(sample("pg-update-amount-only.json"), mapping) == Changed([], Skip.UNCHANGED)


def test_an_update_without_its_before_row_is_rejected_naming_replica_identity(
    mapping: CrmMapping,
) -> None:
    outcome = rejected(sample("pg-update-no-before.json"), mapping)
    assert outcome.reason == "no_before_image"
    assert "before" in outcome.detail and "REPLICA IDENTITY FULL" in outcome.detail


def test_a_snapshot_read_is_the_current_stage_and_a_second_snapshot_repeats_its_id(
    mapping: CrmMapping,
) -> None:
    [event] = changed(sample("pg-snapshot-read.json"), mapping).touchpoints
    assert event.kind == "stage_changed"
    assert event.attributes["snapshot"] is True and "previous_stage" not in event.attributes
    again = edited("pg-snapshot-read.json", source__lsn=99999999, source__ts_ms=1795700000000)
    assert changed(again, mapping).touchpoints[0].event_id == event.event_id
    moved = edited("pg-snapshot-read.json", after__stage="proposal")
    assert changed(moved, mapping).touchpoints[0].event_id != event.event_id


def test_snapshot_reads_can_be_skipped() -> None:
    mapping = load_mapping((DATA / "mapping.yaml").read_text().replace("emit", "skip"))
    assert changed(sample("pg-snapshot-read.json"), mapping) == Changed([], Skip.SNAPSHOT)


def test_a_delete_and_its_tombstone_make_no_touchpoint_and_no_dead_letter(
    mapping: CrmMapping,
) -> None:
    assert changed(sample("pg-delete.json"), mapping) == Changed([], Skip.DELETE)
    assert changed(None, mapping) == Changed([], Skip.TOMBSTONE)


def test_truncates_and_logical_decoding_messages_are_skipped(mapping: CrmMapping) -> None:
    # Debezium's Postgres connector writes op "t" for TRUNCATE (before and after null)
    # and op "m" for pg_logical_emit_message; neither is a row's change.
    truncate = edited("pg-delete.json", op="t", before=None)
    message = edited("pg-delete.json", op="m", before=None)
    assert changed(truncate, mapping) == Changed([], Skip.NOT_A_ROW_CHANGE)
    assert changed(message, mapping) == Changed([], Skip.NOT_A_ROW_CHANGE)


def test_a_table_the_mapping_does_not_name_is_skipped(mapping: CrmMapping) -> None:
    value = edited("pg-update-stage.json", source__table="contacts")
    assert changed(value, mapping) == Changed([], Skip.UNMAPPED_TABLE)
    other_schema = edited("pg-update-stage.json", source__schema="archive")
    assert changed(other_schema, mapping) == Changed([], Skip.UNMAPPED_TABLE)


def test_reading_the_same_change_again_gives_the_same_event_ids(mapping: CrmMapping) -> None:
    for name in ("pg-create.with-schema.json", "pg-update-won.json", "pg-update-owner.json"):
        first = changed(sample(name), mapping, RECEIVED).touchpoints
        later = changed(sample(name), mapping, RECEIVED + timedelta(days=3)).touchpoints
        assert [e.event_id for e in first] == [e.event_id for e in later]


def test_event_ids_differ_by_log_position_and_by_deal(mapping: CrmMapping) -> None:
    base = changed(sample("pg-update-stage.json"), mapping).touchpoints[0].event_id
    later = edited("pg-update-stage.json", source__lsn=24025999, source__sequence=None)
    other_deal = edited("pg-update-stage.json", before__id=1002, after__id=1002)
    assert changed(later, mapping).touchpoints[0].event_id != base
    assert changed(other_deal, mapping).touchpoints[0].event_id != base


def test_a_mysql_binlog_position_also_places_the_change(mapping: CrmMapping) -> None:
    def at(pos: int) -> bytes:
        document = orjson.loads(sample("pg-update-stage.json"))
        source = document["source"]
        for key in ("lsn", "sequence", "txId", "xmin", "schema"):
            source.pop(key)
        source.update(connector="mysql", file="mysql-bin.000003", pos=pos, row=0)
        return orjson.dumps(document)

    mysql = CrmMapping.model_validate(
        {"tables": [{"table": "deals", "columns": mapping.tables[0].columns.model_dump()}]}
    )
    first, second = (changed(at(p), mysql).touchpoints[0].event_id for p in (154, 3890))
    assert first != second


@pytest.mark.parametrize(
    ("scale", "value", "expected"),
    [(2, -500, -5.0), (0, 7, 7.0), (3, 1234567, 1234.567)],
)
def test_connect_decimals_of_any_sign_and_scale(
    mapping: CrmMapping, scale: int, value: int, expected: float
) -> None:
    document = orjson.loads(sample("pg-create.with-schema.json"))
    document["schema"]["fields"][1]["fields"][4]["parameters"]["scale"] = str(scale)
    size = (value.bit_length() + 8) // 8
    encoded = base64.b64encode(value.to_bytes(size, "big", signed=True)).decode()
    document["payload"]["after"]["amount"] = encoded
    [event] = changed(orjson.dumps(document), mapping).touchpoints
    assert event.attributes["amount"] == pytest.approx(expected)


def test_a_variable_scale_decimal(mapping: CrmMapping) -> None:
    document = orjson.loads(sample("pg-create.with-schema.json"))
    column = document["schema"]["fields"][1]["fields"][4]
    column.update(type="struct", name="io.debezium.data.VariableScaleDecimal")
    document["payload"]["after"]["amount"] = {"scale": 1, "value": "BNI="}  # 1234
    [event] = changed(orjson.dumps(document), mapping).touchpoints
    assert event.attributes["amount"] == pytest.approx(123.4)


def test_a_base64_amount_without_its_schema_is_rejected_naming_the_column(
    mapping: CrmMapping,
) -> None:
    outcome = rejected(edited("pg-update-stage.json", after__amount="AL68IA=="), mapping)
    assert outcome.reason == "invalid_value"
    assert outcome.detail.startswith("after.amount: expected a number")
    assert "found string 'AL68IA=='" in outcome.detail


def test_a_missing_mapped_column_is_named(mapping: CrmMapping) -> None:
    document = orjson.loads(sample("pg-update-stage.json"))
    del document["after"]["stage"]
    outcome = rejected(orjson.dumps(document), mapping)
    assert outcome.reason == "missing_column"
    assert outcome.detail.startswith("after.stage: expected the mapped column")


def test_an_empty_customer_is_rejected(mapping: CrmMapping) -> None:
    outcome = rejected(edited("pg-update-stage.json", after__account_id=""), mapping)
    assert outcome.reason == "invalid_value"
    assert outcome.detail == (
        "after.account_id: expected a non-empty string or an integer, found string ''"
    )


def test_zoned_and_naive_iso_stage_times(mapping: CrmMapping) -> None:
    for text in ("2026-11-19T14:30:00Z", "2026-11-19T22:30:00+08:00", "2026-11-19T14:30:00"):
        value = edited("pg-update-stage.json", before__stage_changed_at=text)
        [event] = changed(value, mapping).touchpoints
        assert event.attributes["days_in_previous_stage"] == pytest.approx(1.0)


def test_envelopes_that_are_not_change_events(mapping: CrmMapping) -> None:
    flattened = rejected(sample("flattened-row.json"), mapping)
    assert flattened.reason == "not_a_change_event"
    assert "ExtractNewRecordState" in flattened.detail
    assert rejected(sample("truncated.json"), mapping).reason == "not_json"
    unknown_op = rejected(edited("pg-update-stage.json", op="x"), mapping)
    assert unknown_op.detail == "op: expected one of c, u, d, r, t, m, found string 'x'"
    assert rejected(b"[1, 2]", mapping).reason == "not_a_change_event"


# --------------------------------------------------------------------------- mapping


def test_a_mapping_problem_names_the_line_and_field() -> None:
    text = (
        (DATA / "mapping.yaml").read_text().replace("      stage: stage\n", "      stag: stage\n")
    )
    with pytest.raises(InvalidMapping) as raised:
        load_mapping(text, "crm.yaml")
    problems = raised.value.problems
    line = text.splitlines().index("      stag: stage") + 1
    assert f"crm.yaml:{line}: tables.0.columns.stag: Extra inputs are not permitted" in problems
    assert any(
        p.startswith("crm.yaml:") and "tables.0.columns.stage: Field required" in p
        for p in problems
    )


def test_a_stage_cannot_be_both_won_and_lost() -> None:
    text = (DATA / "mapping.yaml").read_text().replace("[closed_won]", "[closed_won, disqualified]")
    with pytest.raises(InvalidMapping, match="expected won_stages and lost_stages to differ"):
        load_mapping(text)


# --------------------------------------------------------------------------- reader


def record(offset: int, value: bytes | None, partition: int = 0) -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord(
        topic=TOPIC,
        partition=partition,
        offset=offset,
        timestamp=0,
        timestamp_type=0,
        key=b'{"id": 1}',
        value=value,
        checksum=None,
        serialized_key_size=9,
        serialized_value_size=len(value or b""),
        headers=(),
    )


class FakeConsumer:
    def __init__(self, journal: list[str]) -> None:
        self.journal = journal
        self.committed: dict[TopicPartition, int] = {}

    async def getmany(
        self, *partitions: TopicPartition, timeout_ms: int = 0, max_records: int | None = None
    ) -> dict[TopicPartition, list[Any]]:
        await asyncio.sleep(0)
        return {}

    async def commit(self, offsets: dict[TopicPartition, int] | None = None) -> None:
        assert offsets is not None
        self.journal.append(f"commit {sorted((tp.partition, o) for tp, o in offsets.items())}")
        self.committed.update(offsets)


class JournalSink(MemoryTouchpointSink):
    """Refuses the first ``refusals`` publishes as Kafka would when it is unavailable."""

    def __init__(self, journal: list[str], refusals: int = 0) -> None:
        super().__init__()
        self.journal = journal
        self.refusals = refusals

    async def publish(self, events: Sequence[TouchpointEvent]) -> None:
        if self.refusals:
            self.refusals -= 1
            self.journal.append("publish refused")
            raise PublishUnavailable("not published: broker unavailable; retry")
        await super().publish(events)
        self.journal.append(f"publish {len(events)}")

    def readiness(self) -> Readiness:
        return Readiness(ready=True, reason="test")


def poll() -> dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]:
    names = [
        "pg-snapshot-read.json",
        "pg-create.with-schema.json",
        "pg-update-stage.json",
        "truncated.json",
        "pg-update-won.json",
        "pg-update-no-before.json",
        "pg-delete.json",
    ]
    first = [record(offset, sample(name)) for offset, name in enumerate(names, start=40)]
    first.append(record(47, None))  # the delete's tombstone
    second = [record(3, sample("pg-update-owner.json"), partition=1)]
    return {TopicPartition(TOPIC, 0): first, TopicPartition(TOPIC, 1): second}


def reader(
    mapping: CrmMapping, journal: list[str], refusals: int = 0
) -> tuple[CrmChangeReader, FakeConsumer, JournalSink, MemoryDeadLetterSink, list[float]]:
    consumer, sink, letters = (
        FakeConsumer(journal),
        JournalSink(journal, refusals),
        MemoryDeadLetterSink(),
    )
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    changes = CrmChangeReader(mapping, consumer, sink, letters, clock=lambda: RECEIVED, sleep=sleep)
    return changes, consumer, sink, letters, slept


async def test_a_poll_publishes_valid_changes_dead_letters_the_rest_then_commits(
    mapping: CrmMapping,
) -> None:
    journal: list[str] = []
    changes, consumer, sink, letters, _ = reader(mapping, journal)
    assert await changes.handle(poll())
    kinds = [e.kind for batch in sink.published for e in batch]
    assert kinds == [
        "stage_changed",  # snapshot
        "stage_changed",  # create
        "stage_changed",  # qualification -> proposal
        "stage_changed",
        "deal_won",
        "owner_changed",
    ]
    assert [(d.source_topic, d.partition, d.offset, d.reason) for d in letters.letters] == [
        (TOPIC, 0, 43, "not_json"),
        (TOPIC, 0, 45, "no_before_image"),
    ]
    assert letters.letters[0].raw_value == sample("truncated.json")
    assert consumer.committed == {TopicPartition(TOPIC, 0): 48, TopicPartition(TOPIC, 1): 4}
    assert journal == ["publish 6", "commit [(0, 48), (1, 4)]"]
    assert changes.stats.skipped == {"delete": 1, "tombstone": 1}
    assert changes.stats.dead_letters == {"not_json": 1, "no_before_image": 1}


async def test_offsets_wait_until_kafka_takes_the_touchpoints(mapping: CrmMapping) -> None:
    journal: list[str] = []
    changes, _, _, _, slept = reader(mapping, journal, refusals=2)
    assert await changes.handle(poll())
    assert journal == [
        "publish refused",
        "publish refused",
        "publish 6",
        "commit [(0, 48), (1, 4)]",
    ]
    assert slept == [1.0, 1.0]
    assert changes.stats.publish_retries == 2


async def test_stopping_while_kafka_refuses_commits_nothing(mapping: CrmMapping) -> None:
    journal: list[str] = []
    changes, consumer, _, _, _ = reader(mapping, journal, refusals=5)
    stop = asyncio.Event()
    stop.set()
    assert not await changes.handle(poll(), stop)
    assert consumer.committed == {}
    assert "commit" not in " ".join(journal)


async def test_a_change_whose_touchpoint_does_not_encode_is_a_dead_letter_alone(
    mapping: CrmMapping,
) -> None:
    journal: list[str] = []
    changes, consumer, sink, letters, _ = reader(mapping, journal)
    won = sample("pg-update-won.json")
    won_ids = {e.event_id for e in changed(won, mapping).touchpoints}
    original = sink.publish

    async def refuse_won(events: Sequence[TouchpointEvent]) -> None:
        problems = [
            {"event_id": e.event_id, "message": "expected at most 900000 bytes"}
            for e in events
            if e.event_id in won_ids
        ]
        if problems:
            raise UnpublishableTouchpoints(problems)
        await original(events)

    sink.publish = refuse_won  # type: ignore[method-assign]
    batch = {TopicPartition(TOPIC, 0): [record(1, sample("pg-update-stage.json")), record(2, won)]}
    assert await changes.handle(batch)
    assert [e.kind for b in sink.published for e in b] == ["stage_changed"]
    [letter] = letters.letters
    assert (letter.offset, letter.reason) == (2, "unpublishable")
    assert consumer.committed == {TopicPartition(TOPIC, 0): 3}


async def test_the_log_never_shows_a_rows_values(
    mapping: CrmMapping, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    changes, *_ = reader(mapping, [])
    document = orjson.loads(sample("pg-create.with-schema.json"))
    document["payload"]["after"]["amount"] = "li.wei@acme.example"
    batch = {TopicPartition(TOPIC, 0): [record(1, orjson.dumps(document))]}
    assert await changes.handle(batch)
    assert changes.stats.dead_letters == {"invalid_value": 1}
    assert "li.wei" not in caplog.text
    assert "invalid_value" in caplog.text


def test_the_command_refuses_a_bad_mapping_naming_line_and_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from streams.cli import main

    bad = tmp_path / "crm.yaml"
    bad.write_text("tables:\n  - table: deals\n    columns: {deal_id: id}\n", encoding="utf-8")
    assert main(["crm", "changes", "--mapping", str(bad), "--topic", TOPIC]) == 2
    problems = capsys.readouterr().err.splitlines()
    assert f"{bad}:3: tables.0.columns.customer_id: Field required" in problems
    assert f"{bad}:3: tables.0.columns.stage: Field required" in problems
