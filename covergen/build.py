"""`covergen build`: catalog -> sources -> plan -> scheduler -> results -> site.

Every stage is a function of its own module; this one wires them, records every pair's
outcome in the run log, and keeps going when a single pair fails.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from .atomic import remove_leftovers
from .catalog import PROFILE_ENV, Catalog, Pair, load_catalog
from .errors import CovergenError
from .featurecache import FeatureCache
from .locks import cache_lock
from .nst import StyleParams
from .nst.weights import load_weights, resolve_flavour
from .plan import Job, Plan, PlannedPair, plan_jobs
from .results import ResultStore
from .runlog import RunLog
from .scheduler import Executor, JobOutcome, LocalExecutor, SchedulerEvents, local_devices
from .sources import FetchSettings, ImageStore, StoredImage, decode_image


@dataclass(frozen=True)
class BuildOptions:
    catalog: Path = Path("catalog.yaml")
    cache_dir: Path = Path("cache")
    site_dir: Path = Path("site")
    only: tuple[str, ...] = ()
    force: bool = False
    profile: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)  # --set values of a rerun
    kind: str = "build"  # build, or rerun (kept out of the site)
    device: str = "auto"
    precision: str = "auto"
    max_batch: int = 4
    offline: bool = False
    render_site: bool = True
    docs_dir: Path | None = None  # a built user guide, published under site/docs/
    dry_run: bool = False
    # Limits and network behaviour of the sources (sizes, timeouts, retries, allow_outside);
    # ``offline`` above is added to them.
    fetch: FetchSettings = field(default_factory=FetchSettings)


@dataclass(frozen=True)
class PairOutcome:
    pair: str
    status: str  # built, reused, failed, cancelled, planned (dry run)
    key: str | None = None
    seconds: float | None = None
    device: str | None = None
    iterations: int | None = None
    error: str | None = None
    result: Path | None = None


@dataclass
class BuildSummary:
    outcomes: list[PairOutcome] = field(default_factory=list)
    seconds: float = 0.0
    interrupted: bool = False
    profile: str | None = None
    devices: list[str] = field(default_factory=list)
    site: Any = None  # SiteReport when the site was rendered

    def count(self, status: str) -> int:
        return sum(1 for o in self.outcomes if o.status == status)

    @property
    def failed(self) -> list[PairOutcome]:
        return [o for o in self.outcomes if o.status == "failed"]


class BuildEvents(SchedulerEvents, Protocol):
    """What the CLI's display hears of a build, on top of the scheduler's events."""

    def stage(self, text: str) -> None: ...

    def planned(self, to_run: Sequence[Job], reused: int, failed: int) -> None: ...

    def pair_done(self, outcome: PairOutcome) -> None: ...


def cache_paths(cache_dir: Path) -> dict[str, Path]:
    return {
        "images": cache_dir / "images",
        "results": cache_dir / "results",
        "features": cache_dir / "features",
        "derived": cache_dir / "derived",
        "runlog": cache_dir / "runs.sqlite",
        "lock": cache_dir / "build.lock",
    }


def build(
    options: BuildOptions,
    events: BuildEvents | None = None,
    executor: Executor | None = None,
    stop: threading.Event | None = None,
) -> BuildSummary:
    """Run the pipeline for the catalog's pairs (or ``options.only``)."""
    start = time.perf_counter()
    check_folders(options)
    paths = cache_paths(options.cache_dir)
    stop = stop or threading.Event()
    summary = BuildSummary()
    with cache_lock(options.cache_dir):
        # Temporary files of a writer that was killed (SIGKILL, power loss) are never read;
        # only a lock holder may remove them, as no one else writes these stores.
        for store_name in ("images", "results", "features", "derived"):
            remove_leftovers(paths[store_name])
        catalog = load_catalog(options.catalog, strict=False)
        selected = _select(catalog, options.only)
        devices = local_devices(options.device)
        summary.devices = devices
        device_type = devices[0].split(":")[0]
        profile = catalog.choose_profile(
            options.profile or os.environ.get(PROFILE_ENV), device_type
        )
        summary.profile = profile
        runlog = RunLog(paths["runlog"])
        runlog.close_abandoned()  # under the lock, a "running" build is a dead one
        results = ResultStore(paths["results"])
        build_id = 0 if options.dry_run else runlog.start_build(options.kind, profile)

        def finish(outcome: PairOutcome, **log: Any) -> None:
            summary.outcomes.append(outcome)
            if not options.dry_run and outcome.status != "planned":
                runlog.record(
                    build_id,
                    outcome.pair,
                    outcome.status,
                    key=outcome.key,
                    device=outcome.device,
                    iterations=outcome.iterations,
                    seconds=outcome.seconds,
                    error=outcome.error,
                    **log,
                )
            if events is not None:
                events.pair_done(outcome)

        wanted = set(options.only) if options.only else None
        for problem in catalog.problems:
            if wanted is None or problem.pair in wanted:
                finish(PairOutcome(problem.pair or "?", "failed", error=problem.describe()))

        if events:
            events.stage(f"fetching images for {len(selected)} pairs")
        fetch = dataclasses.replace(options.fetch, offline=options.fetch.offline or options.offline)
        store = ImageStore(paths["images"], fetch)
        planned: list[PlannedPair] = []
        inputs: dict[str, tuple[StoredImage, StoredImage]] = {}
        for pair in selected:
            try:
                photo = store.fetch(pair.photo.src, catalog.root, pair=pair.id, field="photo.src")
                cover = store.fetch(pair.cover.src, catalog.root, pair=pair.id, field="cover.src")
                params = catalog.params_for(pair, profile, options.extra)
            except CovergenError as exc:
                finish(PairOutcome(pair.id, "failed", error=exc.describe()))
                continue
            inputs[pair.id] = (photo, cover)
            planned.append(
                PlannedPair(
                    pair=pair.id,
                    label=pair.title,
                    photo_sha256=photo.sha256,
                    photo_path=photo.path,
                    photo_size=(photo.width, photo.height),
                    cover_sha256=cover.sha256,
                    cover_path=cover.path,
                    params=params,
                    extra=dict(options.extra),
                )
            )

        plan = _plan(planned, results, options, finish)
        for job, record in plan.reused:
            finish(
                PairOutcome(
                    job.pair,
                    "reused",
                    key=job.key,
                    seconds=record.seconds,
                    device=record.device,
                    iterations=record.iterations,
                    result=results.image_path(job.key),
                ),
                photo=job.photo_sha256,
                cover=job.cover_sha256,
                losses=record.losses,
                params=record.params,
            )
        if events:
            events.planned(plan.to_run, len(plan.reused), summary.count("failed"))
        if options.dry_run:
            for job in plan.to_run:
                finish(PairOutcome(job.pair, "planned", key=job.key))
            summary.seconds = time.perf_counter() - start
            return summary

        def collect(outcome: JobOutcome) -> None:
            job = outcome.job
            log = {
                "photo": job.photo_sha256,
                "cover": job.cover_sha256,
                "params": job.params.to_dict(),
                "losses": outcome.losses,
            }
            if outcome.status == "built" and outcome.image is not None:
                try:
                    results.put(
                        outcome.image,
                        {
                            **job.record_fields(),
                            "iterations": outcome.iterations,
                            "seconds": outcome.seconds,
                            "device": outcome.device,
                            "losses": outcome.losses,
                        },
                    )
                except (OSError, KeyboardInterrupt) as exc:
                    # A full disk fails this pair alone; Ctrl-C while storing cancels it. The
                    # atomic write left nothing half-written either way, and the run log
                    # says why the painting is missing.
                    interrupted = isinstance(exc, KeyboardInterrupt)
                    finish(
                        PairOutcome(
                            job.pair,
                            "cancelled" if interrupted else "failed",
                            key=job.key,
                            device=outcome.device,
                            seconds=outcome.seconds,
                            iterations=outcome.iterations,
                            error=_store_error(exc, job.pair, results.root),
                        ),
                        **log,
                    )
                    if interrupted:
                        raise
                    return
                finish(
                    PairOutcome(
                        job.pair,
                        "built",
                        key=job.key,
                        seconds=outcome.seconds,
                        device=outcome.device,
                        iterations=outcome.iterations,
                        result=results.image_path(job.key),
                    ),
                    **log,
                )
            else:
                finish(
                    PairOutcome(
                        job.pair,
                        outcome.status,
                        key=job.key,
                        device=outcome.device,
                        seconds=outcome.seconds or None,
                        error=outcome.error,
                    ),
                    **log,
                )

        if plan.to_run:
            if events:
                events.stage(f"painting {len(plan.to_run)} pairs on {', '.join(devices)}")
            executor = executor or LocalExecutor(
                load_image=_load_stored,
                devices=devices,
                precision=options.precision,
                max_batch=options.max_batch,
                cache_dir=options.cache_dir,
                target_cache=FeatureCache(paths["features"]),
            )
            completed = executor.run(plan.to_run, collect, events, stop)
            summary.interrupted = not completed

        counts = {s: summary.count(s) for s in ("built", "reused", "failed", "cancelled")}
        if options.render_site and options.kind == "build" and not summary.interrupted:
            if events:
                events.stage(f"rendering the site into {options.site_dir}")
            try:
                summary.site = _render_site(catalog, runlog, results, store, options)
            except CovergenError:
                # The previous site stays; the pairs' results are kept and recorded.
                runlog.finish_build(build_id, "failed", counts)
                raise
        status = "interrupted" if summary.interrupted else "finished"
        summary.seconds = time.perf_counter() - start
        runlog.finish_build(build_id, status, counts)
    return summary


