"""Problems the user can fix, as values and as exceptions; the CLI turns them into messages
and exit codes. Torch-free, importing nothing of ours: the engine's errors stand on it too.

``Problem`` is the one "what, where, what to do" of the code base: a catalog check lists
many of them at once; ``CovergenError`` (and the engine's ``ParameterError``) raise one.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One thing wrong, where (line, pair, field) and what to do about it.

    ``index`` is the position of the pair it concerns in the catalog's `pairs:` (None for
    the file's other parts), so that a pair is left out by position: two pairs may claim
    one id.
    """

    message: str
    field: str = ""
    pair: str | None = None
    line: int | None = None
    hint: str = ""
    index: int | None = None

    def describe(self) -> str:
        where = [
            f"line {self.line}" if self.line else "",
            f"pair {self.pair!r}" if self.pair else "",
            self.field,
        ]
        text = ": ".join([part for part in where if part] + [self.message])
        return f"{text}\n  → {self.hint}" if self.hint else text


class CovergenError(Exception):
    """A problem the user can fix: what went wrong, where (pair, field) and what to do."""

    def __init__(
        self, message: str, *, pair: str | None = None, field: str | None = None, hint: str = ""
    ):
        self.message = message
        self.pair = pair
        self.field = field
        self.hint = hint
        super().__init__(self.describe())

    @property
    def problem(self) -> Problem:
        return Problem(self.message, self.field or "", self.pair, hint=self.hint)

    def describe(self) -> str:
        return self.problem.describe()


class InputImageError(CovergenError):
    """An input image is missing, unreadable or unusable."""
