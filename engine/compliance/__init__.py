"""Compliance before a draft leaves: policies compiled from bundles, judged in one pass.

- :func:`judge` runs every policy on a :class:`Draft` and returns a :class:`GateDecision`:
  each policy's :class:`PolicyVerdict` (its :class:`Finding` list, missing topics and
  approved :class:`Template` suggestions) and the :class:`Verdict` the caller is told.
- :func:`mask_pii` masks resident IDs, mobile numbers, bank cards and emails in any text.
- A :class:`CompiledPolicy` comes from the ``policy:`` section of a bundle
  (``load_bundle(text).policy``); the language is in docs/compliance.md.
"""

from __future__ import annotations

from .gate import judge, policy_returned, returned_verdict
from .matching import CompiledPolicy, PolicyMode
from .model import (
    DRAFT_KINDS,
    Draft,
    Finding,
    GateDecision,
    PolicyVerdict,
    Template,
    TrainingRule,
    Verdict,
)
from .pii import DETECTORS, find_personal_data, mask_pii

__all__ = [
    "DETECTORS",
    "DRAFT_KINDS",
    "CompiledPolicy",
    "Draft",
    "Finding",
    "GateDecision",
    "PolicyMode",
    "PolicyVerdict",
    "Template",
    "TrainingRule",
    "Verdict",
    "find_personal_data",
    "judge",
    "mask_pii",
    "policy_returned",
    "returned_verdict",
]
