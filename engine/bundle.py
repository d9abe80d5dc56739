"""Rule bundles: YAML written by people, compiled and checked when loaded.

A bundle is refused as a whole when anything in it is wrong, with every problem
named by file, line and field (and a suggestion where a near miss is likely);
nothing is ever checked for the first time when a touchpoint arrives.
"""

from __future__ import annotations

import difflib
import math
import operator
import re
import string
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any, NoReturn

import yaml
from schemas.models import Channel, Direction, InterventionKind, Priority, Severity

from .compliance.policy import compile_policy
from .conditions import (
    EPOCH,
    Absence,
    AllOf,
    AnyOf,
    Condition,
    EventMatch,
    FieldTest,
    Getter,
    Not,
    PatternRefused,
    RankCondition,
    Sequence_,
    StateThreshold,
    Streak,
    WindowAggregate,
    compile_pattern,
    compile_test,
)
from .durations import format_duration, parse_duration
from .errors import EngineError
from .interventions import ContractBreach, Template, dry_run
from .journeys import HOLDOUT, CompiledJourney, JourneyStep, Variant
from .limits import (
    BODY_MAX,
    BUNDLE_BYTES_MAX,
    CONDITION_NODES_MAX,
    COUNT_MAX,
    DURATION_MAX,
    ID_MAX,
    JOURNEYS_MAX,
    LIST_ITEMS_MAX,
    NESTING_MAX,
    PATTERN_CHARS_MAX,
    PURPOSES_MAX,
    RULE_VERSION_MAX,
    RULES_MAX,
    SHORT_NAME_MAX,
    STEPS_MAX,
    TITLE_MAX,
)
from .rules import CompiledRule, RuleMode
from .scoring.spec import ScoringSpec, compile_scoring
from .state import CustomerState

if TYPE_CHECKING:
    from .compliance import CompiledPolicy

ONE_MICROSECOND = timedelta(microseconds=1)
TIERS_MAX = 50
BENEFITS_MAX = 50
NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,127}$")
KIND = re.compile(r"^[a-z][a-z0-9_]{0,63}$")

OPERATORS = ("eq", "ne", "gt", "gte", "lt", "lte", "in", "not_in", "contains", "matches")
CONDITION_KINDS = (
    "event",
    "state",
    "count",
    "sum",
    "sequence",
    "streak",
    "absence",
    "rank",
    "all",
    "any",
    "not",
)
EVENT_FIELDS = (
    "kind", "channel", "direction", "rep_id", "contact_id", "text", "industry", "source",
    "customer_id",
)  # fmt: skip
ENUM_FIELDS: dict[str, tuple[str, ...]] = {
    "channel": tuple(c.value for c in Channel),
    "direction": tuple(d.value for d in Direction),
}
STATE_FEATURES = (
    "touchpoints",
    "days_since_first_seen",
    "days_since_last_event",
    "days_since_last_inbound",
    "days_since_last_outbound",
)
"""Plus ``count.<kind>``: how many touchpoints of that kind the customer has had, and
``score.<name>``: the customer's latest score of that name (a customer with no such score
does not pass the test)."""
SCORE_NAME = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
RANK_TOP_MAX = 50
"""The largest ``top`` of a ``rank`` condition: the worker keeps each rep's best 50
customers per score and partition (streams.scoring_leaders.PER_REP)."""


def _score_value(state: CustomerState, name: str) -> float | None:
    score = state.scores.get(name)
    return None if score is None else score.value


@dataclass(frozen=True, slots=True)
class BundleProblem:
    source: str
    line: int
    field: str
    message: str
    suggestion: str | None = None

    def __str__(self) -> str:
        hint = f" (did you mean {self.suggestion!r}?)" if self.suggestion else ""
        return f"{self.source}:{self.line}: {self.field}: {self.message}{hint}"


