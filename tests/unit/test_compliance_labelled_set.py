"""The labelled compliance set (tests/data/compliance/) holds what its README promises,
is exactly what its generator writes, and its personal data is valid where it must be."""

from __future__ import annotations

import importlib.util
import json
import random
import re
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

DATA = Path(__file__).resolve().parents[2] / "tests" / "data" / "compliance"
VIOLATION_CATEGORIES = {
    "return_promise",
    "principal_protection",
    "delivery_date_promise",
    "third_party_pii",
}
EVASIONS = {
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
}
ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)


def _load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_labelled", DATA / "make_labelled.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["make_labelled"] = module
    spec.loader.exec_module(module)
    return module


gen = _load_generator()


def id_valid(number: str) -> bool:
    total = sum(int(d) * w for d, w in zip(number[:17], ID_WEIGHTS, strict=True))
    return "10X98765432"[total % 11] == number[17].upper()


def luhn(number: str) -> bool:
    digits = [int(d) for d in reversed(number)]
    odd = sum(digits[0::2])
    even = sum(sum(divmod(2 * d, 10)) for d in digits[1::2])
    return (odd + even) % 10 == 0


@pytest.fixture(scope="module")
def the_set() -> list[dict[str, Any]]:
    lines = (DATA / "labelled.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


def test_the_set_holds_what_its_readme_promises(the_set: list[dict[str, Any]]) -> None:
    violations = [m for m in the_set if m["label"] == "violation"]
    clean = [m for m in the_set if m["label"] == "clean"]
    assert len(violations) + len(clean) == len(the_set) >= 400
    by_evasion = Counter(m["evasion"] for m in violations)
    assert set(by_evasion) == EVASIONS and min(by_evasion.values()) >= 15
    by_category = Counter(m["category"] for m in violations)
    assert set(by_category) == VIOLATION_CATEGORIES and min(by_category.values()) >= 40
    assert len(clean) >= 150
    assert sum(m["category"] != "plain" for m in clean) >= 80
    assert all(
        m["category"] in {"plain", "negation"} or m["category"].startswith("lookalike_")
        for m in clean
    )
    langs = Counter(m["lang"] for m in the_set)
    assert set(langs) == {"zh", "en"} and min(langs.values()) >= 0.4 * len(the_set)
    assert len({m["id"] for m in the_set}) == len(the_set)
    assert len({m["text"] for m in the_set}) == len(the_set)


def test_the_committed_set_is_what_the_generator_writes() -> None:
    assert gen.render(gen.build()) == (DATA / "labelled.jsonl").read_text(encoding="utf-8")


def test_generated_numbers_pass_or_fail_their_checksums_as_intended() -> None:
    rng = random.Random(1)
    for _ in range(200):
        assert id_valid(gen.resident_id(rng))
        assert gen.resident_id(rng, x_check=True).endswith("X")
        assert not id_valid(gen.order_number(rng))
        assert luhn(gen.bank_card(rng))
        assert re.fullmatch(r"1[3-9]\d{9}", gen.mobile(rng))


def test_personal_data_is_valid_in_violations_and_invalid_in_order_numbers(
    the_set: list[dict[str, Any]],
) -> None:
    for m in the_set:
        text = m["text"]
        if m["category"] == "third_party_pii" and m["evasion"] in {"none", "traditional"}:
            ids = [n for n in re.findall(r"(?<!\d)\d{17}[\dXx](?!\d)", text) if id_valid(n)]
            cards = [n for n in re.findall(r"(?<!\d)\d{16,19}(?!\d)", text) if luhn(n)]
            phones = re.findall(r"(?<!\d)1[3-9]\d{9}(?!\d)", text)
            emails = re.findall(r"[\w.]+@[\w.]+\.com", text)
            assert ids or cards or phones or emails, text
            assert f"@{gen.COMPANY}" not in text
        if m["category"] == "lookalike_order_number" and m["evasion"] == "none":
            [number] = re.findall(r"\d{18}", text)
            assert not id_valid(number), text
        if m["category"] == "lookalike_own_email":
            assert gen.SENDER in text
        if m["category"] == "lookalike_company_email":
            assert f"@{gen.COMPANY}" in text and gen.SENDER not in text


def test_every_evaded_violation_differs_from_plain_text(the_set: list[dict[str, Any]]) -> None:
    # An evasion label is only honest if the technique left a mark on the text.
    marks: dict[str, Callable[[str], bool]] = {
        "fullwidth": lambda t: any("\uff01" <= ch <= "\uff5e" for ch in t),
        "zero_width": lambda t: any(ch in "\u200b\u200c\u200d\u2060\ufeff\u00ad" for ch in t),
        "homoglyph": lambda t: any("\u0370" <= ch <= "\u04ff" for ch in t),
        "traditional": lambda t: t != gen.to_simplified(t),
    }
    for m in the_set:
        check = marks.get(m["evasion"])
        if m["label"] == "violation" and check is not None:
            assert check(m["text"]), m
