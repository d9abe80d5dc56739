"""A compiled policy, and what it decides about one normalised draft.

Everything a policy matches by term (its terms, their exceptions, negation words,
required-content topics and the terms a finding needs nearby) sits in one Aho-Corasick
automaton built when the bundle is loaded; a draft is read once, in its matching view
(see :mod:`engine.compliance.normalise`), whatever the number of terms.
"""

from __future__ import annotations

import re
from bisect import bisect_left, bisect_right, insort
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
from typing import Any

import ahocorasick

from .model import Draft, Finding, PolicyVerdict, Template, TrainingRule, Verdict
from .normalise import Normalised, fold
from .pii import EMAIL, PersonalData, contact_key, domain_of

_NUMBER_NEAR = re.compile(
    r"\d|[%％‰]|百分之|[零〇一二两三四五六七八九十][成倍]|[一二两三四五六七八九十]个点"
    r"|percent|per cent",
    re.IGNORECASE,
)
"""What counts as a number near a term: a digit (any script, full-width included), a
percent or per-mille sign, 百分之, a Chinese numeral before 成, 倍 or 个点, or the word
percent."""

ENGLISH_ENDINGS = tuple(fold(ending) for ending in ("s", "es", "d", "ed", "ing", "ly"))
"""Endings an English term may carry and still match ("guaranteed return" matches
"guaranteed returns"), as they read in the matching view."""


class PolicyMode(StrEnum):
    TEST = "test"
    """Verdicts are recorded, never returned: the caller sees allow."""
    NOTIFY = "notify"
    """Confirm and block are returned as remind: the rep is warned, not stopped."""
    ENFORCE = "enforce"
    """Verdicts are returned as decided."""


class NegationEffect(StrEnum):
    DROP = "drop"
    """A negated term is no finding."""
    LOWER = "lower"
    """A negated term is a finding one tier lower (none if that is allow)."""


class Role(IntEnum):
    TERM = 0
    EXCEPT = 1
    NEGATE_BEFORE = 2
    NEGATE_AFTER = 3
    NOT_NEGATION = 4
    TOPIC = 5
    NEAR = 6
    OWN = 7
    OTHER = 8


@dataclass(frozen=True, slots=True)
class Near:
    """A finding counts only if one of these terms or patterns is found within ``within``
    characters of it (in the original text, either side)."""

    within: int
    group: int
    """Which NEAR entries of the automaton are this requirement's terms."""
    terms: tuple[str, ...]
    patterns: tuple[Any, ...]
    """RE2 programs, searched in the literal view."""
    sources: tuple[str, ...]
    """The patterns as written."""


@dataclass(frozen=True, slots=True)
class Term:
    text: str
    """As written in the bundle."""
    category: int
    tier: Verdict
    near: tuple[Near, ...]
    """The category's requirements and the term's own."""
    unless: tuple[Near, ...] = ()
    """The category's and the term's own: any one met makes the term innocent."""


@dataclass(frozen=True, slots=True)
class Own:
    """When personal data is the sender's or the recipient's own: the nearest marker before
    it is one of the ``own`` words (group ``g`` within ``windows[g]`` characters), not
    one of the ``others``."""

    detectors: frozenset[str]
    windows: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Category:
    category_id: str
    tier: Verdict
    templates: tuple[Template, ...] = ()
    kinds: frozenset[str] | None = None
    """Draft kinds the category applies to; None for all."""
    near_number: int | None = None
    """Characters either side in which a number raises a finding's tier."""
    number_tier: Verdict | None = None
    """The tier a number nearby raises a finding to; None for one tier up."""
    detectors: frozenset[str] = frozenset()
    """Personal-data detectors whose findings belong to this category."""
    own: Own | None = None


@dataclass(frozen=True, slots=True)
class Requirement:
    """Drafts of ``kind`` must mention at least ``at_least`` of ``topics``."""

    kind: str
    at_least: int
    tier: Verdict
    category: str
    topics: tuple[str, ...]
    templates: tuple[Template, ...] = ()


