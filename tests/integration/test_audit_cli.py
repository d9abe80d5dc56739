"""``warroom audit verify`` and ``export`` against audit chains on the real broker."""

from __future__ import annotations

import asyncio
import io
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic, RecordsToDelete

from engine import ChainHead, append, genesis
from schemas.topics import AUDIT
from streams.audit_cli import (
    BROKEN,
    INTACT,
    UNUSABLE,
    AuditCheck,
    export_customer,
    heads_topic,
    verify_audit,
)
from streams.settings import Settings

from .conftest import free_port

CHAINS = 3
PER_CHAIN = 12
T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
LEGACY = orjson.dumps({"event": "bundle_activated", "bundle": "deals", "at": "2026-01-01"})


def chains() -> tuple[dict[int, list[bytes]], dict[int, ChainHead]]:
    """PER_CHAIN records per chain; customers c0..c4 spread over the chains, times
    interleaved across chains so an export must merge them."""
    values: dict[int, list[bytes]] = {}
    heads: dict[int, ChainHead] = {}
    for chain in range(CHAINS):
        head = genesis(chain)
        values[chain] = []
        for n in range(PER_CHAIN):
            at = T0 + timedelta(seconds=n * CHAINS + (CHAINS - 1 - chain))
            entry = {"event": "verdict", "customer_id": f"c{(n + chain) % 5}", "n": n}
            value, head = append(head, chain, entry, at)
            values[chain].append(value)
        heads[chain] = head
    return values, heads


async def create(settings: Settings, *names: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, CHAINS, 1) for name in names])
    finally:
        await admin.close()


async def publish_heads(settings: Settings, heads: dict[int, ChainHead]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers)
    await producer.start()
    try:
        for chain, head in heads.items():
            value = orjson.dumps({"seq": 0, "hash": genesis(chain).hash})
            await producer.send_and_wait(heads_topic(settings), value, key=str(chain).encode())
            value = orjson.dumps({"seq": head.seq, "hash": head.hash})
            await producer.send_and_wait(heads_topic(settings), value, key=str(chain).encode())
    finally:
        await producer.stop()


async def publish_as_the_worker(settings: Settings, values: dict[int, list[bytes]]) -> None:
    """Each chain in two transactions, with an aborted forged record between them that
    read_committed readers never see, after a record written before chains existed."""
    topic = settings.topic(AUDIT)
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.bootstrap_servers,
        transactional_id=f"audit-it-{uuid.uuid4().hex[:8]}",
    )
    await producer.start()
    try:
        for chain, records in values.items():
            half = len(records) // 2
            async with producer.transaction():
                await producer.send(topic, LEGACY, partition=chain)
                for value in records[:half]:
                    await producer.send(topic, value, partition=chain)
            await producer.begin_transaction()
            forged = orjson.loads(records[half]) | {"event": "override"}
            await producer.send(topic, orjson.dumps(forged), partition=chain)
            await producer.abort_transaction()
            async with producer.transaction():
                for value in records[half:]:
                    await producer.send(topic, value, partition=chain)
    finally:
        await producer.stop()


