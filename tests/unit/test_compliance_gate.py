"""judge(): findings located in the original text, context rules, required content, modes."""

from __future__ import annotations

import textwrap

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.bundle import load_bundle
from engine.compliance import (
    CompiledPolicy,
    Draft,
    Template,
    Verdict,
    find_personal_data,
    judge,
)
from schemas.models import Severity

POLICY = """\
bundle: {name}
version: 7
policy:
  mode: {mode}
  own_domains: [acme.example]
  negation:
    before: {{window: 2, words: [不, 非, not, cannot]}}
    after: {{window: 3, words: [不存在, is a myth]}}
    except: [不仅, not only]
  categories:
    - id: principal
      tier: block
      terms: [保本, risk-free, {{term: 零风险, tier: confirm}}]
      except: [保本册]
      templates: [{{id: no-principal, text: 本产品不保本}}]
    - id: returns
      tier: confirm
      near_number: {{within: 6}}
      terms:
        - 高收益
        - guaranteed return
        - {{term: 保证, near: [{{within: 6, terms: [收益]}}], except: [保证金]}}
      templates: [{{id: no-returns, text: 收益以合同为准}}]
    - id: delivery
      tier: remind
      terms: [发货, deliver]
      near:
        - within: 15
          patterns: ['明天|下周[一二三四五]|\\bby (monday|friday)\\b']
    - id: personal
      tier: block
      pii: [resident_id, mobile, bank_card, email]
      own:
        markers: [{{within: 10, words: [我的, my]}}]
        others: [客户, client]
  required:
    - kind: visit_report
      at_least: 2
      tier: remind
      templates: [{{id: outline, text: 需求/预算/下一步}}]
      topics:
        - {{name: needs, terms: [需求, need]}}
        - {{name: budget, terms: [预算, budget]}}
        - {{name: next_step, terms: [下一步, next step]}}
"""


def compiled(name: str = "p", mode: str = "enforce") -> CompiledPolicy:
    policy = load_bundle(POLICY.format(name=name, mode=mode)).policy
    assert policy is not None
    return policy


ENFORCED = compiled()


def draft(text: str, kind: str = "message", **contacts: tuple[str, ...]) -> Draft:
    return Draft("d-1", "c-1", "r-1", text, kind, **contacts)


def findings(text: str, kind: str = "message") -> list[tuple[str, str, str, Verdict]]:
    decision = judge([ENFORCED], draft(text, kind))
    return [(f.category, f.term, f.excerpt, f.tier) for f in decision.policies[0].findings]


def test_no_policies_allow_everything() -> None:
    decision = judge([], draft("保本"))
    assert decision.verdict is Verdict.ALLOW and decision.policies == ()


def test_a_finding_points_into_the_original_text() -> None:
    text = "您好！这款产品保 - 本，放心。"
    decision = judge([ENFORCED], draft(text))
    assert decision.verdict is Verdict.BLOCK
    [verdict] = decision.policies
    assert (verdict.policy_id, verdict.policy_version, verdict.mode) == ("p", 7, "enforce")
    [finding] = verdict.findings
    assert finding.category == "principal" and finding.term == "保本"
    assert text[finding.start : finding.end] == "保 - 本"
    assert finding.excerpt == "保 - 本"
    assert verdict.templates == (Template("no-principal", "本产品不保本"),)
    assert "principal" in verdict.reason and "保本" in verdict.reason


def test_verdicts_order_and_severity() -> None:
    assert [v.rank for v in Verdict] == [0, 1, 2, 3]
    assert [v.severity for v in Verdict] == [None, Severity.BLUE, Severity.YELLOW, Severity.RED]
    assert Verdict.REMIND.raised() is Verdict.CONFIRM
    assert Verdict.BLOCK.raised() is Verdict.BLOCK
    assert Verdict.strictest([]) is Verdict.ALLOW


@pytest.mark.parametrize(
    "text",
    [
        "保本",
        "保 本",
        "保.本",
        "保\u200b本",
        "ＲＩＳＫ-ＦＲＥＥ",
        "r i s k f r e e",
        "RiSk FrEe",
        "r1sk-fr33",
    ],
)
def test_evasions_are_found(text: str) -> None:
    assert [c for c, *_ in findings(f"这个 {text} 哦")] == ["principal"]


def test_a_term_tier_overrides_its_category() -> None:
    assert findings("零风险") == [("principal", "零风险", "零风险", Verdict.CONFIRM)]


def test_exceptions_of_a_term_or_a_category_are_not_findings() -> None:
    assert findings("请查看保本册第三页") == []
    assert findings("请先交保证金") == []
    assert findings("保本册和保本") == [("principal", "保本", "保本", Verdict.BLOCK)]


