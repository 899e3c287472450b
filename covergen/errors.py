"""Exceptions of the covergen stages; the CLI turns them into messages and exit codes."""

from __future__ import annotations


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

    def describe(self) -> str:
        where = ": ".join(
            part for part in (self.pair and f"pair {self.pair!r}", self.field) if part
        )
        text = f"{where}: {self.message}" if where else self.message
        return f"{text}\n  → {self.hint}" if self.hint else text


class InputImageError(CovergenError):
    """An input image is missing, unreadable or unusable."""
