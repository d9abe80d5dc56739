"""Latency of the pre-send compliance gate at a fixed rate, client and gate in separate
processes, on a real broker:

    python deploy/kafka/broker.py run -- python bench/gate_latency.py --rate 300 --seconds 60

The gate (`warroom gate serve`, its own process) runs the shipped default policy and
records every verdict on message-drafts before it answers. This process is the client:
it sends drafts on a fixed schedule (open loop: a late answer does not delay the next
request, and latency counts from the scheduled send time), cycling through the labelled
compliance set. Two baselines are measured in the same run: judge() alone in this
process (the policy's own cost), and `GET /healthz` on the same gate at the same rate
(HTTP and event-loop cost without judging or Kafka). Prints p50/p99/max of each and the
ratios; exits 1 if a request failed or p99 of the gate is above --target-p99-ms.
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
from pathlib import Path

import aiohttp
import orjson

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.serving import free_port, wait_ready  # noqa: E402
from engine.bundle import load_bundle  # noqa: E402
from engine.compliance import Draft, judge  # noqa: E402

POLICY = REPO / "rules/policies/default.yaml"
LABELLED = REPO / "tests/data/compliance/labelled.jsonl"


def texts() -> list[str]:
    if LABELLED.exists():
        lines = LABELLED.read_text(encoding="utf-8").splitlines()
        return [orjson.loads(line)["text"] for line in lines if line.strip()]
    return ["Thanks for your time today, I will send the proposal tomorrow."]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def summary(name: str, values: list[float]) -> str:
    return (
        f"{name:<34} n={len(values):>6}  p50={percentile(values, 0.50):7.2f} ms  "
        f"p99={percentile(values, 0.99):7.2f} ms  max={max(values, default=0.0):7.2f} ms"
    )


def judge_baseline(samples: list[str], rounds: int = 3) -> list[float]:
    policy = load_bundle(POLICY.read_text(encoding="utf-8"), str(POLICY)).policy
    assert policy is not None, f"{POLICY} has no policy section"
    timings = []
    for n in range(rounds * len(samples)):
        draft = Draft(f"b-{n}", "bench", "rep-1", samples[n % len(samples)])
        started = time.perf_counter()
        judge((policy,), draft)
        timings.append((time.perf_counter() - started) * 1000)
    return timings


async def fixed_rate(
    session: aiohttp.ClientSession, rate: float, seconds: float, request: object
) -> tuple[list[float], int]:
    """Send ``request(n)`` coroutines at ``rate``/s; latency from the scheduled time."""
    latencies: list[float] = []
    failures = 0
    interval = 1.0 / rate
    count = int(rate * seconds)
    start = time.perf_counter() + 0.1

    async def one(n: int, due: float) -> None:
        nonlocal failures
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        try:
            ok = await request(n)  # type: ignore[operator]
        except aiohttp.ClientError:
            ok = False
        latencies.append((time.perf_counter() - due) * 1000)
        if not ok:
            failures += 1

    await asyncio.gather(*(one(n, start + n * interval) for n in range(count)))
    return latencies, failures


async def main_async(args: argparse.Namespace) -> int:
    from streams.rules_push import push_bundle
    from streams.settings import Settings
    from streams.topics import ensure_topics

    run = uuid.uuid4().hex[:8]
    settings = Settings(topic_prefix=f"bench-gate-{run}.", partitions=args.partitions)
    await ensure_topics(settings)
    await push_bundle(settings, POLICY.read_text(encoding="utf-8"), str(POLICY))
    samples = texts()
    baseline = judge_baseline(samples)

    port = free_port()
    env = dict(os.environ)
    env.update(
        WARROOM_TOPIC_PREFIX=settings.topic_prefix,
        WARROOM_PARTITIONS=str(settings.partitions),
        WARROOM_BOOTSTRAP_SERVERS=settings.bootstrap_servers,
    )
    command = [sys.executable, "-m", "streams.cli", "gate", "serve", "--port", str(port)]
    gate = subprocess.Popen(command, cwd=REPO, env=env)  # noqa: ASYNC220 (started once)
    url = f"http://127.0.0.1:{port}"
    try:
        await wait_ready(url, gate, "gate")
        connector = aiohttp.TCPConnector(limit=256)
        async with aiohttp.ClientSession(connector=connector) as session:

            async def health(n: int) -> bool:
                async with session.get(f"{url}/healthz") as response:
                    await response.read()
                    return response.status == 200

            async def draft(n: int) -> bool:
                body = {
                    "draft_id": f"{run}-{n}",
                    "customer_id": f"customer-{n % 500}",
                    "rep_id": f"rep-{n % 20}",
                    "text": samples[n % len(samples)],
                    "sender_contacts": ["rep@warroom-demo.com"],
                }
                async with session.post(f"{url}/v1/drafts", json=body) as response:
                    await response.read()
                    return response.status == 200

            await fixed_rate(session, args.rate, 2.0, draft)  # warm-up
            health_latency, health_failed = await fixed_rate(
                session, args.rate, min(args.seconds, 15.0), health
            )
            gate_latency, gate_failed = await fixed_rate(session, args.rate, args.seconds, draft)
    finally:
        gate.send_signal(signal.SIGINT)
        gate.wait(timeout=60)
    print(
        f"compliance gate at {args.rate:g} drafts/s for {args.seconds:g} s "
        f"({len(samples)} distinct texts, {settings.partitions} partitions)"
    )
    print(summary("judge() alone, in process", baseline))
    print(summary("GET /healthz, same rate", health_latency))
    print(summary("POST /v1/drafts (judge + Kafka ack)", gate_latency))
    gate_p99 = percentile(gate_latency, 0.99)
    print(
        f"ratios: gate p99 / healthz p99 = {gate_p99 / percentile(health_latency, 0.99):.1f}x, "
        f"gate p50 / judge p50 = "
        f"{percentile(gate_latency, 0.5) / max(percentile(baseline, 0.5), 1e-6):.0f}x"
    )
    print(f"failed requests: {gate_failed} drafts, {health_failed} health checks")
    ok = gate_failed == 0 and health_failed == 0 and gate_p99 <= args.target_p99_ms
    print(f"p99 target {args.target_p99_ms:g} ms: {'met' if ok else 'MISSED'}")
    return 0 if ok else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=300.0, help="drafts per second")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--target-p99-ms", type=float, default=10.0)
    return asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
