"""What is built: each pair's state, for `list`, `status`, the site and `clean`.

One vocabulary for a pair's state, used everywhere:

- ``new``: never attempted;
- ``built``: its latest attempt left a result, which verifies;
- ``failed`` / ``cancelled``: its latest attempt did not finish;
- ``missing``: its latest result has gone from the store (cleaned, or found damaged);
- ``invalid``: the catalog cannot read the pair right now.

Apart from the state, a pair has the painting it *shows*: the latest result that verifies,
even when a later attempt failed — a photo briefly missing must not take a finished
painting off the site.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .catalog import SLUG, Catalog, Pair, Problem
from .errors import CovergenError
from .outcome import HAS_RESULT
from .runlog import RunLog, RunRecord
from .store import cache_paths
from .store.results import ResultRecord, ResultStore

STATES = ("new", "built", "failed", "cancelled", "missing", "invalid")


@dataclass(frozen=True)
class PairState:
    """A pair with what the run log and the result store know of it."""

    id: str
    state: str  # one of STATES
    pair: Pair | None  # None when invalid
    record: RunRecord | None  # the latest build record
    result: ResultRecord | None  # the painting shown (verified), if any
    result_path: Path | None
    shown: RunRecord | None  # the record that made ``result``
    problem: Problem | None = None

    @property
    def title(self) -> str:
        return self.pair.title if self.pair else ""

    @property
    def overrides(self) -> tuple[str, ...]:
        return tuple(sorted(self.pair.overrides)) if self.pair else ()

    @property
    def photo_sha256(self) -> str | None:
        if self.result:
            return self.result.photo_sha256
        return self.record.photo if self.record else None

    @property
    def cover_sha256(self) -> str | None:
        if self.result:
            return self.result.cover_sha256
        return self.record.cover if self.record else None

    @property
    def stale(self) -> bool:
        """Shows a painting although its latest attempt did not give one."""
        return self.result is not None and self.state != "built"

    @property
    def metrics(self) -> Mapping[str, Any]:
        """Quality scores and automatic choices of the painting shown (or the latest run)."""
        if self.result is not None and self.result.metrics:
            return self.result.metrics
        return self.record.metrics if self.record else {}

    @property
    def note(self) -> str:
        """The first line of why the latest attempt failed, without the pair's own name."""
        if self.problem is not None:
            return self.problem.describe().splitlines()[0]
        if self.record is None or not self.record.error:
            return ""
        return self.record.error.splitlines()[0].removeprefix(f"pair {self.id!r}: ")


def pair_states(catalog: Catalog, runlog: RunLog, results: ResultStore) -> list[PairState]:
    """Each catalog pair (then each invalid one) with its state, in catalog order."""
    latest = runlog.latest("build")
    succeeded = runlog.latest("build", succeeded=True)
    # Each result read and verified once, however many pairs share it.
    verified = functools.cache(results.get)
    states = []
    for pair in catalog.pairs:
        if not SLUG.match(pair.id):
            # Ids become file names; the catalog checks them, but a Pair made by hand is not.
            raise CovergenError(f"pair id {pair.id!r} is not a slug", field="id")
        record = latest.get(pair.id)
        result = path = shown = None
        for candidate in (record, succeeded.get(pair.id)):
            if candidate is None or candidate.status not in HAS_RESULT:
                continue
            # Results are addressed by content: two pairs with the same inputs and
            # parameters share one, so the record's pair name is not checked.
            found = verified(candidate.key) if candidate.key else None
            if found is not None:
                result, path, shown = found, results.image_path(found.key), candidate
                break
        if record is None:
            state = "new"
        elif record.status in HAS_RESULT:
            state = "built" if shown is record else "missing"
        else:
            state = record.status
        states.append(PairState(pair.id, state, pair, record, result, path, shown))
    return states + [
        PairState(problem.pair or "?", "invalid", None, None, None, None, None, problem)
        for problem in catalog.problems
    ]


def load_states(catalog: Catalog, cache_dir: Path) -> tuple[RunLog, list[PairState]]:
    """The run log of ``cache_dir`` and every pair's state; reads, never writes."""
    paths = cache_paths(cache_dir)
    runlog = RunLog(paths["runlog"], catalog.path)
    results = ResultStore(paths["results"], read_only=True)
    return runlog, pair_states(catalog, runlog, results)
