"""Quality bar of the compliance gate (issue 8): the shipped default policy bundle over the
labelled set in tests/data/compliance/ must reach recall of at least 0.97 on violations,
at least 0.95 for every evasion technique, and precision of at least 0.95.

This is a measurement of the detector, not a test of the evaluation code: when it fails,
the message lists every miss and false alarm (personal data masked). The same figures are
printed by ``make compliance-eval``.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[2]
LABELLED = REPO / "tests" / "data" / "compliance" / "labelled.jsonl"
BUNDLE = REPO / "rules" / "policies" / "default.yaml"
MIN_RECALL = 0.97
MIN_EVASION_RECALL = 0.95
MIN_PRECISION = 0.95


def _load_eval() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "compliance_eval", REPO / "bench" / "compliance_eval.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["compliance_eval"] = module
    spec.loader.exec_module(module)
    return module


def test_quality_bar_of_the_default_policy_on_the_labelled_set() -> None:
    ev = _load_eval()
    messages = ev.parse_labelled(LABELLED.read_text(encoding="utf-8"), str(LABELLED))
    gate = ev.load_gate([str(BUNDLE)])
    report = ev.summarise(ev.evaluate(messages, gate.judge))
    missed = ev.missed_bars(report, MIN_RECALL, MIN_PRECISION, MIN_EVASION_RECALL)
    assert missed == [], "\n".join(missed) + "\n\n" + ev.render(report, gate.mask)
