"""`covergen clean`: what the catalog still needs is kept, each store collects the rest.

What a pair needs is what a build of the catalog would plan (a dry run under each of its
profiles) and the paintings its pairs show (``pairstates``); the stores themselves remove
what no one keeps (``store.collect``). While the run log cannot tell what is in use (records
waiting in its journal, or no log beside paintings), nothing is removed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .catalog import Catalog
from .errors import CovergenError
from .locks import cache_lock
from .outcome import PairStatus
from .runlog import RunLog, RunRecord
from .store import cache_paths
from .store.results import ResultRecord, ResultStore


def _check_log_complete(runlog: RunLog, results_root: Path) -> None:
    """Refuse to clean while the run log cannot tell what is in use: records still waiting
    in its journal (a full disk), or no log at all beside results."""
    if runlog.journal_path.is_file():
        with runlog.held():  # adds the journal to the log when the disk has room again
            pass
        if runlog.journaled:
            raise CovergenError(
                f"the run log has records waiting in {runlog.journal_path} (the disk was "
                "full when they were made), so what is in use cannot be told yet",
                field="cache",
                hint="free some space and build, then clean",
            )
    if not runlog.path.is_file() and results_root.is_dir() and any(results_root.iterdir()):
        raise CovergenError(
            f"there is no run log ({runlog.path}) beside the paintings in {results_root}, so "
            "what other catalogs or earlier builds use cannot be told",
            field="cache",
            hint="build every catalog that uses this cache first; then clean",
        )


def _planned(catalog: Catalog, cache_dir: Path) -> list[tuple[str | None, str | None, str | None]]:
    """(key, photo hash, cover hash) of every job a build of ``catalog`` would plan, under
    each of its profiles: a dry run, which fetches, writes and paints nothing."""
    from .build import BuildOptions, build

    found = []
    for profile in catalog.all_profiles:
        options = BuildOptions(
            catalog=catalog.path, cache_dir=cache_dir, profile=profile, dry_run=True,
            render_site=False,
        )  # fmt: skip
        for outcome in build(options).outcomes:
            if outcome.status in (PairStatus.PLANNED, PairStatus.REUSED):
                found.append((outcome.key, outcome.photo, outcome.cover))
    return found


@dataclass(frozen=True)
class CleanReport:
    results_removed: int
    images_removed: int
    features_removed: bool
    bytes_freed: int
    # Pairs the run log knows but the catalog does not list, whose results were kept
    # because the catalog has problems (a broken pair may be one of them, under another id).
    kept_unlisted: int = 0
    derived_removed: int = 0  # the site's images of sources and paintings no longer kept


def clean(catalog: Catalog, cache_dir: Path, *, downloads: bool = False,
          features: bool = False, dry_run: bool = False) -> CleanReport:  # fmt: skip
    """Remove results no pair refers to, and the site's images of what is no longer kept
    (and, when asked, unused downloads and features), holding the cache's lock.

    A result is referred to when it is the latest build result of a pair in the catalog, the
    latest successful one (shown while a later attempt failed), or the latest rerun of such a
    pair (so an experiment survives until the next build); or the same of any pair of another
    catalog sharing this cache. While the catalog has a pair it cannot read, nothing of a
    pair it does not list is removed: a typo in a key can change a pair's id (``bnd:`` for
    ``band:`` leaves the id to the album), so the broken pair may be any of them.
    """
    # The stores' modules load here: `list` and `status` need only the results.
    from .site.images import ImageDeriver
    from .sources import ImageStore
    from .store.features import FeatureCache

    paths = cache_paths(cache_dir)
    runlog = RunLog(paths["runlog"], catalog.path)
    ids = {pair.id for pair in catalog.pairs}
    with cache_lock(cache_dir):
        _check_log_complete(runlog, paths["results"])
        # What the next build of this catalog would reuse, whatever the run log says (an id
        # that changed and changed back, a log that lost rows): kept, under every profile.
        held = _planned(catalog, cache_dir)
        # The latest build, the latest of any kind and the latest success, here and elsewhere.
        records: list[RunRecord] = []
        for kind, succeeded in (("build", False), (None, False), ("build", True)):
            latest = runlog.latest(kind, succeeded=succeeded)
            records += [record for pair, record in latest.items() if pair in ids]
            records += runlog.latest_elsewhere(kind, succeeded=succeeded)
        known = runlog.latest(None)
        unlisted = sorted(pair for pair in known if pair not in ids) if catalog.problems else []
        for pair in unlisted:
            records += runlog.history(pair, limit=None)
        held += [(record.key, record.photo, record.cover) for record in records]
        keep = {key for key, _, _ in held if key}
        inputs = {sha for _, photo, cover in held for sha in (photo, cover) if sha}
        # Each store removes what is not kept, by its own layout: the results no record
        # refers to, the downloads no input is, the site's images of neither, the features.
        results = ResultStore(paths["results"], read_only=dry_run)
        # Records only: the dry run above read and verified the paintings it keeps.
        records = (results.store.get_record(f"{k}.json", ResultRecord) for k in sorted(keep))
        paintings = {r.sha256 for r in records if r is not None}
        deriver = ImageDeriver(paths["derived"])
        shown = {deriver.key(sha) for sha in inputs} | {deriver.key(sha, True) for sha in paintings}
        gone = results.store.collect(keep, dry_run=dry_run)
        images = ImageStore(paths["images"]).collect(inputs, dry_run=dry_run) if downloads else None
        derived = deriver.collect(shown, dry_run=dry_run)
        cleared = FeatureCache(paths["features"]).clear(dry_run=dry_run) if features else None
    freed = sum(c.bytes for c in (gone, images, derived, cleared) if c is not None)
    removed = images.entries if images else 0
    return CleanReport(
        gone.entries, removed, cleared is not None, freed, len(unlisted), derived.entries
    )