def test_english_terms_need_word_edges() -> None:
    assert findings("unguaranteed returns") == []
    assert findings("the guaranteed returns") == [
        ("returns", "guaranteed return", "guaranteed returns", Verdict.CONFIRM)
    ]
    assert findings("guaranteed returnable") == []


@pytest.mark.parametrize(
    "text",
    ["不保本", "非保本产品", "不一保本", "risk-free is a myth", "not risk-free", "保本产品不存在"],
)
def test_negated_terms_are_not_promises(text: str) -> None:
    assert findings(text) == []


@pytest.mark.parametrize(
    "text",
    [
        "不仅保本",  # "not only" is no negation
        "不，我们一起想想，保本",  # the negation is in another clause
        "不一定能保本",  # beyond the window of 2
    ],
)
def test_negation_has_limits(text: str) -> None:
    assert [c for c, *_ in findings(text)] == ["principal"]


def test_a_number_nearby_raises_the_tier() -> None:
    assert findings("高收益") == [("returns", "高收益", "高收益", Verdict.CONFIRM)]
    assert findings("高收益8%") == [("returns", "高收益", "高收益", Verdict.BLOCK)]
    assert findings("年化百分之八，高收益") == [("returns", "高收益", "高收益", Verdict.BLOCK)]
    assert findings("高收益，详情见附件第100页")[0][3] is Verdict.CONFIRM  # beyond 6 characters


def test_a_term_with_a_near_requirement_needs_it() -> None:
    assert findings("我保证准时到") == []
    assert findings("我保证收益") == [("returns", "保证", "保证", Verdict.CONFIRM)]


def test_a_pattern_near_the_term() -> None:
    assert findings("我们明天发货") == [("delivery", "发货", "发货", Verdict.REMIND)]
    assert findings("We deliver by Friday") == [("delivery", "deliver", "deliver", Verdict.REMIND)]
    assert findings("发货时间以物流为准") == []
    assert findings("We deliver worldwide") == []


def test_overlapping_findings_of_a_category_are_reported_once() -> None:
    decision = judge([ENFORCED], draft("高收益高收益"))
    assert len(decision.policies[0].findings) == 2
    decision = judge([ENFORCED], draft("保证收益"))
    assert [f.term for f in decision.policies[0].findings] == ["保证"]


def test_third_party_personal_data_is_flagged_and_masked() -> None:
    text = "客户王先生的手机13812345678，身份证11010519491231002X"
    decision = judge([ENFORCED], draft(text))
    assert decision.verdict is Verdict.BLOCK
    got = [(f.term, f.excerpt, text[f.start : f.end]) for f in decision.policies[0].findings]
    assert got == [
        ("mobile", "138****5678", "13812345678"),
        ("resident_id", "**************002X", "11010519491231002X"),
    ]
    assert decision.masked_text == "客户王先生的手机138****5678，身份证**************002X"
    assert "13812345678" not in decision.policies[0].reason


def test_own_contact_details_are_not_flagged() -> None:
    text = "电话 138-1234-5678，邮件 li@client.example"
    flagged = judge([ENFORCED], draft(text))
    assert [f.term for f in flagged.policies[0].findings] == ["mobile", "email"]
    own = judge(
        [ENFORCED],
        draft(
            text, sender_contacts=("+86 13812345678",), recipient_contacts=("LI@client.example",)
        ),
    )
    assert own.verdict is Verdict.ALLOW
    assert own.masked_text == "电话 138-****-5678，邮件 l*@client.example"


def test_the_company_domain_is_own() -> None:
    assert findings("write to li.lei@acme.example or li.lei@eu.acme.example") == []
    assert [t for _, t, *_ in findings("write to li.lei@acme.example.evil.com")] == ["email"]


def test_markers_say_whose_contact_it_is() -> None:
    assert findings("我的电话是13812345678") == []
    assert findings("call my cell 13812345678") == []
    assert [t for _, t, *_ in findings("我的客户电话是13812345678")] == ["mobile"]
    assert [t for _, t, *_ in findings("我的电话在名片上。客户的是13812345678")] == ["mobile"]


def test_landlines_hotlines_and_order_numbers_pass() -> None:
    assert findings("总机 010-12345678，客服 400-123-4567，订单 123456789012345678") == []


