"""Personal data in free text: finding it, telling whose it may be, and masking it.

Detectors:

- ``resident_id``: a mainland resident identity number (GB 11643): 18 characters, a known
  province code, a real birth date from 1900 to 2099, and the check character (``X`` for
  10) that the weighted sum of the first 17 digits gives. An 18-digit order number almost
  never passes.
- ``mobile``: a mainland mobile number, ``1[3-9]`` and nine more digits, alone or after a
  ``86``/``0086`` country code; landlines (``010-12345678``) and hotlines
  (``400-123-4567``) are not mobile numbers.
- ``bank_card``: 13 to 19 digits passing the Luhn check. Masked whenever found; reported
  as a bank card only when its first digits are those of a card scheme (3, 4, 5 or 6,
  or 2221-2720) or a word such as 卡号, card or account comes just before it, so a
  Luhn-valid order or tracking number is not taken for a card.
- ``email``: ``local@domain.tld``, also written with ``[at]``/``(at)`` and
  ``[dot]``/``(dot)``, or ``local at domain dot tld`` with both words spelt out. A role
  mailbox (support@, info@, sales@, ...) is masked but not reported.

Digits may be full-width or Chinese numerals (一三八…, 幺 for 1) and grouped with spaces,
dashes, dots, brackets or invisible characters (``138 1234 5678``,
``+86-138-1234-5678``). Masks keep the text's length
(every position stays where it was): ``138****5678``, ``************1234``,
``**************123X``, ``a****@example.com``.
"""

from __future__ import annotations

import calendar
import re
import unicodedata
from bisect import bisect_left
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import accumulate

from .normalise import HOMOGLYPHS

RESIDENT_ID = "resident_id"
MOBILE = "mobile"
BANK_CARD = "bank_card"
EMAIL = "email"
DETECTORS = (RESIDENT_ID, MOBILE, BANK_CARD, EMAIL)

_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK = "10X98765432"
_PROVINCES = frozenset(
    (11, 12, 13, 14, 15, 21, 22, 23, 31, 32, 33, 34, 35, 36, 37, 41, 42, 43, 44, 45, 46,
     50, 51, 52, 53, 54, 61, 62, 63, 64, 65, 71, 81, 82, 83, 91)
)  # fmt: skip

_CHINESE_DIGITS = {numeral: str(value) for value, numeral in enumerate("〇一二三四五六七八九")} | {
    "零": "0",
    "幺": "1",
}
_INVISIBLE = "\x00"
"""What an invisible character becomes in the view: skipped inside an email, a separator
between digits."""


def _view_of(ch: str) -> str:
    """One character of the view: digits of any script and Chinese numerals as ASCII
    digits, compatibility forms (full-width, mathematical, circled) and Cyrillic or Greek
    look-alikes as the ASCII character, invisible characters as NUL; one for one."""
    if ch.isascii():
        return ch
    digit = unicodedata.decimal(ch, None)
    if digit is not None:
        return str(digit)
    if ch in _CHINESE_DIGITS:
        return _CHINESE_DIGITS[ch]
    category = unicodedata.category(ch)
    if category in ("Cf", "Mn", "Me") or ch in "\u115f\u1160\u3164\uffa0\u2800\u180e":
        return _INVISIBLE
    if category.startswith("Z"):
        return " "
    if category == "Pd":
        return "-"
    if ch in "。｡．":
        return "."
    compatible = unicodedata.normalize("NFKC", ch)
    if len(compatible) == 1 and compatible.isascii():
        return compatible
    lowered = ch.casefold()
    look_alike = HOMOGLYPHS.get(lowered, "") if len(lowered) == 1 else ""
    if len(look_alike) == 1:
        return look_alike.upper() if ch != lowered else look_alike
    return ch


class _View(dict[int, str]):
    def __missing__(self, code: int) -> str:
        viewed = _view_of(chr(code))
        if len(self) < 100_000:
            self[code] = viewed
        return viewed


_VIEW = _View()

_DIGIT_LETTERS = {"O": "0", "o": "0", "I": "1", "l": "1", "S": "5", "B": "8", "Z": "2",
                  "z": "2", "б": "6"}  # fmt: skip
