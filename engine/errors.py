"""Errors raised by the pure core.

WarroomError
└── EngineError
    └── RuleDefinitionError   a rule cannot be built as written
"""

from __future__ import annotations


class WarroomError(Exception):
    """Root of every error Warroom raises on purpose."""


class EngineError(WarroomError):
    """The pure core was given something it cannot work with."""
