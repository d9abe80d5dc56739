"""bench/compliance_eval.py: file validation, metrics and exit status, with a fake gate;
and the labelled set in tests/data/compliance/ against what it promises to hold."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]


def _load(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


ev = _load("compliance_eval", REPO / "bench" / "compliance_eval.py")


def line(**fields: str) -> str:
    record = {
        "id": "m1",
        "lang": "en",
        "text": "a guaranteed return of 8%",
        "label": "violation",
        "category": "return_promise",
        "evasion": "none",
    }
    record.update(fields)
    return json.dumps(record, ensure_ascii=False)


def problems_of(text: str) -> list[str]:
    with pytest.raises(ev.LabelledFileError) as caught:
        ev.parse_labelled(text, "set.jsonl")
    problems: list[str] = caught.value.problems
    return problems


# --- validation -------------------------------------------------------------------------


def test_a_valid_file_parses_into_messages() -> None:
    text = line() + "\n" + line(id="m2", label="clean", category="plain", text="hello") + "\n"
    messages = ev.parse_labelled(text, "set.jsonl")
    assert [(m.id, m.label, m.category) for m in messages] == [
        ("m1", "violation", "return_promise"),
        ("m2", "clean", "plain"),
    ]


def test_a_wrong_label_names_line_field_expected_and_found() -> None:
    text = line() + "\n" + line(id="m2", label="violaton") + "\n"
    [problem] = problems_of(text)
    assert problem.startswith("set.jsonl:2: label:")
    assert "'violation' or 'clean'" in problem
    assert "'violaton'" in problem


def test_every_problem_in_the_file_is_reported_at_once() -> None:
    text = "\n".join(
        [
            line(lang="fr"),
            "{not json",
            line(id="m3", evasion="rot13"),
            json.dumps({"id": "m4", "lang": "zh", "text": "x", "label": "clean"}),
            line(id="m5", label="clean", category="return_promise"),
            line(id="m6", category="plain"),
            line(id="m1", text="duplicate id"),
            line(id="m8", text=""),
            "",
            json.dumps([1, 2]),
            line(id="m11", label="clean", category="lookalike_Bad Name"),
        ]
    )
    problems = problems_of(text)
    assert [p.split(":")[1:3] for p in problems] == [
        ["1", " lang"],
        ["2", " (json)"],
        ["3", " evasion"],
        ["4", " category"],
        ["4", " evasion"],
        ["5", " category"],
        ["6", " category"],
        ["7", " id"],
        ["8", " text"],
        ["9", " (json)"],
        ["10", " (json)"],
        ["11", " category"],
    ]
    assert "'fr'" in problems[0] and "'zh' or 'en'" in problems[0]
    assert "missing" in problems[3]
    assert "line 1" in problems[7]  # the duplicate names where the id was first used


def test_clean_categories_may_name_any_lookalike_kind() -> None:
    text = line(label="clean", category="lookalike_goods_returns", evasion="traditional")
    [message] = ev.parse_labelled(text, "set.jsonl")
    assert message.category == "lookalike_goods_returns"


def test_a_field_of_the_wrong_type_is_named() -> None:
    [problem] = problems_of(line().replace('"m1"', "17"))
    assert problem.startswith("set.jsonl:1: id:") and "a string" in problem and "17" in problem


# --- metrics ----------------------------------------------------------------------------


def msg(id_: str, label: str, category: str, evasion: str = "none", text: str = "t") -> Any:
    return ev.Labelled(id_, "en", text, label, category, evasion)


@dataclass
class FakeDecision:
    verdict: str


class FakeClock:
    """Each judge call takes the next duration, in seconds."""

    def __init__(self, durations: list[float]) -> None:
        self._durations: Iterator[float] = iter(durations)
        self.now = 0.0
        self._started = False

    def __call__(self) -> float:
        if self._started:
            self.now += next(self._durations)
        self._started = not self._started
        return self.now


SET = [
    msg("v1", "violation", "return_promise", "none"),
    msg("v2", "violation", "return_promise", "homoglyph"),
    msg("v3", "violation", "third_party_pii", "homoglyph", text="card 6222021234567890"),
    msg("v4", "violation", "principal_protection", "none"),
    msg("c1", "clean", "plain"),
    msg("c2", "clean", "lookalike_deposit"),
    msg("c3", "clean", "lookalike_deposit", text="order 110105199003071235"),
    msg("c4", "clean", "negation"),
]
VERDICTS = {
    "v1": "block",
    "v2": "allow",
    "v3": "allow",
    "v4": "remind",
    "c1": "allow",
    "c2": "allow",
    "c3": "confirm",
    "c4": "allow",
}


def fake_judge(message: Any) -> FakeDecision:
    return FakeDecision(VERDICTS[message.id])


def mask_digits(text: str) -> str:
    return re.sub(r"\d(?=\d{4})", "*", text)


def evaluate(
    judge: Callable[[Any], FakeDecision] = fake_judge, durations: list[float] | None = None
) -> Any:
    clock = FakeClock(durations or [0.001] * len(SET))
    return ev.evaluate(SET, judge, clock=clock)


def test_any_verdict_but_allow_counts_as_flagged() -> None:
    outcomes = evaluate()
    assert {o.message.id for o in outcomes if o.flagged} == {"v1", "v4", "c3"}
    assert [o.verdict for o in outcomes][:2] == ["block", "allow"]


@dataclass
class FakePolicyVerdict:
    mode: str
    verdict: str


@dataclass
class FakeGateDecision:
    verdict: str
    policies: tuple[FakePolicyVerdict, ...]


def test_a_test_mode_policy_that_would_block_does_not_count() -> None:
    # The rep is told "allow"; what a policy running in test mode would have said is
    # recorded by the gate, not returned, so it is no flag.
    shadow = FakeGateDecision("allow", (FakePolicyVerdict("test", "block"),))
    enforced = FakeGateDecision("block", (FakePolicyVerdict("enforce", "block"),))
    outcomes = ev.evaluate(SET[:2], lambda m: shadow if m.id == "v1" else enforced)
    assert [(o.message.id, o.flagged) for o in outcomes] == [("v1", False), ("v2", True)]


def test_precision_recall_and_f1() -> None:
    report = ev.summarise(evaluate())
    assert (report.tp, report.fn, report.fp, report.tn) == (2, 2, 1, 3)
    assert report.precision == pytest.approx(2 / 3)
    assert report.recall == pytest.approx(2 / 4)
    assert report.f1 == pytest.approx(2 * (2 / 3) * 0.5 / (2 / 3 + 0.5))


def test_recall_per_evasion_and_category_and_false_positive_rate_per_clean_kind() -> None:
    report = ev.summarise(evaluate())
    assert report.recall_by_evasion == {"homoglyph": (0, 2), "none": (2, 2)}
    assert report.recall_by_category == {
        "principal_protection": (1, 1),
        "return_promise": (1, 2),
        "third_party_pii": (0, 1),
    }
    assert report.fpr_by_clean_category == {
        "lookalike_deposit": (1, 2),
        "negation": (0, 1),
        "plain": (0, 1),
    }
    assert [o.message.id for o in report.false_negatives] == ["v2", "v3"]
    assert [o.message.id for o in report.false_positives] == ["c3"]


def test_precision_is_undefined_when_nothing_is_flagged() -> None:
    report = ev.summarise(evaluate(judge=lambda m: FakeDecision("allow")))
    assert report.precision is None and report.f1 is None and report.recall == 0.0


def test_latency_percentiles_are_nearest_rank_over_judge_calls() -> None:
    durations = [0.001 * n for n in range(1, 9)]  # 1..8 ms, one per message
    report = ev.summarise(evaluate(durations=durations))
    assert report.p50_ms == pytest.approx(4.0)
    assert report.p99_ms == pytest.approx(8.0)


def test_the_printed_report_masks_personal_data_in_misses() -> None:
    text = ev.render(ev.summarise(evaluate()), mask_digits)
    assert "6222021234567890" not in text and "************7890" in text
    assert "110105199003071235" not in text
    assert "precision 0.667" in text and "recall 0.500" in text
    assert "homoglyph" in text and "lookalike_deposit" in text
    assert "v3\tthird_party_pii\thomoglyph" in text


def test_json_report_carries_the_same_numbers_with_masked_texts() -> None:
    document = ev.as_json(ev.summarise(evaluate()), mask_digits)
    encoded = json.dumps(document)
    assert "6222021234567890" not in encoded
    assert document["precision"] == pytest.approx(2 / 3)
    assert document["recall_by_evasion"]["homoglyph"] == {"flagged": 0, "total": 2, "recall": 0.0}
    assert document["false_negatives"][1]["id"] == "v3"


# --- the command ------------------------------------------------------------------------


@pytest.fixture
def labelled(tmp_path: Path) -> Path:
    path = tmp_path / "set.jsonl"
    path.write_text("".join(json.dumps(asdict(m)) + "\n" for m in SET), encoding="utf-8")
    return path


def run_main(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    gate = ev.Gate(judge=fake_judge, mask=mask_digits)
    status = ev.main(args, gate_factory=lambda bundles: gate)
    out, err = capsys.readouterr()
    return status, out, err


def test_low_quality_still_exits_zero_without_thresholds(
    labelled: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, _ = run_main(["--labelled", str(labelled)], capsys)
    assert status == 0 and "recall 0.500" in out


@pytest.mark.parametrize(
    ("flags", "status"),
    [
        (["--min-recall", "0.5"], 0),
        (["--min-recall", "0.51"], 1),
        (["--min-precision", "0.66"], 0),
        (["--min-precision", "0.7"], 1),
        (["--min-evasion-recall", "0.0"], 0),
        (["--min-evasion-recall", "0.5"], 1),  # homoglyph is at 0/2
    ],
)
def test_thresholds_decide_the_exit_status(
    labelled: Path, capsys: pytest.CaptureFixture[str], flags: list[str], status: int
) -> None:
    got, _, err = run_main(["--labelled", str(labelled), *flags], capsys)
    assert got == status
    if status:
        assert "expected" in err and "found" in err


def test_json_flag_prints_one_json_document(
    labelled: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, _ = run_main(["--labelled", str(labelled), "--json"], capsys)
    assert status == 0 and json.loads(out)["totals"]["messages"] == len(SET)


def test_an_invalid_file_exits_two_naming_its_problems(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(line() + "\n" + line(id="m2", lang="de") + "\n", encoding="utf-8")
    status, _, err = run_main(["--labelled", str(path)], capsys)
    assert status == 2 and f"{path}:2: lang:" in err and "'de'" in err