@dataclass(frozen=True, slots=True)
class Negation:
    before_window: int = 3
    after_window: int = 3
    effect: NegationEffect = NegationEffect.DROP


@dataclass(frozen=True, slots=True)
class Entry:
    """What a key of the automaton stands for. ``index`` and ``detail`` depend on the role:
    TERM (term, -), EXCEPT (term or -1, category), TOPIC (requirement, topic), NEAR
    (group, -), OWN (category, group), OTHER (category, -); unused for negation words."""

    role: Role
    index: int = 0
    detail: int = 0


@dataclass(eq=False)
class Automaton:
    """Keys (matching view) to their entries, built into one automaton."""

    entries: dict[str, list[Entry]] = field(default_factory=dict)

    def add(self, key: str, entry: Entry) -> None:
        self.entries.setdefault(key, []).append(entry)

    def build(self) -> Any:
        if not self.entries:
            return None
        automaton = ahocorasick.Automaton(ahocorasick.STORE_ANY, ahocorasick.KEY_STRING)
        for key, entries in self.entries.items():
            automaton.add_word(key, (len(key), _english(key[0]), _english(key[-1]), tuple(entries)))
        automaton.make_automaton()
        return automaton

    @property
    def longest(self) -> int:
        """The longest key, in matching-view characters."""
        return max((len(key) for key in self.entries), default=0)


def _english(ch: str) -> bool:
    return ch.isascii() and ch.isalnum()


@dataclass(frozen=True, slots=True, eq=False)
class CompiledPolicy:
    """A policy section of a bundle, compiled: what :func:`~engine.compliance.judge` runs."""

    policy_id: str
    version: int
    mode: PolicyMode
    training: tuple[TrainingRule, ...] = ()
    categories: tuple[Category, ...] = ()
    terms: tuple[Term, ...] = ()
    requirements: tuple[Requirement, ...] = ()
    negation: Negation = Negation()
    own_domains: tuple[str, ...] = ()
    automaton: Any = None
    keys: int = 0
    """How many distinct keys the automaton holds."""
    longest: int = 0
    """The longest key: how far back a phrase holding a match can start."""

    def category(self, category_id: str) -> Category | None:
        return next((c for c in self.categories if c.category_id == category_id), None)


@dataclass(frozen=True, slots=True)
class _Hit:
    start: int
    end: int
    """Matching-view positions, end exclusive."""
    entry: Entry


_TERM_ROLES = frozenset(
    (Role.TERM, Role.EXCEPT, Role.NEGATE_BEFORE, Role.NEGATE_AFTER, Role.NOT_NEGATION, Role.NEAR)
)


def _hits(policy: CompiledPolicy, text: Normalised, draft: Draft, personal: bool) -> list[_Hit]:
    """The automaton's matches that stand (word edges, one segment), of the roles that can
    matter for this draft: negation and nearby words only when a term was found, topics
    only for a kind that has required content, markers only when there is personal data."""
    if policy.automaton is None or not text.folded:
        return []
    found = list(policy.automaton.iter(text.folded))
    roles: set[Role] = set()
    if any(e.role is Role.TERM for _, value in found for e in value[3]):
        roles |= _TERM_ROLES
    if any(r.kind == draft.kind for r in policy.requirements):
        roles.add(Role.TOPIC)
    if personal:
        roles |= {Role.OWN, Role.OTHER}
    hits: list[_Hit] = []
    for last, (length, english_start, english_end, all_entries) in found:
        entries = [e for e in all_entries if e.role in roles]
        if not entries:
            continue
        start, end = last - length + 1, last + 1
        if english_start and not text.starts_at_word_edge(start):
            continue
        if english_end:
            extended = _word_end(text, end)
            if extended is None:
                continue
            end = extended
        if (
            end - start > 1
            and not text.one_segment(start, end)
            and not _spelt_out(text, start, end)
        ):
            continue
        hits.extend(_Hit(start, end, entry) for entry in entries)
    return hits


