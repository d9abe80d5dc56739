#!/usr/bin/env python3
"""Precision and recall of the compliance gate on a labelled set of message drafts.

    .venv/bin/python bench/compliance_eval.py --labelled tests/data/compliance/labelled.jsonl
        [--bundle rules/policies/default.yaml ...] [--json]
        [--min-recall 0.97] [--min-precision 0.95] [--min-evasion-recall 0.95]

The file holds one JSON object per line: ``{"id", "lang": "zh"|"en", "text",
"label": "violation"|"clean", "category", "evasion"}`` (tests/data/compliance/README.md
describes the values). Every message goes through the gate, ``judge()``, with the
policies of the given bundles (the shipped default policy bundle unless told), as a
draft from ``rep@warroom-demo.com``. A message counts as flagged when the verdict the
gate returns is not ``allow``: remind, confirm and block all count; what a policy in
``test`` mode would have said does not, since the rep never sees it.

It prints the totals, precision, recall and F1, recall per evasion technique and per
category, the false-positive rate per kind of clean message, every miss and false alarm
(with personal data masked by the gate's own masking), and p50/p99 of judge() per
message. The exit status is 0 whatever the quality, 1 when a ``--min-*`` bar is given and
missed, 2 when the file or a bundle cannot be used.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from engine import InvalidBundle

DEFAULT_BUNDLE = "rules/policies/default.yaml"
SENDER = "rep@warroom-demo.com"
LANGS = ("zh", "en")
LABELS = ("violation", "clean")
VIOLATION_CATEGORIES = (
    "return_promise",
    "principal_protection",
    "delivery_date_promise",
    "third_party_pii",
)
CLEAN_CATEGORIES = ("plain", "negation")
"""Plus ``lookalike_<kind>``: an innocent text that resembles a violation."""
LOOKALIKE = re.compile(r"lookalike_[a-z][a-z0-9_]*")
EVASIONS = (
    "none",
    "fullwidth",
    "case",
    "traditional",
    "zero_width",
    "inserted_spaces",
    "inserted_punctuation",
    "homoglyph",
    "digit_letter",
    "mixed",
)
FIELDS = ("id", "lang", "text", "label", "category", "evasion")


# --- the labelled file ------------------------------------------------------------------


class LabelledFileError(Exception):
    """A labelled file that cannot be evaluated; ``problems`` names every line at fault."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


@dataclass(frozen=True, slots=True)
class Labelled:
    id: str
    lang: str
    text: str
    label: str
    category: str
    evasion: str


def _one_of(values: Iterable[str]) -> str:
    quoted = [repr(v) for v in values]
    return quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " or " + quoted[-1]


def _line_problems(record: dict[str, Any]) -> list[tuple[str, str]]:
    """(field, what was expected and what was found) for one decoded line."""
    problems: list[tuple[str, str]] = []
    for name in FIELDS:
        if name not in record:
            problems.append((name, "expected a string, found the field missing"))
        elif not isinstance(record[name], str):
            found = json.dumps(record[name], ensure_ascii=False)
            problems.append((name, f"expected a string, found {found}"))
    unknown = sorted(set(record) - set(FIELDS))
    if unknown:
        problems.append((unknown[0], f"expected only the fields {_one_of(FIELDS)}, found it"))
    text = record.get("text")
    if isinstance(text, str) and not text.strip():
        problems.append(("text", "expected the message text, found an empty string"))
    for name, allowed in (("lang", LANGS), ("label", LABELS), ("evasion", EVASIONS)):
        value = record.get(name)
        if isinstance(value, str) and value not in allowed:
            problems.append((name, f"expected {_one_of(allowed)}, found {value!r}"))
    label, category = record.get("label"), record.get("category")
    if isinstance(category, str) and label == "violation":
        if category not in VIOLATION_CATEGORIES:
            expected = _one_of(VIOLATION_CATEGORIES)
            problems.append(
                ("category", f"expected {expected} for a violation, found {category!r}")
            )
    elif (
        isinstance(category, str)
        and label == "clean"
        and category not in CLEAN_CATEGORIES
        and not LOOKALIKE.fullmatch(category)
    ):
        expected = "'plain', 'negation' or 'lookalike_<kind>' (lower case, underscores)"
        problems.append(
            ("category", f"expected {expected} for a clean message, found {category!r}")
        )
    order = {name: i for i, name in enumerate(FIELDS)}
    problems.sort(key=lambda p: order.get(p[0], len(FIELDS)))
    return problems