"""Letters written for digits, read as digits only inside a number."""
_NUMBER = re.compile(
    r"[0-9OoIlSBZzб](?:[ \t\n\-.,()/*_~|·•+'、\x00]{0,3}[0-9OoIlSBZzб])*"
    r"(?:[ \-.\x00]{0,2}[xX](?![A-Za-z0-9]))?"
)
_NUMBER_DIGITS_MIN = 7
"""Real digits a number must hold before letters in it are read as digits."""
_CHUNK = re.compile(r"[0-9OoIlSBZzб]+[xX]?|[xX]")
_CARD_WORDS = re.compile(r"卡|card|account|acct|a/c|账号|账户|帐号|帐户", re.IGNORECASE)
_CARD_CONTEXT = 20
"""Characters before a Luhn-valid number searched for a card word."""

_AT = re.compile(r"@|[\[({<]\s{0,3}at\s{0,3}[\])}>]", re.IGNORECASE)
_DOMAIN = re.compile(
    r"(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.|\s{0,3}[\[({<]\s{0,3}dot\s{0,3}[\])}>]\s{0,3}))+"
    r"[a-z]{2,24}(?![a-z0-9-])",
    re.IGNORECASE,
)
_DOT_WORD = re.compile(r"\s*[\[({<]\s*dot\s*[\])}>]\s*|\s+dot\s+", re.IGNORECASE)
_SPELT_EMAIL = re.compile(
    r"(?<![A-Za-z0-9._%+-])([A-Za-z0-9._%+-]{1,64})\s+at\s+"
    r"([A-Za-z0-9-]{1,63}(?:\s+dot\s+[A-Za-z0-9-]{1,63}){1,8})(?![A-Za-z0-9-])",
    re.IGNORECASE,
)
"""``name at example dot com``: only with both words spelt out."""
_LOCAL = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._%+-")
_LOCAL_MAX = 64
ROLE_MAILBOXES = frozenset(
    (
        "admin", "billing", "contact", "customerservice", "enquiries", "feedback", "hello",
        "help", "hr", "info", "invoice", "invoices", "kefu", "marketing", "no-reply", "noreply",
        "office", "orders", "postmaster", "press", "sales", "service", "support", "team",
        "webmaster",
    )
)  # fmt: skip
"""Mailboxes of a role, not of a person: masked, not reported as personal data."""
_DOMAIN_MAX = 255


@dataclass(frozen=True, slots=True)
class PersonalData:
    """One piece of personal data found in a text. ``value`` is the data itself,
    normalised to compare with known contacts: never emit or log it."""

    detector: str
    start: int
    end: int
    value: str
    hidden: tuple[int, ...]
    """Positions of the characters a mask replaces."""
    reportable: bool = True
    """False for a Luhn-valid number with no sign of being a card, or a role mailbox
    (support@, info@, ...): masked, not flagged."""


def resident_id_valid(value: str) -> bool:
    """GB 11643: province code, birth date and check character."""
    if len(value) != 18 or not value[:17].isdigit() or value[17] not in "0123456789Xx":
        return False
    if int(value[:2]) not in _PROVINCES:
        return False
    year, month, day = int(value[6:10]), int(value[10:12]), int(value[12:14])
    if not (1900 <= year <= 2099 and 1 <= month <= 12):
        return False
    if not 1 <= day <= calendar.monthrange(year, month)[1]:
        return False
    total = sum(int(d) * w for d, w in zip(value[:17], _ID_WEIGHTS, strict=True))
    return _ID_CHECK[total % 11] == value[17].upper()


def luhn_valid(digits: str) -> bool:
    total = 0
    for index, ch in enumerate(reversed(digits)):
        digit = ord(ch) - 48
        if index % 2:
            digit *= 2
            if digit > 9:
                digit -= 9
        total += digit
    return total % 10 == 0


def mobile_number(digits: str) -> str | None:
    """The 11-digit national number if ``digits`` is a mainland mobile number."""
    if len(digits) == 13 and digits.startswith("86"):
        digits = digits[2:]
    elif len(digits) == 15 and digits.startswith("0086"):
        digits = digits[4:]
    if len(digits) == 11 and digits[0] == "1" and digits[1] in "3456789" and digits.isdigit():
        return digits
    return None