def _spelt_out(text: Normalised, start: int, end: int) -> bool:
    """A term spelt out with something between its characters: between all of them up to
    four (稳，赚，不，赔), between at least half of them beyond (g. u. a. r. a. n. t. e. e. d
    return); a term of two characters only when the spelling goes on on one side at least
    (这，款，保，本，哦; 设备承，诺，下，月). Deliberate, so it is matched across sentence and
    clause marks; "成本高，收益低" is no 高收益 and "担保，本公司" no 保本."""
    length = end - start
    if length < 2:
        return False
    gaps = sum(1 for unit in range(start + 1, end) if text.gap_before(unit))
    if length == 2:
        return gaps == 1 and (text.gap_before(start) or text.gap_before(end))
    return gaps == length - 1 if length <= 4 else 2 * gaps >= length - 1


def _word_end(text: Normalised, end: int) -> int | None:
    if text.ends_at_word_edge(end):
        return end
    folded = text.folded
    for ending in ENGLISH_ENDINGS:
        stop = end + len(ending)
        if (
            folded.startswith(ending, end)
            and not any(text.gap_before(unit) for unit in range(end, stop))
            and text.ends_at_word_edge(stop)
        ):
            return stop
    return None


def evaluate(
    policy: CompiledPolicy,
    draft: Draft,
    text: Normalised,
    personal: Sequence[PersonalData],
    masked: str,
    symbols: Normalised | None = None,
) -> PolicyVerdict:
    """What ``policy`` decides about ``draft`` (before its mode is applied). ``symbols`` is
    the draft read with ``@`` and ``$`` as separators, when it holds any: its term
    findings are added to those of ``text``."""
    hits = _hits(policy, text, draft, bool(personal))
    by_role: dict[Role, list[_Hit]] = {}
    for hit in hits:
        by_role.setdefault(hit.entry.role, []).append(hit)
    findings = _term_findings(policy, draft, text, by_role, masked)
    if symbols is not None:
        other_roles: dict[Role, list[_Hit]] = {}
        for hit in _hits(policy, symbols, draft, False):
            other_roles.setdefault(hit.entry.role, []).append(hit)
        findings = _merged(findings, _term_findings(policy, draft, symbols, other_roles, masked))
    findings.extend(_personal_findings(policy, draft, text, by_role, personal, masked))
    findings.sort(key=lambda f: (f.start, f.end, f.category))
    tiers = [f.tier for f in findings]
    missing: tuple[str, ...] = ()
    unmet: list[tuple[Requirement, int]] = []
    mentioned_topics = {(hit.entry.index, hit.entry.detail) for hit in by_role.get(Role.TOPIC, ())}
    for index, requirement in enumerate(policy.requirements):
        if requirement.kind != draft.kind:
            continue
        mentioned = [t for t in range(len(requirement.topics)) if (index, t) in mentioned_topics]
        if len(mentioned) >= requirement.at_least:
            continue
        unmet.append((requirement, len(mentioned)))
        missing += tuple(name for t, name in enumerate(requirement.topics) if t not in mentioned)
        tiers.append(requirement.tier)
    verdict = Verdict.strictest(tiers)
    return PolicyVerdict(
        policy_id=policy.policy_id,
        policy_version=policy.version,
        mode=policy.mode.value,
        verdict=verdict,
        findings=tuple(findings),
        missing_topics=tuple(dict.fromkeys(missing)),
        templates=_templates(policy, findings, unmet),
        reason=_reason(verdict, findings, unmet),
    )


