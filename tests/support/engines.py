"""Stand-in engines: they paint without a network, in no time, so that a test of the
pipeline (build, executors, site) does not wait for the engine it does not test."""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageStat

from covergen.nst import LossValues, StylizeResult

BAD_SEED = 666  # the seed that marks the pair a stand-in fails or dies on

LOSS = LossValues(1.0, 0.5, 0.4, 0.1)


def painting_of(job, *, tint: bool = False) -> Image.Image:
    """The job's photo at its size (long side ``params.size``); with ``tint``, blended half
    way toward the cover's mean colour, so that a test can tell which cover painted it."""
    photo, size = job.content, job.params.size
    scale = size / max(photo.size)
    shape = (max(1, round(photo.width * scale)), max(1, round(photo.height * scale)))
    painted = photo.resize(shape)
    if tint:
        mean = tuple(round(c) for c in ImageStat.Stat(job.styles[0]).mean[:3])
        painted = Image.blend(painted, Image.new("RGB", shape, mean), 0.5)
    return painted


class InstantEngine:
    """Paints in no time: the photo at the job's size."""

    def stylize_batch(self, jobs, progress=None, cancel=None) -> list[StylizeResult]:
        return [StylizeResult(painting_of(job), [], 1, 0.0, "cpu", LOSS) for job in jobs]


@dataclass(frozen=True)
class StandIn:
    """An engine factory for any executor: module-level and frozen, so it pickles.

    The pair whose seed is ``BAD_SEED`` raises (``on_bad="raise"``), or SIGKILLs its own
    worker process on every try (``"kill"``) or only on the first (``"kill-once"``: the
    first try leaves a file in ``marks``). Every try of it writes ``tries/<pid>``, so a test
    sees which processes it ran in. ``delay`` seconds per job, for tests that stop a build.
    """

    marks: str = ""
    on_bad: str = ""
    delay: float = 0.0
    iterations: int = 3

    def __call__(self, device: str) -> StandInEngine:
        return StandInEngine(device, self)


@dataclass
class StandInEngine:
    """Paints the photo at the job's size, tinted with the cover's mean colour."""

    device: str
    plan: StandIn

    def stylize_batch(self, jobs, progress=None, cancel=None):
        from covergen.nst import Cancelled, Progress

        for job in jobs:
            if job.params.seed == BAD_SEED:
                self._misbehave()
        start = time.perf_counter()
        loss = LOSS
        steps = self.plan.iterations
        for i in range(1, steps + 1):
            time.sleep(self.plan.delay / steps)
            if cancel is not None and cancel():
                raise Cancelled("stopped")
            if progress is not None:
                size = (jobs[0].params.size, jobs[0].params.size)
                progress(Progress(0, 1, size, i, steps, (loss,) * len(jobs), 0.0, done=i))
        seconds = time.perf_counter() - start
        return [
            StylizeResult(painting_of(job, tint=True), [], steps, seconds, self.device, loss)
            for job in jobs
        ]

    def _misbehave(self) -> None:
        plan = self.plan
        if plan.on_bad == "raise":
            raise RuntimeError("this pair's photo upsets the stand-in engine")
        tries = Path(plan.marks) / "tries"
        tries.mkdir(parents=True, exist_ok=True)
        (tries / str(os.getpid())).touch()
        first = Path(plan.marks) / "killed-once"
        if plan.on_bad == "kill" or (plan.on_bad == "kill-once" and not first.exists()):
            first.touch()
            os.kill(os.getpid(), signal.SIGKILL)