def parse_labelled(text: str, source: str) -> list[Labelled]:
    """The messages of a labelled file, or :class:`LabelledFileError` naming every problem
    as ``source:line: field: expected ..., found ...``."""
    messages: list[Labelled] = []
    problems: list[str] = []
    first_seen: dict[str, int] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        where = f"{source}:{number}"
        if not raw.strip():
            problems.append(f"{where}: (json): expected a JSON object, found an empty line")
            continue
        try:
            record = json.loads(raw)
        except json.JSONDecodeError as exc:
            problems.append(
                f"{where}: (json): expected a JSON object, found invalid JSON ({exc.msg})"
            )
            continue
        if not isinstance(record, dict):
            kind = type(record).__name__
            problems.append(f"{where}: (json): expected a JSON object, found a JSON {kind}")
            continue
        line_problems = _line_problems(record)
        problems.extend(f"{where}: {name}: {message}" for name, message in line_problems)
        id_ = record.get("id")
        if isinstance(id_, str):
            if id_ in first_seen:
                problems.append(
                    f"{where}: id: expected a unique id, found {id_!r} again "
                    f"(first on line {first_seen[id_]})"
                )
                continue
            first_seen[id_] = number
        if not line_problems:
            messages.append(Labelled(*(record[name] for name in FIELDS)))
    if problems:
        raise LabelledFileError(problems)
    if not messages:
        raise LabelledFileError([f"{source}:1: (json): expected messages, found none"])
    return messages


# --- running the gate -------------------------------------------------------------------


class Decision(Protocol):
    @property
    def verdict(self) -> Any: ...


Judge = Callable[[Labelled], Decision]
Clock = Callable[[], float]


@dataclass(frozen=True, slots=True)
class Outcome:
    message: Labelled
    verdict: str
    seconds: float

    @property
    def flagged(self) -> bool:
        return self.verdict != "allow"


def evaluate(
    messages: Sequence[Labelled], judge: Judge, clock: Clock = time.perf_counter
) -> list[Outcome]:
    """Each message through ``judge``, with the time the call took."""
    outcomes = []
    for message in messages:
        started = clock()
        decision = judge(message)
        took = clock() - started
        outcomes.append(Outcome(message, str(decision.verdict), took))
    return outcomes


# --- the figures ------------------------------------------------------------------------

Ratio = tuple[int, int]
"""(count, out of)."""


@dataclass(frozen=True)
class Report:
    tp: int
    fn: int
    fp: int
    tn: int
    precision: float | None
    recall: float | None
    f1: float | None
    recall_by_evasion: dict[str, Ratio]
    recall_by_category: dict[str, Ratio]
    recall_by_lang: dict[str, Ratio]
    fpr_by_clean_category: dict[str, Ratio]
    false_negatives: list[Outcome] = field(repr=False)
    false_positives: list[Outcome] = field(repr=False)
    p50_ms: float
    p99_ms: float
    verdicts: dict[str, int]


