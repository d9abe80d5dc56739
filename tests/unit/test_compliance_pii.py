"""Personal-data detectors and masking."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.compliance import find_personal_data, mask_pii
from engine.compliance.pii import contact_key, luhn_valid, resident_id_valid

VALID_IDS = ("11010519491231002X", "110101199003074477", "440308199001011239")


def found(text: str) -> list[tuple[str, str]]:
    return [(p.detector, text[p.start : p.end]) for p in find_personal_data(text)]


@pytest.mark.parametrize("number", VALID_IDS)
def test_resident_ids_with_a_right_check_character_are_found(number: str) -> None:
    assert resident_id_valid(number)
    assert found(f"身份证号{number}。") == [("resident_id", number)]


@pytest.mark.parametrize(
    "number",
    [
        "11010519491231002Y",  # not a check character
        "110105194912310021",  # wrong check digit
        "990105194912310028",  # no such province
        "110105194902300021",  # 30 February
        "110105180001010020",  # born before 1900
    ],
)
def test_eighteen_characters_that_fail_the_id_checks_are_not_ids(number: str) -> None:
    assert not resident_id_valid(number)
    assert [d for d, _ in found(f"订单号 {number}")] in ([], ["bank_card"])


def test_an_order_number_failing_the_checksum_is_nothing() -> None:
    assert found("订单号 123456789012345678 已发货") == []


def test_lower_case_x_and_spaced_ids() -> None:
    assert found("ID 11010519491231002x") == [("resident_id", "11010519491231002x")]
    assert found("110105 19491231 002X") == [("resident_id", "110105 19491231 002X")]


@pytest.mark.parametrize(
    "text",
    [
        "13812345678",
        "138 1234 5678",
        "138-1234-5678",
        "+86 138 1234 5678",
        "+86-13812345678",
        "8613812345678",
        "(+86) 138-1234-5678",
        "１３８１２３４５６７８",  # full-width
        "138\u200b1234\u200b5678",  # zero-width spaces between groups
    ],
)
def test_mobile_numbers_in_their_usual_shapes(text: str) -> None:
    assert [d for d, _ in found(f"电话 {text} 谢谢")] == ["mobile"]


@pytest.mark.parametrize(
    "text",
    [
        "010-12345678",
        "(010) 1234 5678",
        "400-123-4567",
        "4001234567",
        "12345678901",
        "021-87654321",
    ],
)
def test_landlines_hotlines_and_other_numbers_are_not_mobiles(text: str) -> None:
    assert found(f"请拨打 {text}") == []


def test_two_mobiles_side_by_side_are_two() -> None:
    assert found("13812345678 13987654321") == [
        ("mobile", "13812345678"),
        ("mobile", "13987654321"),
    ]


@pytest.mark.parametrize(
    "card", ["4111111111111111", "4111 1111 1111 1111", "5555555555554444", "378282246310005"]
)
def test_luhn_valid_card_numbers_of_a_card_scheme_are_reported(card: str) -> None:
    [item] = find_personal_data(f"pay with {card} please")
    assert item.detector == "bank_card" and item.reportable


def test_a_luhn_valid_number_without_a_scheme_or_card_word_is_masked_but_not_reported() -> None:
    number = "1000000000000008"
    assert luhn_valid(number)
    [item] = find_personal_data(f"tracking {number}")
    assert not item.reportable
    assert number not in mask_pii(f"tracking {number}")
    [with_word] = find_personal_data(f"卡号 {number}")
    assert with_word.reportable


def test_luhn_invalid_is_not_a_card() -> None:
    assert found("4111111111111112") == []


def test_a_date_next_to_a_mobile_does_not_make_a_card() -> None:
    assert found("2024.03.05 13812345678") == [("mobile", "13812345678")]


@pytest.mark.parametrize(
    ("text", "email"),
    [
        ("write to zhang.san@example.com.", "zhang.san@example.com"),
        ("li_si+sales@mail.example.cn", "li_si+sales@mail.example.cn"),
        ("wang [at] example.com", "wang [at] example.com"),
        ("wang(at)example(dot)com", "wang(at)example(dot)com"),
        ("zhao＠example.com", "zhao＠example.com"),
    ],
)
def test_emails(text: str, email: str) -> None:
    assert found(text) == [("email", email)]


def test_not_emails() -> None:
    assert found("@channel see you at 5") == []
    assert found("price @ 5.00") == []


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("电话13812345678", "电话138****5678"),
        ("+86 138 1234 5678", "+86 138 **** 5678"),
        ("卡号6200000000000005", "卡号************0005"),
        ("4111 1111 1111 1111", "**** **** **** 1111"),
        ("ID 11010519491231002X", "ID **************002X"),
        ("mail alice@example.com", "mail a****@example.com"),
        ("order 123456789012345678", "order 123456789012345678"),
        ("no personal data", "no personal data"),
    ],
)
def test_masks_keep_the_length_and_the_last_digits(text: str, masked: str) -> None:
    assert mask_pii(text) == masked
    assert len(mask_pii(text)) == len(text)


def test_contact_keys_read_like_detected_values() -> None:
    assert contact_key("+86 138-1234-5678") == "13812345678"
    assert contact_key(" Zhang.San@Example.com ") == "zhang.san@example.com"


digits = st.text(alphabet="0123456789", min_size=11, max_size=11)


@given(st.lists(st.sampled_from([*VALID_IDS, "13812345678", "4111111111111111", " ", "，", "号"])))
def test_no_raw_personal_data_survives_masking(parts: list[str]) -> None:
    text = "".join(parts)
    masked = mask_pii(text)
    assert len(masked) == len(text)
    for item in find_personal_data(text):
        raw = re.sub(r"\D", "", text[item.start : item.end])
        assert raw not in re.sub(r"\D", "", masked[item.start : item.end])


def test_numbers_written_in_chinese_numerals() -> None:
    assert found("电话一三八一二三四五六七八") == [("mobile", "一三八一二三四五六七八")]
    assert mask_pii("电话一三八一二三四五六七八") == "电话一三八****五六七八"
    assert found("一二三四五六七八九") == []


def test_emails_spelt_out_with_at_and_dot() -> None:
    assert found("mail wang.wu at example dot com today") == [
        ("email", "wang.wu at example dot com")
    ]
    assert found("meet at example dot") == []
    assert found("see you at the office") == []


@pytest.mark.parametrize(
    "address", ["support@vendor.example", "Info@vendor.example", "kefu@shop.example"]
)
def test_role_mailboxes_are_not_reported(address: str) -> None:
    [item] = find_personal_data(f"write to {address}")
    assert item.detector == "email" and not item.reportable
    [person] = find_personal_data("write to li.na@vendor.example")
    assert person.reportable


@pytest.mark.parametrize(
    "text",
    [
        "𝟏𝟑𝟖𝟏𝟐𝟑𝟒𝟓𝟔𝟕𝟖",  # mathematical digits
        "١٣٨١٢٣٤٥٦٧٨",  # Arabic-Indic digits
        "138/1234/5678",
        "138*1234*5678",
        "138_1234_5678",
        "1 3 8   1 2 3 4   5 6 7 8",
        "l38l2345678",  # letters for digits
        "I38-I234-S678",
        "13812345б78",  # Cyrillic б for 6
    ],
)
def test_mobile_numbers_in_disguise(text: str) -> None:
    assert [d for d, _ in found(f"号码 {text} 谢谢")] == ["mobile"]


def test_letters_are_read_as_digits_only_inside_a_number() -> None:
    assert found("lOl ISO 9001 certified") == []
    assert found("Bob's order") == []


@pytest.mark.parametrize(
    ("text", "email"),
    [
        ("zhang\u200b.san@example.com", "zhang\u200b.san@example.com"),
        ("zhang.san@ехample.com", "zhang.san@ехample.com"),  # Cyrillic е and х
        ("zhang.san @ example.com", "zhang.san @ example.com"),
        ("ＺＨＡＮＧ＠ＥＸＡＭＰＬＥ．ＣＯＭ", "ＺＨＡＮＧ＠ＥＸＡＭＰＬＥ．ＣＯＭ"),
    ],
)
def test_emails_in_disguise(text: str, email: str) -> None:
    assert found(f"mail {text} now") == [("email", email)]


@pytest.mark.parametrize(
    ("text", "detector"),
    [
        ("138|1234|5678", "mobile"),
        ("138·1234·5678", "mobile"),
        ("138，1234，5678", "mobile"),
        ("11010519491231002\u200bX", "resident_id"),
        ("1101051949123l002X", "resident_id"),
        ("zhang@example。com", "email"),
    ],
)
def test_more_disguises(text: str, detector: str) -> None:
    assert [d for d, _ in found(f"看看 {text} 吧")] == [detector]


@pytest.mark.parametrize(
    "text", ["1+3+8+1+2+3+4+5+6+7+8", "1'3'8'1'2'3'4'5'6'7'8", "138、1234、5678"]
)
def test_plus_signs_apostrophes_and_enumeration_commas_between_digits(text: str) -> None:
    assert [d for d, _ in found(f"手机 {text}")] == ["mobile"]


@pytest.mark.parametrize(
    "text",
    ["s a r a h . l i n @ s i n a . c o m", "s·a·r·a·h@s·i·n·a·.·c·o·m", "s*a*r*a*h@s*i*n*a.c*o*m"],
)
def test_an_email_spelt_out_with_separators_is_found(text: str) -> None:
    [item] = find_personal_data(f"发给 {text} 吧")
    assert item.detector == "email" and item.value.endswith("@sina.com")


def test_an_ordinary_email_keeps_its_own_extent() -> None:
    [item] = find_personal_data("email me at rep@warroom-demo.com please")
    assert item.value == "rep@warroom-demo.com"
