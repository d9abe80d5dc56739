"""Text as the term matcher sees it, with a way back to the text as written.

Two views of a draft, both computed character by character so every character of a
view comes from exactly one character of the original:

- the *matching view* (:attr:`Normalised.folded`): compatibility forms decomposed
  (full-width, circled and mathematical letters, CJK compatibility ideographs and
  radicals), accents and other combining marks removed, case folded, traditional Chinese
  characters simplified, Cyrillic and Greek look-alikes replaced by the Latin letter they
  imitate, digit and symbol stand-ins replaced by the letter they imitate (0→o, 1→i,
  3→e, 4→a, 5→s, 7→t, @→a, $→s, and ! or | before a letter →i; and l→i, so that "1"
  may stand for either), and every
  space, punctuation mark, symbol and invisible character left out. "保 本", "保-本",
  "ｇｕａｒａｎｔｅｅｄ", "g.u.a.r.a.n.t.e.e.d" and "gu4r4nt33d" all read "保本" or
  "guaranteed" (with l and i folded together) there.
- the *literal view* (:meth:`Normalised.literal`): compatibility forms, case and
  traditional characters normalised, invisible characters removed, but digits, spaces
  and punctuation kept; patterns (dates, amounts) are searched there.

Left-out characters still matter: a space or punctuation mark between two characters is
a *gap* (English terms must start and end at a gap or a non-letter), and some of them
end a *segment* (a term never spans two): a newline after another newline, the Chinese
sentence and clause marks 。！？；， (not the enumeration comma 、), and an ASCII ``.``
``!`` ``?`` ``;`` ``,`` or ``…`` followed by a space or newline. "g.u.a.r.a.n.t.e.e.d"
is one segment; "No. Risk" is two.
"""

from __future__ import annotations

import re
import unicodedata
from bisect import bisect_left, bisect_right
from dataclasses import dataclass
from enum import IntEnum
from functools import cache
from importlib import resources
from itertools import accumulate

CACHE_MAX = 200_000
"""Distinct characters whose description is kept; others are described each time."""


class Kind(IntEnum):
    WORD = 0
    """Contributes to the matching view: a letter, digit, CJK character or stand-in."""
    SPACE = 1
    """Whitespace other than a newline: a gap."""
    SEPARATOR = 2
    """Punctuation, symbols, emoji: a gap."""
    STOP = 3
    """ASCII ``. ! ? ; ,`` and ``…``: a gap, and the end of a segment when whitespace
    follows."""
    NEWLINE = 4
    """A gap; the second newline in a row (whitespace between) ends a segment."""
    BREAK = 5
    """Chinese sentence and clause marks, line and paragraph separators: end a segment."""
    INVISIBLE = 6
    """Format characters, combining marks, fillers: as if absent (not even a gap)."""


@dataclass(frozen=True, slots=True)
class CharInfo:
    kind: Kind
    folded: str
    """What the character contributes to the matching view ('' unless a WORD)."""
    literal: str
    """What it contributes to the literal view."""
    compact: str
    """What it contributes to the compact view: the matching view's reading without the
    stand-ins (digits and ``l`` stay, ``@`` and ``$`` go)."""
    letter: bool
    """A letter or digit that is not CJK: it joins an English word to its neighbours, so a
    term cannot start or end next to it ("0 risk" is not found in "10 risk")."""
    cjk: bool
    """A CJK ideograph, kana or hangul: a word of its own."""


_BREAKS = frozenset("。！？；，｡\u2028\u2029\u3002")
_STOPS = frozenset(".!?;,…")
_NEWLINES = frozenset("\n\x0b\x0c\x85")
_INVISIBLE_EXTRA = frozenset("\u115f\u1160\u3164\uffa0\u2800\u180e\u034f")
"""Characters that render as nothing but are not format characters: hangul fillers, the
braille blank, the Mongolian vowel separator, the combining grapheme joiner."""
_DROPPED_CATEGORIES = frozenset(("Cf", "Mn", "Me", "Cs", "Co", "Cn"))

STAND_INS: dict[str, str] = {
    "0": "o",
    "1": "i",
    "3": "e",
    "4": "a",
    "5": "s",
    "6": "g",
    "7": "t",
    "8": "b",
    "9": "g",
    "@": "a",
    "$": "s",
    "l": "i",
    "零": "o",
    "〇": "o",
}
"""Digits and symbols written in place of letters, ``l`` folded with ``i`` (the digit 1
stands for either), and the Chinese zero with the digit (0风险 reads as 零风险). Applied
to terms and drafts alike; ``@`` and ``$`` between two CJK characters are taken for
separators instead."""