def test_required_content_names_the_missing_topics() -> None:
    decision = judge([ENFORCED], draft("今天拜访了客户，聊了需求。", "visit_report"))
    [verdict] = decision.policies
    assert decision.verdict is Verdict.REMIND
    assert verdict.missing_topics == ("budget", "next_step")
    assert verdict.templates == (Template("outline", "需求/预算/下一步"),)
    assert "visit_report mentions 1 of the 3 topics, expected at least 2" in verdict.reason
    enough = judge([ENFORCED], draft("需求明确，预算已批。", "visit_report"))
    assert enough.verdict is Verdict.ALLOW and enough.policies[0].missing_topics == ()
    assert judge([ENFORCED], draft("今天拜访了客户。")).verdict is Verdict.ALLOW  # a message


@pytest.mark.parametrize(
    ("mode", "returned"),
    [("enforce", Verdict.BLOCK), ("notify", Verdict.REMIND), ("test", Verdict.ALLOW)],
)
def test_modes_change_what_is_returned_not_what_is_decided(mode: str, returned: Verdict) -> None:
    decision = judge([compiled(mode=mode)], draft("保本"))
    assert decision.verdict is returned
    assert decision.policies[0].verdict is Verdict.BLOCK
    assert decision.policies[0].mode == mode


def test_the_strictest_policy_after_modes_wins() -> None:
    shadow = compiled("shadow", "test")
    notify = compiled("warn", "notify")
    decision = judge([shadow, notify], draft("保本"))
    assert decision.verdict is Verdict.REMIND
    assert [(p.policy_id, p.verdict) for p in decision.policies] == [
        ("shadow", Verdict.BLOCK),
        ("warn", Verdict.BLOCK),
    ]
    assert judge([shadow, ENFORCED], draft("保本")).verdict is Verdict.BLOCK


def test_a_clean_draft_is_allowed() -> None:
    decision = judge([ENFORCED], draft("王总您好，附件是报价单，请查收。"))
    assert decision.verdict is Verdict.ALLOW
    assert decision.policies[0].findings == ()
    assert decision.policies[0].reason == "allow: nothing in the policy matched"


def test_a_long_draft_is_judged() -> None:
    text = textwrap.fill("普通的一句话。" * 2000, 80)
    assert judge([ENFORCED], draft(text + "保本")).verdict is Verdict.BLOCK


def test_a_term_may_itself_hold_what_it_needs_nearby() -> None:
    policy = load_bundle(
        """\
bundle: p
version: 1
policy:
  categories:
    - id: delivery
      tier: remind
      terms: [送到, 肯定到]
      near: [{within: 10, terms: [肯定, 保证]}]
"""
    ).policy
    assert policy is not None
    found = judge([policy], draft("明天肯定到")).policies[0].findings
    assert [f.term for f in found] == ["肯定到"]
    assert judge([policy], draft("明天送到")).verdict is Verdict.ALLOW


def test_a_term_is_innocent_near_an_unless_term_or_pattern() -> None:
    policy = load_bundle(
        """\
bundle: p
version: 1
policy:
  categories:
    - id: principal
      tier: block
      terms: [零风险, {term: risk-free, unless: [{within: 20, patterns: ['\\bv\\d+\\b']}]}]
      unless: [{within: 15, terms: [升级, upgrade]}]
"""
    ).policy
    assert policy is not None
    assert judge([policy], draft("这次升级零风险")).verdict is Verdict.ALLOW
    assert judge([policy], draft("The upgrade is risk-free")).verdict is Verdict.ALLOW
    assert judge([policy], draft("Moving to v2 is risk-free")).verdict is Verdict.ALLOW
    assert judge([policy], draft("这个理财零风险")).verdict is Verdict.BLOCK
    assert judge([policy], draft("It's risk-free money")).verdict is Verdict.BLOCK


FRAGMENTS = [
    "保本", "保 本", "不", "高收益", "8%", "明天", "发货", "risk-free", "not ", "guaranteed return",
    "13812345678", "11010519491231002X", "4111 1111 1111 1111", "a.b@example.com", "我的",
    "客户", "\u200b", "，", ". ", "\n", "@", "$", "ｇ", "穩", " ", "x",
]  # fmt: skip


@given(
    st.lists(
        st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=3)),
        max_size=30,
    ),
    st.sampled_from(["message", "visit_report", "email"]),
)
def test_every_decision_is_consistent_with_the_text(parts: list[str], kind: str) -> None:
    text = "".join(parts)
    decision = judge([ENFORCED], draft(text, kind))
    [verdict] = decision.policies
    assert len(decision.masked_text) == len(text)
    tiers = [f.tier for f in verdict.findings]
    assert verdict.verdict.rank >= Verdict.strictest(tiers).rank
    assert decision.verdict is verdict.verdict
    for finding in verdict.findings:
        assert 0 <= finding.start < finding.end <= len(text)
        assert finding.excerpt == decision.masked_text[finding.start : finding.end]
    for item in find_personal_data(text):
        raw = text[item.start : item.end]
        for finding in verdict.findings:
            assert raw not in finding.excerpt + finding.reason + finding.term
        assert raw not in verdict.reason


