"""Evasions the gate sees through, and innocent drafts it leaves alone, each with its own
example: invisible characters and runs of spaces do not stretch a nearby window, letter
stand-ins among letters, card numbers grouped at random after a card word, addresses spelt
out between marks, brand names and disclaimers."""

from __future__ import annotations

import textwrap
from pathlib import Path

from engine.bundle import load_bundle
from engine.compliance import CompiledPolicy, Draft, judge

BUNDLE = Path(__file__).resolve().parents[2] / "rules" / "policies" / "default.yaml"


def policy_of(yaml_text: str) -> CompiledPolicy:
    policy = load_bundle(textwrap.dedent(yaml_text)).policy
    assert policy is not None
    return policy


def _default() -> CompiledPolicy:
    policy = load_bundle(BUNDLE.read_text(encoding="utf-8"), str(BUNDLE)).policy
    assert policy is not None
    return policy


DEFAULT = _default()

NEAR_PROMISE = policy_of(
    """\
    bundle: near-test
    version: 1
    policy:
      categories:
        - id: delivery_date
          tier: remind
          terms: [送到]
          near: [{within: 10, terms: [保证]}]
    """
)


def terms_found(policy: CompiledPolicy, text: str) -> list[str]:
    decision = judge([policy], Draft("d", "c", "r", text, "message"))
    return [f.term for p in decision.policies for f in p.findings]


def categories(text: str) -> set[str]:
    draft = Draft("d", "c", "r", text, "message", sender_contacts=("rep@warroom-demo.com",))
    decision = judge([DEFAULT], draft)
    return {f.category for p in decision.policies for f in p.findings}


# nearby windows


def test_invisible_characters_do_not_stretch_a_nearby_window() -> None:
    padded = "保\u200b\u2060\u200c证\u200b\u200b\u200b\u200b周\u200d\u200d\u200d五\ufeff\ufeff送到"
    assert len(padded) > 10 + 2  # farther than the window, as written
    assert terms_found(NEAR_PROMISE, padded) == ["送到"]


def test_a_run_of_spaces_or_marks_counts_as_one_character_of_a_window() -> None:
    spread = "保   证  ,  周  ·  五  ,  送  到"
    assert terms_found(NEAR_PROMISE, spread) == ["送到"]


def test_words_still_count_in_a_nearby_window() -> None:
    assert terms_found(NEAR_PROMISE, "保证我们周五下午三点左右能够送到") == []
