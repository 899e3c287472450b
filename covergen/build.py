"""`covergen build`: catalog -> sources -> plan -> executors -> results -> site.

Every stage is a function of its own module; this one wires them, in the order the steps
of ``_Build.run`` read top to bottom, records every pair's outcome in the run log, and
keeps going when a single pair fails. A dry run takes the same steps without writing
anything: no lock, no run log, no download, nothing stored, nothing painted.
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
from .executors import (
    Executor,
    ExecutorSettings,
    JobOutcome,
    SchedulerEvents,
    make_executor,
)
from .locks import cache_lock
from .nst import EngineError, ParameterError, StyleParams, device_kind
from .nst.params import check_image_sizes
from .nst.runtime import device_family
from .nst.weightsources import choose_source
from .outcome import RECORDED, BuildStatus, PairStatus
from .plaindata import plain
from .plan import ImageInput, Job, Plan, make_job, plan_jobs
from .precision import resolve_precision
from .runlog import RunLog
from .safetext import counted
from .sources import FetchSettings, ImageStore, NotFetchedYet
from .store import cache_paths
from .store.results import ResultRecord, ResultStore


@dataclass(frozen=True)
class BuildOptions:
    catalog: Path = Path("catalog.yaml")
    cache_dir: Path = Path("cache")
    site_dir: Path = Path("site")
    only: tuple[str, ...] = ()
    force: bool = False
    profile: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)  # --set values of a rerun
    # A sweep: one job per variant (each a mapping of parameter values) for every pair.
    variants: tuple[Mapping[str, Any], ...] = ()
    kind: str = "build"  # build, rerun or sweep (only builds make the site)
    device: str = "auto"
    precision: str = "auto"
    max_batch: int = 4
    offline: bool = False  # no downloads at all: images come from the store, weights too
    render_site: bool = True
    docs_dir: Path | None = None  # a built user guide, published under site/docs/
    dry_run: bool = False
    # local, process or ray (see executors.make_executor); None: the catalog's build settings
    executor: str | None = None
    ray_address: str | None = None  # None: the catalog's (none there: a local Ray instance)
    # Limits and network behaviour of the sources (sizes, timeouts, retries, allow_outside);
    # ``offline`` above is added to them.
    fetch: FetchSettings = field(default_factory=FetchSettings)


@dataclass(frozen=True)
class PairOutcome:
    """What a build did with one pair; also what the run log records of it."""

    pair: str
    status: str  # built, reused, failed, cancelled, planned (dry run)
    key: str | None = None
    photo: str | None = None
    cover: str | None = None
    seconds: float | None = None
    device: str | None = None
    iterations: int | None = None
    losses: Mapping[str, float] = field(default_factory=dict)
    params: Mapping[str, Any] = field(default_factory=dict)
    metrics: Mapping[str, Any] = field(default_factory=dict)
    error: str | None = None
    result: Path | None = None

    @classmethod
    def of_job(cls, job: Job, status: str, **values: Any) -> PairOutcome:
        return cls(
            pair=job.pair,
            status=status,
            key=job.key,
            photo=job.photo.sha256,
            cover=job.cover.sha256,
            params=job.params.to_dict(),
            **values,
        )

    def log_values(self) -> dict[str, Any]:
        """The fields the run log keeps."""
        values = plain(self)
        del values["result"]
        return values


@dataclass
class BuildSummary:
    outcomes: list[PairOutcome] = field(default_factory=list)
    seconds: float = 0.0
    interrupted: bool = False
    profile: str | None = None
    devices: list[str] = field(default_factory=list)
    site: Any = None  # SiteReport when the site was rendered
    notes: list[str] = field(default_factory=list)  # said after the summary (a full disk…)
    estimate: float | None = None  # seconds the painting was expected to take

    def count(self, status: str) -> int:
        return sum(1 for o in self.outcomes if o.status == status)

    def counts(self) -> dict[str, int]:
        return {str(s): self.count(s) for s in RECORDED}

    @property
    def failed(self) -> list[PairOutcome]:
        return [o for o in self.outcomes if o.status == "failed"]


class BuildEvents(SchedulerEvents, Protocol):
    """What the CLI's display hears of a build, on top of the executors' events."""

    def stage(self, text: str) -> None: ...

    def planned(self, to_run: Sequence[Job], reused: int, failed: int) -> None: ...

    def pair_done(self, outcome: PairOutcome) -> None: ...


def build(
    options: BuildOptions,
    events: BuildEvents | None = None,
    executor: Executor | None = None,
    stop: threading.Event | None = None,
) -> BuildSummary:
    """Run the pipeline for the catalog's pairs (or ``options.only``)."""
    check_folders(options)
    run = _Build(options, events, stop or threading.Event())
    if options.dry_run:
        return run.dry()
    with cache_lock(options.cache_dir), run.runlog.held():
        return run.run(executor)


