"""The shipped default policy (rules/policies/default.yaml) on drafts written for it."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.bundle import load_bundle
from engine.compliance import CompiledPolicy, Draft, Verdict, judge

BUNDLE = Path(__file__).resolve().parents[2] / "rules" / "policies" / "default.yaml"


def _default() -> CompiledPolicy:
    policy = load_bundle(BUNDLE.read_text(encoding="utf-8"), str(BUNDLE)).policy
    assert policy is not None
    return policy


DEFAULT = _default()


def categories(text: str, kind: str = "message", **contacts: tuple[str, ...]) -> set[str]:
    decision = judge([DEFAULT], Draft("d", "c", "r", text, kind, **contacts))
    return {f.category for p in decision.policies for f in p.findings}


def verdict(text: str, kind: str = "message") -> Verdict:
    return judge([DEFAULT], Draft("d", "c", "r", text, kind)).verdict


@pytest.mark.parametrize(
    ("text", "category"),
    [
        ("这款产品保本保息，您放心。", "principal_protection"),
        ("投资零风险，本金安全。", "principal_protection"),
        ("This plan is completely risk-free.", "principal_protection"),
        ("Your capital is guaranteed.", "principal_protection"),
        ("我们的产品稳赚不赔。", "return_promise"),
        ("年化收益率可以到7%。", "return_promise"),
        ("We offer guaranteed returns every year.", "return_promise"),
        ("I promise you a 9% return.", "return_promise"),
        ("我们保证明天发货。", "delivery_date"),
        ("Your order will arrive by Friday, I promise.", "delivery_date"),
        ("保证3月5日前到货。", "delivery_date"),
        ("钢材3月12日一定到，放心。", "delivery_date"),  # a promise word and 到 in one
        ("We'll deliver the servers on 12 M4rch, guaranteed.", "delivery_date"),
        ("This plan keeps you safe from any loss.", "principal_protection"),
        ("客户王先生的身份证号是11010519491231002X。", "third_party_pii"),
        ("这是李女士的手机 139 1234 5678。", "third_party_pii"),
        ("Her card number is 4111 1111 1111 1111.", "third_party_pii"),
        ("Forward it to his address chen.jing@example.com please.", "third_party_pii"),
    ],
)
def test_violations_of_each_category(text: str, category: str) -> None:
    assert category in categories(text)


@pytest.mark.parametrize(
    "text",
    [
        "保 本",  # spaces
        "保-本",  # punctuation
        "保\u200b本",  # zero-width space
        "保\u3000本",  # an ideographic space
        "ＲＩＳＫ－ＦＲＥＥ",  # full-width Latin
        "RiSk-FrEe",  # mixed case
        "r1sk-fr33",  # digit stand-ins
        "rіsk-frее",  # Cyrillic і and е
        "零風險",  # traditional characters
        "r.i.s.k.f.r.e.e",
    ],
)
def test_evasions_of_a_principal_promise_are_blocked(text: str) -> None:
    assert verdict(f"放心，{text}，马上下单") is Verdict.BLOCK


@pytest.mark.parametrize(
    "text",
    [
        "请查收附件里的保本册。",  # a product brochure's name
        "签约后请缴纳保证金。",  # a deposit
        "Every bag comes with a guarantee of authenticity.",
        "We confirm guaranteed delivery of the invoice by email.",
        "订单号 123456789012345678 已经处理。",  # fails the resident-ID checksum
        "有问题请打总机 010-12345678 或客服 400-123-4567。",
        "本产品不保本，投资需谨慎。",  # a negation
        "We cannot guarantee any return on this product.",
        "过往业绩不代表未来表现，我们不承诺收益。",
        "我的手机是13812345678，有事随时找我。",  # the sender's own
        "明天下午我们开会讨论方案。",
    ],
)
def test_innocent_look_alikes_pass(text: str) -> None:
    assert verdict(text) is Verdict.ALLOW, categories(text)


def test_own_contacts_from_the_draft_are_not_flagged() -> None:
    text = "请联系 li.na@client.example 或 13987654321"
    assert categories(text) == {"third_party_pii"}
    assert (
        categories(
            text,
            sender_contacts=("13987654321",),
            recipient_contacts=("li.na@client.example",),
        )
        == set()
    )


def test_a_return_promise_near_a_number_is_blocked() -> None:
    decision = judge([DEFAULT], Draft("d", "c", "r", "高收益，年化8%"))
    assert decision.verdict is Verdict.BLOCK
    no_number = judge([DEFAULT], Draft("d", "c", "r", "这款产品高收益"))
    assert no_number.verdict is Verdict.CONFIRM


def test_each_verdict_suggests_the_templates_of_its_categories() -> None:
    decision = judge([DEFAULT], Draft("d", "c", "r", "保本，还有客户的手机13912345678"))
    ids = {t.template_id for t in decision.policies[0].templates}
    assert ids == {"principal-not-guaranteed", "no-third-party-data"}


def test_visit_reports_need_two_topics() -> None:
    thin = judge([DEFAULT], Draft("d", "c", "r", "今天拜访了客户，聊得很愉快。", "visit_report"))
    assert thin.verdict is Verdict.REMIND
    assert set(thin.policies[0].missing_topics) == {
        "needs",
        "budget",
        "decision_maker",
        "timeline",
        "next_step",
    }
    full = "Met the CFO: budget approved, next step is a demo on site."
    assert verdict(full, "visit_report") is Verdict.ALLOW
