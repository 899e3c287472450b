"""Benchmark: the Ray executor's scaling and the driver's own cost per job.

1. **Scaling.** For 1, 2, 4 and 8 workers, a fresh local Ray instance declares that many
   (fake) GPUs, and a build paints ``--per-worker`` jobs per worker with a stand-in engine
   that takes ``--job-seconds`` (sleeps, then returns a small image): the wall time from the
   first batch sent to the last outcome stored, as the throughput and its ratio to linear
   (N workers × one job per job-seconds). Sleeping stand-ins need no cores, so even a small
   machine shows what the driver adds: dispatch, the stream of messages, storing results.
2. **The driver's cost per job.** One build of ``--pairs`` jobs with an instant stand-in
   engine on 8 workers, at ``--size`` px: the driver process's CPU time per job (its
   ``time.process_time``, Ray's threads in it included), and the wall time per job of
   storing the result and recording it in the run log (fsync'd); then ``ray.put`` of one
   input image, and the site rendered for those pairs. From these, where the driver becomes
   the bottleneck, and what 10,000 pairs cost it.

Usage: python scripts/bench_ray.py [--workers 1,2,4,8] [--job-seconds 2] [--per-worker 4]
       [--pairs 200] [--size 512] [--keep DIR]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from covergen.build import BuildOptions, build  # noqa: E402
from covergen.catalog.edit import NewPair, render_pair  # noqa: E402
from covergen.executors import ExecutorSettings, JobOutcome, OutcomeSink  # noqa: E402
from covergen.executors.raycluster import RayExecutor, import_ray, start_local_ray  # noqa: E402
from covergen.plan import Job  # noqa: E402


@dataclass(frozen=True)
class SleepingEngine:
    """An engine factory (pickled by value, as this is __main__): each job takes ``seconds``,
    then is the photo at the job's size, tinted with the cover's mean colour."""

    seconds: float

    def __call__(self, device: str) -> SleepingEngine:
        return self

    def stylize_batch(self, jobs, progress=None, cancel=None):
        from covergen.nst import LossValues, StylizeResult

        time.sleep(self.seconds * len(jobs))
        out = []
        for job in jobs:
            scale = job.params.size / max(job.content.size)
            size = (round(job.content.width * scale), round(job.content.height * scale))
            mean = tuple(int(c) for c in np.asarray(job.styles[0]).reshape(-1, 3).mean(0))
            painted = Image.blend(job.content.resize(size), Image.new("RGB", size, mean), 0.4)
            losses = LossValues(1, 1, 1, 1)
            out.append(StylizeResult(painted, [], 1, self.seconds, "cpu", losses))
        return out


@dataclass
class Timings:
    """What the build's events and the timed executor saw."""

    first_sent: float = 0.0
    last_done: float = 0.0
    site_started: float = 0.0
    storing: list[float] = field(default_factory=list)  # on_outcome wall, per job

    def stage(self, text: str) -> None:
        if text.startswith("painting"):
            self.first_sent = time.perf_counter()
        if text.startswith("rendering the site"):
            self.site_started = time.perf_counter()

    def planned(self, *args: Any) -> None: ...
    def batch_started(self, worker: str, jobs: Any) -> None: ...
    def progress(self, worker: str, jobs: Any, event: Any) -> None: ...

    def pair_done(self, outcome: Any) -> None:
        if outcome.status == "built":
            self.last_done = time.perf_counter()


@dataclass
class TimedExecutor:
    """The Ray executor, with the wall time of every ``on_outcome`` (the driver storing a
    result and recording it) measured."""

    inner: RayExecutor
    timings: Timings
    name: str = "ray"

    def device_kind(self) -> str:
        return self.inner.device_kind()

    def prepare(self) -> list[str]:
        return self.inner.prepare()

    def run(
        self,
        jobs: Sequence[Job],
        on_outcome: OutcomeSink,
        events: Any,
        stop: threading.Event,
    ) -> bool:
        def timed(outcome: JobOutcome) -> None:
            start = time.perf_counter()
            on_outcome(outcome)
            self.timings.storing.append(time.perf_counter() - start)

        return self.inner.run(jobs, timed, events, stop)


def make_project(root: Path, pairs: int, size: int, distinct: int = 40) -> Path:
    """A catalog of ``pairs`` pairs over ``distinct`` photos (1200×900 JPEG) and covers."""
    (root / "photos").mkdir(parents=True)
    (root / "covers").mkdir()
    rng = np.random.default_rng(0)
    source = ROOT / "samples" / "photos" / "astronaut.jpg"
    with Image.open(source) as image:
        base = image.convert("RGB").resize((1200, 900))
    for i in range(distinct):
        tint = Image.new("RGB", base.size, tuple(int(c) for c in rng.integers(0, 255, 3)))
        Image.blend(base, tint, 0.2).save(root / "photos" / f"p{i}.jpg", quality=88)
        cover = Image.blend(base.resize((600, 600)), tint.resize((600, 600)), 0.6)
        cover.save(root / "covers" / f"c{i}.jpg", quality=88)
    lines = [f"defaults: {{size: {size}, scales: 1, iterations: 1, content_weight: 1}}", "pairs:"]
    for i in range(pairs):
        photo, cover = f"photos/p{i % distinct}.jpg", f"covers/c{(i * 7) % distinct}.jpg"
        pair = NewPair(f"Band {i}", f"Album {i}", photo, cover, overrides={"seed": i})
        lines.append(render_pair(pair, "").rstrip("\n"))  # every pair its own job (its seed)
    (root / "catalog.yaml").write_text("\n".join(lines) + "\n")
    return root / "catalog.yaml"