def render_only(options: BuildOptions) -> Any:
    """Render the site from what is already painted (no fetching, no painting): what
    `covergen serve --watch` does when the catalog or the templates change. Returns the
    SiteReport; our errors as usual (a broken catalog is refused whole)."""
    check_folders(options)
    run = _Build(options, None, threading.Event())
    catalog = load_catalog(options.catalog)
    run._render_site(catalog)
    return run.summary.site


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
    if options.docs_dir is None or not options.render_site:
        return
    docs = options.docs_dir.resolve()
    if docs.is_relative_to(site) or site.is_relative_to(docs):
        raise CovergenError(
            f"the user guide {options.docs_dir} and the site folder {options.site_dir} lie "
            "one inside the other",
            field="docs_dir",
            hint="the guide is copied into the site's docs/: give the folder mkdocs built "
            "(make docs writes cache/docs-html), outside the site",
        )
    if cache.is_relative_to(docs):
        raise CovergenError(
            f"the cache {options.cache_dir} lies inside the user guide {options.docs_dir}",
            field="docs_dir",
            hint="the guide is published whole: give the folder mkdocs built, not one "
            "that holds the cache",
        )


class _Build:
    """One build's state, and its steps in the order they run."""

    def __init__(self, options: BuildOptions, events: BuildEvents | None, stop: threading.Event):
        self.options = options
        self.events = events
        self.stop = stop
        self.paths = cache_paths(options.cache_dir)
        self.summary = BuildSummary()
        self.start = time.perf_counter()
        self.runlog = RunLog(self.paths["runlog"], options.catalog)
        self.results = ResultStore(self.paths["results"], read_only=options.dry_run)
        self.build_id = 0
        self.precision = "fp32"  # resolved when the build starts
        self.family = "cpu"  # cpu, cuda or mps: what paints (runtime.device_family)
        # Pairs whose job has the key of one being painted (same images, same parameters):
        # one painting, theirs when it is stored.
        self._sharing: dict[str, list[Job]] = {}
        self._weights: dict[tuple[str, str], str] = {}  # identities, by (network, weights)

    # -------------------------------------------------------------------- the steps

    def run(self, executor: Executor | None) -> BuildSummary:
        options = self.options
        self._sweep_leftovers()
        catalog = load_catalog(options.catalog, strict=False)
        selected = _select(catalog, options.only)
        executor = executor or make_executor(
            options.executor or catalog.build.executor,
            self._executor_settings(catalog),
            self.stop,
        )
        kind = executor.device_kind()
        self.family = "cpu" if kind == "cpu" else device_family(options.device)
        profile = self._profile(catalog, self.family)
        # Resolved once for the build (measured once per machine): the jobs' keys name it and
        # every worker paints in it, whatever executor and process it runs in. Before any
        # worker starts: a Ray actor keeps the settings it was started with.
        self.precision = resolve_precision(options.precision, kind)
        if isinstance(getattr(executor, "settings", None), ExecutorSettings):
            executor.settings = dataclasses.replace(executor.settings, precision=self.precision)
        if options.device != "auto":
            # A device named but missing here is an error before anything is recorded.
            self.summary.devices = list(executor.prepare())
        self.runlog.close_abandoned()  # under the lock, a "running" build is a dead one
        self.build_id = self.runlog.start_build(options.kind, profile, self.precision)
        status = BuildStatus.FAILED
        try:
            self._report_invalid(catalog)
            with self._store() as store:
                jobs = self._prepare_jobs(catalog, selected, store, profile)
                plan = self._plan(jobs)
                if plan.to_run and not self.stop.is_set():
                    self._check_inputs(plan.to_run, store)
                    self._paint(self._one_per_key(plan.to_run), executor)
            # Stopped at any step: what was done is kept, the rest waits for the next build.
            self.summary.interrupted = self.stop.is_set()
            if options.render_site and options.kind == "build" and not self.summary.interrupted:
                self._render_site(catalog)
            status = BuildStatus.INTERRUPTED if self.summary.interrupted else BuildStatus.FINISHED
        finally:
            if status == BuildStatus.FAILED and self.stop.is_set():  # a second Ctrl-C cut it
                status = BuildStatus.INTERRUPTED
            self.summary.seconds = time.perf_counter() - self.start
            self.runlog.finish_build(self.build_id, status, self.summary.counts())
            self._note_runlog()
        return self.summary

    def _note_runlog(self) -> None:
        log = self.runlog
        if log.journaled or log.lost:
            kept = (
                f"{counted(log.journaled, 'record')} kept in {log.journal_path.name}, added "
                "to it by the next build"
                if log.journaled
                else ""
            )
            lost = f"{counted(log.lost, 'record')} lost" if log.lost else ""
            self.summary.notes.append(
                f"the run log {log.path} could not be written ({log.failure}): "
                + "; ".join(part for part in (kept, lost) if part)
                + ". Every pair was built as usual; free some space there."
            )

    def dry(self) -> BuildSummary:
        """The plan alone: what would be painted, with nothing written anywhere."""
        options = self.options
        catalog = load_catalog(options.catalog, strict=False)
        selected = _select(catalog, options.only)
        kind = device_kind(options.device)
        self.family = device_family(options.device)
        profile = self._profile(catalog, self.family)
        # A dry run measures nothing: without this machine's answer yet, keys are fp32's.
        self.precision = resolve_precision(options.precision, kind, measure=False)
        self._report_invalid(catalog)
        with self._store() as store:
            jobs = self._prepare_jobs(catalog, selected, store, profile)
            plan = self._plan(jobs)
        for job in plan.to_run:
            self._finish(PairOutcome.of_job(job, "planned"))
        self.summary.seconds = time.perf_counter() - self.start
        return self.summary

    def _sweep_leftovers(self) -> None:
        # Temporary files of a writer that was killed (SIGKILL, power loss) are never read;
        # only a lock holder may remove them, as no one else writes these stores.
        for name in ("images", "results", "features", "derived"):
            remove_leftovers(self.paths[name])

    def _report_invalid(self, catalog: Catalog) -> None:
        wanted = set(self.options.only) if self.options.only else None
        for problem in catalog.problems:
            if wanted is None or problem.pair in wanted:
                self._finish(PairOutcome(problem.pair or "?", "failed", error=problem.describe()))

    def _prepare_jobs(
        self, catalog: Catalog, pairs: Sequence[Pair], store: ImageStore, profile: str | None
    ) -> list[Job]:
        """A job per pair whose images and parameters are good; the others fail alone."""
        self._stage(f"fetching images for {counted(len(pairs), 'pair')}")
        jobs = []
        variants = self.options.variants or ({},)
        for pair in pairs:
            if self.stop.is_set():
                break
            try:
                photo = store.fetch(pair.photo.src, catalog.root, pair=pair.id, field="photo.src")
                cover = store.fetch(pair.cover.src, catalog.root, pair=pair.id, field="cover.src")
                made: dict[str, Job] = {}  # by key: variants that mean the same job are one
                for variant in variants:
                    extra = {**self.options.extra, **variant}
                    params = catalog.params_for(pair, profile, extra)
                    weights = self._checked_weights(params, photo, cover, pair.id)
                    job = make_job(
                        pair.id,
                        pair.title,
                        ImageInput(photo.sha256, photo.width, photo.height),
                        ImageInput(cover.sha256, cover.width, cover.height),
                        params,
                        weights,
                        extra,
                        self.precision,
                    )
                    made.setdefault(job.key, job)
            except NotFetchedYet as exc:  # a dry run: the build would download it
                self._finish(PairOutcome(pair.id, "planned", error=f"would download {exc.message}"))
                continue
            except CovergenError as exc:
                self._finish(PairOutcome(pair.id, "failed", error=exc.describe()))
                continue
            jobs += made.values()
        return jobs

    def _plan(self, jobs: list[Job]) -> Plan:
        plan = plan_jobs(jobs, self.results, force=self.options.force)
        self._finish(
            *(_reused(job, rec, self.results.image_path(job.key)) for job, rec in plan.reused)
        )
        if self.events:
            self.events.planned(plan.to_run, len(plan.reused), self.summary.count("failed"))
        if plan.to_run:
            self._stage(self._cost_text(list(_first_per_key(plan.to_run).values())))
        return plan

    def _one_per_key(self, jobs: list[Job]) -> list[Job]:
        """The first job of each key, to paint; the others wait for its result."""
        first = _first_per_key(jobs)
        for job in jobs:
            if job is not first[job.key]:
                self._sharing.setdefault(job.key, []).append(job)
        return list(first.values())

    def _shared(self, done: PairOutcome) -> list[PairOutcome]:
        """The outcomes of the pairs that wait for ``done``'s painting: its result, or its
        failure."""
        waiting = self._sharing.pop(done.key or "", [])
        if done.status != "built":
            return [PairOutcome.of_job(job, done.status, error=done.error) for job in waiting]
        return [_reused(job, done, done.result) for job in waiting]

    def _cost_text(self, jobs: list[Job]) -> str:
        """What painting will be: the profile's schedule, the precision and the time."""
        from .estimate import estimate

        params = [job.params for job in jobs]
        covers = len({job.cover.sha256 for job in jobs if job.params.method == "fast"})
        guess = estimate(
            params, self.family, self.precision, self.runlog.latest(None).values(), covers
        )
        self.summary.estimate = guess.seconds
        first = params[0]
        if first.method == "gatys":
            sizes = first.scale_sizes()
            schedule = f"{first.size} px, " + (
                f"{len(sizes)} scales from {sizes[0]} px, "
                f"{first.coarse_iterations} + {first.iterations} iterations"
                if len(sizes) > 1
                else f"{first.iterations} iterations"
            )
        else:
            schedule = f"{first.size} px, the {first.method} method"
        noun = "job" if self.options.variants else "pair"
        return (
            f"profile {self.summary.profile} ({schedule}, {self.precision}): "
            f"{counted(len(jobs), noun)} to paint, {guess.describe()}"
        )

    def _check_inputs(self, jobs: list[Job], store: ImageStore) -> None:
        """Before painting, the stored copies of the jobs' inputs are checked once more; a
        damaged copy is dropped (the next build fetches it again) and its pair fails now."""
        bad: dict[str, str] = {}
        for job in jobs:
            for role, image in (("photo", job.photo), ("cover", job.cover)):
                try:
                    store.verified_bytes(image.sha256)
                except CovergenError as exc:
                    bad.setdefault(job.key, f"{role}: {exc.message}")
        for job in [j for j in jobs if j.key in bad]:
            jobs.remove(job)
            self._finish(PairOutcome.of_job(job, "failed", error=bad[job.key]))

    def _paint(self, jobs: list[Job], executor: Executor) -> None:
        # Devices are checked (torch is loaded) only now that there is something to paint;
        # a device this machine lacks stops the build before any pair is tried.
        try:
            self.summary.devices = list(executor.prepare())
            noun = "job" if self.options.variants else "pair"
            self._stage(
                f"painting {counted(len(jobs), noun)} on {', '.join(self.summary.devices)} "
                f"({executor.name} executor)"
            )
            completed = executor.run(jobs, self._collect, self.events, self.stop)
        finally:
            if self.stop.is_set():
                # Cut short by a second Ctrl-C before the executor could report: every job
                # without an outcome waits for the next build.
                done = {(o.pair, o.key) for o in self.summary.outcomes}
                waiting = [j for j in jobs if (j.pair, j.key) not in done]
                error = "stopped before its painting was stored; the next build paints it"
                cancelled = [PairOutcome.of_job(j, "cancelled", error=error) for j in waiting]
                self._finish(*cancelled, *(o for c in cancelled for o in self._shared(c)))
        self.summary.interrupted = not completed

    def _collect(self, outcome: JobOutcome) -> None:
        """An executor's outcome, stored (built) and recorded; called in this thread."""
        job = outcome.job
        common = {
            "device": outcome.device or None,
            "seconds": outcome.seconds or None,
            "losses": outcome.losses,
            "metrics": outcome.metrics,
        }
        done = PairOutcome.of_job(job, outcome.status, error=outcome.error, **common)
        if outcome.status == "built" and outcome.png is not None:
            try:
                self.results.put(
                    outcome.png,
                    outcome.width,
                    outcome.height,
                    {
                        **job.record_fields(),
                        "iterations": outcome.iterations,
                        "seconds": outcome.seconds,
                        "device": outcome.device,
                        "losses": outcome.losses,
                        "metrics": outcome.metrics,
                    },
                )
            except OSError as exc:
                # A full disk fails this pair alone. The atomic write left nothing
                # half-written, and the run log says why the painting is missing.
                error = _store_error(exc, job.pair, self.results.root)
                done = PairOutcome.of_job(job, "failed", error=error, **common)
            else:
                result = self.results.image_path(job.key)
                done = PairOutcome.of_job(
                    job, "built", iterations=outcome.iterations, result=result, **common
                )
        self._finish(done, *self._shared(done))

    def _render_site(self, catalog: Catalog) -> None:
        from .site import render_site

        self._stage(f"rendering the site into {self.options.site_dir}")
        extra = {}
        docs = self.options.docs_dir
        if docs is not None:
            if not (docs / "index.html").is_file():
                raise CovergenError(
                    f"no built user guide in {docs}",
                    field="docs_dir",
                    hint="build it first: make docs",
                )
            extra["docs"] = docs
        store = ImageStore(self.paths["images"])
        # The covers' style vectors for the live panel: torch only for a vector not cached.
        from .stylevectors import cover_style_vectors

        vectors = cover_style_vectors(catalog, self.runlog, store.find, self.options.cache_dir)
        self.summary.site = render_site(
            catalog,
            self.runlog,
            self.results,
            store.find,
            self.options.site_dir,
            cache_dir=self.options.cache_dir,
            extra_dirs=extra,
            style_vectors=vectors,
        )
        self.summary.notes.extend(self.summary.site.notes)

    # -------------------------------------------------------------------- helpers

    def _finish(self, *outcomes: PairOutcome) -> None:
        """Record outcomes (in one transaction) and tell the display."""
        self.summary.outcomes.extend(outcomes)
        logged = [o.log_values() for o in outcomes if o.status != PairStatus.PLANNED]
        if logged and not self.options.dry_run:
            self.runlog.record_many(self.build_id, logged)
        if self.events is not None:
            for outcome in outcomes:
                self.events.pair_done(outcome)

    def _stage(self, text: str) -> None:
        if self.events is not None:
            self.events.stage(text)

    def _store(self) -> ImageStore:
        options = self.options
        fetch = dataclasses.replace(options.fetch, offline=options.fetch.offline or options.offline)
        return ImageStore(self.paths["images"], fetch, read_only=options.dry_run)

    def _executor_settings(self, catalog: Catalog) -> ExecutorSettings:
        options = self.options
        return ExecutorSettings(
            cache_dir=options.cache_dir,
            devices=tuple(p.strip() for p in options.device.split(",") if p.strip()),
            precision=options.precision,
            max_batch=options.max_batch,
            offline=options.offline,
            ray_address=options.ray_address or catalog.build.ray_address or None,
        )

    def _profile(self, catalog: Catalog, family: str) -> str:
        profile = catalog.choose_profile(
            self.options.profile or os.environ.get(PROFILE_ENV), family
        )
        self.summary.profile = profile
        return profile

    def _checked_weights(self, params: StyleParams, photo: Any, cover: Any, pair: str) -> str:
        """The identity of the weights a job paints with. A photo or cover some scale would
        shrink below what the network needs, or weights not to be had, fail its pair now,
        naming the parameter, not in the middle of painting."""
        key = (params.network, params.weights)
        try:
            check_image_sizes(params, (photo.width, photo.height), [(cover.width, cover.height)])
            if key not in self._weights:
                self._weights[key] = choose_source(
                    params.network,
                    params.weights,
                    cache_dir=self.options.cache_dir,
                    offline=self.options.offline,
                ).identity
        except ParameterError as exc:
            raise CovergenError(exc.message, pair=pair, field=exc.field, hint=exc.hint) from None
        except EngineError as exc:  # no usable weights: the message says what to run
            raise CovergenError(str(exc), pair=pair, field="network") from None
        return self._weights[key]


def _first_per_key(jobs: list[Job]) -> dict[str, Job]:
    """Each key's first job, in order: pairs with the same images and parameters are one
    painting."""
    first: dict[str, Job] = {}
    for job in jobs:
        first.setdefault(job.key, job)
    return first


def _reused(job: Job, painted: ResultRecord | PairOutcome, result: Path | None) -> PairOutcome:
    """``job``'s outcome when the painting it needs is ``painted`` (stored, or built now)."""
    fields = ("seconds", "device", "iterations", "losses", "metrics")
    same = {name: getattr(painted, name) for name in fields}
    return PairOutcome.of_job(job, "reused", result=result, **same)


def _store_error(exc: OSError, pair: str, root: Path) -> str:
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
