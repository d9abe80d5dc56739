"""Errors raised by the pure core.

WarroomError
└── EngineError
    ├── InvalidBundle         a bundle cannot be compiled as written (engine.bundle)
    ├── EvaluationError       a rule or journey raised while a touchpoint was evaluated
    ├── InvalidAuditEntry     an entry cannot be appended to an audit chain (engine.audit)
    └── StateFormatError      a stored customer state cannot be read (engine.memories)
"""

from __future__ import annotations


class WarroomError(Exception):
    """Root of every error Warroom raises on purpose."""


class EngineError(WarroomError):
    """The pure core was given something it cannot work with."""


class EvaluationError(EngineError):
    """A rule or journey raised while evaluating one customer's touchpoint or timer.

    The worker sends that touchpoint to the dead-letter topic (``processing_error``)
    and goes on with the rest of its batch; ``where`` names the rule or journey.
    """

    def __init__(self, where: str, cause: Exception) -> None:
        self.where = where
        self.cause = cause
        super().__init__(f"{where} raised {type(cause).__name__}: {cause}")


class StateFormatError(EngineError, ValueError):
    """A stored customer state (a changelog record) has a memory of an unknown shape;
    the message names the rule or journey, what was expected and what was found."""