def _card_scheme(digits: str) -> bool:
    return digits[0] in "3456" or 2221 <= int(digits[:4]) <= 2720


def find_personal_data(text: str) -> tuple[PersonalData, ...]:
    """Every piece of personal data in ``text``, in order of position."""
    view = text.translate(_VIEW)
    found: list[PersonalData] = []
    for number in _NUMBER.finditer(view):
        group = number.group()
        if sum(ch.isdigit() for ch in group) >= _NUMBER_DIGITS_MIN:
            found.extend(_numbers(view, number.start(), group))
    lowered = view.lower()
    if "@" in view or "at" in lowered:
        visible, origin = _without_invisible(view)
        emails = list(_emails(visible))
        if " at " in lowered and " dot " in lowered:
            emails.extend(_spelt_emails(visible, emails))
        found.extend(_moved(item, origin) for item in emails)
    found.sort(key=lambda item: item.start)
    return tuple(found)


def _numbers(view: str, offset: int, group: str) -> Iterable[PersonalData]:
    chunks: list[tuple[int, str, bool]] = []  # (start, digits, joined to the one before)
    previous_end = -1
    for c in _CHUNK.finditer(group):
        joined = previous_end >= 0 and not group[previous_end : c.start()].strip(_INVISIBLE)
        digits = "".join(_DIGIT_LETTERS.get(ch, ch) for ch in c.group())
        chunks.append((offset + c.start(), digits, joined))
        previous_end = c.end()
    index = 0
    while index < len(chunks):
        best: tuple[int, int, str, str] | None = None  # (rank, last chunk, detector, value)
        value = ""
        sizes: list[int] = []
        first = chunks[index][0]
        card_word = _CARD_WORDS.search(view, max(0, first - _CARD_CONTEXT), first) is not None
        for last in range(index, len(chunks)):
            digits = chunks[last][1]
            value += digits
            if chunks[last][2] and last > index:  # only invisible characters between
                sizes[-1] += len(digits)
            else:
                sizes.append(len(digits))
            if len(value) > 19:
                break
            if len(value) < 11:  # no detector takes fewer digits
                continue
            detector, normalised = _classify(value, sizes, card_word)
            if detector is None:
                continue
            rank = (RESIDENT_ID, MOBILE, BANK_CARD).index(detector)
            if best is None or (rank, -len(normalised)) <= (best[0], -len(best[3])):
                best = (rank, last, detector, normalised)
        if best is None:
            index += 1
            continue
        _, last, detector, normalised = best
        start = chunks[index][0]
        positions = [
            chunk_start + k
            for chunk_start, chunk, _ in chunks[index : last + 1]
            for k in range(len(chunk))
        ]
        end = positions[-1] + 1
        if detector == MOBILE:
            national = positions[-11:]
            hidden = tuple(national[3:7])
        else:
            hidden = tuple(positions[:-4])
        reportable = detector != BANK_CARD or card_word or _card_scheme(normalised)
        yield PersonalData(detector, start, end, normalised, hidden, reportable)
        index = last + 1


def _classify(value: str, sizes: list[int], card_word: bool) -> tuple[str | None, str]:
    if len(value) == 18 and resident_id_valid(value):
        return RESIDENT_ID, value.upper()
    if not value.isdigit():
        return None, value
    national = mobile_number(value)
    if national is not None:
        return MOBILE, national
    if 13 <= len(value) <= 19 and (card_word or _card_grouping(sizes)) and luhn_valid(value):
        return BANK_CARD, value
    return None, value


def _card_grouping(sizes: list[int]) -> bool:
    """Digit groups a card number is written in: one run, fours (the last shorter or up
    to seven), 4-6-5 or 4-6-4, or one digit at a time; not two numbers side by side. (Any
    grouping counts after a card word: "card 62 2848 03157 7420 5" is one card.) Groups
    with only invisible characters between them are one group."""
    return (
        len(sizes) == 1
        or all(size == 1 for size in sizes)
        or (all(size == 4 for size in sizes[:-1]) and 1 <= sizes[-1] <= 7)
        or sizes in ([4, 6, 5], [4, 6, 4])
    )


