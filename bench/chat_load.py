"""Load on the chat intake: concurrent HTTP clients against `warroom chat serve` on a real
broker, then every accepted event id counted in the touchpoints topic (read_committed).

    python deploy/kafka/broker.py run -- python bench/chat_load.py --clients 50 --seconds 60

Prints requests/s, p50/p99 latency, status counts, accepted vs consumed, duplicates and
missing ids; exits 1 if any request got a 5xx or any accepted event is not consumed
exactly once (or a refused one landed).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from aiokafka import AIOKafkaConsumer, TopicPartition

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.serving import free_port, wait_ready  # noqa: E402
from schemas.codec import decode_touchpoints  # noqa: E402
from schemas.topics import TOUCHPOINTS  # noqa: E402


@dataclass
class LoadResult:
    seconds: float = 0.0
    statuses: Counter[int] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    accepted: list[str] = field(default_factory=list)
    """Event ids the endpoint answered 202 for."""
    refused: list[str] = field(default_factory=list)
    """Event ids of requests answered with anything else (must not land)."""
    errors: Counter[str] = field(default_factory=Counter)
    """Requests that got no HTTP answer, by exception type."""
    unanswered: list[str] = field(default_factory=list)
    """Event ids of requests with no HTTP answer (they may or may not have landed)."""

    @property
    def requests(self) -> int:
        return sum(self.statuses.values()) + sum(self.errors.values())

    @property
    def server_errors(self) -> int:
        return sum(n for status, n in self.statuses.items() if status >= 500)

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies)
        if not ordered:
            return float("nan")
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def chat_message(run: str, client: int, seq: int, n: int) -> dict[str, object]:
    return {
        "message_id": f"{run}-{client}-{seq}-{n}",
        "customer_id": f"load-{client}-{(seq + n) % 25}",
        "sent_at": "2026-11-22T09:59:00Z",
        "sender": "customer" if seq % 2 else "rep",
        "rep_id": f"rep-{client % 7}",
        "text": "load test message",
    }


async def drive(
    url: str, clients: int, seconds: float, run: str, messages_per_request: int = 1
) -> LoadResult:
    """``clients`` clients post back to back for ``seconds``; each request is new ids."""
    result = LoadResult()
    deadline = time.monotonic() + seconds
    timeout = aiohttp.ClientTimeout(total=60)
    connector = aiohttp.TCPConnector(limit=clients)

    async def client(number: int, session: aiohttp.ClientSession) -> None:
        seq = 0
        while time.monotonic() < deadline:
            body = [chat_message(run, number, seq, n) for n in range(messages_per_request)]
            ids = [f"chat:{m['message_id']}" for m in body]
            seq += 1
            started = time.perf_counter()
            try:
                async with session.post(f"{url}/v1/messages", json=body) as response:
                    await response.read()
                    status = response.status
            except (aiohttp.ClientError, TimeoutError) as exc:
                result.errors[type(exc).__name__] += 1
                result.unanswered.extend(ids)
                continue
            result.latencies.append(time.perf_counter() - started)
            result.statuses[status] += 1
            (result.accepted if status == 202 else result.refused).extend(ids)

    started = time.monotonic()
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        await asyncio.gather(*(client(n, session) for n in range(clients)))
    result.seconds = time.monotonic() - started
    return result


async def consumed_ids(bootstrap_servers: str, topic: str, prefix: str) -> Counter[str]:
    """How often each event id starting with ``prefix`` is in the committed topic now."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap_servers,
        isolation_level="read_committed",
        enable_auto_commit=False,
        group_id=None,
    )
    await consumer.start()
    try:
        numbers = consumer.partitions_for_topic(topic)
        for _ in range(50):
            if numbers:
                break
            await asyncio.sleep(0.2)
            numbers = (await consumer._client.fetch_all_metadata()).partitions_for_topic(topic)
        assert numbers, f"topic {topic!r} does not exist"
        partitions = [TopicPartition(topic, p) for p in sorted(numbers)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        counts: Counter[str] = Counter()
        while [tp for tp, end in ends.items() if await consumer.position(tp) < end]:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for record in records:
                    for event in decode_touchpoints(record.value or b""):
                        if event.event_id.startswith(prefix):
                            counts[event.event_id] += 1
        return counts
    finally:
        await consumer.stop()


@dataclass
class Verdict:
    accepted: int
    consumed: int
    duplicates: int
    missing: int
    refused_but_landed: int

    @property
    def exactly_once(self) -> bool:
        return self.duplicates == 0 and self.missing == 0 and self.refused_but_landed == 0


def check(result: LoadResult, consumed: Counter[str]) -> Verdict:
    accepted = set(result.accepted)
    return Verdict(
        accepted=len(result.accepted),
        consumed=sum(consumed.values()),
        duplicates=sum(n - 1 for n in consumed.values() if n > 1),
        missing=len(accepted - consumed.keys()),
        refused_but_landed=len(set(result.refused) & consumed.keys()),
    )


def report(result: LoadResult, verdict: Verdict, label: str = "chat intake") -> str:
    statuses = ", ".join(f"{s}: {n}" for s, n in sorted(result.statuses.items()))
    errors = ", ".join(f"{e}: {n}" for e, n in sorted(result.errors.items())) or "none"
    return "\n".join(
        [
            f"{label}: {result.requests} requests in {result.seconds:.1f} s = "
            f"{result.requests / result.seconds:.0f} requests/s",
            f"  latency p50 {1000 * result.percentile(0.5):.1f} ms, "
            f"p99 {1000 * result.percentile(0.99):.1f} ms",
            f"  statuses {statuses}; 5xx {result.server_errors}; no answer: {errors}",
            f"  accepted {verdict.accepted} events, consumed {verdict.consumed}, "
            f"duplicates {verdict.duplicates}, missing {verdict.missing}, "
            f"refused but landed {verdict.refused_but_landed}",
        ]
    )


def _start_replicas(count: int, env: dict[str, str]) -> list[tuple[str, subprocess.Popen[bytes]]]:
    """``count`` chat serve processes with the same settings, as replicas of one deployment."""
    replicas = []
    for _ in range(count):
        port = free_port()
        command = [sys.executable, "-m", "streams.cli", "chat", "serve", "--port", str(port)]
        process = subprocess.Popen(command, cwd=REPO, env=env)
        replicas.append((f"http://127.0.0.1:{port}", process))
    return replicas


async def main_async(args: argparse.Namespace) -> int:
    from streams.settings import Settings
    from streams.topics import ensure_topics

    run = uuid.uuid4().hex[:8]
    settings = Settings(topic_prefix=f"bench-chat-{run}.", partitions=args.partitions)
    await ensure_topics(settings)
    env = dict(os.environ)
    env.update(
        WARROOM_TOPIC_PREFIX=settings.topic_prefix,
        WARROOM_PARTITIONS=str(settings.partitions),
        WARROOM_BOOTSTRAP_SERVERS=settings.bootstrap_servers,
    )
    replicas = _start_replicas(args.replicas, env)
    try:
        for url, process in replicas:
            await wait_ready(url, process, "chat serve")
        results = await asyncio.gather(
            *(
                drive(url, args.clients // len(replicas), args.seconds, f"{run}r{n}", args.batch)
                for n, (url, _) in enumerate(replicas)
            )
        )
    finally:
        for _, process in replicas:
            process.send_signal(signal.SIGINT)
        for _, process in replicas:
            process.wait(timeout=60)
    result = LoadResult(seconds=max(r.seconds for r in results))
    for part in results:
        result.statuses.update(part.statuses)
        result.errors.update(part.errors)
        result.latencies.extend(part.latencies)
        result.accepted.extend(part.accepted)
        result.refused.extend(part.refused)
        result.unanswered.extend(part.unanswered)
    consumed = await consumed_ids(settings.bootstrap_servers, settings.topic(TOUCHPOINTS), "chat:")
    verdict = check(result, consumed)
    label = (
        f"chat intake, {args.clients} clients, {args.batch} message(s)/request, "
        f"{args.replicas} replica(s)"
    )
    print(report(result, verdict, label), flush=True)
    return 0 if result.server_errors == 0 and not result.errors and verdict.exactly_once else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--batch", type=int, default=1, help="messages per request")
    parser.add_argument("--replicas", type=int, default=1, help="chat serve processes")
    parser.add_argument("--partitions", type=int, default=4)
    return asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