_CJK_CLASS = (
    "\u2e80-\u2fff\u3040-\u318f\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff"
    "\U00020000-\U0003ffff"
)
_SYMBOLS_BETWEEN_CJK = re.compile(rf"(?<=[{_CJK_CLASS}])[^\w]*[@$＠＄][^\w]*(?=[{_CJK_CLASS}])")
"""A run of non-word characters holding ``@`` or ``$`` between two CJK characters (a run
cannot hold a CJK character, so the search is linear)."""

_SMALL = "a-z\u00df-\u00ff\u03ac-\u03ce\u0430-\u045f"
_LETTER_OR_DIGIT = "0-9A-Za-z\u00c0-\u024f\u0370-\u03ff\u0400-\u045f"
_MARK_FOR_I = re.compile(
    rf"(?<![{_SMALL}])[!|](?=[{_LETTER_OR_DIGIT}])|(?<=[{_SMALL}])[!|](?=[0-9{_SMALL}])"
)
"""``!`` or ``|`` written for an i or l: before a Latin, Greek or Cyrillic letter or a
digit ("r!sk", "!ncome", "CAP|TAL"), except between a small and a capital letter
("news!Risk": a sentence whose space is missing). A mark inserted between letters
(g|u|a|r|d) is read as one in the draft's second reading."""
_I_STAND_IN = "\u0131"
"""Dotless i: a letter that reads "i" in the matching view, one character for one."""

HOMOGLYPHS: dict[str, str] = {
    # Cyrillic (lower case: case is folded first)
    "а": "a", "в": "b", "е": "e", "ё": "e", "з": "3", "к": "k", "м": "m", "н": "h",
    "о": "o", "р": "p", "с": "c", "т": "t", "у": "y", "х": "x", "ѕ": "s", "і": "i",
    "ї": "i", "ј": "j", "ԁ": "d", "ӏ": "l", "ү": "y", "һ": "h", "ԛ": "q",
    "ԝ": "w", "ь": "b",
    # Greek
    "α": "a", "β": "b", "γ": "y", "δ": "d", "ε": "e", "η": "n", "ι": "i", "κ": "k",
    "ν": "v", "ο": "o", "ρ": "p", "τ": "t", "υ": "u", "χ": "x", "ω": "w", "ς": "s",
    "σ": "o", "μ": "u",
    # Latin variants NFKD leaves alone
    "ı": "i", "ȷ": "j", "ł": "l", "ø": "o", "đ": "d", "ħ": "h", "ŧ": "t", "ß": "ss",
    "æ": "ae", "œ": "oe", "ð": "d", "þ": "p", "ɑ": "a", "ɩ": "i", "ʋ": "u", "ɛ": "e",
    "ɔ": "o", "ɡ": "g",
    # small capitals
    "ᴀ": "a", "ʙ": "b", "ᴄ": "c", "ᴅ": "d", "ᴇ": "e", "ꜰ": "f", "ɢ": "g", "ʜ": "h",
    "ɪ": "i", "ᴊ": "j", "ᴋ": "k", "ʟ": "l", "ᴍ": "m", "ɴ": "n", "ᴏ": "o", "ᴘ": "p",
    "ǫ": "q", "ʀ": "r", "ꜱ": "s", "ᴛ": "t", "ᴜ": "u", "ᴠ": "v", "ᴡ": "w", "ʏ": "y",
    "ᴢ": "z",
    # Armenian
    "օ": "o", "ս": "u", "ո": "n", "հ": "h", "ց": "g", "զ": "q",
}  # fmt: skip
"""Letters of other scripts that look like a Latin letter, after case folding."""

CAPITAL_HOMOGLYPHS: dict[str, str] = {
    "Α": "A", "Β": "B", "Ε": "E", "Ζ": "Z", "Η": "H", "Ι": "I", "Κ": "K", "Μ": "M",
    "Ν": "N", "Ο": "O", "Ρ": "P", "Τ": "T", "Υ": "Y", "Χ": "X",
    "А": "A", "В": "B", "Е": "E", "К": "K", "М": "M", "Н": "H", "О": "O", "Р": "P",
    "С": "C", "Т": "T", "Х": "X", "У": "Y", "Ѕ": "S", "І": "I", "Ј": "J",
}  # fmt: skip
"""Greek and Cyrillic capitals that look like a Latin capital, read before case folding
(Greek Η looks like H, its small letter η like n)."""