class InvalidBundle(EngineError):
    """A rule bundle that cannot be used; ``problems`` lists everything wrong with it."""

    def __init__(self, problems: list[BundleProblem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


@dataclass(frozen=True)
class RuleBundle:
    """A compiled, valid bundle: what a worker runs."""

    name: str
    version: int
    rules: tuple[CompiledRule, ...]
    allowed_lateness: timedelta = timedelta(0)
    source: str = "<bundle>"
    rule_ids: frozenset[str] = field(default=frozenset())
    per_customer_per_day: int | None = None
    """At most this many interventions per customer in any 24 hours of event time, counted
    either side of each touchpoint's time. A worker applies the strictest of its running
    bundles' caps to every intervention of every bundle (builtin included), rules and
    journey steps alike; shadow decisions neither count nor are held back."""
    journeys: tuple[CompiledJourney, ...] = ()
    tiers: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    """Membership tier -> the benefits store staff are shown (the bundle's ``tiers``)."""
    restricted_fields: Mapping[str, frozenset[str]] = field(default_factory=dict)
    """Attribute -> the consent purposes it may be used for (the bundle's ``fields``)."""
    per_rep_per_day: int | None = None
    """At most this many interventions per assignee (rep, role queue, or "unassigned") in any
    24 hours of processing time: counted from each intervention's ``created_at``, the
    worker's clock when it decided. As with the customer cap, the strictest of the running
    bundles' rep caps applies to every bundle's interventions; it is applied after the
    customer cap, so an intervention it holds back has used up the customer's cap."""
    scoring: ScoringSpec | None = None
    """The scores of the bundle's ``scoring:`` section (docs/scoring.md)."""
    policy: CompiledPolicy | None = None
    """The compliance policy of the bundle's ``policy:`` section (docs/compliance.md)."""
    managers: Mapping[str, str] = field(default_factory=dict)
    """Rep -> manager (the bundle's ``managers``): whom ``assignee: manager`` reaches, and
    the team a rep belongs to in ``warroom top --team``."""


def load_bundle(text: str, source: str = "<bundle>") -> RuleBundle:
    """Parse and compile a bundle, or raise :class:`InvalidBundle` naming every problem.

    Whatever the text, this returns or raises InvalidBundle within bounded time and
    memory (see engine/limits.py), and a bundle it returns cannot fail while a touchpoint
    is evaluated: every action has been rendered once against the intervention contract.
    """
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > BUNDLE_BYTES_MAX:
        raise InvalidBundle(
            [
                BundleProblem(
                    source,
                    1,
                    "(bundle)",
                    f"expected at most {BUNDLE_BYTES_MAX:,} bytes (256 KiB), found {size:,}; "
                    "split it into several bundles",
                )
            ]
        )
    checker = _Checker(source)
    try:
        document = yaml.load(text, Loader=_LocatingLoader)  # a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        line = mark.line + 1 if mark is not None else 1
        raise InvalidBundle(
            [BundleProblem(source, line, "(yaml)", f"not valid YAML: {exc.problem}")]
        ) from None
    except _DuplicateKey as exc:
        raise InvalidBundle([BundleProblem(source, exc.line, exc.key, "appears twice")]) from None
    except _Forbidden as exc:
        raise InvalidBundle([BundleProblem(source, exc.line, "(yaml)", exc.message)]) from None
    except yaml.reader.ReaderError as exc:  # characters YAML does not allow; no mark
        line = text.count("\n", 0, exc.position) + 1
        reason = f"unacceptable character #x{exc.character:04x}: {exc.reason}"
        raise InvalidBundle(
            [BundleProblem(source, line, "(yaml)", f"not valid YAML: {reason}")]
        ) from None
    bundle = checker.bundle(document)
    if checker.problems:
        raise InvalidBundle(checker.problems)
    assert bundle is not None
    return bundle


# --- YAML with line numbers ----------------------------------------------------------


class _Located(dict[str, Any]):
    line: int = 1
    lines: dict[str, int]


class _LocatedList(list[Any]):
    line: int = 1
    lines: list[int] = []  # replaced per instance when loaded


class _DuplicateKey(Exception):
    def __init__(self, key: str, line: int) -> None:
        self.key, self.line = key, line


class _Forbidden(Exception):
    """YAML that bundles may not use: anchors and aliases, or nesting too deep."""

    def __init__(self, line: int, message: str) -> None:
        self.line, self.message = line, message


class _LocatingLoader(yaml.SafeLoader):
    """Refuses anchors and aliases (an alias bomb expands a few lines into millions of
    nodes) and nesting deeper than NESTING_MAX, before building anything."""

    depth = 0

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        event = self.peek_event()  # type: ignore[no-untyped-call]
        line = event.start_mark.line + 1
        anchor = getattr(event, "anchor", None)
        if isinstance(event, yaml.AliasEvent) or anchor is not None:
            shown = (
                f"the alias *{anchor}"
                if isinstance(event, yaml.AliasEvent)
                else (f"the anchor &{anchor}")
            )
            raise _Forbidden(
                line,
                f"bundles may not use YAML anchors or aliases (found {shown}); "
                "write each value out",
            )
        if not isinstance(event, yaml.MappingStartEvent | yaml.SequenceStartEvent):
            return super().compose_node(parent, index)
        self.depth += 1
        try:
            if self.depth > NESTING_MAX:
                raise _Forbidden(
                    line, f"expected YAML nested at most {NESTING_MAX} levels deep, found more"
                )
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> _Located:
    loader.flatten_mapping(node)
    mapping = _Located()
    mapping.line = node.start_mark.line + 1
    mapping.lines = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if isinstance(key, list | dict):
            raise _Forbidden(
                key_node.start_mark.line + 1, f"expected a plain key, found {_kind(key)}"
            )
        if key in mapping:
            raise _DuplicateKey(str(key), key_node.start_mark.line + 1)
        mapping[key] = loader.construct_object(value_node, deep=True)
        mapping.lines[key] = key_node.start_mark.line + 1
    return mapping


def _construct_sequence(loader: yaml.SafeLoader, node: yaml.SequenceNode) -> _LocatedList:
    items = _LocatedList(loader.construct_object(child, deep=True) for child in node.value)
    items.line = node.start_mark.line + 1
    items.lines = [child.start_mark.line + 1 for child in node.value]
    return items


_LocatingLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
_LocatingLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _construct_sequence
)


# --- checking and compiling ------------------------------------------------------------


class _Refused(Exception):
    """One field is unusable; its problem is already recorded."""


def _suggest(word: str, choices: Iterator[str] | tuple[str, ...] | list[str]) -> str | None:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return close[0] if close else None


@dataclass
class _Checker:
    source: str
    problems: list[BundleProblem] = field(default_factory=list)
    lateness: int = 0
    managers: dict[str, str] = field(default_factory=dict)
    conditions: int = 0
    """Conditions compiled so far, against CONDITION_NODES_MAX."""
    restricted: dict[str, frozenset[str]] = field(default_factory=dict)
    """This bundle's ``fields``: attribute -> the purposes it may be used for."""
    reads: set[str] = field(default_factory=set)
    """Attributes read by the rule or journey being compiled."""

    def tiers(self, top: _Located) -> dict[str, tuple[str, ...]]:
        """``tiers: {<tier>: {benefits: [<text>, ...]}}``"""
        spec = self.mapping(top["tiers"], top.lines["tiers"], "tiers")
        if len(spec) > TIERS_MAX:
            self.refuse(
                top.lines["tiers"],
                "tiers",
                f"expected at most {TIERS_MAX} tiers, found {len(spec)}",
            )
        found: dict[str, tuple[str, ...]] = {}
        for name, value in spec.items():
            path = _join("tiers", str(name))
            line = spec.lines[name]
            if not isinstance(name, str) or not 0 < len(name) <= SHORT_NAME_MAX:
                self.refuse(line, path, f"expected a tier name of 1 to {SHORT_NAME_MAX} characters")
            entry = self.mapping(value, line, path)
            self.keys(entry, path, ("benefits",))
            listed = entry["benefits"]
            if (
                not isinstance(listed, list)
                or len(listed) > BENEFITS_MAX
                or not all(isinstance(b, str) and 0 < len(b) <= TITLE_MAX for b in listed)
            ):
                self.refuse(
                    entry.lines["benefits"],
                    _join(path, "benefits"),
                    f"expected a list of at most {BENEFITS_MAX} texts of 1 to {TITLE_MAX} "
                    f"characters, found {_show(listed)}",
                )
            found[name] = tuple(listed)
        return found

    # consent

    def fields(self, top: _Located) -> None:
        """``fields: {<attribute>: {purposes: [<purpose>, ...]}}``"""
        spec = self.mapping(top["fields"], top.lines["fields"], "fields")
        if len(spec) > LIST_ITEMS_MAX:
            self.refuse(
                top.lines["fields"],
                "fields",
                f"expected at most {LIST_ITEMS_MAX:,} fields, found {len(spec):,}",
            )
        for name, value in spec.items():
            path = _join("fields", str(name))
            line = spec.lines[name]
            if not isinstance(name, str) or not 0 < len(name) <= SHORT_NAME_MAX:
                self.refuse(
                    line, path, f"expected an attribute name of 1 to {SHORT_NAME_MAX} characters"
                )
            entry = self.mapping(value, line, path)
            self.keys(entry, path, ("purposes",))
            purposes = self.purposes(entry, path)
            if not purposes:
                self.refuse(
                    entry.lines["purposes"],
                    _join(path, "purposes"),
                    "expected at least one purpose the field may be used for, found none",
                )
            self.restricted[name] = frozenset(purposes)

    def purposes(self, mapping: _Located, path: str) -> tuple[str, ...]:
        value = mapping["purposes"]
        line = mapping.lines["purposes"]
        where = _join(path, "purposes")
        if not isinstance(value, list) or len(value) > PURPOSES_MAX:
            self.refuse(
                line,
                where,
                f"expected a list of at most {PURPOSES_MAX} purpose names, found {_show(value)}",
            )
        for item in value:
            if not isinstance(item, str) or not KIND.match(item):
                self.refuse(
                    line,
                    where,
                    "expected purpose names such as marketing or contact_by_chat (lower-case "
                    f"letters, digits and '_', at most 64), found {_show(item)}",
                )
        return tuple(dict.fromkeys(value))

    def check_field_purposes(self, purposes: tuple[str, ...], line: int, path: str) -> None:
        """Minimum necessity: a rule that reads a restricted attribute may only serve
        purposes that attribute may be used for."""
        for name in sorted(self.reads):
            allowed = self.restricted.get(name)
            if allowed is None:
                continue
            if not purposes or not set(purposes) <= allowed:
                declared = ", ".join(purposes) if purposes else "none"
                self.refuse(
                    line,
                    path,
                    f"reads attributes.{name}, which may only be used for "
                    f"{', '.join(sorted(allowed))}; expected then.purposes within those, "
                    f"found {declared}",
                )

    # problems

    def refuse(self, line: int, path: str, message: str, suggestion: str | None = None) -> NoReturn:
        self.problems.append(BundleProblem(self.source, line, path, message, suggestion))
        raise _Refused

    def mapping(self, value: Any, line: int, path: str) -> _Located:
        if not isinstance(value, _Located):
            self.refuse(line, path, f"expected a mapping, found {_kind(value)}")
        return value

    def keys(
        self,
        mapping: _Located,
        path: str,
        required: tuple[str, ...],
        optional: tuple[str, ...] = (),
    ) -> None:
        known = required + optional
        for key in mapping:
            if key not in known:
                self.problems.append(
                    BundleProblem(
                        self.source,
                        mapping.lines[key],
                        _join(path, str(key)),
                        f"unknown field; expected one of {', '.join(known)}",
                        _suggest(str(key), known),
                    )
                )
        missing = [k for k in required if k not in mapping]
        for key in missing:
            self.problems.append(
                BundleProblem(self.source, mapping.line, _join(path, key), "is required")
            )
        if missing or any(k not in known for k in mapping):
            raise _Refused

    def attempt(self, build: Callable[[], Any]) -> Any:
        try:
            return build()
        except _Refused:
            return None

    # bundle

    def bundle(self, document: Any) -> RuleBundle | None:
        try:
            top = self.mapping(document, 1, "(bundle)")
            self.keys(
                top,
                "",
                ("bundle", "version"),
                (
                    "rules",
                    "allowed_lateness",
                    "description",
                    "caps",
                    "managers",
                    "journeys",
                    "fields",
                    "scoring",
                    "policy",
                    "tiers",
                ),
            )
        except _Refused:
            return None
        name = self.attempt(lambda: self.name(top, "bundle", ""))
        version = self.attempt(
            lambda: self.integer(top, "version", "", minimum=1, maximum=RULE_VERSION_MAX)
        )
        lateness = self.attempt(lambda: self.duration(top, "allowed_lateness", "", zero_ok=True))
        self.lateness = (lateness or timedelta(0)) // ONE_MICROSECOND
        caps = (self.attempt(lambda: self.caps(top)) if "caps" in top else None) or (None, None)
        if "managers" in top:
            self.attempt(lambda: self.read_managers(top))
        if "fields" in top:
            self.attempt(lambda: self.fields(top))
        tiers = self.attempt(lambda: self.tiers(top)) if "tiers" in top else None
        if (
            "scoring" not in top
            and "rules" not in top
            and "journeys" not in top
            and "policy" not in top
            and "tiers" not in top
        ):
            self.problems.append(
                BundleProblem(
                    self.source, top.line, "rules", "expected rules, journeys or a policy"
                )
            )
            return None
        rules_value = top.get("rules", _LocatedList())
        if "rules" in top and (not isinstance(rules_value, _LocatedList) or not rules_value):
            self.attempt(
                lambda: self.refuse(
                    top.lines["rules"],
                    "rules",
                    f"expected a list of rules, found {_kind(rules_value)}",
                )
            )
            return None
        if len(rules_value) > RULES_MAX:
            self.problems.append(
                BundleProblem(
                    self.source,
                    top.lines["rules"],
                    "rules",
                    f"expected at most {RULES_MAX:,} rules in a bundle, found "
                    f"{len(rules_value):,}; split it into several bundles",
                )
            )
            return None
        compiled: list[CompiledRule] = []
        seen: dict[str, int] = {}
        for index, (item, line) in enumerate(zip(rules_value, rules_value.lines, strict=True)):
            try:
                rule = self.rule(item, line, f"rules[{index}]", version or 1)
            except _Refused:
                continue
            if rule.rule_id in seen:
                self.problems.append(
                    BundleProblem(
                        self.source,
                        line,
                        f"rules[{index}].id",
                        f"rule id {rule.rule_id!r} is already used by the rule at line "
                        f"{seen[rule.rule_id]}",
                    )
                )
                continue
            seen[rule.rule_id] = line
            compiled.append(rule)
        journeys = None
        if "journeys" in top:
            journeys = self.attempt(lambda: self.journeys(top, version or 1))
        for journey in journeys or ():
            for variant in journey.variants:
                for step in variant.steps:
                    rule_id = f"{journey.journey_id}.{step.step_id}"
                    if rule_id in seen:
                        self.problems.append(
                            BundleProblem(
                                self.source,
                                top.lines["journeys"],
                                "journeys",
                                f"journey step {rule_id!r} has the id of the rule at line "
                                f"{seen[rule_id]}; rename one",
                            )
                        )
        policy = None
        if "policy" in top:
            policy = compile_policy(
                self, top["policy"], top.lines["policy"], name or "", version or 1
            )
        scoring = (
            compile_scoring(self, top["scoring"], top.lines["scoring"])
            if "scoring" in top
            else None
        )
        if self.problems:
            return None
        return RuleBundle(
            name=name,
            version=version,
            rules=tuple(compiled),
            allowed_lateness=lateness or timedelta(0),
            source=self.source,
            rule_ids=frozenset(seen),
            per_customer_per_day=caps[0],
            per_rep_per_day=caps[1],
            journeys=journeys or (),
            restricted_fields=dict(self.restricted),
            tiers=tiers or {},
            scoring=scoring,
            policy=policy,
            managers=dict(self.managers),
        )

    def journeys(self, top: _Located, version: int) -> tuple[CompiledJourney, ...]:
        items = top["journeys"]
        if not isinstance(items, _LocatedList) or not items:
            self.refuse(
                top.lines["journeys"],
                "journeys",
                f"expected a list of journeys, found {_kind(items)}",
            )
        if len(items) > JOURNEYS_MAX:
            self.refuse(
                top.lines["journeys"],
                "journeys",
                f"expected at most {JOURNEYS_MAX} journeys in a bundle, found {len(items)}; "
                "split it into several bundles",
            )
        compiled: list[CompiledJourney] = []
        seen: set[str] = set()
        for index, (item, line) in enumerate(zip(items, items.lines, strict=True)):
            try:
                journey = self.journey(item, line, f"journeys[{index}]", version)
            except _Refused:
                continue
            if journey.journey_id in seen:
                self.problems.append(
                    BundleProblem(
                        self.source,
                        line,
                        f"journeys[{index}].id",
                        f"journey id {journey.journey_id!r} is used twice",
                    )
                )
            seen.add(journey.journey_id)
            compiled.append(journey)
        return tuple(compiled)

    def journey(self, value: Any, line: int, path: str, version: int) -> CompiledJourney:
        spec = self.mapping(value, line, path)
        self.keys(
            spec,
            path,
            ("id", "entry", "variants"),
            ("description", "mode", "exit", "conversion", "holdout", "required_signals"),
        )
        journey_id = self.name(spec, "id", path)
        mode_text = self.choice(spec, "mode", path, tuple(m.value for m in RuleMode), "enforce")
        self.reads = set()
        entry = self.condition(spec["entry"], spec.lines["entry"], _join(path, "entry"))
        exits = {
            key: self.condition(spec[key], spec.lines[key], _join(path, key))
            for key in ("exit", "conversion")
            if key in spec
        }
        holdout = self.integer(spec, "holdout", path, minimum=0) if "holdout" in spec else 0
        if holdout > 99:
            self.refuse(
                spec.lines["holdout"],
                _join(path, "holdout"),
                f"expected a percent from 0 to 99, found {holdout}",
            )
        variants_value = spec["variants"]
        if not isinstance(variants_value, _LocatedList) or not variants_value:
            self.refuse(
                spec.lines["variants"],
                _join(path, "variants"),
                f"expected a list of variants, found {_kind(variants_value)}",
            )
        variants: list[Variant] = []
        for index, (item, item_line) in enumerate(
            zip(variants_value, variants_value.lines, strict=True)
        ):
            variant = self.variant(
                item, item_line, f"{path}.variants[{index}]", journey_id, version
            )
            if variant.name == HOLDOUT or any(v.name == variant.name for v in variants):
                self.refuse(
                    item_line,
                    f"{path}.variants[{index}].name",
                    f"variant name {variant.name!r} is taken (holdout is reserved)",
                )
            variants.append(variant)
        if not any(v.weight for v in variants):
            self.refuse(
                spec.lines["variants"],
                _join(path, "variants"),
                "expected at least one variant with a weight above 0 (0 stops new entrants)",
            )
        for variant in variants:
            for step in variant.steps:
                self.check_field_purposes(
                    step.template.purposes, spec.lines["variants"], _join(path, "variants")
                )
        required = spec.get("required_signals", [])
        if not isinstance(required, list) or not all(
            isinstance(k, str) and KIND.match(k) for k in required
        ):
            self.refuse(
                spec.lines["required_signals"],
                _join(path, "required_signals"),
                f"expected a list of touchpoint kinds (lower_snake_case), found {required!r}",
            )
        return CompiledJourney(
            required_signals=tuple(dict.fromkeys(required)),
            journey_id=journey_id,
            version=version,
            entry=entry,
            exit=exits.get("exit"),
            conversion=exits.get("conversion"),
            holdout=holdout,
            variants=tuple(variants),
            mode=RuleMode(mode_text),
        )

    def variant(self, value: Any, line: int, path: str, journey_id: str, version: int) -> Variant:
        spec = self.mapping(value, line, path)
        self.keys(spec, path, ("name", "steps"), ("weight",))
        name = self.name(spec, "name", path)
        if len(name) > SHORT_NAME_MAX:
            self.refuse(
                spec.lines["name"],
                _join(path, "name"),
                f"journey variant name: expected at most {SHORT_NAME_MAX} characters, "
                f"found {len(name)}",
            )
        weight = self.integer(spec, "weight", path, minimum=0) if "weight" in spec else 1
        steps_value = spec["steps"]
        if not isinstance(steps_value, _LocatedList) or not steps_value:
            self.refuse(
                spec.lines["steps"],
                _join(path, "steps"),
                f"expected a list of steps, found {_kind(steps_value)}",
            )
        if len(steps_value) > STEPS_MAX:
            self.refuse(
                spec.lines["steps"],
                _join(path, "steps"),
                f"expected at most {STEPS_MAX} steps in a variant, found {len(steps_value)}",
            )
        steps: list[JourneyStep] = []
        for index, (item, item_line) in enumerate(zip(steps_value, steps_value.lines, strict=True)):
            here = f"{path}.steps[{index}]"
            step = self.mapping(item, item_line, here)
            self.keys(step, here, ("id", "then"), ("after", "when"))
            if "after" not in step and "when" not in step:
                self.refuse(item_line, here, "a step needs `after`, `when` or both")
            after = self.duration(step, "after", here)
            when = (
                self.condition(step["when"], step.lines["when"], _join(here, "when"))
                if "when" in step
                else None
            )
            step_id = self.name(step, "id", here)
            if any(s.step_id == step_id for s in steps):
                self.refuse(
                    step.lines["id"], _join(here, "id"), f"step id {step_id!r} is used twice"
                )
            rule_id = f"{journey_id}.{step_id}"
            if len(rule_id) > ID_MAX:
                self.refuse(
                    step.lines["id"],
                    _join(here, "id"),
                    f"journey and step id {rule_id!r} is the intervention's rule_id: expected "
                    f"at most {ID_MAX} characters, found {len(rule_id)}",
                )
            template = self.then(step["then"], step.lines["then"], _join(here, "then"))
            self.prove(
                template,
                rule_id,
                version,
                f"step {step_id} due" if when is None else when.label,
                step.lines["then"],
                _join(here, "then"),
                experiment=(journey_id, name),
            )
            steps.append(
                JourneyStep(
                    step_id=step_id,
                    after=None if after is None else after // ONE_MICROSECOND,
                    when=when,
                    template=template,
                )
            )
        return Variant(name, weight, tuple(steps))

    def read_managers(self, top: _Located) -> None:
        """``managers: {rep-id: manager-id}``: whom ``assignee: manager`` reaches."""
        managers = self.mapping(top["managers"], top.lines["managers"], "managers")
        for rep, manager in managers.items():
            where = (managers.lines[rep], _join("managers", str(rep)))
            if not isinstance(rep, str) or not isinstance(manager, str) or not manager:
                self.refuse(*where, f"expected rep-id: manager-id, found {rep!r}: {manager!r}")
            for what, text in (("rep id", rep), ("manager id", manager)):
                if len(text) > ID_MAX:
                    self.refuse(
                        *where, f"{what}: expected at most {ID_MAX} characters, found {len(text)}"
                    )
        self.managers = dict(managers)

    def caps(self, top: _Located) -> tuple[int | None, int | None]:
        caps = self.mapping(top["caps"], top.lines["caps"], "caps")
        self.keys(caps, "caps", (), ("per_customer_per_day", "per_rep_per_day"))
        if not caps:
            self.refuse(
                top.lines["caps"], "caps", "expected per_customer_per_day, per_rep_per_day or both"
            )
        return (
            self.integer(caps, "per_customer_per_day", "caps", minimum=1)
            if "per_customer_per_day" in caps
            else None,
            self.integer(caps, "per_rep_per_day", "caps", minimum=1)
            if "per_rep_per_day" in caps
            else None,
        )

    def rule(self, value: Any, line: int, path: str, version: int) -> CompiledRule:
        rule = self.mapping(value, line, path)
        self.keys(rule, path, ("id", "when", "then"), ("description", "mode", "cooldown"))
        rule_id = self.name(rule, "id", path)
        mode_text = self.choice(rule, "mode", path, tuple(m.value for m in RuleMode), "enforce")
        cooldown = self.duration(rule, "cooldown", path, zero_ok=True) or timedelta(0)
        description = self.text(rule, "description", path, required=False) or ""
        self.reads = set()
        condition = self.attempt(
            lambda: self.condition(rule["when"], rule.lines["when"], _join(path, "when"))
        )
        template = self.attempt(
            lambda: self.then(rule["then"], rule.lines["then"], _join(path, "then"))
        )
        if condition is None or template is None:
            raise _Refused
        self.check_field_purposes(template.purposes, rule.lines["then"], _join(path, "then"))
        self.prove(
            template, rule_id, version, condition.label, rule.lines["then"], _join(path, "then")
        )
        return CompiledRule(
            rule_id=rule_id,
            version=version,
            description=description,
            mode=RuleMode(mode_text),
            condition=condition,
            template=template,
            cooldown=cooldown,
        )

    # actions

    def prove(
        self,
        template: Template,
        rule_id: str,
        version: int,
        label: str,
        line: int,
        path: str,
        experiment: tuple[str, str] | None = None,
    ) -> None:
        """Refuse an action whose intervention could fail the contract at event time."""
        try:
            dry_run(
                template,
                rule_id=rule_id,
                rule_version=version,
                condition_label=label,
                experiment=experiment,
            )
        except ContractBreach as breach:
            self.refuse(line, path, str(breach))

    def then(self, value: Any, line: int, path: str) -> Template:
        then = self.mapping(value, line, path)
        self.keys(
            then,
            path,
            ("kind", "title", "due_in"),
            ("body", "assignee", "priority", "severity", "purposes"),
        )
        kind = self.choice(then, "kind", path, tuple(k.value for k in InterventionKind))
        priority = self.choice(then, "priority", path, tuple(p.value for p in Priority), "normal")
        severity = self.choice(then, "severity", path, tuple(s.value for s in Severity), None)
        assignee = self.text(then, "assignee", path, required=False) or "owner"
        if assignee not in ("owner", "manager") and not re.fullmatch(
            rf"role:[a-z][a-z0-9_-]{{0,{SHORT_NAME_MAX - 1}}}", assignee
        ):
            self.refuse(
                then.lines["assignee"],
                _join(path, "assignee"),
                "expected 'owner', 'manager' or 'role:<name>' (e.g. role:pharmacist; a name of "
                "at most "
                f"{SHORT_NAME_MAX} lower-case letters, digits, '_' or '-'), found {assignee!r}",
                "owner" if assignee.startswith("own") else None,
            )
        title = self.template_text(then, "title", path, limit=TITLE_MAX)
        if not title.strip():
            self.refuse(then.lines["title"], _join(path, "title"), "expected a title, found none")
        body = self.template_text(then, "body", path, required=False, limit=BODY_MAX) or ""
        due_in = self.duration(then, "due_in", path, zero_ok=True)
        purposes = self.purposes(then, path) if "purposes" in then else ()
        assert due_in is not None and kind is not None
        return Template(
            kind=InterventionKind(kind),
            title=title,
            body=body,
            due_in=due_in,
            priority=Priority(priority),
            severity=Severity(severity) if severity else None,
            assignee_role=assignee.removeprefix("role:") if assignee.startswith("role:") else None,
            to_manager=assignee == "manager",
            managers=self.managers,
            purposes=purposes,
        )

    def template_text(
        self, mapping: _Located, key: str, path: str, limit: int, required: bool = True
    ) -> str:
        text = self.text(mapping, key, path, required=required)
        if text is None:
            return ""
        where = (mapping.lines[key], _join(path, key))
        if len(text) > limit:
            self.refuse(*where, f"expected at most {limit} characters, found {len(text)}")
        try:
            parts = list(string.Formatter().parse(text))
        except ValueError as exc:
            self.refuse(*where, f"not a valid template: {exc}")
        fields = []
        for _, name, spec, conversion in parts:
            if name is None:
                continue
            if spec or conversion:
                self.refuse(
                    *where,
                    f"placeholders take no format or conversion, found {{{name}"
                    + (f"!{conversion}" if conversion else "")
                    + (f":{spec}" if spec else "")
                    + "}",
                )
            fields.append(name)
        for name in fields:
            if name not in Template.FIELDS:
                self.refuse(
                    mapping.lines[key],
                    _join(path, key),
                    f"unknown placeholder {{{name}}}; expected one of "
                    + ", ".join(f"{{{f}}}" for f in Template.FIELDS),
                    _suggest(name, Template.FIELDS),
                )
        return text

    # conditions

    def condition(self, value: Any, line: int, path: str) -> Condition:
        self.conditions += 1
        if self.conditions > CONDITION_NODES_MAX:
            if self.conditions == CONDITION_NODES_MAX + 1:
                self.refuse(
                    getattr(value, "line", line),
                    path,
                    f"expected at most {CONDITION_NODES_MAX:,} conditions in a bundle; "
                    "this is one more",
                )
            raise _Refused
        node = self.mapping(value, line, path)
        if len(node) != 1:
            found = ", ".join(map(str, node)) or "nothing"
            self.refuse(
                node.line,
                path,
                f"expected exactly one condition ({', '.join(CONDITION_KINDS)}), found {found}",
            )
        [(kind, body)] = node.items()
        here = _join(path, str(kind))
        body_line = node.lines[kind]
        if kind == "event":
            return self.event_match(body, body_line, here)
        if kind == "state":
            return self.state(body, body_line, here)
        if kind in ("count", "sum"):
            return self.window(str(kind), body, body_line, here)
        if kind == "sequence":
            return self.sequence(body, body_line, here)
        if kind == "streak":
            return self.streak(body, body_line, here)
        if kind == "absence":
            return self.absence(body, body_line, here)
        if kind == "rank":
            return self.rank(body, body_line, here)
        if kind in ("all", "any"):
            return self.combination(str(kind), body, body_line, here)
        if kind == "not":
            part = self.condition(body, body_line, here)
            return Not(part, f"not ({part.label})")
        self.refuse(
            body_line,
            here,
            f"unknown condition; expected one of {', '.join(CONDITION_KINDS)}",
            _suggest(str(kind), CONDITION_KINDS),
        )

    def event_match(self, value: Any, line: int, path: str) -> EventMatch:
        spec = self.mapping(value, line, path)
        if list(spec) == ["event"]:  # ``{event: {...}}`` reads better in lists of steps
            path = _join(path, "event")
            spec = self.mapping(spec["event"], spec.lines["event"], path)
        if not spec:
            self.refuse(line, path, "expected at least one field to test, found none")
        tests: list[FieldTest] = []
        for name, expected in spec.items():
            tests.extend(
                self.field_tests(str(name), expected, spec.lines[name], _join(path, str(name)))
            )
        label = " and ".join(t.label for t in tests)
        self.check_satisfiable(tests, spec, line, path)
        return EventMatch(tuple(tests), label)

    def field_tests(self, name: str, expected: Any, line: int, path: str) -> list[FieldTest]:
        getter = self.event_getter(name, line, path)
        comparisons = self.comparisons(expected, line, path)
        tests: list[FieldTest] = []
        shorthand = not isinstance(expected, _Located)
        for op, operand in comparisons:
            self.check_operand(name, op, operand, line, path if shorthand else _join(path, op))
            tests.append(
                FieldTest(
                    f"{name} {op} {_show(operand)}",
                    getter,
                    compile_test(op, operand),
                    name,
                    op,
                    operand,
                )
            )
        return tests

    def event_getter(self, name: str, line: int, path: str) -> Getter:
        if name.startswith("attributes."):
            key = name.removeprefix("attributes.")
            if not key:
                self.refuse(line, path, "expected attributes.<name>, found no name")
            self.reads.add(key)
            return lambda event: event.attributes.get(key)
        if name not in EVENT_FIELDS:
            self.refuse(
                line,
                path,
                f"unknown touchpoint field; expected one of {', '.join(EVENT_FIELDS)} or "
                "attributes.<name>",
                _suggest(name, EVENT_FIELDS),
            )
        getter: Getter = operator.attrgetter(name)
        return getter

    def comparisons(self, expected: Any, line: int, path: str) -> list[tuple[str, Any]]:
        if isinstance(expected, _Located):
            if not expected:
                self.refuse(line, path, "expected a value or {operator: value}, found {}")
            found: list[tuple[str, Any]] = []
            for op, operand in expected.items():
                if op not in OPERATORS:
                    self.refuse(
                        expected.lines[op],
                        _join(path, str(op)),
                        f"unknown operator; expected one of {', '.join(OPERATORS)}",
                        _suggest(str(op), OPERATORS),
                    )
                found.append((str(op), operand))
            return found
        if isinstance(expected, list):
            return [("in", expected)]
        return [("eq", expected)]

    def check_operand(self, name: str, op: str, operand: Any, line: int, path: str) -> None:
        if op in ("gt", "gte", "lt", "lte") and not _is_number(operand):
            self.refuse(line, path, f"expected a number to compare with, found {_kind(operand)}")
        if op in ("gt", "gte", "lt", "lte") and name in EVENT_FIELDS:
            self.refuse(
                line,
                path,
                f"unreachable: {name} is text and never compares as a number; "
                "use eq, in, contains or matches",
            )
        if op in ("in", "not_in"):
            if not isinstance(operand, list) or not operand:
                self.refuse(line, path, f"expected a non-empty list, found {_kind(operand)}")
            values = list(operand)
            if len(values) > LIST_ITEMS_MAX:
                self.refuse(
                    line,
                    path,
                    f"expected a list of at most {LIST_ITEMS_MAX:,} values, found {len(values):,}",
                )
            for item in values:
                if isinstance(item, list | dict):
                    self.refuse(
                        line,
                        path,
                        "expected a list of single values (text, numbers, true or false), "
                        f"found {_kind(item)} in it",
                    )
        elif op in ("contains", "matches"):
            if not isinstance(operand, str):
                self.refuse(line, path, f"expected text, found {_kind(operand)}")
            values = []
        elif op in ("eq", "ne"):
            if isinstance(operand, list | dict):
                self.refuse(line, path, f"expected a single value, found {_kind(operand)}")
            values = [operand]
        else:
            values = []
        if op == "matches":
            if len(operand) > PATTERN_CHARS_MAX:
                self.refuse(
                    line,
                    path,
                    f"expected a pattern of at most {PATTERN_CHARS_MAX:,} characters, found "
                    f"{len(operand):,}",
                )
            try:
                compile_pattern(operand)
            except PatternRefused as exc:
                self.refuse(
                    line,
                    path,
                    "expected a regular expression of the RE2 syntax (linear time), "
                    f"found {operand!r}: {exc}",
                )
        allowed = ENUM_FIELDS.get(name)
        for item in values:
            if allowed is not None and item not in allowed:
                self.refuse(
                    line,
                    path,
                    f"{name} is never {item!r}; expected one of {', '.join(allowed)}",
                    _suggest(str(item), allowed),
                )
            if name == "kind" and (not isinstance(item, str) or not KIND.match(item)):
                self.refuse(
                    line,
                    path,
                    f"a touchpoint kind is lower_snake_case (e.g. sandbox_error), found {item!r}",
                )

    def check_satisfiable(
        self, tests: list[FieldTest], spec: _Located, line: int, path: str
    ) -> None:
        """Refuse tests no touchpoint can pass, e.g. ``gt: 5`` with ``lt: 3``."""
        for name, expected in spec.items():
            if not isinstance(expected, _Located):
                continue
            low = max(
                (float(v) for k, v in expected.items() if k in ("gt", "gte") and _is_number(v)),
                default=-math.inf,
            )
            high = min(
                (float(v) for k, v in expected.items() if k in ("lt", "lte") and _is_number(v)),
                default=math.inf,
            )
            strict = any(k in ("gt", "lt") for k in expected)
            if low > high or (low == high and strict):
                self.refuse(
                    spec.lines[name],
                    _join(path, str(name)),
                    "unreachable: no value is both above the lower bound and below the upper bound",
                )

    def state(self, value: Any, line: int, path: str) -> Condition:
        spec = self.mapping(value, line, path)
        if not spec:
            self.refuse(line, path, "expected at least one feature to test, found none")
        parts: list[Condition] = []
        for name, expected in spec.items():
            here = _join(path, str(name))
            getter = self.state_getter(str(name), spec.lines[name], here)
            for op, operand in self.comparisons(expected, spec.lines[name], here):
                if op not in ("eq", "ne", "gt", "gte", "lt", "lte"):
                    self.refuse(
                        spec.lines[name],
                        _join(here, op),
                        "state features are numbers; expected eq, ne, gt, gte, lt or lte",
                    )
                self.check_operand(str(name), op, operand, spec.lines[name], _join(here, op))
                parts.append(
                    StateThreshold(
                        str(name),
                        getter,
                        compile_test(op, operand),
                        f"{name} {op} {_show(operand)}",
                    )
                )
        self.check_satisfiable([], spec, line, path)
        return (
            parts[0]
            if len(parts) == 1
            else AllOf(tuple(parts), " and ".join(p.label for p in parts))
        )

    def rank(self, value: Any, line: int, path: str) -> RankCondition:
        """``rank: {score: churn, top: 5}``: among the owner rep's 5 best by churn."""
        spec = self.mapping(value, line, path)
        self.keys(spec, path, ("score", "top"))
        score = spec["score"]
        if not isinstance(score, str) or not SCORE_NAME.match(score):
            self.refuse(
                spec.lines["score"],
                _join(path, "score"),
                f"expected a score name (lower_snake_case), found {_show(score)}",
            )
        top = spec["top"]
        if isinstance(top, bool) or not isinstance(top, int) or not 1 <= top <= RANK_TOP_MAX:
            self.refuse(
                spec.lines["top"],
                _join(path, "top"),
                f"expected a whole number from 1 to {RANK_TOP_MAX}, found {_show(top)}",
            )
        return RankCondition(score, top, f"rank: top {top} of the rep by {score}")

    def state_getter(self, name: str, line: int, path: str) -> Callable[[CustomerState, int], Any]:
        if name.startswith("count."):
            kind = name.removeprefix("count.")
            if not KIND.match(kind):
                self.refuse(
                    line,
                    path,
                    f"expected count.<kind> with a lower_snake_case kind, found {name!r}",
                )
            return lambda state, at: state.kind_counts.get(kind, 0)
        if name == "touchpoints":
            return lambda state, at: state.touchpoints
        if name.startswith("score."):
            score = name.removeprefix("score.")
            if not SCORE_NAME.match(score):
                self.refuse(
                    line,
                    path,
                    f"expected score.<name> with a lower_snake_case score name, found {name!r}",
                )
            return lambda state, at: _score_value(state, score)
        attribute = {
            "days_since_first_seen": "first_seen_at",
            "days_since_last_event": "last_event_at",
            "days_since_last_inbound": "last_inbound_at",
            "days_since_last_outbound": "last_outbound_at",
        }.get(name)
        if attribute is None:
            self.refuse(
                line,
                path,
                f"unknown state feature; expected one of {', '.join(STATE_FEATURES)}, "
                "count.<kind> or score.<name>",
                _suggest(name, STATE_FEATURES),
            )
        return _days_since(attribute)

    def window(self, kind: str, value: Any, line: int, path: str) -> WindowAggregate:
        spec = self.mapping(value, line, path)
        required = ("of", "within", "at_least") + (("field",) if kind == "sum" else ())
        self.keys(spec, path, required)
        of = self.event_match(spec["of"], spec.lines["of"], _join(path, "of"))
        within = self.duration(spec, "within", path)
        assert within is not None
        at_least = spec["at_least"]
        if kind == "count":
            self.integer(spec, "at_least", path, minimum=1, maximum=COUNT_MAX)
        if kind == "sum" and (not _is_number(at_least) or at_least <= 0):
            self.refuse(
                spec.lines["at_least"],
                _join(path, "at_least"),
                f"expected a number above 0, found {at_least!r}",
            )
        value_getter = None
        label = f"count of ({of.label}) within {spec['within']} >= {at_least}"
        if kind == "sum":
            field_name = spec["field"]
            if not isinstance(field_name, str) or not field_name.startswith("attributes."):
                self.refuse(
                    spec.lines["field"],
                    _join(path, "field"),
                    f"expected attributes.<name> holding a number, found {field_name!r}",
                )
            value_getter = self.event_getter(field_name, spec.lines["field"], _join(path, "field"))
            label = f"sum of {field_name} over ({of.label}) within {spec['within']} >= {at_least}"
        return WindowAggregate(
            of, within // ONE_MICROSECOND, float(at_least), value_getter, self.lateness, label
        )

    def sequence(self, value: Any, line: int, path: str) -> Sequence_:
        spec = self.mapping(value, line, path)
        self.keys(spec, path, ("steps", "within"))
        within = self.duration(spec, "within", path)
        assert within is not None
        steps_value = spec["steps"]
        if not isinstance(steps_value, _LocatedList) or len(steps_value) < 2:
            self.refuse(
                spec.lines["steps"],
                _join(path, "steps"),
                f"expected a list of at least 2 steps, found {_kind(steps_value)}"
                + (
                    " with one step (use an event condition)"
                    if isinstance(steps_value, list) and len(steps_value) == 1
                    else ""
                ),
            )
        steps = tuple(
            self.event_match(step, step_line, f"{path}.steps[{index}]")
            for index, (step, step_line) in enumerate(
                zip(steps_value, steps_value.lines, strict=True)
            )
        )
        label = " then ".join(f"({s.label})" for s in steps) + f" within {spec['within']}"
        return Sequence_(steps, within // ONE_MICROSECOND, label)

    def streak(self, value: Any, line: int, path: str) -> Streak:
        spec = self.mapping(value, line, path)
        self.keys(spec, path, ("of", "reset_by", "length"))
        of = self.event_match(spec["of"], spec.lines["of"], _join(path, "of"))
        reset_by = self.event_match(
            spec["reset_by"], spec.lines["reset_by"], _join(path, "reset_by")
        )
        length = self.integer(spec, "length", path, minimum=1, maximum=COUNT_MAX)
        return Streak(
            of, reset_by, length, f"({of.label}) {length} in a row with no ({reset_by.label})"
        )

    def absence(self, value: Any, line: int, path: str) -> Absence:
        spec = self.mapping(value, line, path)
        self.keys(spec, path, ("after", "missing", "within"))
        after = self.event_match(spec["after"], spec.lines["after"], _join(path, "after"))
        missing = self.event_match(spec["missing"], spec.lines["missing"], _join(path, "missing"))
        within = self.duration(spec, "within", path)
        assert within is not None
        return Absence(
            after,
            missing,
            within // ONE_MICROSECOND,
            f"({after.label}) and no ({missing.label}) within {spec['within']}",
        )

    def combination(self, kind: str, value: Any, line: int, path: str) -> Condition:
        if not isinstance(value, _LocatedList) or not value:
            self.refuse(
                line, path, f"expected a non-empty list of conditions, found {_kind(value)}"
            )
        parts: list[Condition] = []
        for index, (item, item_line) in enumerate(zip(value, value.lines, strict=True)):
            try:
                parts.append(self.condition(item, item_line, f"{path}[{index}]"))
            except _Refused:
                continue
        if len(parts) != len(value):
            raise _Refused
        if kind == "all":
            self.check_events_compatible(value, line, path)
            return AllOf(tuple(parts), " and ".join(f"({p.label})" for p in parts))
        return AnyOf(tuple(parts), " or ".join(f"({p.label})" for p in parts))

    def check_events_compatible(self, items: _LocatedList, line: int, path: str) -> None:
        """``all`` of two event conditions wanting different values of one field never holds."""
        wanted: dict[str, Any] = {}
        for item in items:
            event = item.get("event") if isinstance(item, _Located) else None
            if not isinstance(event, _Located):
                continue
            for name, expected in event.items():
                if isinstance(expected, _Located | list):
                    continue
                if name in wanted and wanted[name] != expected:
                    self.refuse(
                        item.lines["event"],
                        path,
                        f"unreachable: one touchpoint cannot have {name} {wanted[name]!r} and "
                        f"{expected!r}; to match one after the other use a sequence",
                    )
                wanted[name] = expected

    # scalars

    def name(self, mapping: _Located, key: str, path: str) -> str:
        value = mapping[key]
        if not isinstance(value, str) or not NAME.match(value):
            self.refuse(
                mapping.lines[key],
                _join(path, key),
                f"expected a name of lower-case letters, digits, '.', '_' or '-', found {value!r}",
            )
        return value

    def integer(
        self, mapping: _Located, key: str, path: str, minimum: int, maximum: int | None = None
    ) -> int:
        value = mapping[key]
        if (
            not isinstance(value, int)
            or isinstance(value, bool)
            or value < minimum
            or (maximum is not None and value > maximum)
        ):
            expected = (
                f"of at least {minimum}" if maximum is None else f"from {minimum} to {maximum}"
            )
            self.refuse(
                mapping.lines[key],
                _join(path, key),
                f"expected a whole number {expected}, found {value!r}",
            )
        return value

    def text(self, mapping: _Located, key: str, path: str, required: bool = True) -> str | None:
        if key not in mapping:
            if required:
                self.refuse(mapping.line, _join(path, key), "is required")
            return None
        value = mapping[key]
        if not isinstance(value, str):
            self.refuse(
                mapping.lines[key], _join(path, key), f"expected text, found {_kind(value)}"
            )
        return value

    def choice(
        self,
        mapping: _Located,
        key: str,
        path: str,
        allowed: tuple[str, ...],
        default: str | None = None,
    ) -> Any:
        if key not in mapping:
            return default
        value = mapping[key]
        if value not in allowed:
            self.refuse(
                mapping.lines[key],
                _join(path, key),
                f"expected one of {', '.join(allowed)}, found {value!r}",
                _suggest(str(value), allowed),
            )
        return value

    def duration(
        self, mapping: _Located, key: str, path: str, zero_ok: bool = False
    ) -> timedelta | None:
        if key not in mapping:
            return None
        longest = f"expected a duration of at most {format_duration(DURATION_MAX)} (ten years)"
        try:
            value = parse_duration(mapping[key])
        except OverflowError:
            self.refuse(mapping.lines[key], _join(path, key), f"{longest}, found {mapping[key]!r}")
        except ValueError as exc:
            self.refuse(mapping.lines[key], _join(path, key), str(exc))
        if value > DURATION_MAX:
            self.refuse(mapping.lines[key], _join(path, key), f"{longest}, found {mapping[key]!r}")
        if value <= timedelta(0) and not zero_ok:
            self.refuse(
                mapping.lines[key],
                _join(path, key),
                f"impossible window: expected a duration above zero, found {mapping[key]!r}",
            )
        return value


def _days_since(attribute: str) -> Callable[[CustomerState, int], Any]:
    def days(state: CustomerState, at: int) -> float:
        moment = getattr(state, attribute)
        if moment is None:
            return math.inf
        elapsed: int = at - (moment - EPOCH) // ONE_MICROSECOND
        return elapsed / 86_400_000_000

    return days


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _kind(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return f"a list of {len(value)}"
    return f"{type(value).__name__} {value!r}"


def _show(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(str(v) for v in value) + "]"
    return str(value)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
