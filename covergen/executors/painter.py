"""Where jobs meet the engine: one batch painted on one device, whatever runs the worker.

``Painter.run_batch`` is the only code that turns ``Job``s into paintings. Local threads,
worker processes and Ray actors all call it, so batching, the out-of-memory fallback (half
the batch, then the CPU) and the isolation of a failing job behave the same everywhere, and
every executor encodes the very same PNG bytes.
"""

from __future__ import annotations

import functools
import hashlib
import io
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from threading import Event
from typing import Any, Protocol

from PIL import Image

from ..nst import Cancelled, Engine, Progress, Runtime, StylizeJob, TargetCache
from ..plan import Job
from ..sources import ImageStore, decode_image
from .contract import ExecutorSettings, JobOutcome, SchedulerEvents

EngineFactory = Callable[[str], Any]  # device -> an object with Engine.stylize_batch


class Inputs(Protocol):
    """Input images by the SHA-256 of their bytes, decoded upright to RGB."""

    def image(self, sha256: str) -> Image.Image: ...


@dataclass
class StoreInputs:
    """Inputs read from this machine's image store, each checked against its hash."""

    cache_dir: Path

    def image(self, sha256: str) -> Image.Image:
        store = ImageStore(Path(self.cache_dir) / "images")
        return decode_image(store.verified_bytes(sha256), src=sha256[:12])


@dataclass
class BytesInputs:
    """Inputs shipped with the jobs (to a worker that cannot see the driver's store)."""

    data: Mapping[str, bytes]

    def image(self, sha256: str) -> Image.Image:
        data = self.data[sha256]
        if hashlib.sha256(data).hexdigest() != sha256:
            raise ValueError(f"the input {sha256[:12]} arrived damaged")
        return decode_image(data, src=sha256[:12])


def encode_png(image: Image.Image) -> bytes:
    """The stored form of a painting: PNG, the same bytes for the same pixels everywhere."""
    buffer = io.BytesIO()
    image.save(buffer, "PNG", optimize=False)
    return buffer.getvalue()


@dataclass
class Painter:
    """Paints batches of jobs, keeping one engine per device between batches."""

    inputs: Inputs
    engine_factory: EngineFactory
    _engines: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_settings(
        cls, settings: ExecutorSettings, inputs: Inputs, engine_factory: EngineFactory | None = None
    ) -> Painter:
        """A painter with the real engines, or ``engine_factory``'s (a stand-in's) if given."""
        if engine_factory is None:
            from ..store.features import FeatureCache

            features = FeatureCache(Path(settings.cache_dir) / "features")
            engine_factory = functools.partial(make_engine, settings=settings, targets=features)
        return cls(inputs, engine_factory)

    def engine(self, device: str) -> Any:
        if device not in self._engines:
            self._engines[device] = self.engine_factory(device)
        return self._engines[device]

    def run_batch(
        self,
        device: str,
        batch: Sequence[Job],
        events: SchedulerEvents | None,
        stop: Event,
    ) -> Iterator[JobOutcome]:
        """Paint ``batch`` on ``device``, yielding one outcome per job.

        Out of memory splits the batch in halves, and a single job that still does not fit
        moves to the CPU; when a batch fails otherwise its jobs are run one by one, so the
        failing job fails alone.
        """
        pending: list[tuple[str, list[Job]]] = [(device, list(batch))]
        while pending and not stop.is_set():
            where, jobs = pending.pop(0)
            for outcome, retry in self._attempt(where, jobs, events, stop):
                if outcome is not None:
                    yield outcome
                pending[:0] = retry
        for where, jobs in pending:  # stopped: whatever was not tried is cancelled
            for job in jobs:
                yield JobOutcome(job, "cancelled", device=where, error="interrupted")

    def _attempt(
        self, device: str, batch: list[Job], events: SchedulerEvents | None, stop: Event
    ) -> Iterator[tuple[JobOutcome | None, list[tuple[str, list[Job]]]]]:
        """Run one batch; yield (outcome, batches to try next) pairs."""
        try:
            engine = self.engine(device)
            jobs = [
                StylizeJob(
                    self.inputs.image(job.photo.sha256),
                    [self.inputs.image(job.cover.sha256)],
                    job.params,
                )
                for job in batch
            ]
        except Exception as exc:
            yield _one_by_one_or_failed(device, batch, exc)
            return
        if events is not None:
            events.batch_started(device, batch)

        def report(event: Progress) -> None:
            if events is not None:
                events.progress(device, batch, event)

        start = time.perf_counter()
        try:
            results = engine.stylize_batch(jobs, progress=report, cancel=stop.is_set)
        except Cancelled:
            for job in batch:
                yield JobOutcome(job, "cancelled", device=device, error="interrupted"), []
            return
        except Exception as exc:
            if is_out_of_memory(exc):
                free_device_memory(device)
                if len(batch) > 1:
                    half = len(batch) // 2
                    yield None, [(device, batch[:half]), (device, batch[half:])]
                    return
                if device != "cpu":
                    yield None, [("cpu", batch)]
                    return
            yield _one_by_one_or_failed(device, batch, exc, time.perf_counter() - start)
            return
        for job, result in zip(batch, results, strict=True):
            losses = result.losses
            yield (
                JobOutcome(
                    job,
                    "built",
                    png=encode_png(result.image),
                    width=result.image.width,
                    height=result.image.height,
                    iterations=result.iterations,
                    seconds=result.seconds,
                    device=result.device,
                    losses={
                        "total": losses.total,
                        "content": losses.content,
                        "style": losses.style,
                        "tv": losses.tv,
                    },
                    metrics=dict(getattr(result, "metrics", {}) or {}),
                ),
                [],
            )


def _one_by_one_or_failed(
    device: str, batch: list[Job], exc: Exception, seconds: float = 0.0
) -> tuple[JobOutcome | None, list[tuple[str, list[Job]]]]:
    """A batch that failed: its jobs tried again one by one, to find the job that fails while
    the others still run; a single job fails with ``exc``."""
    if len(batch) > 1:
        return None, [(device, [job]) for job in batch]
    return JobOutcome(batch[0], "failed", device=device, error=_message(exc), seconds=seconds), []


def make_engine(device: str, settings: ExecutorSettings, targets: TargetCache | None) -> Engine:
    return Engine(
        Runtime(device=device, precision=settings.precision),
        cache_dir=settings.cache_dir,
        target_cache=targets,
        offline=settings.offline,
    )


def is_out_of_memory(exc: BaseException) -> bool:
    import torch

    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def free_device_memory(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.empty_cache()


def _message(exc: BaseException) -> str:
    describe = getattr(exc, "describe", None)
    text = describe() if callable(describe) else str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
