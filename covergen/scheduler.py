"""The scheduler: jobs handed to an executor, outcomes collected. Torch-free.

An executor runs jobs somewhere — threads on this machine's devices (``LocalExecutor``),
separate processes (``ProcessExecutor``, which proves that jobs travel as plain data), a Ray
cluster (``covergen.rayexec``) — and hands each outcome back to the caller's thread. Every
executor paints through ``Painter.run_batch`` (``covergen.painter``): same-shape batches,
out of memory → half the batch → the CPU, a failing job isolated from the others.
Executors are chosen by name (``make_executor``).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from .errors import CovergenError, interrupts_held
from .nst import ParameterError, device_kind, resolve_devices, shape_signature
from .plan import Job

if TYPE_CHECKING:
    from .nst import Progress
    from .painter import Painter

EXECUTORS = ("local", "process", "ray")


@dataclass(frozen=True)
class JobOutcome:
    """What became of a job. A built one carries its painting as PNG bytes: encoded where
    it was painted, so every executor stores the very same bytes."""

    job: Job
    status: str  # built, failed or cancelled
    png: bytes | None = None
    width: int = 0
    height: int = 0
    iterations: int = 0
    seconds: float = 0.0
    device: str = ""
    losses: dict[str, float] = field(default_factory=dict)
    # What the job found out on its own: quality scores, chosen values, faces protected.
    metrics: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


OutcomeSink = Callable[[JobOutcome], None]


class SchedulerEvents(Protocol):
    """What a progress display hears from the workers (called from any thread)."""

    def batch_started(self, worker: str, jobs: Sequence[Job]) -> None: ...

    def progress(self, worker: str, jobs: Sequence[Job], event: Progress) -> None: ...


class Executor(Protocol):
    """Runs jobs somewhere and reports each outcome in the caller's thread."""

    name: str

    def device_kind(self) -> str:
        """cpu or gpu: what the jobs will run on, to choose the catalog's profile; cheap
        (no torch, no cluster start), as builds that paint nothing ask it too."""
        ...

    def prepare(self) -> list[str]:
        """Check the devices (start the cluster) before any job; return the workers' names.
        Raises CovergenError when the executor cannot run here."""
        ...

    def run(
        self,
        jobs: Sequence[Job],
        on_outcome: OutcomeSink,
        events: SchedulerEvents | None,
        stop: threading.Event,
    ) -> bool:
        """Run the jobs, calling ``on_outcome`` (from the calling thread) for each one.

        Returns False when ``stop`` ended the run early; every job still gets an outcome.
        """
        ...


@dataclass(frozen=True)
class ExecutorSettings:
    """What every executor needs to paint; plain data, so it can travel to workers."""

    cache_dir: Path = Path("cache")
    devices: tuple[str, ...] = ("auto",)  # as named; resolved when painting starts
    precision: str = "auto"
    max_batch: int = 4
    offline: bool = False
    ray_address: str | None = None


def make_batches(jobs: Sequence[Job], max_batch: int) -> list[list[Job]]:
    """Group same-shape jobs, in the order their first job comes, chunks of ``max_batch``."""
    groups: dict[tuple, list[Job]] = {}
    for job in jobs:
        groups.setdefault(shape_signature(job.params, job.photo.size), []).append(job)
    size = max(1, max_batch)
    batches = [group[i : i + size] for group in groups.values() for i in range(0, len(group), size)]
    order = {job.key: i for i, job in enumerate(jobs)}
    return sorted(batches, key=lambda batch: order[batch[0].key])


def batch_limit(devices: Sequence[str], max_batch: int) -> int:
    """Jobs per batch: batching pays on a GPU; on a CPU one job at a time is as fast."""
    return max_batch if any(d.startswith("cuda") for d in devices) else 1


class DevicesHere:
    """For executors that paint on this machine's devices: ``settings.devices`` checked
    once (or taken as given with ``trust_devices``, for stand-ins that play a GPU)."""

    settings: ExecutorSettings
    trust_devices: bool
    _devices: list[str]

    def device_kind(self) -> str:
        return device_kind(",".join(self.settings.devices))

    def devices_here(self) -> list[str]:
        if not self._devices:
            names = self.settings.devices
            self._devices = list(names) if self.trust_devices else checked_devices(names)
        return self._devices