def _ratio(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile: the smallest value with at least q% of values at or below."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def _tally(outcomes: Iterable[Outcome], key: Callable[[Outcome], str]) -> dict[str, Ratio]:
    flagged: dict[str, int] = defaultdict(int)
    total: dict[str, int] = defaultdict(int)
    for outcome in outcomes:
        total[key(outcome)] += 1
        flagged[key(outcome)] += outcome.flagged
    return {name: (flagged[name], total[name]) for name in sorted(total)}


def summarise(outcomes: Sequence[Outcome]) -> Report:
    violations = [o for o in outcomes if o.message.label == "violation"]
    clean = [o for o in outcomes if o.message.label == "clean"]
    tp = sum(o.flagged for o in violations)
    fp = sum(o.flagged for o in clean)
    precision = _ratio(tp, tp + fp)
    recall = _ratio(tp, len(violations))
    f1 = (
        2 * precision * recall / (precision + recall)
        if precision is not None and recall is not None and precision + recall > 0
        else None
    )
    verdicts: dict[str, int] = defaultdict(int)
    for outcome in outcomes:
        verdicts[outcome.verdict] += 1
    millis = [o.seconds * 1000 for o in outcomes]
    return Report(
        tp=tp,
        fn=len(violations) - tp,
        fp=fp,
        tn=len(clean) - fp,
        precision=precision,
        recall=recall,
        f1=f1,
        recall_by_evasion=_tally(violations, lambda o: o.message.evasion),
        recall_by_category=_tally(violations, lambda o: o.message.category),
        recall_by_lang=_tally(violations, lambda o: o.message.lang),
        fpr_by_clean_category=_tally(clean, lambda o: o.message.category),
        false_negatives=[o for o in violations if not o.flagged],
        false_positives=[o for o in clean if o.flagged],
        p50_ms=percentile(millis, 50),
        p99_ms=percentile(millis, 99),
        verdicts=dict(sorted(verdicts.items())),
    )


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _table(title: str, rows: dict[str, Ratio], what: str) -> list[str]:
    lines = [f"{title}:"]
    for name, (count, total) in rows.items():
        lines.append(f"  {name:<26} {_fmt(_ratio(count, total))}  ({count}/{total} {what})")
    return lines


def _one_line(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)[1:-1]


def render(report: Report, mask: Callable[[str], str]) -> str:
    messages = report.tp + report.fn + report.fp + report.tn
    lines = [
        f"messages {messages}: {report.tp + report.fn} violations, {report.fp + report.tn} clean",
        f"flagged: {report.tp} true, {report.fp} false; missed {report.fn}; "
        f"verdicts {', '.join(f'{k} {v}' for k, v in report.verdicts.items())}",
        f"precision {_fmt(report.precision)}  recall {_fmt(report.recall)}  F1 {_fmt(report.f1)}",
        "",
        *_table("recall per evasion technique", report.recall_by_evasion, "flagged"),
        *_table("recall per category", report.recall_by_category, "flagged"),
        *_table("recall per language", report.recall_by_lang, "flagged"),
        *_table("false-positive rate per clean category", report.fpr_by_clean_category, "flagged"),
        "",
        f"judge() per message: p50 {report.p50_ms:.3f} ms  p99 {report.p99_ms:.3f} ms",
        "",
        f"false negatives ({len(report.false_negatives)}): id, category, evasion, verdict, text",
    ]
    for o in report.false_negatives:
        m = o.message
        lines.append(f"  {m.id}\t{m.category}\t{m.evasion}\t{o.verdict}\t{_one_line(mask(m.text))}")
    lines.append(
        f"false positives ({len(report.false_positives)}): id, category, evasion, verdict, text"
    )
    for o in report.false_positives:
        m = o.message
        lines.append(f"  {m.id}\t{m.category}\t{m.evasion}\t{o.verdict}\t{_one_line(mask(m.text))}")
    return "\n".join(lines) + "\n"


def _ratios(rows: dict[str, Ratio], what: str) -> dict[str, dict[str, Any]]:
    return {
        name: {
            what: count,
            "total": total,
            "recall" if what == "flagged" else "rate": _ratio(count, total),
        }
        for name, (count, total) in rows.items()
    }


def as_json(report: Report, mask: Callable[[str], str]) -> dict[str, Any]:
    def miss(o: Outcome) -> dict[str, str]:
        m = o.message
        return {
            "id": m.id,
            "lang": m.lang,
            "category": m.category,
            "evasion": m.evasion,
            "verdict": o.verdict,
            "text": mask(m.text),
        }

    return {
        "totals": {
            "messages": report.tp + report.fn + report.fp + report.tn,
            "violations": report.tp + report.fn,
            "clean": report.fp + report.tn,
            "true_positives": report.tp,
            "false_negatives": report.fn,
            "false_positives": report.fp,
            "true_negatives": report.tn,
        },
        "verdicts": report.verdicts,
        "precision": report.precision,
        "recall": report.recall,
        "f1": report.f1,
        "recall_by_evasion": _ratios(report.recall_by_evasion, "flagged"),
        "recall_by_category": _ratios(report.recall_by_category, "flagged"),
        "recall_by_lang": _ratios(report.recall_by_lang, "flagged"),
        "false_positive_rate_by_clean_category": {
            name: {"flagged": count, "total": total, "rate": _ratio(count, total)}
            for name, (count, total) in report.fpr_by_clean_category.items()
        },
        "judge_ms": {"p50": report.p50_ms, "p99": report.p99_ms},
        "false_negatives": [miss(o) for o in report.false_negatives],
        "false_positives": [miss(o) for o in report.false_positives],
    }


def missed_bars(
    report: Report,
    min_recall: float | None,
    min_precision: float | None,
    min_evasion_recall: float | None,
) -> list[str]:
    """One line per bar the report misses, saying what was expected and what was found."""
    missed = []
    if min_recall is not None and (report.recall is None or report.recall < min_recall):
        missed.append(f"recall: expected at least {min_recall}, found {_fmt(report.recall)}")
    if min_precision is not None and (report.precision is None or report.precision < min_precision):
        missed.append(
            f"precision: expected at least {min_precision}, found {_fmt(report.precision)}"
        )
    if min_evasion_recall is not None:
        for name, (count, total) in report.recall_by_evasion.items():
            recall = _ratio(count, total)
            if recall is None or recall < min_evasion_recall:
                missed.append(
                    f"recall for evasion {name!r}: expected at least {min_evasion_recall}, "
                    f"found {_fmt(recall)} ({count}/{total})"
                )
    return missed


# --- the real gate ----------------------------------------------------------------------


@dataclass(frozen=True)
class Gate:
    judge: Judge
    mask: Callable[[str], str]


def load_gate(bundle_paths: Sequence[str]) -> Gate:
    """The gate with the policies of ``bundle_paths``, as the worker would run them."""
    from engine import load_bundle
    from engine.compliance import Draft, judge, mask_pii

    policies = []
    for path in bundle_paths:
        bundle = load_bundle(Path(path).read_text(encoding="utf-8"), source=path)
        policy = getattr(bundle, "policy", None)
        if policy is None:
            raise LabelledFileError([f"{path}:1: policy: expected a policy bundle, found none"])
        policies.append(policy)

    def run(message: Labelled) -> Decision:
        draft = Draft(
            draft_id=message.id,
            customer_id="eval",
            rep_id="eval",
            text=message.text,
            kind="message",
            sender_contacts=(SENDER,),
        )
        return judge(policies, draft)

    return Gate(judge=run, mask=mask_pii)


def main(
    argv: Sequence[str] | None = None,
    gate_factory: Callable[[Sequence[str]], Gate] = load_gate,
) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--labelled", required=True, help="labelled JSON-lines file")
    parser.add_argument(
        "--bundle",
        action="append",
        help=f"policy bundle (repeatable; default {DEFAULT_BUNDLE})",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.add_argument("--min-recall", type=float)
    parser.add_argument("--min-precision", type=float)
    parser.add_argument("--min-evasion-recall", type=float, help="for every evasion technique")
    args = parser.parse_args(argv)
    try:
        messages = parse_labelled(Path(args.labelled).read_text(encoding="utf-8"), args.labelled)
        gate = gate_factory(args.bundle or [DEFAULT_BUNDLE])
    except (LabelledFileError, InvalidBundle) as exc:
        print(exc, file=sys.stderr)
        return 2
    except ImportError as exc:
        print(f"the compliance gate: expected engine.compliance, found {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"{exc.filename}: expected a readable file, found {exc.strerror}", file=sys.stderr)
        return 2
    report = summarise(evaluate(messages, gate.judge))
    if args.json:
        print(json.dumps(as_json(report, gate.mask), ensure_ascii=False, indent=2))
    else:
        print(render(report, gate.mask), end="")
    missed = missed_bars(report, args.min_recall, args.min_precision, args.min_evasion_recall)
    for line in missed:
        print(f"quality bar missed: {line}", file=sys.stderr)
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
