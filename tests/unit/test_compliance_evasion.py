"""Evasions the gate sees through, and innocent drafts it leaves alone, each with its own
example: invisible characters and runs of spaces do not stretch a nearby window, letter
stand-ins among letters, card numbers grouped at random after a card word, addresses spelt
out between marks, brand names and disclaimers."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from engine.bundle import load_bundle
from engine.compliance import CompiledPolicy, Draft, find_personal_data, judge

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


# letter stand-ins


@pytest.mark.parametrize(
    ("text", "category"),
    [
        ("Between friends: this bond is r!sk-free.", "principal_protection"),
        ("The whole pension pot stays CAP|TAL PROTECTED.", "principal_protection"),
        ("Our desk will prom!5e you 7% a year on it.", "return_promise"),
        ("It pays a guaranteed !ncome every quarter.", "return_promise"),
    ],
)
def test_an_exclamation_mark_or_bar_before_a_letter_stands_for_an_i(
    text: str, category: str
) -> None:
    assert category in categories(text)


def test_an_exclamation_mark_between_two_sentences_is_no_letter() -> None:
    # a missing space after "!" must not glue the next sentence to the last word
    assert categories("Big news!Risk-free, we promise.") == {"principal_protection"}


def test_a_bar_inserted_between_letters_is_read_as_a_mark_too() -> None:
    # "|" may be a letter (CAP|TAL) or a mark put between letters: both readings count
    assert "return_promise" in categories("Our fund offers a g|u|a|r|a|n|t|e|e|d y|i|e|l|d.")
    assert "principal_protection" in categories("这期产品r|i|s|k-f|r|e|e，放心。")


# card numbers


def detected(text: str) -> list[tuple[str, bool]]:
    return [(p.detector, p.reportable) for p in find_personal_data(text)]


def test_invisible_characters_inside_a_card_number_are_no_grouping() -> None:
    card = "6217\u00ad00\u200b1234\u2060987\u200d653"  # 6217001234987653, Luhn-valid
    assert detected(f"转到他那张 {card} 就行。") == [("bank_card", True)]


@pytest.mark.parametrize(
    "written",
    ["62 2848 03157 7420 5", "6228、48、0315774、205", "622 84 8031 57 742 05"],
)
def test_a_card_word_lets_a_card_number_be_grouped_at_random(written: str) -> None:
    assert detected(f"Please charge her card {written} again.") == [("bank_card", True)]


def test_without_a_card_word_numbers_grouped_at_random_stay_apart() -> None:
    # two references side by side are not read as one card number
    assert [d for d, _ in detected("订单 62 2848 03157 7420 5 已出库")] == []


# addresses spelt out between marks


@pytest.mark.parametrize(
    "address",
    [
        "l|i|u|_|y|a|n|@|1|6|3|.|c|o|m",
        "k=e=v=i=n=@=o=u=t=l=o=o=k=.=c=o=m",
        "w-a-n-g-.-f-e-i-@-s-o-h-u-.-c-o-m",
        "t/i/a/n,9/@/y/e/a/h/./n/e/t",
    ],
)
def test_an_address_with_a_mark_between_every_character_is_an_email(address: str) -> None:
    assert detected(f"客户的私人邮箱 {address} 记一下。") == [("email", True)]
    assert "third_party_pii" in categories(f"他的邮箱是{address}，请抄送。")


def test_marks_between_single_characters_without_a_domain_are_no_email() -> None:
    assert detected("配比 3/4/5 @ 6/7/8，按这个来。") == []


def test_the_company_domain_spelt_out_between_marks_is_still_the_company() -> None:
    assert categories("Write to r-e-p-@-w-a-r-r-o-o-m---d-e-m-o-.-c-o-m for the quote.") == set()


# the default policy's lists


@pytest.mark.parametrize(
    ("text", "category"),
    [
        ("说真的，这份年金 0 r1sk，闭眼买。", "principal_protection"),
        ("Trust me, it is 0 risk for your savings.", "principal_protection"),
        ("Relax, the portfolio is guaranteed against any loss.", "principal_protection"),
        ("Each deposit here is guaranteed against losses.", "principal_protection"),
        (
            "The annuity fund is fully covered against any loss, so invest freely.",
            "principal_protection",
        ),
        ("We promise the racking will be at your warehouse on 4 November.", "delivery_date"),
        ("The seedlings will definitely be on your loading dock by Tuesday.", "delivery_date"),
        ("I guarantee the pallets are at your depot by the 9th.", "delivery_date"),
    ],
)
def test_phrasings_the_default_policy_knows(text: str, category: str) -> None:
    assert category in categories(text)


@pytest.mark.parametrize(
    "text",
    [
        "The audit listed 10 risk items; we can walk through them on Friday.",
        "Our technician will be at your warehouse on 4 November to fit the sensors.",
        "The parcel is insured against loss in transit.",
        "These high yield potato seeds suit a cold spring.",
        "“稳赚”牌记账本今天买二送一。",
        "新到的「保本」牌保温壶有三种颜色。",
        "历史业绩不代表未来表现，预期收益不等于实际收益。",
        "宣传页上的年化收益仅供参考。",
        "The projected annual return is only an estimate.",
    ],
)
def test_innocent_drafts_the_default_policy_leaves_alone(text: str) -> None:
    assert categories(text) == set()


def test_a_quoted_promise_without_a_brand_word_is_still_a_promise() -> None:
    assert "return_promise" in categories("这款理财“稳赚”，您放心。")
    assert "principal_protection" in categories("经理说这款是“保本”的，牌照齐全。")


# spelling out across sentence marks


def test_a_two_character_word_spelt_out_from_its_second_character_on_is_read() -> None:
    # the spelling begins inside a word (设备承), the marks follow on to the end
    assert "delivery_date" in categories("设备承，诺，下，月，十，号，交，付。")


def test_a_mark_between_two_words_is_no_spelling() -> None:
    # 担保，证件: no 保证 across the comma, with no spelling on either side
    assert categories("我们提供担保，证件和发票下周五寄到。") == set()


# after the second holdout batch


@pytest.mark.parametrize(
    ("text", "category"),
    [
        ("I promise the crates reach your yard by Saturday.", "delivery_date"),
        ("The spare rotors will definitely land at your hangar on 2 May.", "delivery_date"),
        ("You will surely have the brochures in hand by 9 October.", "delivery_date"),
    ],
)
def test_goods_reaching_the_customer_on_a_date(text: str, category: str) -> None:
    assert category in categories(text)


@pytest.mark.parametrize(
    "text",
    [
        "Release 3.0 risk notes are in the shared folder.",
        "群里说“包赚”的话不能信，投资要看风险。",
        "We will reach out on Monday about the order.",
    ],
)
def test_more_innocent_drafts(text: str) -> None:
    assert categories(text) == set()


def test_an_address_with_a_dot_between_every_character_is_an_email() -> None:
    assert detected("他的邮箱 z.h.e.n.g.l.i@q.q.c.o.m，请发给他。") == [("email", True)]


# compiling


def test_a_nearby_requirement_repeated_on_many_terms_is_compiled_once() -> None:
    policy = policy_of(
        """\
        bundle: shared-near
        version: 1
        policy:
          lists:
            people: {terms: [engineer, technician]}
          categories:
            - id: delivery_date
              tier: remind
              terms:
                - {term: at your dock, unless: [{within: 20, lists: [people]}]}
                - {term: at your depot, unless: [{within: 20, lists: [people]}]}
                - {term: at your site, unless: [{within: 20, lists: [people]}]}
        """
    )
    entries = policy.automaton.get("engineer")[3]
    assert len(entries) == 1
    assert terms_found(policy, "The pallets are at your depot.") == ["at your depot"]
    assert terms_found(policy, "The engineer is at your depot.") == []