@dataclass
class LocalExecutor(DevicesHere):
    """Worker threads on this machine, one per device, each painting whole batches.

    ``painter`` (made on first use when not given) holds the engines; tests pass one with a
    stand-in engine.
    """

    settings: ExecutorSettings = field(default_factory=ExecutorSettings)
    painter: Painter | None = None
    name: str = "local"
    # Take the device names as given, unchecked: for stand-in engines that play a GPU.
    trust_devices: bool = False
    _devices: list[str] = field(default_factory=list)

    def prepare(self) -> list[str]:
        return self.devices_here()

    def run(
        self,
        jobs: Sequence[Job],
        on_outcome: OutcomeSink,
        events: SchedulerEvents | None,
        stop: threading.Event,
    ) -> bool:
        if self.painter is None:
            with interrupts_held():  # the first import of torch
                from .painter import Painter, StoreInputs
            self.painter = Painter.from_settings(
                self.settings, StoreInputs(self.settings.cache_dir)
            )
        painter = self.painter
        devices = self.prepare()
        batches: queue.Queue[list[Job]] = queue.Queue()
        for batch in make_batches(jobs, batch_limit(devices, self.settings.max_batch)):
            batches.put(batch)
        outcomes: queue.Queue[JobOutcome | None] = queue.Queue()

        def work(device: str) -> None:
            try:
                while not stop.is_set():
                    try:
                        batch = batches.get_nowait()
                    except queue.Empty:
                        return
                    for outcome in painter.run_batch(device, batch, events, stop):
                        outcomes.put(outcome)
            finally:
                outcomes.put(None)

        workers = [
            threading.Thread(target=work, args=(d,), name=f"covergen-{d}", daemon=True)
            for d in devices
        ]
        for worker in workers:
            worker.start()
        return collect(jobs, outcomes, len(workers), on_outcome, stop)


def collect(
    jobs: Sequence[Job],
    outcomes: queue.Queue[JobOutcome | None],
    producers: int,
    on_outcome: OutcomeSink,
    stop: threading.Event,
) -> bool:
    """Hand outcomes to ``on_outcome`` in this thread until every producer said None; then
    report the jobs that never started as cancelled. Ctrl-C here sets ``stop``."""
    finished = 0
    # A job is known by its pair and key: two pairs with the same inputs and parameters
    # share a key (and a result), but each is owed an outcome.
    reported: set[tuple[str, str]] = set()
    while finished < producers:
        try:
            item = outcomes.get(timeout=0.1)
        except queue.Empty:
            continue
        except KeyboardInterrupt:
            stop.set()
            continue
        if item is None:
            finished += 1
            continue
        reported.add((item.job.pair, item.job.key))
        try:
            on_outcome(item)
        except KeyboardInterrupt:
            stop.set()
    for job in jobs:
        if (job.pair, job.key) not in reported:
            on_outcome(JobOutcome(job, "cancelled", error="stopped before it started"))
    return not stop.is_set()


def checked_devices(names: Sequence[str]) -> list[str]:
    """The devices named (``auto``: every GPU, else the CPU), each checked to exist here.

    Checking imports torch, often for the first time in the build: a Ctrl-C in the middle of
    that import is held until it is done (raised inside it, it would abort the process)."""
    try:
        with interrupts_held():
            return resolve_devices(",".join(names) or "auto")
    except ParameterError as exc:
        raise CovergenError(exc.message, field="device", hint=exc.hint) from None


def make_executor(name: str, settings: ExecutorSettings) -> Executor:
    """The executor called ``name``: local, process or ray."""
    if name == "local":
        return LocalExecutor(settings)
    if name == "process":
        with interrupts_held():  # imports torch
            from .procexec import ProcessExecutor
        return ProcessExecutor(settings)
    if name == "ray":
        with interrupts_held():  # imports torch and Ray
            from .rayexec import RayExecutor
        return RayExecutor(settings)
    raise CovergenError(
        f"unknown executor {name!r}", field="executor", hint=f"use one of {', '.join(EXECUTORS)}"
    )
