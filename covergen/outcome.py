"""What became of a pair and of a build: the statuses, and a painting's measured numbers.

Torch-free and dependency-free: the build, the executors, the run log, the reports and the
site all read these, so a status is spelled once and the quality numbers are summarised once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class PairStatus(StrEnum):
    """A pair's (or job's) outcome in one build; a StrEnum, so it is its own JSON text."""

    BUILT = "built"  # painted now
    REUSED = "reused"  # its painting was already in the cache
    FAILED = "failed"
    CANCELLED = "cancelled"  # stopped before it was painted and stored
    PLANNED = "planned"  # a dry run: it would be painted


# Outcomes that leave a painting in the cache; outcomes the run log keeps, in the order a
# build's summary counts them (a tuple: a set's order changes from one process to the next).
HAS_RESULT = frozenset({PairStatus.BUILT, PairStatus.REUSED})
RECORDED = tuple(s for s in PairStatus if s is not PairStatus.PLANNED)


class BuildStatus(StrEnum):
    """A whole build as the run log keeps it."""

    RUNNING = "running"
    FINISHED = "finished"
    INTERRUPTED = "interrupted"
    FAILED = "failed"  # it crashed (an error it did not expect)
    KILLED = "killed"  # found still "running" by the next build: it died without a word


@dataclass(frozen=True)
class Metrics:
    """A painting's measured numbers (``docs/quality.md``): what the judge said and what the
    engine chose. Read from the plain mapping that records carry, each number checked."""

    content_kept: float | None = None
    style_taken: float | None = None

    @classmethod
    def of(cls, recorded: Any) -> Metrics:
        """The metrics of a record's ``metrics`` mapping; anything else is no metrics."""
        if not isinstance(recorded, Mapping):
            return cls()
        return cls(_number(recorded.get("content_kept")), _number(recorded.get("style_taken")))

    @property
    def scored(self) -> bool:
        return self.content_kept is not None and self.style_taken is not None

    def summary(self, separator: str = " · ") -> str:
        """``content 0.62 · style 0.71``, or "" for a painting the judge did not score."""
        if not self.scored:
            return ""
        return f"content {self.content_kept:.2f}{separator}style {self.style_taken:.2f}"


def _number(value: Any) -> float | None:
    # bool is an int to Python, never a score.
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None