def options(root: Path, **values: Any) -> BuildOptions:
    return BuildOptions(
        catalog=root / "catalog.yaml",
        cache_dir=root / "cache",
        site_dir=root / "site",
        device="auto",
        offline=True,
        **{"render_site": False, **values},
    )


def scaling(root: Path, workers: int, job_seconds: float, per_worker: int) -> float:
    """Seconds from the first batch sent to the last outcome, for workers × per_worker jobs."""
    ray = import_ray()
    project = root / f"scale-{workers}"
    make_project(project, workers * per_worker, 64, distinct=min(40, workers * per_worker))
    start_local_ray(num_cpus=workers, num_gpus=workers)
    try:
        timings = Timings()
        settings = ExecutorSettings(cache_dir=project / "cache")
        executor = RayExecutor(settings, SleepingEngine(job_seconds))
        summary = build(options(project), timings, executor=executor)
        assert summary.count("built") == workers * per_worker, summary.counts()
        return timings.last_done - timings.first_sent
    finally:
        ray.shutdown()


def driver_costs(root: Path, pairs: int, size: int, workers: int) -> dict[str, float]:
    """Per job: driver CPU, storing wall; per input: ray.put; per pair: site render."""
    ray = import_ray()
    project = root / "driver"
    make_project(project, pairs, size)
    start_local_ray(num_cpus=2, num_gpus=workers)
    try:
        timings = Timings()
        settings = ExecutorSettings(cache_dir=project / "cache")
        executor = TimedExecutor(RayExecutor(settings, SleepingEngine(0.0)), timings)
        executor.prepare()  # the workers' start is not the driver's cost per job
        cpu = time.process_time()
        summary = build(options(project), timings, executor=executor)
        cpu = time.process_time() - cpu
        assert summary.count("built") == pairs, summary.counts()
        wall = timings.last_done - timings.first_sent
        data = (project / "photos" / "p0.jpg").read_bytes()
        start = time.perf_counter()
        refs = [ray.put(data + bytes([i % 256])) for i in range(50)]
        put = (time.perf_counter() - start) / len(refs)
        del refs
    finally:
        ray.shutdown()
    site = build(options(project, render_site=True, executor="local"), timings)
    render = time.perf_counter() - timings.site_started  # the build ends with the site
    results = sorted((project / "cache" / "results").rglob("*.png"))
    return {
        "cpu": cpu / pairs,
        "wall": wall / pairs,
        "storing": float(np.median(timings.storing)),
        "put": put,
        "input_kb": len(data) / 1024,
        "result_kb": float(np.mean([p.stat().st_size for p in results])) / 1024,
        "render": render / max(1, site.count("reused")),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", default="1,2,4,8")
    parser.add_argument("--job-seconds", type=float, default=2.0)
    parser.add_argument("--per-worker", type=int, default=4)
    parser.add_argument("--pairs", type=int, default=200)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--keep", type=Path, help="make the projects here and keep them")
    args = parser.parse_args(argv)

    root = args.keep or Path(tempfile.mkdtemp(prefix="covergen-ray-bench-"))
    try:
        counts = [int(n) for n in args.workers.split(",")]
        print(f"## Scaling: {args.per_worker} jobs per worker, {args.job_seconds:g} s each\n")
        print("| workers | jobs | wall s | jobs/s | linear jobs/s | ratio to linear |")
        print("| --- | --- | --- | --- | --- | --- |")
        for workers in counts:
            wall = scaling(root, workers, args.job_seconds, args.per_worker)
            jobs = workers * args.per_worker
            linear = workers / args.job_seconds
            print(
                f"| {workers} | {jobs} | {wall:.2f} | {jobs / wall:.3f} | {linear:.3f} "
                f"| {jobs / wall / linear:.3f} |",
                flush=True,
            )

        costs = driver_costs(root, args.pairs, args.size, max(counts))
        print(
            f"\n## The driver, {args.pairs} jobs on {max(counts)} workers with an instant "
            f"engine, {args.size} px results ({costs['result_kb']:.0f} KB PNG), inputs "
            f"{costs['input_kb']:.0f} KB JPEG\n"
        )
        rows = [
            ("driver CPU, all of it (dispatch, messages, storing, run log)", costs["cpu"]),
            ("wall, first batch sent to last result stored", costs["wall"]),
            ("storing a result + its run-log record (median wall)", costs["storing"]),
            ("ray.put of one input image", costs["put"]),
            ("site render, per pair", costs["render"]),
        ]
        print("| per job | ms |")
        print("| --- | --- |")
        for label, seconds in rows:
            print(f"| {label} | {seconds * 1e3:.2f} |")
        per_job = max(costs["cpu"], costs["storing"])
        print(
            f"\nThe driver keeps up while workers ÷ job seconds < 1 ÷ {per_job * 1e3:.1f} ms: "
            f"{1 / per_job:.0f} jobs/s, e.g. {60 / per_job:.0f} GPUs on 60 s jobs. "
            f"10,000 pairs: {10_000 * per_job / 60:.1f} min of driver time while painting, "
            f"plus {10_000 * costs['render'] / 60:.1f} min to render the site; their inputs, "
            f"put once per distinct image, {10_000 * costs['put']:.0f} s at most."
        )
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