@cache
def traditional_to_simplified() -> dict[str, str]:
    """Traditional Chinese characters and their simplified form (the first one where the
    table gives several), from the OpenCC character table that opencc-python-reimplemented
    ships."""
    table: dict[str, str] = {}
    data = resources.files("opencc").joinpath("dictionary", "TSCharacters.txt")
    for line in data.read_text(encoding="utf-8").splitlines():
        traditional, _, simplified = line.partition("\t")
        choices = simplified.split()
        if len(traditional) == 1 and choices and len(choices[0]) == 1:
            table[traditional] = choices[0]
    return table


def _is_cjk(ch: str) -> bool:
    code = ord(ch)
    return (
        0x2E80 <= code <= 0x2FFF
        or 0x3040 <= code <= 0x318F
        or 0x3400 <= code <= 0x4DBF
        or 0x4E00 <= code <= 0x9FFF
        or 0xAC00 <= code <= 0xD7AF
        or 0xF900 <= code <= 0xFAFF
        or 0x20000 <= code <= 0x3FFFF
    )


def describe(ch: str) -> CharInfo:
    """How one character of a draft is normalised (uncached; see :func:`info`)."""
    category = unicodedata.category(ch)
    if ch in _INVISIBLE_EXTRA or category in _DROPPED_CATEGORIES:
        return CharInfo(Kind.INVISIBLE, "", "", "", False, False)
    if category == "Cc" and ch not in "\t\n\r\x0b\x0c\x85":
        return CharInfo(Kind.INVISIBLE, "", "", "", False, False)
    literal = _literal(ch)
    if ch in _NEWLINES:
        return CharInfo(Kind.NEWLINE, "", "\n", "", False, False)
    if ch in _BREAKS:
        return CharInfo(Kind.BREAK, "", literal, "", False, False)
    if ch in _STOPS:
        return CharInfo(Kind.STOP, "", literal, "", False, False)
    if category.startswith("Z") or ch in "\t\r":
        return CharInfo(Kind.SPACE, "", " ", "", False, False)
    t2s = traditional_to_simplified()
    folded: list[str] = []
    compact: list[str] = []
    decomposed = unicodedata.normalize("NFKD", ch)
    for part in decomposed:
        if unicodedata.category(part) in _DROPPED_CATEGORIES:
            continue
        for lowered in CAPITAL_HOMOGLYPHS.get(part, part).casefold():
            simplified = t2s.get(lowered, lowered)
            mapped = HOMOGLYPHS.get(simplified, simplified)
            for letter in mapped:
                stand_in = STAND_INS.get(letter)
                if stand_in is not None:
                    folded.append(stand_in)
                elif letter.isalnum():
                    folded.append(letter)
                if letter.isalnum():
                    compact.append(letter)
    text = "".join(folded)
    if not text:
        return CharInfo(Kind.SEPARATOR, "", literal, "", False, False)
    cjk = _is_cjk(text[0])
    joins = (ch.isalpha() or ch.isdigit()) and not cjk
    return CharInfo(Kind.WORD, text, literal, "".join(compact), joins, cjk)


def _literal(ch: str) -> str:
    t2s = traditional_to_simplified()
    kept = unicodedata.normalize("NFKC", ch).casefold()
    return "".join(t2s.get(c, c) for c in kept)


class _Table(dict[int, CharInfo]):
    def __missing__(self, code: int) -> CharInfo:
        described = describe(chr(code))
        if len(self) < CACHE_MAX:
            self[code] = described
        return described


class _Projection(dict[int, str]):
    """A ``str.translate`` table onto one view, filled on first sight of a character."""

    def __init__(self, view: str) -> None:
        super().__init__()
        self.view = view

    def __missing__(self, code: int) -> str:
        projected: str = getattr(info(chr(code)), self.view)
        if len(self) < CACHE_MAX:
            self[code] = projected
        return projected


class _Lengths(dict[int, str]):
    """A ``str.translate`` table onto the number of matching-view characters of each
    character, written as the character ``chr(0x30 + n)`` ("0", "1", "2", ...)."""

    def __missing__(self, code: int) -> str:
        length = chr(0x30 + len(_FOLDED[code]))
        if len(self) < CACHE_MAX:
            self[code] = length
        return length


