"""The pre-send gate: every running policy's verdict on a draft, and what the caller is told."""

from __future__ import annotations

from collections.abc import Sequence

from .matching import CompiledPolicy, PolicyMode, evaluate
from .model import Draft, GateDecision, PolicyVerdict, Verdict
from .normalise import Normalised, has_symbol_stand_ins
from .pii import find_personal_data, mask


def judge(policies: Sequence[CompiledPolicy], draft: Draft) -> GateDecision:
    """Judge ``draft`` against every policy in ``policies``.

    Each policy decides on its own (:attr:`PolicyVerdict.verdict`); its mode then says
    what the caller sees of it: ``enforce`` as decided, ``notify`` with confirm and block
    turned into remind, ``test`` not at all. The caller is told the strictest of those,
    allow when there are no policies.
    """
    personal = find_personal_data(draft.text)
    masked = mask(draft.text, personal)
    if not policies:
        return GateDecision(Verdict.ALLOW, (), masked)
    text = Normalised(draft.text)
    symbols = (
        Normalised(draft.text, symbols_as_separators=True)
        if has_symbol_stand_ins(draft.text)
        else None
    )
    verdicts = tuple(
        evaluate(policy, draft, text, personal, masked, symbols) for policy in policies
    )
    returned = Verdict.strictest(
        [returned_verdict(v.verdict, PolicyMode(v.mode)) for v in verdicts]
    )
    return GateDecision(returned, verdicts, masked)


def returned_verdict(decided: Verdict, mode: PolicyMode) -> Verdict:
    """What the caller is told of a policy's verdict in ``mode``."""
    if mode is PolicyMode.TEST:
        return Verdict.ALLOW
    if mode is PolicyMode.NOTIFY and decided.rank > Verdict.REMIND.rank:
        return Verdict.REMIND
    return decided


def policy_returned(verdict: PolicyVerdict) -> Verdict:
    """What the caller was told of ``verdict`` (after its policy's mode)."""
    return returned_verdict(verdict.verdict, PolicyMode(verdict.mode))