def _term_findings(
    policy: CompiledPolicy,
    draft: Draft,
    text: Normalised,
    by_role: dict[Role, list[_Hit]],
    masked: str,
) -> list[Finding]:
    terms = by_role.get(Role.TERM)
    if not terms:
        return []
    reach = policy.longest + max(map(len, ENGLISH_ENDINGS))
    excepts = _Excepts(by_role.get(Role.EXCEPT, []), reach)
    not_negations = _Spans(by_role.get(Role.NOT_NEGATION, []), reach)
    negators = _Negators(
        policy.negation,
        text,
        [h for h in by_role.get(Role.NEGATE_BEFORE, []) if not not_negations.covers(h)],
        [h for h in by_role.get(Role.NEGATE_AFTER, []) if not not_negations.covers(h)],
    )
    near_hits = _NearHits(text, by_role.get(Role.NEAR, []))
    negated = {id(hit): word for hit in terms if (word := negators.word(hit)) is not None}
    negators.carry(sorted(terms, key=lambda h: (h.start, h.end)), negated)
    negated_spans = _Spans([hit for hit in terms if id(hit) in negated], reach)
    candidates: list[tuple[Finding, int]] = []
    for hit in terms:
        term = policy.terms[hit.entry.index]
        category = policy.categories[term.category]
        if category.kinds is not None and draft.kind not in category.kinds:
            continue
        if excepts.excepted(hit, term.category):
            continue
        tier = term.tier
        notes: list[str] = []
        negation = negated.get(id(hit))
        if negation is None:
            negation = next((negated[id(h)] for h in negated_spans.covering(hit)), None)
        if negation is not None:
            if policy.negation.effect is NegationEffect.DROP or tier is Verdict.REMIND:
                continue
            lowered = Verdict(_LOWER[tier])
            notes.append(f"negated by {negation!r}: {tier} lowered to {lowered}")
            tier = lowered
        start, end = text.span(hit.start, hit.end)
        if _inside_title(text.text, start, end) or _brand_name(text.text, start, end):
            continue
        category_excepts = excepts.of_category(term.category)
        met = _nearby(term.near, text, start, end, near_hits, category_excepts)
        if met is None or any(
            _nearby((unless,), text, start, end, near_hits, None) is not None
            for unless in term.unless
        ):
            continue
        notes.extend(met)
        if category.near_number is not None:
            window = category.near_number
            number = _NUMBER_NEAR.search(text.text, text.reach_before(start, window), start) or (
                _NUMBER_NEAR.search(text.text, end, text.reach_after(end, window))
            )
            if number is not None:
                raised = category.number_tier or tier.raised()
                if raised.rank > tier.rank:
                    notes.append(f"a number within {window} characters raises {tier} to {raised}")
                    tier = raised
        reason = f"{category.category_id}: {term.text!r} ({tier})"
        if notes:
            reason += "; " + "; ".join(notes)
        candidates.append(
            (
                Finding(
                    category=category.category_id,
                    term=term.text,
                    start=start,
                    end=end,
                    tier=tier,
                    reason=reason,
                    excerpt=masked[start:end],
                ),
                term.category,
            )
        )
    return _without_overlaps(candidates)


_LOWER = {Verdict.BLOCK: "confirm", Verdict.CONFIRM: "remind", Verdict.REMIND: "allow"}

TITLE_CHARS_MAX = 50
"""How far a title mark is looked for on either side of a term."""


def _inside_title(text: str, start: int, end: int) -> bool:
    """Whether original positions start:end lie between Chinese title marks (《保本理财手册》,
    〈零风险〉): the name of a book, product or document, not a promise."""
    opening = max(text.rfind(mark, max(0, start - TITLE_CHARS_MAX), start) for mark in "《〈")
    if opening < 0 or any(text.find(mark, opening, start) >= 0 for mark in "》〉"):
        return False
    closing = [c for mark in "》〉" if (c := text.find(mark, end, end + TITLE_CHARS_MAX)) >= 0]
    if not closing:
        return False
    return not any(text.find(mark, end, min(closing)) >= 0 for mark in "《〈")


_CLOSING_QUOTES = {"”": "“", "」": "「", "』": "『", "’": "‘", '"': '"', "＂": "＂", "'": "'"}
"""Closing quotation marks and their opening ones."""
_BRAND_WORDS = ("牌", "品牌")
_QUOTED_CHARS_MAX = 12
"""How far from a term its quotation marks are looked for."""


