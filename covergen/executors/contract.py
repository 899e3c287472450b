"""What every executor agrees on: the settings it gets, the outcome it reports, the events a
display hears, and how jobs are grouped into batches. Torch-free."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from ..errors import CovergenError
from ..nst import ParameterError, device_kind, resolve_devices, shape_signature
from ..plan import Job

if TYPE_CHECKING:
    from ..nst import Progress


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


def checked_devices(names: Sequence[str]) -> list[str]:
    """The devices named (``auto``: every GPU, else the CPU), each checked to exist here.

    Checking imports torch, often for the first time in the build."""
    try:
        return resolve_devices(",".join(names) or "auto")
    except ParameterError as exc:
        raise CovergenError(exc.message, field="device", hint=exc.hint) from None