def _without_invisible(view: str) -> tuple[str, list[int]]:
    """``view`` without its invisible characters, and where each character was."""
    if _INVISIBLE not in view:
        return view, list(range(len(view)))
    origin = [p for p, ch in enumerate(view) if ch != _INVISIBLE]
    return view.replace(_INVISIBLE, ""), origin


def _moved(item: PersonalData, origin: list[int]) -> PersonalData:
    """``item`` found in a view without invisible characters, placed in the text."""
    return PersonalData(
        item.detector,
        origin[item.start],
        origin[item.end - 1] + 1,
        item.value,
        tuple(origin[p] for p in item.hidden),
        item.reportable,
    )


_SPELLING = frozenset(" \t·•、*~|'")
"""What may be inserted between the characters of an email address to disguise it."""
_SPELT_REACH = 128
"""Characters before an ``@`` searched for a spelt-out local part."""


def _emails(view: str) -> Iterable[PersonalData]:
    last_end = 0
    for at in _AT.finditer(view):
        if at.start() < last_end:
            continue
        found = _email_at(view, at.start(), at.end(), at.group() == "@")
        if found is None and at.group() == "@":
            found = _spelt_email_at(view, at.start()) or _marked_email_at(view, at.start())
        if found is None:
            continue
        last_end = found.end
        yield found


def _email_at(view: str, at: int, after: int, symbol: bool) -> PersonalData | None:
    """The address around the at-sign at view[at:after], if there is one."""
    left = at
    while left > 0 and view[left - 1] in " \t" and at - left < 2:
        left -= 1
    start = left
    while start > 0 and view[start - 1] in _LOCAL and left - start < _LOCAL_MAX:
        start -= 1
    while start < left and view[start] == ".":
        start += 1
    if start == left:
        return None
    right = after
    while right < len(view) and view[right] in " \t" and right - after < 2:
        right += 1
    domain = _DOMAIN.match(view[right : right + _DOMAIN_MAX])
    if domain is None:
        return None
    local = view[start:left]
    value = local.lower() + "@" + _DOT_WORD.sub(".", domain.group()).lower()
    hidden = tuple(range(start + 1, left))
    reportable = local.lower() not in ROLE_MAILBOXES
    return PersonalData(EMAIL, start, right + domain.end(), value, hidden, reportable)


def _spelt_email_at(view: str, at: int) -> PersonalData | None:
    """An address spelt out with spaces or marks between its characters
    (s a r a h @ s i n a . c o m), read with them left out."""
    first = max(0, at - _SPELT_REACH)
    window = view[first : at + _DOMAIN_MAX]
    origin = [first + p for p, ch in enumerate(window) if ch not in _SPELLING]
    compact = "".join(ch for ch in window if ch not in _SPELLING)
    at_compact = origin.index(at)
    found = _email_at(compact, at_compact, at_compact + 1, True)
    return None if found is None else _moved(found, origin)


_MARKS = frozenset("!\"#$%&'()*+,-./:;<=>?[\\]^_`{|}~·•、 \t")
"""What may stand between the characters of an address spelt out one character at a time."""
_COMMON_TLDS = frozenset(("com", "cn", "net", "org", "edu", "gov", "io", "hk", "tw", "co"))
_MARKS_RUN_MAX = 3
_MARKED_CHARS_MAX = 64
"""Characters of one side of an address spelt out one at a time."""


def _marked_side(view: str, position: int, step: int) -> tuple[list[int], list[str]]:
    """From the ``@`` at ``position``, walking by ``step`` (-1 left, 1 right): the
    positions of single letters or digits, each with the run of marks before it (on the
    side of the ``@``), and those runs."""
    positions: list[int] = []
    runs: list[str] = []
    cursor = position + step
    while len(positions) < _MARKED_CHARS_MAX:
        run: list[str] = []
        while 0 <= cursor < len(view) and view[cursor] in _MARKS and len(run) < _MARKS_RUN_MAX:
            run.append(view[cursor])
            cursor += step
        if (not run and positions) or not (0 <= cursor < len(view)):
            break  # two characters side by side, or the end: the spelling ends
        if not _single_character(view, cursor, step):
            break
        positions.append(cursor)
        runs.append("".join(run))
        cursor += step
    return positions, runs


