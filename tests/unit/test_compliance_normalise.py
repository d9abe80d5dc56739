"""The matching view undoes evasion and keeps every character's way back to the original."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.compliance.normalise import Normalised, fold


@pytest.mark.parametrize(
    ("written", "reads"),
    [
        ("保本", "保本"),
        ("保 本", "保本"),
        ("保-本", "保本"),
        ("保*本", "保本"),
        ("保\u200b本", "保本"),  # zero-width space
        ("保\u2060本\ufeff", "保本"),  # word joiner, byte-order mark
        ("穩賺不賠", "稳赚不赔"),  # traditional characters
        ("保證收益", "保证收益"),
        ("ＧＵＡＲＡＮＴＥＥＤ", "guaranteed".replace("l", "i")),  # full-width, upper case
        ("g.u.a.r.a.n.t.e.e.d", "guaranteed"),
        ("G U A R A N T E E D", "guaranteed"),
        ("gu4r4nt33d", "guaranteed"),  # digit stand-ins
        ("guаrаntееd", "guaranteed"),  # Cyrillic а and е
        ("ɡυαrαntεεd", "guaranteed"),  # Latin script g, Greek υ α ε
        ("𝐠𝐮𝐚𝐫𝐚𝐧𝐭𝐞𝐞𝐝", "guaranteed"),  # mathematical bold
        ("ⓖⓤⓐⓡⓐⓝⓣⓔⓔⓓ", "guaranteed"),  # circled letters
        ("guarántéed", "guaranteed"),  # accents
        ("r1sk-fr33", "riskfree"),
        ("ri$k", "risk"),
        ("@nnual yie1d", "annuaiyieid"),  # l and 1 both read as i
    ],
)
def test_evasions_read_as_the_plain_term(written: str, reads: str) -> None:
    assert Normalised(written).folded == fold(reads)


def test_positions_lead_back_to_the_original_text() -> None:
    text = "Ａ保\u200b-本 x"
    view = Normalised(text)
    assert view.folded == "a保本x"
    assert view.origin == [0, 1, 4, 6]
    assert view.span(1, 3) == (1, 5)
    assert text[slice(*view.span(1, 3))] == "保\u200b-本"


def test_expanded_characters_map_every_part_to_their_one_original() -> None:
    view = Normalised("①ﬁ")  # "1" and "fi"
    assert view.folded == "ifi"
    assert view.origin == [0, 1, 1]
    long = Normalised("a\ufdfab")  # one character, fifteen letters
    assert len(long.folded) == 17
    assert long.origin == [0] + [1] * 15 + [2]


@pytest.mark.parametrize(
    ("text", "same"),
    [
        ("g.u.a.r.a.n.t.e.e.d", True),
        ("保,本", True),  # an ASCII comma with no space after it joins
        ("保\n本", True),  # one newline joins
        ("no. Risk", False),  # a full stop before a space ends the segment
        ("担保，本公司", False),  # a Chinese comma ends it
        ("保。本", False),
        ("保\n\n本", False),  # a blank line ends it
    ],
)
def test_segments(text: str, same: bool) -> None:
    view = Normalised(text)
    assert view.one_segment(0, len(view.folded)) is same


def test_gaps_and_word_edges() -> None:
    view = Normalised("piano risk")
    no = view.folded.index("norisk")
    assert not view.starts_at_word_edge(no)  # "no" inside "piano"
    assert view.gap_before(view.folded.index("risk"))
    zw = Normalised("casi\u200bno risk")
    assert not zw.starts_at_word_edge(zw.folded.index("norisk"))  # invisible is no gap
    cjk = Normalised("保本risk")
    assert cjk.starts_at_word_edge(2)  # a CJK neighbour does not join an English word


def test_words_between_count_cjk_characters_and_english_words() -> None:
    view = Normalised("不一定保本")
    assert view.words_between(1, view.folded.index("保本"), 5) == 2
    english = Normalised("not really truly guaranteed")
    assert english.words_between(3, english.folded.index("guaranteed"), 5) == 2
    assert english.words_between(3, english.folded.index("guaranteed"), 1) == 2  # stops early


def test_literal_view_keeps_digits_and_punctuation() -> None:
    literal, origin = Normalised("３月５日 By Friday").literal()
    assert literal == "3月5日 by friday"
    assert len(origin) == len(literal)
    window, window_origin = Normalised("保证\u200b３月５日发货").literal(2, 6)
    assert (window, window_origin) == ("3月5", [3, 4, 5])


@given(st.text(max_size=200))
def test_every_view_character_comes_from_one_original_character_in_order(text: str) -> None:
    view = Normalised(text)
    origin = view.origin
    assert len(origin) == len(view.folded)
    assert origin == sorted(origin)
    assert all(0 <= p < len(text) for p in origin)
    literal, literal_origin = view.literal()
    assert len(literal_origin) == len(literal)
    assert literal_origin == sorted(literal_origin)


@pytest.mark.parametrize("written", ["保@本", "保 $ 本", "保@$本"])
def test_letter_stand_ins_between_chinese_characters_are_separators(written: str) -> None:
    view = Normalised(written)
    assert view.folded == "保本"
    assert view.origin == [0, len(written) - 1]


def test_letter_stand_ins_next_to_latin_letters_still_stand_for_letters() -> None:
    assert Normalised("gu@r@nteed 保$本 ri$k").folded == fold("guaranteed保本risk")


@pytest.mark.parametrize(("written", "reads"), [("9uaranteed", "guaranteed"), ("dou8le", "double")])
def test_more_digit_stand_ins(written: str, reads: str) -> None:
    assert Normalised(written).folded == fold(reads)


@pytest.mark.parametrize("written", ["ɢᴜᴀʀᴀɴᴛᴇᴇᴅ", "gսaranteed", "ɡʋɑrɑntɛɛd"])
def test_small_capitals_and_other_latin_look_alikes(written: str) -> None:
    assert Normalised(written).folded == fold("guaranteed")


@pytest.mark.parametrize("written", ["0风险", "O风险", "〇风险", "零風險"])
def test_zero_written_as_a_digit_or_letter_in_chinese(written: str) -> None:
    assert Normalised(written).folded == fold("零风险")


def test_capital_greek_and_cyrillic_look_alikes_read_as_the_capital_they_imitate() -> None:
    assert Normalised("ΗΙGΗ ΥΙΕLD").folded == fold("high yield")  # Greek Η, Ι, Υ, Ε
    assert Normalised("НIGН").folded == fold("high")  # Cyrillic Н


def test_the_enumeration_comma_joins_like_other_inserted_punctuation() -> None:
    view = Normalised("保、本")
    assert view.folded == "保本"
    assert view.one_segment(0, 2)