def _brand_name(text: str, start: int, end: int) -> bool:
    """Whether original positions start:end lie in quotation marks followed by 牌 or 品牌
    (“稳赢”牌球拍, 「保本」牌水杯): the name of a brand, not a promise."""
    closing = next(
        (
            p
            for p in range(end, min(len(text), end + _QUOTED_CHARS_MAX))
            if text[p] in _CLOSING_QUOTES
        ),
        None,
    )
    if closing is None or not text.startswith(_BRAND_WORDS, closing + 1):
        return False
    mark = _CLOSING_QUOTES[text[closing]]
    opening = text.rfind(mark, max(0, start - _QUOTED_CHARS_MAX), start)
    return opening >= 0 and (mark == text[closing] or text.find(text[closing], opening, start) < 0)


class _Spans:
    """Hits sorted by start, to find those holding a span in logarithmic time: a hit
    holding ``start`` starts at most ``reach`` characters before it."""

    def __init__(self, hits: Iterable[_Hit], reach: int) -> None:
        self.hits = sorted(hits, key=lambda h: h.start)
        self.starts = [h.start for h in self.hits]
        self.reach = reach

    def covering(self, hit: _Hit) -> Iterator[_Hit]:
        first = bisect_left(self.starts, hit.start - self.reach)
        last = bisect_right(self.starts, hit.start)
        for index in range(first, last):
            span = self.hits[index]
            if span.end >= hit.end:
                yield span

    def covers(self, hit: _Hit) -> bool:
        return next(self.covering(hit), None) is not None


class _Excepts:
    """Exception phrases by the term they belong to, and by category."""

    def __init__(self, hits: list[_Hit], reach: int) -> None:
        by_term: dict[int, list[_Hit]] = {}
        by_category: dict[int, list[_Hit]] = {}
        for hit in hits:
            if hit.entry.index == -1:
                by_category.setdefault(hit.entry.detail, []).append(hit)
            else:
                by_term.setdefault(hit.entry.index, []).append(hit)
        self.by_term = {k: _Spans(v, reach) for k, v in by_term.items()}
        self.by_category = {k: _Spans(v, reach) for k, v in by_category.items()}

    def of_category(self, category: int) -> _Spans | None:
        return self.by_category.get(category)

    def excepted(self, hit: _Hit, category: int) -> bool:
        own = self.by_term.get(hit.entry.index)
        shared = self.by_category.get(category)
        return (own is not None and own.covers(hit)) or (shared is not None and shared.covers(hit))


class _Negators:
    """The negation words of a draft; a term is checked against the nearest one on each
    side (a farther one has at least as many words and segment ends between)."""

    def __init__(
        self, negation: Negation, text: Normalised, before: list[_Hit], after: list[_Hit]
    ) -> None:
        self.negation, self.text = negation, text
        self.before = sorted(before, key=lambda h: (h.end, h.start))
        self.before_ends = [h.end for h in self.before]
        self.after = sorted(after, key=lambda h: (h.start, h.end))
        self.after_starts = [h.start for h in self.after]

    def word(self, hit: _Hit) -> str | None:
        """The negation word that takes the promise back, if any."""
        text, negation = self.text, self.negation
        index = bisect_right(self.before_ends, hit.start) - 1
        if index >= 0:
            word = self.before[index]
            if text.words_between(
                word.end, hit.start, negation.before_window
            ) <= negation.before_window and text.one_segment(word.start, hit.end):
                return text.text[slice(*text.span(word.start, word.end))]
        index = bisect_left(self.after_starts, hit.end)
        if index < len(self.after):
            word = self.after[index]
            if text.words_between(
                hit.end, word.start, negation.after_window
            ) <= negation.after_window and text.one_segment(hit.start, word.end):
                return text.text[slice(*text.span(word.start, word.end))]
        return None

    def carry(self, terms: list[_Hit], negated: dict[int, str]) -> None:
        """A negation carries over to a term that follows a negated term closely, in the
        same sentence: "nobody can guarantee an 8% return", "不能保证一定高收益"."""
        window = self.negation.before_window
        ends: list[tuple[int, int, int]] = []  # (end, start, index in terms) of negated ones
        for index, hit in enumerate(terms):
            if id(hit) in negated:
                insort(ends, (hit.end, hit.start, index))
                continue
            position = bisect_right(ends, (hit.start, hit.start, len(terms))) - 1
            if position < 0:
                continue
            end, start, negated_index = ends[position]
            if self.text.words_between(end, hit.start, window) <= window and (
                self.text.one_segment(start, hit.end)
            ):
                negated[id(hit)] = negated[id(terms[negated_index])]
                insort(ends, (hit.end, hit.start, index))