def _single_character(view: str, position: int, step: int) -> bool:
    """An ASCII letter or digit not followed (walking by ``step``) by another one."""
    ch = view[position]
    if not (ch.isascii() and ch.isalnum()):
        return False
    after = position + step
    return not (0 <= after < len(view) and view[after].isascii() and view[after].isalnum())


def _marked_email_at(view: str, at: int) -> PersonalData | None:
    """An address written one character at a time with marks between them, any marks
    (z/h/o/u/@/1/2/6/./c/o/m, w-a-n-g-@-s-o-h-u-.-c-o-m): the marks are left out, and
    the last run holding a dot before two or more letters is the domain's last dot (before
    a common ending such as com or cn, when every run holds a dot)."""
    local_positions = _marked_side(view, at, -1)[0][::-1]
    positions, runs = _marked_side(view, at, 1)
    if len(local_positions) < 2 or len(positions) < 3:
        return None
    dots = [k for k, run in enumerate(runs) if "." in run and k > 0]
    tlds = {k: "".join(view[p] for p in positions[k:]) for k in dots}
    usable = [k for k in dots if tlds[k].isalpha() and 2 <= len(tlds[k]) <= 24]
    if not usable:
        return None
    # with a dot between every character, the last dot before a common ending
    dot = next((k for k in reversed(usable) if tlds[k].lower() in _COMMON_TLDS), usable[-1])
    tld = tlds[dot]
    local = "".join(view[p] for p in local_positions).lower()
    domain = "".join(view[p] for p in positions[:dot]).lower() + "." + tld.lower()
    return PersonalData(
        EMAIL,
        local_positions[0],
        positions[-1] + 1,
        local + "@" + domain,
        tuple(local_positions[1:]),
        local not in ROLE_MAILBOXES,
    )


def _spelt_emails(view: str, found: list[PersonalData]) -> Iterable[PersonalData]:
    taken = sorted((item.start, item.end) for item in found)
    reach = list(accumulate((e for _, e in taken), max))  # furthest end so far
    for match in _SPELT_EMAIL.finditer(view):
        start, end = match.span()
        tld = match.group(2).split()[-1]
        if not (tld.isalpha() and 2 <= len(tld) <= 24):
            continue
        index = bisect_left(taken, (end,))  # found data starting before this one ends
        if index > 0 and reach[index - 1] > start:
            continue
        domain = _DOT_WORD.sub(".", match.group(2)).lower()
        local = match.group(1).lower()
        hidden = tuple(range(start + 1, match.end(1)))
        yield PersonalData(
            EMAIL, start, end, local + "@" + domain, hidden, local not in ROLE_MAILBOXES
        )


def mask_pii(text: str) -> str:
    """``text`` with every resident ID, mobile number, Luhn-valid card number and email
    address masked, keeping its length: use it on everything Warroom emits or logs."""
    return mask(text, find_personal_data(text))


def mask(text: str, found: Iterable[PersonalData]) -> str:
    """``text`` with the personal data ``found`` in it masked."""
    hidden = sorted({p for item in found for p in item.hidden})
    if not hidden:
        return text
    chars = list(text)
    for position in hidden:
        chars[position] = "*"
    return "".join(chars)


def contact_key(contact: str) -> str:
    """A contact detail as :class:`PersonalData` ``value`` would read it: an email in lower
    case, a phone number as its 11-digit national number, anything else as its digits."""
    view = contact.translate(_VIEW).replace(_INVISIBLE, "").strip()
    if "@" in view:
        return view.lower()
    digits = "".join(ch for ch in view if ch.isdigit() or ch in "xX").upper()
    national = mobile_number(digits)
    return national if national is not None else digits


def domain_of(email: str) -> str:
    return email.rpartition("@")[2]
