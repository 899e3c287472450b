"""How long painting will take: an estimate shown before a build paints (and by --dry-run).

Gatys' cost grows with pixels times iterations, scale by scale (the automatic content
weight's probe included); a feed-forward painting costs about the same whatever the pair,
and a cover's own network its training, once. The rate per pixel-iteration is this
machine's own where its run log has paintings made in the same precision on the same kind
of device (their median); otherwise it comes from covergen's measurements on a 2-core CPU
(docs/benchmarks.md) or, for the GPUs, an estimate marked as one. Torch-free.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from .nst.params import StyleParams, fit_long_side, probe_iterations

# Seconds per pixel-iteration, by device family and precision: measured on a 2-core x86 CPU
# (the draft profile, 256 px: about 27 s a pair in fp32, 13 s in bf16 with AMX), estimated
# for the GPUs (not measured here: a GPU of the last years is taken as some 50 times a
# 2-core CPU, Apple's as 4 times).
PRIOR_RATES: dict[tuple[str, str], tuple[float, bool]] = {
    ("cpu", "fp32"): (4.7e-6, True),  # 27 s / the draft's 5.7 M pixel-iterations
    ("cpu", "bf16"): (2.3e-6, True),  # 13 s
    ("cpu", "fp64"): (9.4e-6, False),
    ("mps", "fp32"): (1.2e-6, False),
    ("cuda", "tf32"): (9e-8, False),
    ("cuda", "fp32"): (1.4e-7, False),
    ("cuda", "bf16"): (9e-8, False),
}
FEEDFORWARD_SECONDS = {"cpu": 1.0, "mps": 0.3, "cuda": 0.1}  # a painting, judge included
# A cover's network (fast), seconds per crop pixel and step: measured on the same CPU with
# the default recipe (300 steps of one 256 px crop: 0.44 s a step in fp32, 0.28 s in
# bf16); the others estimated.
TRAINING_RATE: dict[tuple[str, str], float] = {
    ("cpu", "fp32"): 6.7e-6,
    ("cpu", "bf16"): 4.2e-6,
    ("mps", "fp32"): 2e-6,
    ("cuda", "tf32"): 1.5e-7,
    ("cuda", "fp32"): 2e-7,
    ("cuda", "bf16"): 1.5e-7,
}


@dataclass(frozen=True)
class Estimate:
    seconds: float
    measured: bool  # from this machine's own paintings or covergen's measurements
    basis: str  # for people: where the rate comes from

    def describe(self) -> str:
        return f"about {duration(self.seconds)} ({self.basis})"


def work_units(params: StyleParams, photo_size: tuple[int, int] | None = None) -> float:
    """Pixel-iterations a Gatys job of ``params`` costs on a photo of ``photo_size`` (None:
    a square one, as the run log's records are counted: they do not keep the size)."""
    photo_size = photo_size or (params.size, params.size)
    sizes = params.scale_sizes()
    units = 0.0
    for i, long_side in enumerate(sizes):
        width, height = fit_long_side(*photo_size, long_side)
        iterations = params.iterations if i == len(sizes) - 1 else params.coarse_iterations
        if i == 0:
            # The probe paints up to four candidates at the first scale (in rounds on a CPU:
            # counted as two, what the rounds cost on the sample pairs).
            iterations += 2 * probe_iterations(params)
        units += iterations * width * height
    return units


def measured_rate(records: Iterable[object], family: str) -> tuple[float, int]:
    """The median seconds per (square) pixel-iteration of the run log's Gatys paintings made
    on this kind of device, and how many there were (0: none). The latest builds on a
    machine share its precision (decided once, covergen.precision)."""
    rates = []
    for record in records:
        params = getattr(record, "params", None) or {}
        seconds = getattr(record, "seconds", None)
        device = getattr(record, "device", None) or ""
        if getattr(record, "status", "") != "built" or not seconds or not params:
            continue
        if params.get("method", "gatys") != "gatys" or not _same_family(device, family):
            continue
        try:
            job = StyleParams().replace(**params)
        except Exception:  # a record from an older release: not a basis
            continue
        units = work_units(job)
        if units > 0:
            rates.append(seconds / units)
    return (statistics.median(rates), len(rates)) if rates else (0.0, 0)


def estimate(
    jobs: Sequence[StyleParams],
    family: str,
    precision: str,
    history: Iterable[object] = (),
    covers_to_train: int = 0,
) -> Estimate:
    """Seconds to paint ``jobs`` (their parameters) one after another on this machine."""
    rate, count = measured_rate(history, family)
    if count:
        measured, basis = True, f"from {count} earlier paintings here"
    else:
        rate, measured = PRIOR_RATES.get(
            (family, precision), (PRIOR_RATES["cpu", "fp32"][0], False)
        )
        basis = (
            f"covergen's measurements of a 2-core CPU in {precision}"
            if measured
            else f"an estimate for {family} in {precision}, not measured"
        )
    feedforward = FEEDFORWARD_SECONDS.get(family, 1.0)
    seconds = 0.0  # a loop, not sum(): that rounds otherwise from Python 3.12
    for params in jobs:
        seconds += work_units(params) * rate if params.method == "gatys" else feedforward
    training_rate = TRAINING_RATE.get((family, precision), TRAINING_RATE["cpu", "fp32"])
    for params in [p for p in jobs if p.method == "fast"][:covers_to_train]:
        seconds += params.fast_iterations * params.fast_batch * params.fast_size**2 * training_rate
    return Estimate(seconds, measured, basis)


def duration(seconds: float) -> str:
    """4 s, 3 min, 1 h 20 min."""
    if seconds < 90:
        return f"{max(1, round(seconds))} s"
    minutes = round(seconds / 60)
    if minutes < 90:
        return f"{minutes} min"
    return f"{minutes // 60} h {minutes % 60} min"


def _same_family(device: str, family: str) -> bool:
    kind = "cuda" if device.startswith("cuda") else "mps" if device == "mps" else "cpu"
    return kind == family
