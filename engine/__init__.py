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
- Consent: :func:`apply_consent` folds a grant or revocation into a customer's state;
  :func:`missing_purposes` and :func:`may_train` answer what it allows.
- Rep training: :func:`tally` counts a rep's findings, :func:`profile` summarises them.
- Audit chains: :func:`genesis` and :func:`append` write them, :func:`verify` (or an
  :class:`AuditVerifier`) names the first broken record of each.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

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
from .conditions import EPOCH, Ranks, micros
from .consent import (
    KNOWN_PURPOSES,
    ConsentOutcome,
    apply_consent,
    granted,
    may_train,
    missing_purposes,
    remember,
    visible_attributes,
)
from .errors import EngineError, EvaluationError, StateFormatError, WarroomError
from .explain import JourneyStatus, RuleStatus, explain, explain_journeys
from .features import FeatureMemory, features, observe
from .interventions import intervention_id
from .journeys import HOLDOUT, CompiledJourney, JourneySignal
from .memories import JourneyMemory, RuleMemory
from .profile import Purchase, StoreProfile, benefits
from .reducer import apply, apply_timer, next_deadline
from .retention import Fitted, expired, fit_state
from .rulebook import BundleLedger, Kept, RuleBook, Verdict, deletion_refused
from .rules import CompiledRule, Decision, RuleMode
from .scoring.spec import ModelSpec, ScoreSpec
from .state import RECENT_EVENT_IDS, CustomerState, Score
from .timestamps import TimestampPolicy, timestamp_problem
from .training import Findings, Tally, profile, tally

__all__ = [
    "BUILTIN_BUNDLE",
    "BUILTIN_RULES",
    "EPOCH",
    "HOLDOUT",
    "KNOWN_PURPOSES",
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
    "ConsentOutcome",
    "CustomerState",
    "Decision",
    "Draft",
    "EngineError",
    "EvaluationError",
    "Example",
    "FeatureMemory",
    "Finding",
    "Findings",
    "Fitted",
    "GateDecision",
    "InvalidAuditEntry",
    "InvalidBundle",
    "JourneyMemory",
    "JourneySignal",
    "JourneyStatus",
    "Kept",
    "LinearScorer",
    "ModelFormatError",
    "ModelSpec",
    "PolicyVerdict",
    "Purchase",
    "Ranks",
    "RuleBook",
    "RuleBundle",
    "RuleMemory",
    "RuleMode",
    "RuleStatus",
    "Score",
    "ScoreModel",
    "ScoreSpec",
    "Sent",
    "Snapshot",
    "Snapshots",
    "StateFormatError",
    "StoreProfile",
    "Tally",
    "TimestampPolicy",
    "TrainingRule",
    "Verdict",
    "VerifyReport",
    "WarroomError",
    "admit",
    "append",
    "apply",
    "apply_consent",
    "apply_timer",
    "assignee_key",
    "benefits",
    "decode_model",
    "deletion_refused",
    "encode_model",
    "expired",
    "explain",
    "explain_journeys",
    "features",
    "fit_state",
    "genesis",
    "granted",
    "intervention_id",
    "judge",
    "load_bundle",
    "mask_pii",
    "may_train",
    "micros",
    "missing_purposes",
    "next_deadline",
    "observe",
    "profile",
    "remember",
    "remember_snapshot",
    "score_snapshot",
    "settle_on_touchpoint",
    "settle_snapshots",
    "tally",
    "timestamp_problem",
    "verify",
    "visible_attributes",
]

if TYPE_CHECKING:
    from .scoring.codec import ModelFormatError
    from .scoring.codec import decode as decode_model
    from .scoring.codec import encode as encode_model
    from .scoring.learner import Example, ScoreModel, Snapshot, Snapshots
    from .scoring.learner import on_touchpoint as settle_on_touchpoint
    from .scoring.learner import remember as remember_snapshot
    from .scoring.learner import settle as settle_snapshots
    from .scoring.learner import snapshot as score_snapshot
    from .scoring.models import LinearScorer

_SCORING = {
    "ScoreModel": "ScoreModel",
    "Example": "Example",
    "Snapshot": "Snapshot",
    "Snapshots": "Snapshots",
    "remember_snapshot": "remember",
    "settle_snapshots": "settle",
    "score_snapshot": "snapshot",
    "settle_on_touchpoint": "on_touchpoint",
}
_SCORING_ELSEWHERE = {
    "LinearScorer": (".scoring.models", "LinearScorer"),
    "ModelFormatError": (".scoring.codec", "ModelFormatError"),
    "decode_model": (".scoring.codec", "decode"),
    "encode_model": (".scoring.codec", "encode"),
}
"""Declared names from engine.scoring.learner, imported on first use: River takes a
second and a half to import, and only a worker that scores needs it."""


def __getattr__(name: str) -> Any:
    elsewhere = _SCORING_ELSEWHERE.get(name)
    if elsewhere is not None:
        return getattr(importlib.import_module(elsewhere[0], __name__), elsewhere[1])
    attribute = _SCORING.get(name)
    if attribute is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(".scoring.learner", __name__), attribute)
