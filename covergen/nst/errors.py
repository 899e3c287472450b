"""Exceptions raised by the engine; callers add the pair's identity when they catch them."""

from __future__ import annotations

from ..errors import Problem  # torch-free, importing nothing: as ..atomic


class EngineError(Exception):
    """Base class of every error the engine raises on purpose."""


class ParameterError(EngineError, ValueError):
    """A parameter has a value the engine cannot use.

    ``field`` names the parameter, ``hint`` says what to do instead.
    """

    def __init__(self, field: str, message: str, hint: str = ""):
        self.field = field
        self.message = message
        self.hint = hint
        super().__init__(f"{field}: {message}" + (f" ({hint})" if hint else ""))

    @property
    def problem(self) -> Problem:
        return Problem(self.message, self.field, hint=self.hint)

    def describe(self) -> str:
        return self.problem.describe()


class WeightsError(EngineError):
    """No usable VGG weights: the message says which sources were tried and what to run."""


class Cancelled(EngineError):
    """The caller asked the engine to stop; nothing partial is returned."""
