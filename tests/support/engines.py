"""Stand-in engines: they paint without a network, in no time, so that a test of the
pipeline (build, executors, site) does not wait for the engine it does not test."""

from __future__ import annotations

from PIL import Image, ImageStat

from covergen.nst import LossValues, StylizeResult

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
