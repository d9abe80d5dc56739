"""Online scoring in the real worker on the real broker: touchpoints scored, late labels
published as examples (never for a customer who revoked profiling), a model version
learnt and read back by the worker and used in an intervention's explanation, and the
top customers by score answered across partitions."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import orjson
import pytest

from schemas.codec import decode_intervention
from schemas.models import Channel
from streams.rules_push import push_bundle
from streams.scoring import ModelRecord
from streams.scoring_leaders import read_board, show_top
from streams.settings import Settings
from streams.topics import ensure_topics
from streams.web import bearer

from .harness import WorkerProcess, produce_raw, read_topic, touchpoint_record
from .test_compliance_flow import consent, produce

BUNDLE = """\
bundle: churn
version: 1
scoring:
  snapshots: 4
  scores:
    churn:
      features: [touchpoints, count.*, unanswered_outbound]
      labels: {churned: 1, renewed: 0}
      model: {name: logistic_regression, learning_rate: 0.1}
rules:
  - id: churn.watch
    when:
      all:
        - event: {kind: message_received}
        - state: {score.churn: {gte: 0.0}}
    then: {kind: task, title: "Call {customer_id}", due_in: 1d}
"""
CUSTOMERS = [f"c{n}" for n in range(8)]


def record(customer: str, n: int, kind: str, at: datetime) -> tuple[bytes, bytes]:
    direction = "inbound" if kind in ("message_received", "churned", "renewed") else "outbound"
    return touchpoint_record(
        customer, f"{customer}-{n}", kind, at, channel=Channel.CHAT, direction=direction,
        rep_id="rep-1" if customer < "c4" else "rep-2",
    )  # fmt: skip


async def customer_page(settings: Settings, customer: str, wait: bool = False) -> Any:
    """The worker's /customers/{id} page; with ``wait``, once the customer is scored."""
    url = f"http://127.0.0.1:{settings.web_port}/customers/{customer}"
    async with aiohttp.ClientSession() as session:
        for _ in range(120):
            try:
                async with session.get(url, headers=bearer(settings.admin_token)) as response:
                    if response.status == 200:
                        page = await response.json()
                        if not wait or page["scores"]:
                            return page
            except aiohttp.ClientError:
                pass  # restarting
            await asyncio.sleep(0.25)
    raise AssertionError(f"{customer} was not scored within 30 s")


async def test_touchpoints_scored_labels_learnt_and_the_new_model_used(
    settings: Settings, worker: WorkerProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    await ensure_topics(settings)
    await push_bundle(settings, BUNDLE, "churn.yaml")
    worker.start()
    start = datetime.now(UTC) - timedelta(hours=2)
    # zed refuses profiling before anything else: never a training example
    await produce(settings, "consents", [("zed", consent("zed", "profiling", False, start, 1))])
    await asyncio.sleep(1.0)
    first = []
    for i, customer in enumerate([*CUSTOMERS, "zed"]):
        first.append(record(customer, 1, "message_sent", start + timedelta(minutes=i)))
        first.append(record(customer, 2, "message_sent", start + timedelta(minutes=i, seconds=1)))
        outcome = "churned" if i % 2 == 0 else "renewed"
        first.append(record(customer, 3, outcome, start + timedelta(minutes=i, seconds=2)))
    await produce_raw(settings, first)

    examples = await read_topic(
        settings, "scoring-examples", lambda f: len(f) >= 16, orjson.loads, worker
    )
    assert {e["customer_id"] for e in examples} == set(CUSTOMERS)  # not zed
    assert sorted({e["label"] for e in examples}) == [0, 1]

    models = await read_topic(
        settings,
        "models",
        lambda f: any(m.version >= 16 for m in f),
        ModelRecord.from_bytes,
        worker,
    )
    version = max(m.version for m in models)
    assert version == 16 and models[-1].next_example_offset == 16

    # the worker reads the new version and predicts with it
    later = start + timedelta(hours=1)
    await produce_raw(settings, [record("c1", 4, "message_received", later)])
    [task] = await read_topic(
        settings, "interventions", lambda f: len(f) >= 1, decode_intervention, worker
    )
    scores = task.explanation.scores
    assert task.rule_id == "churn.watch"
    assert scores["churn.model_version"] == float(version)
    assert 0.0 < scores["churn"] < 1.0

    page = await customer_page(settings, "c1")
    assert page["scores"]["churn"]["model_version"] == version
    assert page["scores"]["churn"]["value"] == scores["churn"]

    # the same features before and after a crash and restart: the same score and version
    at = start + timedelta(hours=1, minutes=30)
    await produce_raw(settings, [record("p1", 1, "message_sent", at)])
    before = (await customer_page(settings, "p1", wait=True))["scores"]["churn"]
    worker.kill()
    worker.start()
    await produce_raw(settings, [record("p2", 1, "message_sent", at)])
    after = (await customer_page(settings, "p2", wait=True))["scores"]["churn"]
    assert (after["value"], after["model_version"]) == (before["value"], version)

    # warroom top: every partition's leaders merged, as the CLI and the endpoint answer
    for _ in range(40):
        board = await read_board(settings)
        leaders = board.top("churn", 9)
        if len(leaders) == 9 and any(
            e.customer_id == "c1" and e.model_version == version for e in leaders
        ):
            break
        await asyncio.sleep(0.5)
    else:
        raise AssertionError(f"score leaders incomplete: {board.records}")
    assert len({e.partition for e in leaders}) > 1
    values = [e.value for e in leaders]
    assert values == sorted(values, reverse=True)
    capsys.readouterr()
    assert await show_top(settings, "churn", 3, rep="rep-2") == 0
    printed = capsys.readouterr().out.splitlines()
    expected = [e for e in leaders if e.rep == "rep-2"][:3]
    assert printed[0] == "top 3 by churn of rep rep-2"
    assert [line.split()[1] for line in printed[1:]] == [e.customer_id for e in expected]
    wanted = [e.customer_id for e in expected]
    async with aiohttp.ClientSession() as session:
        url = f"http://127.0.0.1:{settings.web_port}/scores/churn/top?k=3&rep=rep-2"
        for _ in range(20):  # the worker follows score-leaders on its own
            async with session.get(url, headers=bearer(settings.admin_token)) as response:
                assert response.status == 200
                answer = await response.json()
            if [c["customer_id"] for c in answer["customers"]] == wanted:
                break
            await asyncio.sleep(0.5)
        async with session.get(url) as refused:
            assert refused.status == 401
    assert [c["customer_id"] for c in answer["customers"]] == wanted
