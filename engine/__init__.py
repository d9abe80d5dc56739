"""Warroom's pure core: bundles in, per-customer state and decisions out.

No Kafka, Faust, clock reads, network or metrics here; the worker (``streams/``) wires
this to I/O. What the worker, the connectors and the benchmarks use is declared below;
the modules behind it are the engine's own and may change.

- Bundles: :func:`load_bundle` compiles a YAML bundle (or raises :class:`InvalidBundle`,
  naming line and field); a :class:`RuleBook` holds the running bundles.
- Evaluation: :func:`apply` folds a touchpoint into a :class:`CustomerState`,
  :func:`apply_timer` evaluates at a deadline, :func:`next_deadline` says when.
- State: :class:`CustomerState` with its :class:`RuleMemory` and :class:`JourneyMemory`
  records; :func:`fit_state` keeps it within a byte budget, :func:`expired` says when a
  quiet customer goes.
- Answers to "why": :func:`explain` and :func:`explain_journeys`.
- Per-assignee caps: :func:`assignee_key` and :func:`admit`.
- Compliance: :func:`judge` a :class:`Draft` against the running policies
  (``RuleBook.policies``) for a :class:`GateDecision`; :func:`mask_pii` on everything
  emitted or logged. More in :mod:`engine.compliance`.
- Audit chains: :func:`genesis` and :func:`append` write them, :func:`verify` (or an
  :class:`AuditVerifier`) names the first broken record of each.
"""

from __future__ import annotations

from .assignees import Admission, Sent, admit, assignee_key
from .audit import (
    AuditVerifier,
    BreakKind,
    ChainBreak,
    ChainHead,
    ChainResult,
    InvalidAuditEntry,
    VerifyReport,
    append,
    genesis,
    verify,
)
from .builtin import BUILTIN_BUNDLE, BUILTIN_RULES
from .bundle import BundleProblem, InvalidBundle, RuleBundle, load_bundle
from .compliance import (
    CompiledPolicy,
    Draft,
    Finding,
    GateDecision,
    PolicyVerdict,
    TrainingRule,
    judge,
    mask_pii,
)
from .conditions import EPOCH, micros
from .errors import EngineError, EvaluationError, StateFormatError, WarroomError
from .explain import JourneyStatus, RuleStatus, explain, explain_journeys
from .interventions import intervention_id
from .journeys import HOLDOUT, CompiledJourney, JourneySignal
from .memories import JourneyMemory, RuleMemory
from .reducer import apply, apply_timer, next_deadline
from .retention import Fitted, expired, fit_state
from .rulebook import BundleLedger, Kept, RuleBook, Verdict, deletion_refused
from .rules import CompiledRule, Decision, RuleMode
from .state import RECENT_EVENT_IDS, CustomerState
from .timestamps import TimestampPolicy, timestamp_problem

__all__ = [
    "BUILTIN_BUNDLE",
    "BUILTIN_RULES",
    "EPOCH",
    "HOLDOUT",
    "RECENT_EVENT_IDS",
    "Admission",
    "AuditVerifier",
    "BreakKind",
    "BundleLedger",
    "BundleProblem",
    "ChainBreak",
    "ChainHead",
    "ChainResult",
    "CompiledJourney",
    "CompiledPolicy",
    "CompiledRule",
    "CustomerState",
    "Decision",
    "Draft",
    "EngineError",
    "EvaluationError",
    "Finding",
    "Fitted",
    "GateDecision",
    "InvalidAuditEntry",
    "InvalidBundle",
    "JourneyMemory",
    "JourneySignal",
    "JourneyStatus",
    "Kept",
    "PolicyVerdict",
    "RuleBook",
    "RuleBundle",
    "RuleMemory",
    "RuleMode",
    "RuleStatus",
    "Sent",
    "StateFormatError",
    "TimestampPolicy",
    "TrainingRule",
    "Verdict",
    "VerifyReport",
    "WarroomError",
    "admit",
    "append",
    "apply",
    "apply_timer",
    "assignee_key",
    "deletion_refused",
    "expired",
    "explain",
    "explain_journeys",
    "fit_state",
    "genesis",
    "intervention_id",
    "judge",
    "load_bundle",
    "mask_pii",
    "micros",
    "next_deadline",
    "timestamp_problem",
    "verify",
]