def check_folders(options: BuildOptions) -> None:
    """Refuse folder choices that would destroy or publish one another."""
    cache, site = options.cache_dir.resolve(), options.site_dir.resolve()
    if cache == site or cache.is_relative_to(site):
        raise CovergenError(
            f"the cache {options.cache_dir} lies inside the site folder {options.site_dir}",
            field="cache",
            hint="every build replaces the site folder whole (the cache would be wiped) and "
            "publishing would send it out: choose a cache folder outside the site",
        )


def _store_error(exc: BaseException, pair: str, root: Path) -> str:
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted while its result was being stored; it is painted again next time"
    strerror = getattr(exc, "strerror", None) or str(exc)
    return CovergenError(
        f"the painting could not be stored in {root} ({strerror})",
        pair=pair,
        field="cache",
        hint="free some space (or fix the permissions) there, then build again",
    ).describe()


def _select(catalog: Catalog, only: Sequence[str]) -> list[Pair]:
    if not only:
        return list(catalog.pairs)
    invalid = {p.pair for p in catalog.problems}
    return [catalog.pair(pair_id) for pair_id in only if pair_id not in invalid]


def _plan(
    planned: list[PlannedPair], results: ResultStore, options: BuildOptions, finish: Any
) -> Plan:
    """Plan the fetched pairs; a pair whose weights cannot be loaded fails alone."""
    identities: dict[tuple[str, str], str] = {}

    def identity(params: StyleParams) -> str:
        key = (params.network, resolve_flavour(params.network, params.weights))
        if key not in identities:
            identities[key] = load_weights(*key, cache_dir=options.cache_dir).identity
        return identities[key]

    plan = Plan()
    for item in planned:
        try:
            part = plan_jobs([item], results, identity, force=options.force)
        except Exception as exc:  # WeightsError and friends: this pair cannot run
            describe = getattr(exc, "describe", None)
            finish(PairOutcome(item.pair, "failed", error=describe() if describe else str(exc)))
            continue
        plan.to_run += part.to_run
        plan.reused += part.reused
    return plan


def _render_site(
    catalog: Catalog, runlog: RunLog, results: ResultStore, store: ImageStore, options: BuildOptions
) -> Any:
    from .site import render_site

    def find(sha256: str) -> Path | None:
        try:
            return store.path_for(sha256)
        except (FileNotFoundError, ValueError):
            return None

    extra = {}
    if options.docs_dir is not None:
        if not (options.docs_dir / "index.html").is_file():
            raise CovergenError(
                f"no built user guide in {options.docs_dir}",
                field="docs_dir",
                hint="build it first: make docs",
            )
        extra["docs"] = options.docs_dir
    return render_site(
        catalog,
        runlog,
        results,
        find,
        options.site_dir,
        cache_dir=options.cache_dir,
        extra_dirs=extra,
    )


def _load_stored(path: Path) -> Any:
    """Decode an input from the image store (it was verified when it entered the store)."""
    return decode_image(path.read_bytes(), src=path.name)
