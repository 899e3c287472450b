"""The scheduler: hands jobs to an executor and collects their outcomes.

``LocalExecutor`` runs one worker thread per visible GPU (or one on the CPU). Jobs of the
same shape are batched on a GPU. A failing job is reported and the others go on; out of
memory retries with half the batch, then on the CPU. A stop request (Ctrl-C) cancels the
running batches at their next iteration; every finished outcome has been handed over by
then. The executor seam is what a cluster executor (Ray) would implement.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import torch
from PIL import Image

from .nst import Cancelled, Engine, Progress, Runtime, StylizeJob, TargetCache, shape_signature
from .plan import Job

OutcomeSink = Callable[["JobOutcome"], None]


@dataclass(frozen=True)
class JobOutcome:
    job: Job
    status: str  # built, failed or cancelled
    image: Image.Image | None = None
    iterations: int = 0
    seconds: float = 0.0
    device: str = ""
    losses: dict[str, float] = field(default_factory=dict)
    error: str | None = None


class SchedulerEvents(Protocol):
    """What a progress display hears from the workers (called from worker threads)."""

    def batch_started(self, worker: str, jobs: Sequence[Job]) -> None: ...

    def progress(self, worker: str, jobs: Sequence[Job], event: Progress) -> None: ...


class Executor(Protocol):
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


def local_devices(name: str = "auto") -> list[str]:
    """The devices to run workers on: every visible GPU, else mps, else the CPU."""
    if name != "auto":
        return [part.strip() for part in name.split(",") if part.strip()]
    if torch.cuda.is_available():
        return [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return ["mps"]
    return ["cpu"]


def is_out_of_memory(exc: BaseException) -> bool:
    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def make_batches(jobs: Sequence[Job], max_batch: int) -> list[list[Job]]:
    """Group same-shape jobs, in the order their first job comes, chunks of ``max_batch``."""
    groups: dict[tuple, list[Job]] = {}
    for job in jobs:
        groups.setdefault(shape_signature(job.params, job.photo_size), []).append(job)
    batches = []
    for group in groups.values():
        for start in range(0, len(group), max(1, max_batch)):
            batches.append(group[start : start + max(1, max_batch)])
    order = {job.key: i for i, job in enumerate(jobs)}
    return sorted(batches, key=lambda batch: order[batch[0].key])


@dataclass
class LocalExecutor:
    """Workers on this machine: one per device, batching same-shape jobs on GPUs."""

    load_image: Callable[[Path], Image.Image]
    devices: Sequence[str] = ("cpu",)
    precision: str = "auto"
    max_batch: int = 4
    cache_dir: Path = Path("cache")
    target_cache: TargetCache | None = None
    engine_factory: Callable[[Runtime, Path, TargetCache | None], Engine] | None = None

    def _engine(self, device: str) -> Engine:
        runtime = Runtime(device=device, precision=self.precision)
        if self.engine_factory is not None:
            return self.engine_factory(runtime, self.cache_dir, self.target_cache)
        return Engine(runtime, cache_dir=self.cache_dir, target_cache=self.target_cache)

    def run(
        self,
        jobs: Sequence[Job],
        on_outcome: OutcomeSink,
        events: SchedulerEvents | None,
        stop: threading.Event,
    ) -> bool:
        gpu = any(d.startswith("cuda") for d in self.devices)
        batches: queue.Queue[list[Job]] = queue.Queue()
        for batch in make_batches(jobs, self.max_batch if gpu else 1):
            batches.put(batch)
        outcomes: queue.Queue[JobOutcome | None] = queue.Queue()
        workers = [
            threading.Thread(
                target=self._work,
                args=(device, batches, outcomes, events, stop),
                name=f"covergen-{device}",
                daemon=True,
            )
            for device in self.devices
        ]
        for worker in workers:
            worker.start()
        finished_workers = 0
        reported: set[str] = set()
        while finished_workers < len(workers):
            try:
                item = outcomes.get(timeout=0.1)
            except queue.Empty:
                continue
            except KeyboardInterrupt:
                stop.set()
                continue
            if item is None:
                finished_workers += 1
                continue
            reported.add(item.job.key)
            try:
                on_outcome(item)
            except KeyboardInterrupt:
                stop.set()
        for job in jobs:  # batches never started
            if job.key not in reported:
                on_outcome(JobOutcome(job, "cancelled", error="stopped before it started"))
        return not stop.is_set()

    def _work(
        self,
        device: str,
        batches: queue.Queue[list[Job]],
        outcomes: queue.Queue[JobOutcome | None],
        events: SchedulerEvents | None,
        stop: threading.Event,
    ) -> None:
        try:
            engines: dict[str, Engine] = {}
            pending: list[list[Job]] = []
            while not stop.is_set():
                if pending:
                    batch = pending.pop(0)
                else:
                    try:
                        batch = batches.get_nowait()
                    except queue.Empty:
                        return
                for outcome, retry in self._attempt(device, batch, engines, events, stop):
                    if outcome is not None:
                        outcomes.put(outcome)
                    if retry:
                        pending[:0] = retry
        finally:
            outcomes.put(None)

    def _attempt(
        self,
        device: str,
        batch: list[Job],
        engines: dict[str, Engine],
        events: SchedulerEvents | None,
        stop: threading.Event,
    ):
        """Run one batch; yield (outcome, batches to retry) pairs."""
        try:
            if device not in engines:
                engines[device] = self._engine(device)
            engine = engines[device]
            stylize_jobs = [
                StylizeJob(
                    self.load_image(job.photo_path), [self.load_image(job.cover_path)], job.params
                )
                for job in batch
            ]
        except Exception as exc:
            if len(batch) > 1:
                yield None, [[job] for job in batch]
            else:
                yield JobOutcome(batch[0], "failed", device=device, error=_message(exc)), None
            return
        if events is not None:
            events.batch_started(device, batch)

        def report(event: Progress) -> None:
            if events is not None:
                events.progress(device, batch, event)

        start = time.perf_counter()
        try:
            results = engine.stylize_batch(stylize_jobs, progress=report, cancel=stop.is_set)
        except Cancelled:
            for job in batch:
                yield JobOutcome(job, "cancelled", device=device, error="interrupted"), None
            return
        except Exception as exc:
            if is_out_of_memory(exc):
                if device.startswith("cuda"):
                    torch.cuda.empty_cache()
                if len(batch) > 1:
                    half = len(batch) // 2
                    yield None, [batch[:half], batch[half:]]
                    return
                if device != "cpu":
                    yield from self._attempt("cpu", batch, engines, events, stop)
                    return
            if len(batch) > 1:  # find the job that fails; the others still run
                yield None, [[job] for job in batch]
                return
            yield (
                JobOutcome(
                    batch[0],
                    "failed",
                    device=device,
                    error=_message(exc),
                    seconds=time.perf_counter() - start,
                ),
                None,
            )
            return
        for job, result in zip(batch, results, strict=True):
            losses = {
                "total": result.losses.total,
                "content": result.losses.content,
                "style": result.losses.style,
                "tv": result.losses.tv,
            }
            yield (
                JobOutcome(
                    job,
                    "built",
                    image=result.image,
                    iterations=result.iterations,
                    seconds=result.seconds,
                    device=result.device,
                    losses=losses,
                ),
                None,
            )


def _message(exc: BaseException) -> str:
    describe = getattr(exc, "describe", None)
    text = describe() if callable(describe) else str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