class _StepKinds(dict[int, str]):
    """A ``str.translate`` table onto "w" (a word character), "i" (invisible) or "g" (a
    gap: space, punctuation, symbol)."""

    def __missing__(self, code: int) -> str:
        kind = info(chr(code)).kind
        step = "w" if kind == Kind.WORD else "i" if kind == Kind.INVISIBLE else "g"
        if len(self) < CACHE_MAX:
            self[code] = step
        return step


_GAP_RUN = re.compile("g[gi]*g")
"""A run of two gaps or more, with invisible characters among them: one step of a window."""
_STEP_COUNTS = str.maketrans({"w": "\x01", "g": "\x01", "i": "\x00"})


def _one_step(run: re.Match[str]) -> str:
    return "g" + "i" * (len(run.group()) - 1)


_INFO = _Table()
_FOLDED = _Projection("folded")
_LITERAL = _Projection("literal")
_COMPACT = _Projection("compact")
_LENGTHS = _Lengths()
_STEP_KINDS = _StepKinds()


def info(ch: str) -> CharInfo:
    """How ``ch`` is normalised (cached)."""
    return _INFO[ord(ch)]


def fold(text: str) -> str:
    """``text`` in the matching view (for terms compiled from a policy)."""
    return text.translate(_FOLDED)


class Normalised:
    """A draft's text in the matching view, with positions back into the original.

    Only the matching view is computed up front (one ``str.translate``); the map back to
    original positions, gaps, segments and the literal view are worked out when a term
    is found.
    """

    __slots__ = ("_origin", "_steps", "folded", "source", "text")

    def __init__(self, text: str, symbols_as_separators: bool = False) -> None:
        self.text = text
        self.source = text
        """``text`` with letter stand-ins between CJK characters made spaces and ``!`` or
        ``|`` before a letter made a dotless i (same length): what the matching view is
        read from. With ``symbols_as_separators``, every ``@`` and ``$`` is a space and
        ``!`` and ``|`` stay marks: the reading for symbols inserted between letters
        (g@u@a@r@a@n@t@e@e@d, g|u|a|r|d) rather than written for them (gu@r@nteed, r!sk)."""
        if symbols_as_separators:
            self.source = _blank_symbols_in(text)
        else:
            if "@" in text or "$" in text or "＠" in text or "＄" in text:
                self.source = _SYMBOLS_BETWEEN_CJK.sub(_blank_symbols, text)
            if "!" in text or "|" in text:
                self.source = _MARK_FOR_I.sub(_I_STAND_IN, self.source)
        self.folded = self.source.translate(_FOLDED)
        self._origin: list[int] | None = None
        self._steps: list[int] | bool | None = None

    @property
    def origin(self) -> list[int]:
        """For each character of the matching view, the position in ``text`` it came from."""
        if self._origin is None:
            lengths = self.source.translate(_LENGTHS)
            if lengths.count("1") == len(self.folded):  # no character expands
                self._origin = [p for p, n in enumerate(lengths) if n == "1"]
            else:
                self._origin = [p for p, n in enumerate(lengths) for _ in range(ord(n) - 0x30)]
        return self._origin

    @property
    def steps(self) -> list[int] | None:
        """For each original position ``p`` (and ``len(text)``), how many characters of a
        nearby window lie before it: an invisible character counts for nothing and a run of
        spaces and punctuation for one, so "保 \u200b 证" is as near as "保 证". None when
        every character counts for one (no invisible character, no run of gaps)."""
        if self._steps is None:
            kinds = self.source.translate(_STEP_KINDS)
            if "i" not in kinds and "gg" not in kinds:
                self._steps = False
            else:
                counted = _GAP_RUN.sub(_one_step, kinds).translate(_STEP_COUNTS)
                self._steps = list(accumulate(counted.encode("ascii"), initial=0))
        return self._steps if isinstance(self._steps, list) else None

    def reach_before(self, start: int, within: int) -> int:
        """The first original position at most ``within`` window characters before ``start``."""
        steps = self.steps
        if steps is None:
            return max(0, start - within)
        return bisect_left(steps, steps[start] - within)

    def reach_after(self, end: int, within: int) -> int:
        """The original position (exclusive) ``within`` window characters after ``end``."""
        steps = self.steps
        if steps is None:
            return min(len(self.source), end + within)
        return bisect_right(steps, steps[end] + within) - 1

    def span(self, start: int, end: int) -> tuple[int, int]:
        """Original positions (end exclusive) of matching-view characters start:end."""
        origin = self.origin
        return origin[start], origin[end - 1] + 1

    def gap_before(self, unit: int) -> bool:
        """Whether a space, punctuation mark or symbol stands between matching-view
        characters ``unit - 1`` and ``unit`` (always true at the start)."""
        if unit <= 0:
            return True
        origin = self.origin
        if unit >= len(origin):
            return True
        text = self.source
        return any(
            _INFO[ord(text[p])].kind != Kind.INVISIBLE
            for p in range(origin[unit - 1] + 1, origin[unit])
        )

    def joins_letters(self, unit: int) -> bool:
        """Whether matching-view character ``unit`` comes from a (non-CJK) letter."""
        return _INFO[ord(self.source[self.origin[unit]])].letter

    def is_cjk(self, unit: int) -> bool:
        return _INFO[ord(self.source[self.origin[unit]])].cjk

    def starts_at_word_edge(self, unit: int) -> bool:
        """An English term may start at ``unit``: nothing letter-like joins it on the left,
        and a digit does not continue a number ("0 risk" is not found in "2.0 risk")."""
        if not (self.gap_before(unit) or not self.joins_letters(unit - 1)):
            return False
        if unit <= 0:
            return True
        position = self.origin[unit]
        return not (
            self.source[position].isdigit()
            and position >= 2
            and self.source[position - 1] in ".,"
            and self.source[position - 2].isdigit()
        )

    def ends_at_word_edge(self, end: int) -> bool:
        """An English term may end before ``end``: nothing letter-like joins it on the right."""
        return end >= len(self.folded) or self.gap_before(end) or not self.joins_letters(end)

    def one_segment(self, start: int, end: int) -> bool:
        """Whether matching-view characters start:end lie in one segment."""
        origin = self.origin
        return _one_segment(self.source, origin[start], origin[end - 1])

    def words_between(self, end: int, start: int, limit: int) -> int:
        """How many words lie between matching-view characters end-1 and start (a CJK
        character is a word of its own), counting no further than ``limit + 1``."""
        words = 0
        origin, text, table = self.origin, self.source, _INFO
        # counted backwards from ``start``: the work stops after limit + 1 words, however
        # far away ``end`` is
        following_cjk = start < len(origin) and table[ord(text[origin[start]])].cjk
        for unit in range(start - 1, end - 1, -1):
            cjk = table[ord(text[origin[unit]])].cjk
            if cjk or following_cjk or self.gap_before(unit + 1):
                words += 1
                if words > limit:
                    break
            following_cjk = cjk
        return words

    def literal(self, start: int = 0, end: int | None = None) -> tuple[str, list[int]]:
        """The literal view of original positions start:end and, for each of its
        characters, the original position it came from."""
        return _window(self.text, _LITERAL, start, end)

    def compact(self, start: int = 0, end: int | None = None) -> tuple[str, list[int]]:
        """The compact view of original positions start:end (the matching view without
        digit and symbol stand-ins: "3 月 5 日" reads "3月5日", "M a r c h" reads "march"),
        and for each of its characters the original position it came from."""
        return _window(self.source, _COMPACT, start, end)