@pytest.mark.parametrize(
    "text", ["稳，赚，不，赔", "保。本。保。息", "g. u. a. r. a. n. t. e. e. d return"]
)
def test_a_term_spelt_out_across_sentence_marks_is_still_found(text: str) -> None:
    policy = load_bundle(
        """\
bundle: p
version: 1
policy:
  categories:
    - {id: r, tier: block, terms: [稳赚不赔, 保本保息, guaranteed return]}
"""
    ).policy
    assert policy is not None
    assert judge([policy], draft(text)).verdict is Verdict.BLOCK


def test_a_term_across_a_clause_mark_is_no_term() -> None:
    assert findings("我们提供担保，本公司负责") == []
    assert findings("成本高，收益低") == []


def test_named_lists_are_shared_by_nearby_requirements() -> None:
    policy = load_bundle(
        """\
bundle: p
version: 1
policy:
  lists:
    rate: {patterns: ['\\d+\\s*%']}
    returns: {terms: [收益, return]}
  categories:
    - id: returns
      tier: confirm
      terms:
        - {term: 保证, near: [{within: 10, lists: [returns, rate]}]}
        - {term: guarantee, near: [{within: 20, lists: [returns], terms: [yield]}]}
"""
    ).policy
    assert policy is not None
    assert judge([policy], draft("保证8%")).verdict is Verdict.CONFIRM
    assert judge([policy], draft("保证收益")).verdict is Verdict.CONFIRM
    assert judge([policy], draft("保证质量")).verdict is Verdict.ALLOW
    assert judge([policy], draft("we guarantee a return")).verdict is Verdict.CONFIRM
    assert judge([policy], draft("we guarantee a yield")).verdict is Verdict.CONFIRM
    assert judge([policy], draft("we guarantee 8%")).verdict is Verdict.ALLOW


@pytest.mark.parametrize(
    "text", ["3 月 5 日发货", "3-月-5-日发货", "３月\u200b５日发货", "on 1 2 M a r c h we deliver"]
)
def test_patterns_see_through_separators_inserted_in_a_date(text: str) -> None:
    policy = load_bundle(
        """\
bundle: p
version: 1
policy:
  categories:
    - id: delivery
      tier: remind
      terms: [发货, deliver]
      near: [{within: 20, patterns: ['\\d{1,2}月\\d{1,2}日', '\\d{1,2}(?:jan|feb|mar)']}]
"""
    ).policy
    assert policy is not None
    assert judge([policy], draft(text)).verdict is Verdict.REMIND


def test_a_negation_carries_over_to_the_promise_that_follows_its_term() -> None:
    policy = load_bundle(
        """\
bundle: p
version: 1
policy:
  negation:
    before: {window: 2, words: [nobody, 不]}
  categories:
    - id: returns
      tier: confirm
      terms: [guarantee, 8% return, 保证, 高收益]
"""
    ).policy
    assert policy is not None
    assert judge([policy], draft("Nobody can guarantee an 8% return.")).verdict is Verdict.ALLOW
    assert judge([policy], draft("不能保证一定高收益")).verdict is Verdict.ALLOW
    assert judge([policy], draft("Nobody can guarantee it. 8% return!")).verdict is Verdict.CONFIRM


@pytest.mark.parametrize("text", ["请看《保本理财手册》第三章", "新品〈零风险〉系列上市"])
def test_a_term_inside_title_marks_is_a_name(text: str) -> None:
    assert findings(text) == []


def test_title_marks_elsewhere_do_not_hide_a_term() -> None:
    assert [c for c, *_ in findings("《产品手册》说了，这款保本")] == ["principal"]
    assert [c for c, *_ in findings("保本《手册》")] == ["principal"]


def test_a_whole_message_spelt_out_across_clause_marks_is_read() -> None:
    assert [c for c, *_ in findings("这，款，保，本，哦")] == ["principal"]
    assert findings("我们提供担保，本公司负责") == []  # the clause mark is where it belongs


@pytest.mark.parametrize(
    "text",
    ["g@u@a@r@a@n@t@e@e@d r@e@t@u@r@n", "r$i$s$k-f$r$e$e", "gu@r@nteed returns", "ri$k-free"],
)
def test_at_and_dollar_signs_are_read_as_letters_or_as_inserted_punctuation(text: str) -> None:
    assert judge([ENFORCED], draft(text)).verdict is not Verdict.ALLOW