async def publish_plain(settings: Settings, values: dict[int, list[bytes | None]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers)
    await producer.start()
    try:
        for chain, records in values.items():
            for value in records:
                await producer.send_and_wait(
                    settings.topic(AUDIT), value, key=b"customer", partition=chain
                )
    finally:
        await producer.stop()


async def test_verify_names_tampering_and_export_merges_a_customers_trail(
    settings: Settings,
) -> None:
    values, heads = chains()
    tampered_settings = settings.model_copy(update={"topic_prefix": settings.topic_prefix + "x."})
    await create(
        settings,
        settings.topic(AUDIT),
        tampered_settings.topic(AUDIT),
        heads_topic(settings),
    )
    await publish_as_the_worker(settings, values)
    await publish_heads(settings, heads)

    out, err = io.StringIO(), io.StringIO()
    with_heads = AuditCheck(use_heads=True)
    their_heads = AuditCheck(use_heads=True, heads_topic=heads_topic(settings))
    assert await verify_audit(settings, with_heads, out, err) == INTACT, out.getvalue()
    text = out.getvalue()
    for chain, head in heads.items():
        assert (
            f"chain {chain}: {PER_CHAIN} records, intact, head seq {PER_CHAIN} "
            f"hash {head.hash[:12]}…, passes the stored head seq {PER_CHAIN}, "
            "1 unchained record before it"
        ) in text

    # The copy an intruder left: chain 1's fifth record edited (hash kept), chain 2's
    # seventh deleted, chain 0's last two deleted (seen through the stored heads).
    copy: dict[int, list[bytes | None]] = {c: list(v) for c, v in values.items()}
    edited = orjson.loads(values[1][4]) | {"customer_id": "c-nobody"}
    copy[1][4] = orjson.dumps(edited, option=orjson.OPT_SORT_KEYS)
    del copy[2][6]
    del copy[0][-2:]
    await publish_plain(tampered_settings, copy)
    out = io.StringIO()
    code = await verify_audit(tampered_settings, their_heads, out, err)
    text = out.getvalue()
    assert code == BROKEN, text
    assert "chain 1: BROKEN at offset 4 (seq 5): hash mismatch: the record was edited" in text
    assert "chain 2: BROKEN at offset 6 (seq 8): seq gap: expected seq 7 after seq 6" in text
    assert f"chain 0: BROKEN at the end (seq {PER_CHAIN - 1}): the chain ends at seq" in text
    assert "3 of 3 chains broken" in text

    out = io.StringIO()
    assert await verify_audit(tampered_settings, out=out, err=err) == BROKEN
    assert "chain 0: 10 records, intact" in out.getvalue(), "without heads a cut tail is unseen"

    exported, err = io.BytesIO(), io.StringIO()
    assert await export_customer(settings, "c3", exported, err=err) == INTACT
    lines = exported.getvalue().splitlines()
    records = [orjson.loads(line) for line in lines]
    expected = sorted(
        (v for chain in values.values() for v in chain if orjson.loads(v)["customer_id"] == "c3"),
        key=lambda v: orjson.loads(v)["at"],
    )
    assert lines == expected, "every record of c3, as stored, in time order across chains"
    assert {r["chain"] for r in records} == set(range(CHAINS))
    assert "audit trail intact" in err.getvalue()
    assert f"exported {len(expected)} audit record(s) of customer c3" in err.getvalue()


async def test_verify_without_an_audit_topic_is_a_usage_error(settings: Settings) -> None:
    err = io.StringIO()
    code = await verify_audit(settings, out=io.StringIO(), err=err)
    assert code == UNUSABLE
    assert f"expected the audit topic {settings.topic(AUDIT)}, found no topic" in err.getvalue()


async def test_an_empty_value_in_the_audit_topic_is_named(settings: Settings) -> None:
    await create(settings, settings.topic(AUDIT))
    values, _ = chains()
    tampered: dict[int, list[bytes | None]] = {0: [values[0][0], None, *values[0][2:4]]}
    await publish_plain(settings, tampered)
    out = io.StringIO()
    assert await verify_audit(settings, out=out, err=io.StringIO()) == BROKEN
    assert "chain 0: BROKEN at offset 1: expected a JSON audit record, found no value" in (
        out.getvalue()
    )
    assert "chain 1: 0 records, intact" in out.getvalue()


async def test_a_partition_retention_trimmed_is_verified_only_when_declared(
    settings: Settings, tmp_path: Path
) -> None:
    await create(settings, settings.topic(AUDIT))
    values, _ = chains()
    await publish_plain(settings, {0: list(values[0][:6])})
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
    await admin.start()
    try:
        await admin.delete_records({TopicPartition(settings.topic(AUDIT), 0): RecordsToDelete(3)})
    finally:
        await admin.close()

    out, err = io.StringIO(), io.StringIO()
    assert await verify_audit(settings, out=out, err=err) == BROKEN
    assert "chain 0: BROKEN at offset 3 (seq 4): seq gap: expected seq 1" in out.getvalue()
    assert "partition 0 starts at offset 3" in err.getvalue()
    assert "--trimmed-ok verifies from the first record kept" in err.getvalue()

    out = io.StringIO()
    assert await verify_audit(settings, AuditCheck(trimmed_ok=True), out, err) == INTACT
    assert "chain 0: 3 records, intact from seq 4 (offsets below 3 are gone)" in out.getvalue()

    # The same through the command line, as an operator runs it.
    options = ["--bootstrap", settings.bootstrap_servers, "--topic-prefix", settings.topic_prefix]
    options += ["--app-id", settings.app_id]
    code, stdout, stderr = await warroom("audit", "verify", *options, "--heads", "--trimmed-ok")
    assert code == INTACT, stderr
    assert "chain 0: 3 records, intact from seq 4" in stdout
    assert f"no heads topic {heads_topic(settings)}" in stderr
    output = tmp_path / "c3.jsonl"
    code, _, stderr = await warroom(
        "audit", "export", *options, "--trimmed-ok", "--customer", "c3", "--output", str(output)
    )
    assert code == INTACT, stderr
    assert output.read_bytes().splitlines() == [values[0][3]], "c3's record kept on chain 0"
    code, _, stderr = await warroom("audit", "verify", "--bootstrap", settings.bootstrap_servers)
    assert code == UNUSABLE
    assert "expected the audit topic audit, found no topic of that name" in stderr


async def warroom(*argv: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "streams.cli",
        *argv,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()


async def test_an_unreachable_broker_is_a_usage_error(settings: Settings) -> None:
    nowhere = settings.model_copy(update={"bootstrap_servers": f"127.0.0.1:{free_port()}"})
    err = io.StringIO()
    assert await verify_audit(nowhere, out=io.StringIO(), err=err) == UNUSABLE
    assert f"expected a Kafka broker at {nowhere.bootstrap_servers}, found none" in err.getvalue()