class _NearHits:
    """Nearby-term matches by requirement, sorted by their position in the original."""

    def __init__(self, text: Normalised, hits: list[_Hit]) -> None:
        groups: dict[int, list[tuple[int, int, _Hit]]] = {}
        for hit in hits:
            start, end = text.span(hit.start, hit.end)
            groups.setdefault(hit.entry.index, []).append((start, end, hit))
        self.groups = {group: sorted(found, key=lambda f: f[0]) for group, found in groups.items()}
        self.starts = {group: [f[0] for f in found] for group, found in self.groups.items()}

    def within(
        self, group: int, lo: int, hi: int, excepts: _Spans | None
    ) -> tuple[int, int] | None:
        """The first match of ``group`` lying in original positions lo:hi, not inside an
        exception."""
        found = self.groups.get(group)
        if not found:
            return None
        index = bisect_left(self.starts[group], lo)
        while index < len(found) and found[index][0] < hi:
            start, end, hit = found[index]
            if end <= hi and (excepts is None or not excepts.covers(hit)):
                return start, end
            index += 1
        return None


def _nearby(
    requirements: tuple[Near, ...],
    text: Normalised,
    start: int,
    end: int,
    near_hits: _NearHits,
    excepts: _Spans | None,
) -> list[str] | None:
    """Notes on what was found near the term, or None if a requirement is not met. A
    nearby term may be part of the term itself (肯定到 holds 肯定); one inside an
    exception of the category does not count."""
    notes: list[str] = []
    for near in requirements:
        lo, hi = text.reach_before(start, near.within), text.reach_after(end, near.within)
        found: str | None = None
        span = near_hits.within(near.group, lo, hi, excepts)
        if span is not None:
            found = text.text[span[0] : span[1]]
        if found is None and near.patterns:
            found = _pattern_near(near.patterns, text, lo, hi)
        if found is None:
            return None
        notes.append(f"with {found!r} within {near.within} characters")
    return notes


def _merged(first: list[Finding], second: list[Finding]) -> list[Finding]:
    """The findings of two readings of one draft, overlapping ones of a category once."""
    if not second:
        return first
    ids = {category: index for index, category in enumerate(dict.fromkeys(
        f.category for f in (*first, *second)
    ))}  # fmt: skip
    return _without_overlaps([(f, ids[f.category]) for f in (*first, *second)])


def _pattern_near(patterns: tuple[Any, ...], text: Normalised, lo: int, hi: int) -> str | None:
    """The original text of the first match of ``patterns`` in the literal view of
    positions lo:hi, else in its compact view (separators inserted in a date are gone)."""
    for view, origin in (text.literal(lo, hi), text.compact(lo, hi)):
        for pattern in patterns:
            match = pattern.search(view)
            if match is not None and match.end() > match.start():
                return text.text[origin[match.start()] : origin[match.end() - 1] + 1]
    return None


def _without_overlaps(candidates: list[tuple[Finding, int]]) -> list[Finding]:
    """Within a category, of overlapping findings keep the strictest, then the longest."""
    ordered = sorted(
        candidates, key=lambda c: (-c[0].tier.rank, -(c[0].end - c[0].start), c[0].start)
    )
    kept_by_category: dict[int, list[tuple[int, int]]] = {}
    kept: list[Finding] = []
    for finding, category in ordered:
        spans = kept_by_category.setdefault(category, [])  # disjoint, sorted
        index = bisect_left(spans, (finding.end,))
        if index > 0 and spans[index - 1][1] > finding.start:
            continue
        insort(spans, (finding.start, finding.end))
        kept.append(finding)
    return kept


_DETECTOR_NAMES = {
    "resident_id": "resident ID number",
    "mobile": "mobile number",
    "bank_card": "bank card number",
    "email": "email address",
}


