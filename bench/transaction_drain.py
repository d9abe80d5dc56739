#!/usr/bin/env python3
"""How fast one worker drains touchpoint records written one per Kafka transaction (as a
chat connector replica writes a lone request), against the same records written without
transactions.

    .venv/bin/python deploy/kafka/broker.py run -- \
        .venv/bin/python bench/transaction_drain.py --records 500

For each case: a fresh app id and topics, ``--records`` single-touchpoint records written
first (one transaction each, or idempotent without transactions), then one worker
(exactly-once, memory store) starts; the clock runs from the first commit the group
makes to the commit past the last record; records/s counts the records committed after
that first commit (a first commit can take most of a fast backlog at once).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from aiokafka import AIOKafkaProducer  # noqa: E402

from bench.serving import free_port  # noqa: E402
from schemas.codec import encode_touchpoint  # noqa: E402
from streams.settings import Settings  # noqa: E402
from streams.topics import ensure_topics  # noqa: E402
from tests.chaos.workload import generate_events  # noqa: E402
from tests.integration.harness import WorkerProcess, last_offsets  # noqa: E402

BOOTSTRAP_ENV = "WARROOM_BOOTSTRAP_SERVERS"


async def committed(settings: Settings) -> dict[int, int]:
    """Partition -> offset the worker's group has committed on touchpoints (absent: none)."""
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.errors import KafkaError

    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(settings.app_id)
    except KafkaError:
        offsets = {}
    finally:
        await admin.close()
    topic = settings.topic("touchpoints")
    return {tp.partition: meta.offset for tp, meta in offsets.items() if tp.topic == topic}


async def case(bootstrap: str, records: int, transactional: bool, seed: int) -> None:
    run = uuid.uuid4().hex[:8]
    folder = Path(tempfile.mkdtemp(prefix="warroom-drain-"))
    settings = Settings(
        app_id=f"bench-drain-{run}",
        bootstrap_servers=bootstrap,
        topic_prefix=f"bench-drain-{run}.",
        partitions=4,
        processing_guarantee="exactly_once",
        data_dir=folder / "worker",
        web_port=free_port(),
    )
    await ensure_topics(settings)
    events = generate_events(records, max(1, records // 10), seed, "d")
    producer = (
        AIOKafkaProducer(bootstrap_servers=bootstrap, transactional_id=f"bench-drain-{run}")
        if transactional
        else AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True)
    )
    topic = settings.topic("touchpoints")
    await producer.start()
    try:
        for event in events:
            key, value = event.customer_id.encode(), encode_touchpoint(event)
            if transactional:
                async with producer.transaction():
                    await producer.send(topic, value, key=key)
            else:
                await producer.send(topic, value, key=key)
        await producer.flush()
    finally:
        await producer.stop()
    last = {tp.partition: n for tp, n in (await last_offsets(settings, "touchpoints")).items()}
    per_record = 2 if transactional else 1  # a commit marker follows each transaction's record
    worker = WorkerProcess(settings, folder / "worker.log")
    launched = time.monotonic()
    worker.start()
    first: tuple[float, int] | None = None
    try:
        while True:
            worker.assert_alive()
            now = await committed(settings)
            done = sum(min(now.get(p, 0), end + 1) for p, end in last.items())
            if first is None and now:
                first = (time.monotonic(), done)
            if all(now.get(p, -1) > end for p, end in last.items()):
                break
            await asyncio.sleep(0.2)
    finally:
        worker.stop()
    assert first is not None
    finished = time.monotonic()
    after_first = (sum(end + 1 for end in last.values()) - first[1]) / per_record
    seconds = finished - first[0]
    label = "one transaction per record" if transactional else "no transactions"
    print(
        f"{label}: {records:,} records, {finished - launched:.1f} s from the worker's start; "
        f"{after_first:,.0f} records committed after its first commit, in {seconds:.1f} s "
        f"= {after_first / max(seconds, 1e-9):,.0f} records/s",
        flush=True,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=500)
    parser.add_argument("--cases", default="plain,transactional")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    bootstrap = os.environ.get(BOOTSTRAP_ENV, "").strip()
    if not bootstrap:
        print(f"{BOOTSTRAP_ENV} is not set: run under deploy/kafka/broker.py run", file=sys.stderr)
        return 2
    for name in args.cases.split(","):
        asyncio.run(case(bootstrap, args.records, name == "transactional", args.seed))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
