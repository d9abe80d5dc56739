"""Compiling the ``policy:`` section of a bundle (the language is in docs/compliance.md).

The bundle loader hands over the section as located YAML and its checker; every problem
is recorded with its line and field, and a policy with any problem is not compiled.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

import re2

from engine.conditions import PatternRefused, compile_pattern
from engine.limits import (
    BODY_MAX,
    COUNT_MAX,
    NEAR_WITHIN_MAX,
    NEGATION_WINDOW_MAX,
    OWN_DOMAINS_MAX,
    PATTERN_CHARS_MAX,
    POLICY_CATEGORIES_MAX,
    POLICY_PATTERNS_MAX,
    POLICY_PHRASES_MAX,
    REQUIRED_MAX,
    TEMPLATE_CHARS_MAX,
    TEMPLATES_MAX,
    TERM_CHARS_MAX,
    TITLE_MAX,
    TOPICS_MAX,
    TRAINING_DAYS_MAX,
    TRAINING_RULES_MAX,
)

from .matching import (
    Automaton,
    Category,
    CompiledPolicy,
    Entry,
    Near,
    Negation,
    NegationEffect,
    Own,
    PolicyMode,
    Requirement,
    Role,
    Term,
)
from .model import DRAFT_KINDS, Template, TrainingRule, Verdict
from .normalise import fold
from .pii import DETECTORS

if TYPE_CHECKING:
    from engine.bundle import _Checker, _Located, _LocatedList

T = TypeVar("T")

TIERS = (Verdict.REMIND.value, Verdict.CONFIRM.value, Verdict.BLOCK.value)
MODES = tuple(m.value for m in PolicyMode)
DEFAULT_REQUIRED_CATEGORY = "required_content"
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,127}$")
_DOMAIN = re.compile(
    r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)+$"
)


def compile_policy(
    checker: _Checker, value: Any, line: int, bundle_name: str, version: int
) -> CompiledPolicy | None:
    """The compiled policy, or None when a problem was recorded on ``checker``."""
    before = len(checker.problems)
    compiler = _PolicyCompiler(checker)
    policy = checker.attempt(lambda: compiler.policy(value, line, bundle_name, version))
    if len(checker.problems) > before:
        return None
    assert isinstance(policy, CompiledPolicy)
    return policy


@dataclass
class _PolicyCompiler:
    checker: _Checker
    automaton: Automaton = field(default_factory=Automaton)
    phrases: int = 0
    patterns: int = 0
    templates: dict[str, int] = field(default_factory=dict)
    near_groups: int = 0
    near_seen: dict[str, Near] = field(default_factory=dict)
    """Nearby requirements compiled so far, by what they were written as."""
    terms: list[Term] = field(default_factory=list)
    lists: dict[str, tuple[tuple[str, ...], tuple[tuple[str, Any], ...]]] = field(
        default_factory=dict
    )
    """Named lists: their terms (as written) and patterns (as written, compiled)."""

    # the section

    def policy(self, value: Any, line: int, bundle_name: str, version: int) -> CompiledPolicy:
        c = self.checker
        spec = c.mapping(value, line, "policy")
        c.keys(
            spec,
            "policy",
            (),
            (
                "id",
                "description",
                "mode",
                "own_domains",
                "lists",
                "negation",
                "categories",
                "required",
                "training",
            ),
        )
        if "categories" not in spec and "required" not in spec:
            c.refuse(line, "policy.categories", "expected categories, required or both")
        policy_id = bundle_name
        if "id" in spec:
            policy_id = c.attempt(lambda: c.name(spec, "id", "policy")) or bundle_name
        mode = c.attempt(lambda: c.choice(spec, "mode", "policy", MODES, "enforce")) or "enforce"
        if "description" in spec:
            c.attempt(lambda: c.text(spec, "description", "policy"))
        none: tuple[Any, ...] = ()
        own_domains: tuple[str, ...] = self.attempt(lambda: self.own_domains(spec), none)
        if "lists" in spec:
            self.checker.attempt(lambda: self.read_lists(spec))
        negation = self.attempt(lambda: self.negation(spec), Negation())
        categories: tuple[Category, ...] = self.attempt(lambda: self.categories(spec), none)
        required: tuple[Requirement, ...] = self.attempt(lambda: self.required(spec), none)
        known = {cat.category_id for cat in categories} | {r.category for r in required}
        training: tuple[TrainingRule, ...] = self.attempt(lambda: self.training(spec, known), none)
        if self.phrases > POLICY_PHRASES_MAX:
            c.refuse(
                line,
                "policy",
                f"expected at most {POLICY_PHRASES_MAX:,} terms and phrases in a policy, found "
                f"{self.phrases:,}; split it into several bundles",
            )
        return CompiledPolicy(
            policy_id=policy_id,
            version=version,
            mode=PolicyMode(mode),
            training=training,
            categories=categories,
            terms=tuple(self.terms),
            requirements=required,
            negation=negation,
            own_domains=own_domains,
            automaton=self.automaton.build(),
            keys=len(self.automaton.entries),
            longest=self.automaton.longest,
        )

    def attempt(self, build: Callable[[], T], default: T) -> T:
        result: T | None = self.checker.attempt(build)
        return default if result is None else result

    def attempt_with(self, build: Callable[..., T], *args: Any) -> T | None:
        """``build(*args)``, or None when it refused a field (its problem is recorded)."""
        result: T | None = self.checker.attempt(partial(build, *args))
        return result

    # helpers

    def items(
        self, value: Any, line: int, path: str, what: str, maximum: int
    ) -> list[tuple[Any, int, str]]:
        """The items of a list with their lines and paths."""
        if not isinstance(value, list) or not value:
            self.checker.refuse(
                line, path, f"expected a non-empty list of {what}, found {_kind(value)}"
            )
        if len(value) > maximum:
            self.checker.refuse(
                line,
                path,
                f"expected at most {maximum:,} {what}, found {len(value):,}; "
                "split it into several bundles",
            )
        located: _LocatedList = value  # type: ignore[assignment]
        return [
            (item, item_line, f"{path}[{index}]")
            for index, (item, item_line) in enumerate(zip(located, located.lines, strict=True))
        ]

    def phrase(self, value: Any, line: int, path: str) -> tuple[str, str]:
        """A term or phrase as written and its key in the matching view."""
        c = self.checker
        if not isinstance(value, str) or not value.strip():
            c.refuse(line, path, f"expected a term (text), found {_kind(value)}")
        if len(value) > TERM_CHARS_MAX:
            c.refuse(
                line,
                path,
                f"expected a term of at most {TERM_CHARS_MAX} characters, found {len(value):,}",
            )
        key = fold(value)
        if not key:
            c.refuse(
                line,
                path,
                f"expected a term with a letter, digit or CJK character, found {value!r} "
                "(spaces, punctuation and symbols are ignored when matching)",
            )
        self.phrases += 1
        return value, key

    def phrases_of(
        self, value: Any, line: int, path: str, what: str, entry: Entry
    ) -> tuple[str, ...]:
        written: list[str] = []
        for item, item_line, item_path in self.items(value, line, path, what, POLICY_PHRASES_MAX):
            pair = self.attempt_with(self.phrase, item, item_line, item_path)
            if pair is None:
                continue
            written.append(pair[0])
            self.automaton.add(pair[1], entry)
        return tuple(written)

    def window(self, spec: _Located, key: str, path: str, maximum: int, default: int) -> int:
        if key not in spec:
            return default
        return self.checker.integer(spec, key, path, minimum=0, maximum=maximum)

    def tier(self, spec: _Located, path: str, key: str = "tier") -> Verdict:
        c = self.checker
        if key not in spec:
            c.refuse(spec.line, f"{path}.{key}", f"is required: one of {', '.join(TIERS)}")
        return Verdict(c.choice(spec, key, path, TIERS))

    # named lists

    def read_lists(self, spec: _Located) -> None:
        c = self.checker
        lists = c.mapping(spec["lists"], spec.lines["lists"], "policy.lists")
        for name, value in lists.items():
            path = f"policy.lists.{name}"
            line = lists.lines[name]
            if not isinstance(name, str) or not _NAME.match(name):
                self.attempt_with(
                    c.refuse,
                    line,
                    path,
                    "expected a name of lower-case letters, digits, '.', '_' or '-', found "
                    f"{name!r}",
                )
                continue
            self.attempt_with(self.read_list, name, value, line, path)

    def read_list(self, name: str, value: Any, line: int, path: str) -> None:
        c = self.checker
        spec = c.mapping(value, line, path)
        c.keys(spec, path, (), ("terms", "patterns"))
        if not spec:
            c.refuse(line, path, "expected terms, patterns or both")
        terms: list[str] = []
        if "terms" in spec:
            for item, item_line, item_path in self.items(
                spec["terms"], spec.lines["terms"], f"{path}.terms", "terms", POLICY_PHRASES_MAX
            ):
                pair = self.attempt_with(self.phrase, item, item_line, item_path)
                if pair is not None:
                    terms.append(pair[0])
        patterns: list[tuple[str, Any]] = []
        if "patterns" in spec:
            for item, item_line, item_path in self.items(
                spec["patterns"], spec.lines["patterns"], f"{path}.patterns", "patterns",
                POLICY_PATTERNS_MAX,
            ):  # fmt: skip
                program = self.attempt_with(self.pattern, item, item_line, item_path)
                if program is not None:
                    patterns.append((item, program))
        self.lists[name] = (tuple(terms), tuple(patterns))

    # own domains and negation

    def own_domains(self, spec: _Located) -> tuple[str, ...]:
        if "own_domains" not in spec:
            return ()
        domains: list[str] = []
        items = self.items(
            spec["own_domains"], spec.lines["own_domains"], "policy.own_domains", "domains",
            OWN_DOMAINS_MAX,
        )  # fmt: skip
        for item, line, path in items:
            if not isinstance(item, str) or not _DOMAIN.match(item.lower().strip()):
                self.attempt_with(
                    self.checker.refuse,
                    line,
                    path,
                    f"expected a domain such as example.com, found {_kind(item)}",
                )
                continue
            domains.append(item.lower().strip())
        return tuple(domains)

    def negation(self, spec: _Located) -> Negation:
        if "negation" not in spec:
            return Negation()
        c = self.checker
        path = "policy.negation"
        negation = c.mapping(spec["negation"], spec.lines["negation"], path)
        c.keys(negation, path, (), ("before", "after", "except", "effect"))
        windows = {}
        for side, role in (("before", Role.NEGATE_BEFORE), ("after", Role.NEGATE_AFTER)):
            if side not in negation:
                continue
            side_path = f"{path}.{side}"
            side_spec = c.mapping(negation[side], negation.lines[side], side_path)
            c.keys(side_spec, side_path, ("words",), ("window",))
            windows[side] = self.window(side_spec, "window", side_path, NEGATION_WINDOW_MAX, 3)
            self.phrases_of(
                side_spec["words"], side_spec.lines["words"], f"{side_path}.words",
                "negation words", Entry(role),
            )  # fmt: skip
        if "except" in negation:
            self.phrases_of(
                negation["except"], negation.lines["except"], f"{path}.except",
                "phrases", Entry(Role.NOT_NEGATION),
            )  # fmt: skip
        effect = c.choice(negation, "effect", path, tuple(e.value for e in NegationEffect), "drop")
        return Negation(
            before_window=windows.get("before", 3),
            after_window=windows.get("after", 3),
            effect=NegationEffect(effect),
        )

    # categories

    def categories(self, spec: _Located) -> tuple[Category, ...]:
        if "categories" not in spec:
            return ()
        compiled: list[Category] = []
        seen: dict[str, int] = {}
        items = self.items(
            spec["categories"], spec.lines["categories"], "policy.categories", "categories",
            POLICY_CATEGORIES_MAX,
        )  # fmt: skip
        for item, line, path in items:
            category = self.attempt_with(self.category, item, line, path, len(compiled))
            if category is None:
                continue
            if category.category_id in seen:
                cid = category.category_id
                self.attempt_with(
                    self.checker.refuse,
                    line,
                    f"{path}.id",
                    f"category {cid!r} is already used at line {seen[cid]}",
                )
                continue
            seen[category.category_id] = line
            compiled.append(category)
        return tuple(compiled)

    def category(self, value: Any, line: int, path: str, index: int) -> Category:
        c = self.checker
        spec = c.mapping(value, line, path)
        c.keys(
            spec,
            path,
            ("id", "tier"),
            (
                "description", "terms", "except", "near", "unless", "near_number", "pii", "own",
                "kinds", "templates",
            ),
        )  # fmt: skip
        category_id = c.name(spec, "id", path)
        tier = self.tier(spec, path)
        if ("terms" in spec) == ("pii" in spec):
            c.refuse(line, path, "expected either terms or pii (detectors), not both or neither")
        if "pii" in spec:
            for key in ("except", "near", "unless", "near_number"):
                if key in spec:
                    c.refuse(spec.lines[key], f"{path}.{key}", "applies to terms only, not to pii")
        elif "own" in spec:
            c.refuse(spec.lines["own"], f"{path}.own", "applies to pii only, not to terms")
        if "description" in spec:
            c.text(spec, "description", path)
        kinds = None
        if "kinds" in spec:
            kinds = frozenset(
                self.choice_list(spec["kinds"], spec.lines["kinds"], f"{path}.kinds", DRAFT_KINDS)
            )
        templates = self.templates_of(spec, path)
        detectors: frozenset[str] = frozenset()
        if "pii" in spec:
            detectors = frozenset(
                self.choice_list(spec["pii"], spec.lines["pii"], f"{path}.pii", DETECTORS)
            )
        own = None
        if "own" in spec:
            own = self.own(spec["own"], spec.lines["own"], f"{path}.own", index)
        near_number, number_tier = None, None
        if "near_number" in spec:
            number_path = f"{path}.near_number"
            number = c.mapping(spec["near_number"], spec.lines["near_number"], number_path)
            c.keys(number, number_path, ("within",), ("tier",))
            near_number = c.integer(
                number, "within", number_path, minimum=1, maximum=NEAR_WITHIN_MAX
            )
            number_tier = self.tier(number, number_path) if "tier" in number else None
        near: tuple[Near, ...] = ()
        if "near" in spec:
            near = self.near(spec["near"], spec.lines["near"], f"{path}.near")
        unless: tuple[Near, ...] = ()
        if "unless" in spec:
            unless = self.near(spec["unless"], spec.lines["unless"], f"{path}.unless")
        if "except" in spec:
            self.phrases_of(
                spec["except"], spec.lines["except"], f"{path}.except", "phrases",
                Entry(Role.EXCEPT, -1, index),
            )  # fmt: skip
        if "terms" in spec:
            self.category_terms(
                spec["terms"], spec.lines["terms"], f"{path}.terms", index, tier, near, unless
            )
        return Category(
            category_id=category_id,
            tier=tier,
            templates=templates,
            kinds=kinds,
            near_number=near_number,
            number_tier=number_tier,
            detectors=detectors,
            own=own,
        )

    def own(self, value: Any, line: int, path: str, category: int) -> Own:
        c = self.checker
        spec = c.mapping(value, line, path)
        c.keys(spec, path, ("markers",), ("detectors", "others"))
        detectors: tuple[str, ...] = ("mobile", "email")
        if "detectors" in spec:
            detectors = tuple(
                self.choice_list(
                    spec["detectors"], spec.lines["detectors"], f"{path}.detectors", DETECTORS
                )
            )
        windows: list[int] = []
        for item, item_line, item_path in self.items(
            spec["markers"], spec.lines["markers"], f"{path}.markers", "marker groups", 10
        ):
            group = c.mapping(item, item_line, item_path)
            c.keys(group, item_path, ("within", "words"))
            windows.append(
                c.integer(group, "within", item_path, minimum=1, maximum=NEAR_WITHIN_MAX)
            )
            self.phrases_of(
                group["words"], group.lines["words"], f"{item_path}.words", "words",
                Entry(Role.OWN, category, len(windows) - 1),
            )  # fmt: skip
        if "others" in spec:
            self.phrases_of(
                spec["others"], spec.lines["others"], f"{path}.others", "words",
                Entry(Role.OTHER, category),
            )  # fmt: skip
        return Own(frozenset(detectors), tuple(windows))

    def category_terms(
        self,
        value: Any,
        line: int,
        path: str,
        category: int,
        tier: Verdict,
        near: tuple[Near, ...],
        unless: tuple[Near, ...],
    ) -> None:
        seen: dict[str, int] = {}
        for item, item_line, item_path in self.items(
            value, line, path, "terms", POLICY_PHRASES_MAX
        ):
            self.attempt_with(
                self.term, item, item_line, item_path, category, tier, near, unless, seen
            )

    def term(
        self,
        value: Any,
        line: int,
        path: str,
        category: int,
        tier: Verdict,
        near: tuple[Near, ...],
        unless: tuple[Near, ...],
        seen: dict[str, int],
    ) -> None:
        c = self.checker
        spec: _Located | None = None
        if isinstance(value, dict):
            spec = c.mapping(value, line, path)
            c.keys(spec, path, ("term",), ("tier", "except", "near", "unless"))
            written, key = self.phrase(spec["term"], spec.lines["term"], f"{path}.term")
            if "tier" in spec:
                tier = self.tier(spec, path)
        else:
            written, key = self.phrase(value, line, path)
        if key in seen:
            c.refuse(
                line,
                path,
                f"term {written!r} reads the same as the term at line {seen[key]} once "
                "case, width, spacing and look-alike characters are normalised",
            )
        seen[key] = line
        index = len(self.terms)
        own_near: tuple[Near, ...] = ()
        if spec is not None and "near" in spec:
            own_near = self.near(spec["near"], spec.lines["near"], f"{path}.near")
        own_unless: tuple[Near, ...] = ()
        if spec is not None and "unless" in spec:
            own_unless = self.near(spec["unless"], spec.lines["unless"], f"{path}.unless")
        if spec is not None and "except" in spec:
            self.phrases_of(
                spec["except"], spec.lines["except"], f"{path}.except", "phrases",
                Entry(Role.EXCEPT, index, category),
            )  # fmt: skip
        self.terms.append(Term(written, category, tier, near + own_near, unless + own_unless))
        self.automaton.add(key, Entry(Role.TERM, index))

    def near(self, value: Any, line: int, path: str) -> tuple[Near, ...]:
        c = self.checker
        compiled: list[Near] = []
        for item, item_line, item_path in self.items(value, line, path, "requirements", 10):
            spec = c.mapping(item, item_line, item_path)
            c.keys(spec, item_path, ("within",), ("terms", "patterns", "lists"))
            if not any(key in spec for key in ("terms", "patterns", "lists")):
                c.refuse(item_line, item_path, "expected terms, patterns, lists or some of them")
            within = c.integer(spec, "within", item_path, minimum=1, maximum=NEAR_WITHIN_MAX)
            signature = repr([within, *(spec.get(k) for k in ("terms", "patterns", "lists"))])
            if signature in self.near_seen:  # the same requirement again: one group for all
                compiled.append(self.near_seen[signature])
                continue
            group = self.near_groups
            self.near_groups += 1
            terms: tuple[str, ...] = ()
            if "terms" in spec:
                terms = self.phrases_of(
                    spec["terms"], spec.lines["terms"], f"{item_path}.terms", "terms",
                    Entry(Role.NEAR, group),
                )  # fmt: skip
            sources: list[str] = []
            programs: list[Any] = []
            if "patterns" in spec:
                for pattern, pattern_line, pattern_path in self.items(
                    spec["patterns"], spec.lines["patterns"], f"{item_path}.patterns",
                    "patterns", POLICY_PATTERNS_MAX,
                ):  # fmt: skip
                    program = self.attempt_with(self.pattern, pattern, pattern_line, pattern_path)
                    if program is not None:
                        sources.append(pattern)
                        programs.append(program)
            if "lists" in spec:
                for name, name_line, name_path in self.items(
                    spec["lists"], spec.lines["lists"], f"{item_path}.lists", "lists", 50
                ):
                    if name not in self.lists:
                        known = ", ".join(sorted(self.lists)) or "none"
                        c.refuse(
                            name_line,
                            name_path,
                            f"expected one of this policy's lists ({known}), found {_kind(name)}",
                        )
                    list_terms, list_patterns = self.lists[name]
                    for written in list_terms:
                        self.phrases += 1  # each use is a phrase of the automaton
                        self.automaton.add(fold(written), Entry(Role.NEAR, group))
                    terms += list_terms
                    sources += [source for source, _ in list_patterns]
                    programs += [program for _, program in list_patterns]
            requirement = Near(within, group, terms, tuple(programs), tuple(sources))
            self.near_seen[signature] = requirement
            compiled.append(requirement)
        return tuple(compiled)

    def pattern(self, value: Any, line: int, path: str) -> Any:
        c = self.checker
        if not isinstance(value, str) or not value:
            c.refuse(line, path, f"expected a regular expression, found {_kind(value)}")
        if len(value) > PATTERN_CHARS_MAX:
            c.refuse(
                line,
                path,
                f"expected a pattern of at most {PATTERN_CHARS_MAX:,} characters, found "
                f"{len(value):,}",
            )
        self.patterns += 1
        if self.patterns > POLICY_PATTERNS_MAX:
            c.refuse(
                line,
                path,
                f"expected at most {POLICY_PATTERNS_MAX} patterns in a policy, found more",
            )
        try:
            compile_pattern(value)
        except PatternRefused as exc:
            c.refuse(
                line,
                path,
                f"expected a regular expression of the RE2 syntax (linear time), found "
                f"{value!r}: {exc}",
            )
        options = re2.Options()
        options.case_sensitive = False
        return re2.compile(value, options)

    def choice_list(self, value: Any, line: int, path: str, allowed: tuple[str, ...]) -> list[str]:
        chosen: list[str] = []
        for item, item_line, item_path in self.items(value, line, path, "names", len(allowed)):
            if item not in allowed:
                self.checker.refuse(
                    item_line,
                    item_path,
                    f"expected one of {', '.join(allowed)}, found {_kind(item)}",
                )
            chosen.append(item)
        return chosen

    def templates_of(self, spec: _Located, path: str) -> tuple[Template, ...]:
        if "templates" not in spec:
            return ()
        c = self.checker
        compiled: list[Template] = []
        for item, line, item_path in self.items(
            spec["templates"], spec.lines["templates"], f"{path}.templates", "templates",
            TEMPLATES_MAX,
        ):  # fmt: skip
            template = c.mapping(item, line, item_path)
            c.keys(template, item_path, ("id", "text"))
            template_id = c.name(template, "id", item_path)
            text = c.text(template, "text", item_path)
            assert text is not None
            if not text.strip() or len(text) > TEMPLATE_CHARS_MAX:
                c.refuse(
                    template.lines["text"],
                    f"{item_path}.text",
                    f"expected from 1 to {TEMPLATE_CHARS_MAX:,} characters, found {len(text):,}",
                )
            if template_id in self.templates:
                c.refuse(
                    template.lines["id"],
                    f"{item_path}.id",
                    f"template {template_id!r} is already used at line "
                    f"{self.templates[template_id]}",
                )
            self.templates[template_id] = template.lines["id"]
            if len(self.templates) > TEMPLATES_MAX:
                c.refuse(line, item_path, f"expected at most {TEMPLATES_MAX} templates in a policy")
            compiled.append(Template(template_id, text))
        return tuple(compiled)

    # required content

    def required(self, spec: _Located) -> tuple[Requirement, ...]:
        if "required" not in spec:
            return ()
        compiled: list[Requirement] = []
        for item, line, path in self.items(
            spec["required"], spec.lines["required"], "policy.required", "checks", REQUIRED_MAX
        ):
            requirement = self.attempt_with(self.requirement, item, line, path, len(compiled))
            if requirement is not None:
                compiled.append(requirement)
        return tuple(compiled)

    def requirement(self, value: Any, line: int, path: str, index: int) -> Requirement:
        c = self.checker
        spec = c.mapping(value, line, path)
        c.keys(
            spec,
            path,
            ("kind", "at_least", "tier", "topics"),
            ("category", "description", "templates"),
        )
        kind = c.choice(spec, "kind", path, DRAFT_KINDS)
        tier = self.tier(spec, path)
        category = (
            c.name(spec, "category", path) if "category" in spec else DEFAULT_REQUIRED_CATEGORY
        )
        if "description" in spec:
            c.text(spec, "description", path)
        templates = self.templates_of(spec, path)
        names: list[str] = []
        for item, item_line, item_path in self.items(
            spec["topics"], spec.lines["topics"], f"{path}.topics", "topics", TOPICS_MAX
        ):
            topic = c.mapping(item, item_line, item_path)
            c.keys(topic, item_path, ("name", "terms"))
            name = c.name(topic, "name", item_path)
            if name in names:
                c.refuse(topic.lines["name"], f"{item_path}.name", f"topic {name!r} is used twice")
            self.phrases_of(
                topic["terms"], topic.lines["terms"], f"{item_path}.terms", "terms",
                Entry(Role.TOPIC, index, len(names)),
            )  # fmt: skip
            names.append(name)
        at_least = c.integer(spec, "at_least", path, minimum=1, maximum=len(names))
        return Requirement(kind, at_least, tier, category, tuple(names), templates)

    # training

    def training(self, spec: _Located, categories: set[str]) -> tuple[TrainingRule, ...]:
        if "training" not in spec:
            return ()
        compiled: list[TrainingRule] = []
        for item, line, path in self.items(
            spec["training"], spec.lines["training"], "policy.training", "training rules",
            TRAINING_RULES_MAX,
        ):  # fmt: skip
            rule = self.attempt_with(self.training_rule, item, line, path, categories)
            if rule is not None:
                compiled.append(rule)
        return tuple(compiled)

    def training_rule(self, value: Any, line: int, path: str, categories: set[str]) -> TrainingRule:
        c = self.checker
        spec = c.mapping(value, line, path)
        c.keys(spec, path, ("category", "at_least", "within_days", "lesson_id", "title", "body"))
        category = spec["category"]
        if category not in categories:
            c.refuse(
                spec.lines["category"],
                f"{path}.category",
                f"expected a category of this policy ({', '.join(sorted(categories)) or 'none'}), "
                f"found {_kind(category)}",
            )
        at_least = c.integer(spec, "at_least", path, minimum=1, maximum=COUNT_MAX)
        within_days = c.integer(spec, "within_days", path, minimum=1, maximum=TRAINING_DAYS_MAX)
        lesson_id = c.name(spec, "lesson_id", path)
        title = c.text(spec, "title", path)
        body = c.text(spec, "body", path)
        assert title is not None and body is not None
        for key, text, maximum in (("title", title, TITLE_MAX), ("body", body, BODY_MAX)):
            if not text.strip() or len(text) > maximum:
                c.refuse(
                    spec.lines[key],
                    f"{path}.{key}",
                    f"expected from 1 to {maximum:,} characters, found {len(text):,}",
                )
        return TrainingRule(category, at_least, within_days, lesson_id, title, body)


def _kind(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return f"a list of {len(value)}"
    return f"{type(value).__name__} {value!r}"
