"""Bounds on what a rule bundle may bring, checked when it is loaded.

Every number a bundle is held to lives here, so the loader, the tests and the
reference (docs/rules.md, "Limits") speak of the same values. The lengths of the
InterventionCommand contract are repeated here because a bundle must be refused
at load time when an intervention it would emit could not satisfy them.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

# --- the bundle as a whole -------------------------------------------------------------

BUNDLE_BYTES_MAX = 256 * 1024
"""Size of a bundle's YAML text, in bytes (UTF-8); checked before it is parsed."""
NESTING_MAX = 50
"""Levels of YAML nesting (mappings and lists within each other); keeps loading and
evaluating a bundle far from Python's recursion limit."""
RULES_MAX = 2_000
"""Rules in one bundle."""
JOURNEYS_MAX = 200
"""Journeys in one bundle."""
STEPS_MAX = 50
"""Steps in one variant of a journey."""
CONDITION_NODES_MAX = 20_000
"""Conditions in one bundle, counting every nested ``all``/``any``/``not`` item, every
journey entry, exit, conversion and step ``when``."""
PATTERN_CHARS_MAX = 1_000
"""Characters in one ``matches`` regular expression."""
LIST_ITEMS_MAX = 1_000
"""Values in one ``in`` or ``not_in`` list."""
COUNT_MAX = 1_000
"""``count`` ``at_least`` and ``streak`` ``length``: what a customer's memory keeps grows
with them."""
DURATION_MAX = timedelta(days=3_650)
"""Any duration in a bundle (``within``, ``cooldown``, ``due_in``, ``after``,
``allowed_lateness``): ten years."""

# --- the InterventionCommand contract (schemas/models.py) -----------------------------

ID_MAX = 128
"""Ids: intervention, customer, rep, rule, experiment."""
SHORT_NAME_MAX = 64
"""Assignee role and experiment variant."""
TITLE_MAX = 500
BODY_MAX = 20_000
RULE_VERSION_MAX = 2**31 - 1
"""``rule_version`` is an Avro int."""

# --- the worst case a load-time dry run renders ---------------------------------------

TOUCHPOINT_TEXT_MAX = 20_000
"""Longest ``text`` a touchpoint may carry: the longest ``{observed}`` value."""
KIND_MAX = 64
"""Longest touchpoint ``kind``: the longest ``{event_kind}`` value."""
LATEST_EVENT_TIME = datetime(9989, 12, 31, tzinfo=UTC)
"""The latest event time a load-time dry run fires at: with ``due_in`` at most
DURATION_MAX, ``due_at`` stays within the calendar."""
PURPOSES_MAX = 20
"""Consent purposes one intervention or one restricted field may name."""

# --- compliance policies (the ``policy:`` section; docs/compliance.md, "Limits") ------

POLICY_CATEGORIES_MAX = 100
"""Categories in one policy."""
POLICY_PHRASES_MAX = 20_000
"""Phrases in one policy, counting every term, exception, negation word, required-content
topic term and nearby term: all of them go into one automaton."""
TERM_CHARS_MAX = 100
"""Characters in one term or phrase."""
POLICY_PATTERNS_MAX = 200
"""Patterns (``near: patterns``) in one policy; each at most PATTERN_CHARS_MAX characters."""
NEAR_WITHIN_MAX = 200
"""``within`` of ``near`` and ``near_number``: characters either side of a term."""
NEGATION_WINDOW_MAX = 10
"""``negation`` ``window``: words between a negation word and the term."""
REQUIRED_MAX = 20
"""Required-content checks in one policy."""
TOPICS_MAX = 50
"""Topics in one required-content check."""
TEMPLATES_MAX = 500
"""Approved templates in one policy."""
TEMPLATE_CHARS_MAX = 2_000
"""Characters in one approved template."""
OWN_DOMAINS_MAX = 200
"""Entries of ``own_domains``."""
TRAINING_RULES_MAX = 100
"""Training rules in one policy."""
TRAINING_DAYS_MAX = 365
"""``within_days`` of a training rule."""