def _window(text: str, table: _Projection, start: int, end: int | None) -> tuple[str, list[int]]:
    first = max(0, start)
    parts = [table[ord(ch)] for ch in text[first:end]]
    origin = [first + p for p, part in enumerate(parts) for _ in part]
    return "".join(parts), origin


def _one_segment(text: str, first: int, last: int) -> bool:
    """No segment ends between original positions ``first`` and ``last``."""
    newlines = 0
    stopped = False
    for position in range(first + 1, last):
        kind = _INFO[ord(text[position])].kind
        if kind == Kind.WORD:
            newlines, stopped = 0, False
        elif kind == Kind.BREAK:
            return False
        elif kind == Kind.STOP:
            stopped = True
        elif kind == Kind.NEWLINE:
            newlines += 1
            if stopped or newlines >= 2:
                return False
        elif kind == Kind.SPACE and stopped:
            return False
    return True


def _blank_symbols(match: re.Match[str]) -> str:
    return _blank_symbols_in(match.group())


def _blank_symbols_in(text: str) -> str:
    return re.sub("[@$＠＄]", " ", text)


def has_symbol_stand_ins(text: str) -> bool:
    """Whether ``text`` holds ``@`` or ``$`` (full-width too), or ``!`` or ``|`` before a
    letter, which may stand for a letter or have been inserted between letters."""
    return (
        "@" in text
        or "$" in text
        or "＠" in text
        or "＄" in text
        or (("!" in text or "|" in text) and _MARK_FOR_I.search(text) is not None)
    )