def _personal_findings(
    policy: CompiledPolicy,
    draft: Draft,
    text: Normalised,
    by_role: dict[Role, list[_Hit]],
    personal: Sequence[PersonalData],
    masked: str,
) -> list[Finding]:
    if not personal:
        return []
    own = {contact_key(c) for c in (*draft.sender_contacts, *draft.recipient_contacts)}
    markers = [*by_role.get(Role.OWN, ()), *by_role.get(Role.OTHER, ())]
    findings: list[Finding] = []
    for index, category in enumerate(policy.categories):
        if not category.detectors or (
            category.kinds is not None and draft.kind not in category.kinds
        ):
            continue
        marked = None if category.own is None else _Markers(category.own, index, text, markers)
        for item in personal:
            if item.detector not in category.detectors or not item.reportable:
                continue
            if item.value in own:
                continue
            if item.detector == EMAIL and _own_domain(domain_of(item.value), policy.own_domains):
                continue
            if marked is not None and marked.says_own(item):
                continue
            findings.append(
                Finding(
                    category=category.category_id,
                    term=item.detector,
                    start=item.start,
                    end=item.end,
                    tier=category.tier,
                    reason=(
                        f"{category.category_id}: a {_DETECTOR_NAMES[item.detector]} that is "
                        f"neither the sender's nor the recipient's own ({category.tier})"
                    ),
                    excerpt=masked[item.start : item.end],
                )
            )
    return findings


class _Markers:
    """Own and other markers of one category, sorted by where they end in the original
    (an own marker before an other marker ending at the same place)."""

    def __init__(self, own: Own, category: int, text: Normalised, hits: list[_Hit]) -> None:
        self.own = own
        self.markers = sorted(
            (text.span(h.start, h.end)[1], h.entry.role is Role.OTHER, h.entry.detail)
            for h in hits
            if h.entry.index == category
        )
        self.ends = [m[0] for m in self.markers]
        self.reach = max(own.windows, default=0)

    def says_own(self, item: PersonalData) -> bool:
        """Whether the nearest marker before ``item`` that counts is an own marker (an own
        marker counts within its group's window, an other marker at any distance)."""
        if item.detector not in self.own.detectors:
            return False
        index = bisect_right(self.ends, item.start) - 1
        while index >= 0:
            end, other, group = self.markers[index]
            if item.start - end > self.reach:
                return False
            if other:
                return False
            if item.start - end <= self.own.windows[group]:
                return True
            index -= 1
        return False


def _own_domain(domain: str, own: tuple[str, ...]) -> bool:
    """``domain`` is one of ``own`` or under one; or reads as one once its marks are left
    out (an address spelt out between marks loses its hyphens)."""
    bare = _letters_and_digits(domain)
    return any(
        domain == d or domain.endswith("." + d) or bare == _letters_and_digits(d) for d in own
    )


def _letters_and_digits(domain: str) -> str:
    return "".join(ch for ch in domain if ch.isalnum())


def _templates(
    policy: CompiledPolicy, findings: list[Finding], unmet: list[tuple[Requirement, int]]
) -> tuple[Template, ...]:
    chosen: dict[str, Template] = {}
    for category_id in dict.fromkeys(f.category for f in findings):
        category = policy.category(category_id)
        for template in category.templates if category is not None else ():
            chosen.setdefault(template.template_id, template)
    for requirement, _ in unmet:
        for template in requirement.templates:
            chosen.setdefault(template.template_id, template)
    return tuple(chosen.values())


def _reason(verdict: Verdict, findings: list[Finding], unmet: list[tuple[Requirement, int]]) -> str:
    if verdict is Verdict.ALLOW:
        return "allow: nothing in the policy matched"
    parts = [f"{f.category} {f.term!r} at {f.start}-{f.end} ({f.tier})" for f in findings]
    parts.extend(
        f"{r.category}: a {r.kind} mentions {count} of the {len(r.topics)} topics, "
        f"expected at least {r.at_least} ({r.tier})"
        for r, count in unmet
    )
    return f"{verdict}: " + "; ".join(parts)
