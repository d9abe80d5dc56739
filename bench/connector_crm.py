"""CRM connectors without a broker: how fast Debezium changes become encoded touchpoint
records, and how fast the sink delivers interventions to a local webhook.

    .venv/bin/python bench/connector_crm.py --changes 100000 --interventions 5000

Changes: Debezium update envelopes (bare and with JsonConverter's schema wrapper, a
third of them moving a stage, a third changing the owner, a third other columns)
go through ``convert`` and then ``envelopes`` (Avro encoding, grouped by partition
as the publisher writes them). Prints changes/s and touchpoints/s.

Sink: interventions, Avro-encoded as on the topic, through ``CrmSink.handle`` with the
real ``CrmWebhook`` posting to an aiohttp server on 127.0.0.1 that answers 200 (after
``--crm-latency-ms``), and feedback kept in memory. Prints interventions/s for each
concurrency asked for. The server shares the process: with no latency the figure is
the sink's own cost per intervention, client and server together.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from aiohttp import web
from aiohttp.test_utils import TestServer
from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from connectors.crm_changes import Changed, convert, read_mapping  # noqa: E402
from connectors.crm_sink import CrmSink, CrmWebhook, MemoryFeedbackSink, RecentlySent  # noqa: E402
from connectors.publisher import envelopes  # noqa: E402
from connectors.rejects import MemoryDeadLetterSink  # noqa: E402
from schemas.codec import encode_intervention  # noqa: E402
from schemas.models import Explanation, InterventionCommand, InterventionKind  # noqa: E402

DATA = REPO / "tests" / "data" / "connectors" / "crm"
STAGES = ("qualification", "proposal", "negotiation", "closed_won")


def change_values(count: int) -> list[bytes]:
    bare = orjson.loads((DATA / "pg-update-stage.json").read_bytes())
    wrapped = orjson.loads((DATA / "pg-create.with-schema.json").read_bytes())
    values = []
    for n in range(count):
        document = orjson.loads(orjson.dumps(wrapped if n % 2 else bare))
        payload = document.get("payload", document)
        before = payload["before"] or dict(payload["after"])
        payload["before"], payload["op"] = before, "u"
        after = payload["after"]
        for row in (before, after):
            row["id"], row["account_id"] = n, f"account-{n % 5000}"
        before["stage"] = STAGES[n % 3]
        after["stage"] = STAGES[n % 3 + (1 if n % 3 == 0 else 0)]
        if n % 3 == 1:
            after["owner_id"] = "rep-bo"
        payload["source"]["lsn"] = 24_000_000 + n
        values.append(orjson.dumps(document))
    return values


def bench_changes(count: int, partitions: int) -> None:
    mapping = read_mapping(DATA / "mapping.yaml")
    values = change_values(count)
    received = datetime.now(UTC)
    start = time.perf_counter()
    events = []
    for value in values:
        outcome = convert(value, mapping, received)
        assert isinstance(outcome, Changed), outcome
        events.extend(outcome.touchpoints)
    converted = time.perf_counter()
    records = []
    for first in range(0, len(events), 500):  # one poll of 500 changes at a time
        records.extend(envelopes(events[first : first + 500], partitions))
    done = time.perf_counter()
    print(
        f"changes: {count} changes -> {len(events)} touchpoints in {len(records)} records, "
        f"{done - start:.2f} s: {count / (done - start):,.0f} changes/s, "
        f"{len(events) / (done - start):,.0f} touchpoints/s "
        f"(convert {count / (converted - start):,.0f} changes/s)"
    )


def intervention(n: int) -> InterventionCommand:
    now = datetime.now(UTC)
    return InterventionCommand(
        intervention_id=f"bench-iv-{n}",
        customer_id=f"customer-{n % 5000}",
        rep_id="rep-ana",
        rule_id="deal.late-stage-silent-14d",
        rule_version=1,
        kind=InterventionKind.ALERT,
        title="Deal has gone quiet",
        body="Book a next step this week.",
        due_at=now + timedelta(days=1),
        explanation=Explanation(matched=[], triggering_event_ids=[f"crm:{n}"]),
        created_at=now,
    )


class _Consumer:
    async def getmany(self, *_: Any, **__: Any) -> dict[TopicPartition, list[Any]]:
        return {}

    async def commit(self, offsets: Any = None) -> None:
        return None


async def bench_sink(count: int, concurrency: list[int], poll: int, latency_ms: float) -> None:
    async def webhook(request: web.Request) -> web.Response:
        await request.read()
        if latency_ms:
            await asyncio.sleep(latency_ms / 1000)
        return web.json_response({"status": "accepted"})

    app = web.Application()
    app.router.add_post("/hook", webhook)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    values = [encode_intervention(intervention(n)) for n in range(count)]
    records = [
        ConsumerRecord("interventions", 0, n, 0, 0, b"k", v, None, 1, len(v), ())
        for n, v in enumerate(values)
    ]
    try:
        for in_flight in concurrency:
            connector = aiohttp.TCPConnector(limit=in_flight)
            async with aiohttp.ClientSession(connector=connector) as session:
                hook = CrmWebhook(session, str(server.make_url("/hook")))
                feedback = MemoryFeedbackSink()
                sink = CrmSink(
                    _Consumer(),
                    hook,
                    feedback,
                    MemoryDeadLetterSink(),
                    RecentlySent(count + 1),
                    max_in_flight=in_flight,
                )
                start = time.perf_counter()
                for first in range(0, count, poll):
                    await sink.handle(
                        {TopicPartition("interventions", 0): records[first : first + poll]}
                    )
                took = time.perf_counter() - start
            assert len(feedback.sent) == count
            print(
                f"sink: {count} interventions, CRM answering in {latency_ms:g} ms, "
                f"{in_flight} in flight, polls of {poll}: "
                f"{took:.2f} s, {count / took:,.0f} interventions/s"
            )
    finally:
        await server.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--changes", type=int, default=100_000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--interventions", type=int, default=5_000)
    parser.add_argument("--in-flight", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--poll", type=int, default=100)
    parser.add_argument(
        "--crm-latency-ms", type=float, default=0.0, help="how long the webhook takes to answer"
    )
    args = parser.parse_args()
    bench_changes(args.changes, args.partitions)
    asyncio.run(bench_sink(args.interventions, args.in_flight, args.poll, args.crm_latency_ms))


if __name__ == "__main__":
    main()
