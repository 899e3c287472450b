"""What is built and what can go: the logic of `covergen list`, `status` and `clean`."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from .catalog import SLUG, Catalog
from .errors import CovergenError
from .results import ResultStore
from .runlog import RunLog, RunRecord


@dataclass(frozen=True)
class PairState:
    pair: str
    title: str
    state: str  # built, reused (= built), failed, cancelled, invalid, new
    record: RunRecord | None
    result: Path | None
    overrides: tuple[str, ...]


def pair_states(catalog: Catalog, runlog: RunLog, results: ResultStore) -> list[PairState]:
    """Each catalog pair (and each invalid one) with its latest build record, in catalog order."""
    latest = runlog.latest()
    states = []
    for pair in catalog.pairs:
        record = latest.get(pair.id)
        result = None
        if record is None:
            state = "new"
        elif record.status in ("built", "reused") and record.key and results.exists(record.key):
            state, result = "built", results.image_path(record.key)
        elif record.status in ("built", "reused"):
            state = "missing"  # the result was cleaned or damaged since
        else:
            state = record.status
        states.append(PairState(pair.id, pair.title, state, record, result,
                                tuple(sorted(pair.overrides))))  # fmt: skip
    for problem in catalog.problems:
        states.append(PairState(problem.pair or "?", "", "invalid", None, None, ()))
    return states


@dataclass(frozen=True)
class CleanReport:
    results_removed: int
    images_removed: int
    features_removed: bool
    bytes_freed: int


def clean(catalog: Catalog, cache_dir: Path, *, downloads: bool = False,
          features: bool = False, dry_run: bool = False) -> CleanReport:  # fmt: skip
    """Remove results no pair refers to (and, when asked, unused downloads and features).

    A result is referred to when it is the latest build result of a pair in the catalog, the
    latest successful one (shown while a later attempt failed), or the latest rerun of such a
    pair (so an experiment survives until the next build). A pair the catalog cannot read
    right now (a typo in its overrides) keeps everything it ever used: it is broken, not gone.
    """
    from .build import cache_paths

    paths = cache_paths(cache_dir)
    runlog = RunLog(paths["runlog"])
    unreadable = [p for p in catalog.problems if not p.pair or not SLUG.match(p.pair)]
    if unreadable:
        raise CovergenError(
            f"{len(unreadable)} pair(s) of the catalog have no usable id, so what they built "
            f"cannot be told from garbage: {unreadable[0].describe().splitlines()[0]}",
            field="catalog",
            hint="fix the catalog (`covergen check`), then clean",
        )
    ids = {pair.id for pair in catalog.pairs}
    broken = {p.pair for p in catalog.problems if p.pair}
    keep: set[str] = set()
    inputs: set[str] = set()

    def hold(record: RunRecord) -> None:
        if record.key:
            keep.add(record.key)
        inputs.update(h for h in (record.photo, record.cover) if h)

    for kind in ("build", None):
        for pair, record in runlog.latest(kind).items():
            if pair in ids:
                hold(record)
    for pair, record in runlog.latest("build", succeeded=True).items():
        if pair in ids:
            hold(record)
    for pair in sorted(broken):
        for record in runlog.history(pair, limit=None):
            hold(record)
    results = ResultStore(paths["results"])
    freed = removed = 0
    for key in list(results.keys()):
        if key in keep:
            continue
        for path in (results.image_path(key), results.image_path(key).with_suffix(".json")):
            if path.exists():
                freed += path.stat().st_size
        removed += 1
        if not dry_run:
            results.remove(key)
    images_removed = 0
    if downloads and paths["images"].exists():
        for path in sorted((paths["images"] / "sha256").glob("*/*")):
            if path.name.split(".")[0] not in inputs:
                freed += path.stat().st_size
                images_removed += 1
                if not dry_run:
                    path.unlink()
    features_removed = False
    if features and paths["features"].exists():
        freed += sum(p.stat().st_size for p in paths["features"].rglob("*") if p.is_file())
        features_removed = True
        if not dry_run:
            shutil.rmtree(paths["features"])
    return CleanReport(removed, images_removed, features_removed, freed)
