"""What the rule feed writes about a record stays small, whatever the record."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson

from engine.builtin import BUILTIN_BUNDLE
from engine.rulebook import BundleLedger, RuleBook
from streams.rules_feed import _offer, audit_key, audit_record

NOW = datetime(2026, 12, 1, tzinfo=UTC)


def test_a_huge_key_is_refused_without_being_echoed_whole() -> None:
    key = b"k" * 900_000
    verdict = _offer(BundleLedger(RuleBook(BUILTIN_BUNDLE)), key, b"bundle: x\n", 7, quiet=True)
    assert verdict is not None and not verdict.accepted
    entry = orjson.dumps(audit_record(verdict, 7, NOW))
    assert len(entry) < 4_000
    assert b"900000 bytes" in entry
    assert len(audit_key(key)) <= 256


def test_audit_records_cut_long_problem_lists_and_texts() -> None:
    from engine.rulebook import Verdict

    verdict = Verdict("b" * 5000, False, 3, tuple("p" * 10_000 for _ in range(500)))
    entry = orjson.dumps(audit_record(verdict, 1, NOW))
    assert len(entry) < 64_000
    decoded = orjson.loads(entry)
    assert decoded["problems"][-1].startswith("… and ")
