"""Online scoring: a bundle's ``scoring:`` section, models by name, late labels, drift.

The section is compiled by :mod:`engine.scoring.spec` (no River import); models, learning
and the data-only model format live in :mod:`.models`, :mod:`.learner` and :mod:`.codec`
and are imported from there (importing River costs a second; bundles do not need it).
docs/scoring.md describes the language and how a worker wires this in.
"""

from __future__ import annotations

from .spec import DriftSpec, ModelSpec, ScoreSpec, ScoringSpec, Timeout, compile_scoring

__all__ = ["DriftSpec", "ModelSpec", "ScoreSpec", "ScoringSpec", "Timeout", "compile_scoring"]
