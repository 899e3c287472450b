"""One run on a lent GPU: the figures covergen needs from a real device, written to files.

Each section has a time budget and writes as it goes (a section cut short still leaves its
figures): ``OUT/gpu.md`` (the tables, for docs/benchmarks.md), ``OUT/gpu.json`` (the same,
raw), ``OUT/*.jpg`` (sheets). Tested on the CPU with ``--quick`` (tiny sizes, same code).

1. the engine per iteration at 512/768/1024 px, fp32/tf32/bf16, batches of 1/4/8;
2. batched throughput of whole pairs at 512 px (the default schedule) — goal ≤ 2 s a pair;
3. the out-of-memory path on a real GPU: memory capped so that a batch of 8 does not fit
   (halving), then a job that fits nowhere on the GPU (the CPU fallback);
4. coarse-to-fine against one scale at 512 and 1024 px, judged (scripts/bench.py scales);
5. the peer benchmark (scripts/peers.py) at 512 px;
6. the feed-forward methods: arbitrary and fast paintings a minute at 512 px (batched), and a
   cover's own network trained with the default recipe (goal ≤ 20 s);
7. the sample catalog built with the final profile, end to end.

Usage (there): python scripts/gpu_check.py --out "$OUT"   (scripts/gpu_check.sh sets it up)
"""

from __future__ import annotations

import argparse
import itertools
import json
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from PIL import Image  # noqa: E402

from covergen.nst import Engine, Runtime, StyleParams, StylizeJob  # noqa: E402

PHOTO = ROOT / "samples" / "photos" / "astronaut.jpg"
COVER = ROOT / "samples" / "covers" / "pulsar.png"


class Report:
    """Markdown and JSON written as sections finish."""

    def __init__(self, out: Path):
        self.out = out
        out.mkdir(parents=True, exist_ok=True)
        self.data: dict[str, object] = {}
        self.md = out / "gpu.md"
        self.md.write_text("")

    def line(self, text: str = "") -> None:
        print(text, flush=True)
        with self.md.open("a") as handle:
            handle.write(text + "\n")

    def save(self, key: str, value: object) -> None:
        self.data[key] = value
        (self.out / "gpu.json").write_text(json.dumps(self.data, indent=1, default=str))


def section(report: Report, title: str, budget: float, body: Callable[[float], None]) -> None:
    """Run one section; an error or the budget ends it, the others still run."""
    report.line(f"\n## {title}\n")
    start = time.perf_counter()
    try:
        body(start + budget)
    except Exception:
        report.line("```\n" + traceback.format_exc()[-2000:] + "\n```")
    report.line(f"\n_{time.perf_counter() - start:.0f} s_")


def images() -> tuple[Image.Image, Image.Image]:
    return Image.open(PHOTO).convert("RGB"), Image.open(COVER).convert("RGB")


def per_iteration(engine: Engine, size: int, batch: int, iterations: int) -> float:
    """Median seconds of one iteration of a batch (steady state), all jobs fixed-weight."""
    photo, cover = images()
    params = StyleParams(size=size, scales=1, iterations=iterations, tolerance=0,
                         content_weight=1, protect_faces=False)  # fmt: skip
    jobs = [StylizeJob(photo, [cover], params) for _ in range(batch)]
    stamps: list[float] = []

    def tick(_event: object) -> None:
        if engine.device.type == "cuda":
            torch.cuda.synchronize(engine.device)
        stamps.append(time.perf_counter())

    engine.stylize_batch(jobs, progress=tick)
    steps = [b - a for a, b in itertools.pairwise(stamps[2:])]
    return statistics.median(steps)


def engine_table(report: Report, device: str, sizes: list[int], batches: list[int],
                 deadline: float) -> None:  # fmt: skip
    rows = []
    report.line("| size | precision | batch | s / iteration | images·iterations / s |")
    report.line("| --- | --- | --- | --- | --- |")
    for precision in ("fp32", "tf32", "bf16"):
        engine = Engine(Runtime(device=device, precision=precision), cache_dir=ROOT / "cache",
                        offline=True)  # fmt: skip
        for size in sizes:
            for batch in batches:
                if time.perf_counter() > deadline:
                    report.line("| … | budget spent | | | |")
                    return
                try:
                    seconds = per_iteration(engine, size, batch, 12)
                except torch.cuda.OutOfMemoryError:
                    report.line(f"| {size} | {precision} | {batch} | out of memory | |")
                    torch.cuda.empty_cache()
                    continue
                rows.append({"size": size, "precision": precision, "batch": batch, "s": seconds})
                report.line(
                    f"| {size} | {precision} | {batch} | {seconds:.4f} | {batch / seconds:.1f} |"
                )
                report.save("engine", rows)


def throughput(report: Report, device: str, size: int, batch: int, deadline: float) -> None:
    """Whole pairs at the default schedule (auto weight, faces, scales), batched."""
    photo, cover = images()
    engine = Engine(Runtime(device=device), cache_dir=ROOT / "cache", offline=True)
    params = StyleParams(size=size)
    engine.stylize(photo, cover, params.replace(iterations=2, coarse_iterations=2))  # warm
    jobs = [StylizeJob(photo, [cover], params.replace(seed=i)) for i in range(batch)]
    start = time.perf_counter()
    results = engine.stylize_batch(jobs)
    seconds = time.perf_counter() - start
    per_pair = seconds / batch
    report.line(f"{batch} pairs at {size} px (defaults) in one batch: {seconds:.1f} s, "
                f"**{per_pair:.2f} s a pair** (goal ≤ 2 s)")  # fmt: skip
    metrics = [r.metrics for r in results]
    report.line(f"chosen content weights: {[m.get('content_weight') for m in metrics]}")
    report.save("throughput", {"size": size, "batch": batch, "seconds": seconds,
                               "per_pair": per_pair, "metrics": metrics})  # fmt: skip
    results[0].image.save(report.out / "throughput-0.jpg", quality=88)


def memory_path(report: Report, device: str, deadline: float) -> None:
    """The painter's halving and CPU fallback, on the real device with its memory capped."""
    from covergen.executors import ExecutorSettings
    from covergen.executors.painter import Painter, make_engine
    from covergen.plan import ImageInput, make_job

    if not device.startswith("cuda"):
        report.line("no CUDA device: skipped")
        return
    photo, cover = images()

    class Inputs:
        def image(self, sha256: str) -> Image.Image:
            return photo if sha256 == "a" * 64 else cover

    settings = ExecutorSettings(devices=(device,), cache_dir=ROOT / "cache", offline=True)
    attempts: list[tuple[str, int, int]] = []

    def factory(where: str):
        engine = make_engine(where, settings, None)
        real = engine.stylize_batch

        def logged(jobs, **kwargs):
            attempts.append((where, len(jobs), jobs[0].params.size))
            return real(jobs, **kwargs)

        engine.stylize_batch = logged  # type: ignore[method-assign]
        return engine

    painter = Painter(Inputs(), factory)
    total = torch.cuda.get_device_properties(0).total_memory
    for size, batch, fraction in ((1024, 8, None), (2048, 1, 0.002)):
        params = StyleParams(size=size, scales=1, iterations=3, content_weight=1,
                             protect_faces=False)  # fmt: skip
        jobs = [make_job(f"p{i}", "x", ImageInput("a" * 64, 512, 512),
                         ImageInput("b" * 64, 512, 512), params.replace(seed=i), "w")
                for i in range(batch)]  # fmt: skip
        # Cap the memory so that the whole batch cannot fit: halving must happen.
        cap = fraction or 1.5 * per_job_bytes(size) / total
        torch.cuda.set_per_process_memory_fraction(min(cap, 0.95), 0)
        torch.cuda.empty_cache()
        attempts.clear()
        outcomes = list(painter.run_batch(device, jobs, None, threading.Event()))
        torch.cuda.set_per_process_memory_fraction(1.0, 0)
        report.line(f"- {batch} × {size} px with {min(cap, 0.95) * total / 2**30:.1f} GiB: "
                    f"attempts {attempts}; outcomes "
                    f"{sorted({(o.status, o.device) for o in outcomes})}")  # fmt: skip
        report.save(
            f"memory-{size}",
            {"attempts": attempts, "outcomes": [(o.status, o.device) for o in outcomes]},
        )


def per_job_bytes(size: int) -> float:
    """A rough peak for one job at ``size`` (measured on the device first)."""
    engine = Engine(Runtime(device="cuda:0"), cache_dir=ROOT / "cache", offline=True)
    photo, cover = images()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    engine.stylize(photo, cover, StyleParams(size=size, scales=1, iterations=2,
                                             content_weight=1, protect_faces=False))  # fmt: skip
    return float(torch.cuda.max_memory_allocated() - base)


def script(report: Report, args: list[str], deadline: float) -> None:
    """One of our scripts in a subprocess, its output into the report, what it printed
    before a timeout included (the scripts print their rows as they finish them)."""
    try:
        done = subprocess.run(
            [sys.executable, "-u", *args], capture_output=True, text=True,
            timeout=max(30, deadline - time.perf_counter()),
        )  # fmt: skip
        out, err, failed = done.stdout, done.stderr, done.returncode != 0
    except subprocess.TimeoutExpired as exc:
        raw = exc.stdout or b""
        out = raw.decode(errors="replace") if isinstance(raw, bytes) else raw
        out += f"\n(stopped at the section's time limit, {exc.timeout:.0f} s)"
        err, failed = "", False
    report.line(out[-6000:])
    if failed or not out:
        report.line("```\n" + err[-3000:] + "\n```")


def peers(report: Report, device: str, size: int, deadline: float) -> None:
    """scripts/peers.py on this device: the tutorial, covergen, then crowsonkb's recipe."""
    script(report, [str(ROOT / "scripts" / "peers.py"), "--device", device, "--size", str(size),
                    "--pairs", "1", "--curves", "--sheet", str(report.out / "peers.jpg")],
           deadline)  # fmt: skip


def scales(report: Report, device: str, sizes: list[int], budgets: list[int],
           deadline: float) -> None:  # fmt: skip
    """scripts/bench.py's race of schedules, on this device."""
    script(report, [str(ROOT / "scripts" / "bench.py"), "--device", device, "--sections",
                    "scales", "--sizes", *map(str, sizes), "--budget", *map(str, budgets)],
           deadline)  # fmt: skip


def feedforward(report: Report, device: str, size: int, batch: int, quick: bool,
                deadline: float) -> None:  # fmt: skip
    """Paintings a minute by the arbitrary and the fast networks (batches of ``batch``
    photos at ``size`` px), and the time a cover's network takes to train (fast)."""
    from covergen.nst import imaging
    from covergen.nst.fasttrain import cover_painter, load_photos, train_cover_network
    from covergen.nst.feedforward import (
        load_multistyle,
        load_predictor,
        load_transformer,
        predict_style,
    )

    photo_image, cover_image = images()
    engine = Engine(Runtime(device=device), cache_dir=ROOT / "cache", offline=True)
    dev = engine.device
    photo = imaging.pil_to_tensor(photo_image.resize((size, size))).to(dev)
    photos = photo.expand(batch, -1, -1, -1).contiguous()
    cover = imaging.pil_to_tensor(cover_image)

    def rate(paint: Callable[[], object], label: str) -> float:
        paint()  # warm: kernels chosen, memory taken
        sync()
        start, rounds = time.perf_counter(), 0
        while rounds < 3 or time.perf_counter() - start < 5:
            paint()
            rounds += 1
            if time.perf_counter() > deadline:
                break
        sync()
        per_minute = 60 * rounds * batch / (time.perf_counter() - start)
        report.line(f"- {label}: **{per_minute:,.0f} paintings a minute** "
                    f"({batch} × {size} px a batch, {engine.precision})")  # fmt: skip
        return per_minute

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    predictor, transformer = load_predictor(dev), load_transformer(dev)
    with torch.no_grad():
        vector = predict_style(predictor, imaging.pil_to_tensor(
            cover_image.resize((256, 256))).to(dev))  # fmt: skip
        arbitrary = rate(lambda: transformer(photos, vector.expand(batch, -1)), "arbitrary")
    params = StyleParams(method="fast")
    if quick:
        params = params.replace(fast_iterations=3, fast_size=64)
    start = time.perf_counter()
    steps: list[float] = []
    trained = train_cover_network(
        engine, params, cover, load_photos(), progress=lambda *_: steps.append(time.perf_counter())
    )
    sync()
    train_s = time.perf_counter() - start
    report.line(f"- a cover's network (fast), {params.fast_iterations} steps × "
                f"{params.fast_batch} crops of {params.fast_size} px: **{train_s:.1f} s** "
                f"(goal ≤ 20 s)")  # fmt: skip
    painter = cover_painter(load_multistyle(dev), trained)
    with torch.no_grad():
        fast = rate(lambda: painter(photos), "fast")
        painted = painter(photo[:1]).clamp(0, 1).cpu()
    imaging.tensor_to_pil(painted).save(report.out / "fast-0.jpg", quality=88)
    report.save("feedforward", {"size": size, "batch": batch, "arbitrary_per_minute": arbitrary,
                                "fast_per_minute": fast, "fast_train_s": train_s,
                                "fast_steps": len(steps)})  # fmt: skip


def sample_build(report: Report, device: str, deadline: float) -> None:
    work = Path(tempfile.mkdtemp(prefix="covergen-gpu-"))
    try:
        shutil.copytree(ROOT / "samples", work / "samples")
        shutil.copy(ROOT / "catalog.yaml", work / "catalog.yaml")
        start = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "covergen", "build", "--profile", "final", "--device", device,
             "--offline"],
            cwd=work, capture_output=True, text=True,
            timeout=max(30, deadline - time.perf_counter()),
            env={**__import__("os").environ, "PYTHONPATH": str(ROOT)},
        )  # fmt: skip
        report.line(f"exit {done.returncode} in {time.perf_counter() - start:.0f} s")
        report.line("```\n" + (done.stderr[-3000:] or done.stdout[-3000:]) + "\n```")
        status = subprocess.run(
            [sys.executable, "-m", "covergen", "status"], cwd=work, capture_output=True,
            text=True, env={**__import__("os").environ, "PYTHONPATH": str(ROOT)},
        )  # fmt: skip
        report.line("```\n" + status.stdout[-4000:] + "\n```")
        site = work / "site"
        if site.is_dir():
            shutil.make_archive(str(report.out / "site"), "zip", site)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a test on the CPU")
    args = parser.parse_args(argv)
    report = Report(args.out)
    device = "cuda:0" if args.device == "auto" and torch.cuda.is_available() else args.device
    device = "cpu" if device == "auto" else device
    name = torch.cuda.get_device_name(0) if device.startswith("cuda") else platform.processor()
    report.line(f"# covergen on {name} — torch {torch.__version__}, "
                f"CUDA {torch.version.cuda}, {time.strftime('%Y-%m-%d %H:%M')}")  # fmt: skip
    report.save("device", {"name": name, "torch": torch.__version__, "cuda": torch.version.cuda})
    quick = args.quick
    sizes = [64, 96] if quick else [512, 768, 1024]
    batches = [1, 2] if quick else [1, 4, 8]
    section(report, "Engine per iteration", 20 if quick else 100,
            lambda end: engine_table(report, device, sizes, batches, end))  # fmt: skip
    section(
        report,
        "Batched throughput, whole pairs",
        60,
        lambda end: throughput(report, device, 96 if quick else 512, 2 if quick else 8, end),
    )
    section(report, "Out of memory: halving, then the CPU", 20 if quick else 45,
            lambda end: memory_path(report, device, end))  # fmt: skip
    section(report, "The feed-forward methods", 60,
            lambda end: feedforward(report, device, 64 if quick else 512, 2 if quick else 32,
                                    quick, end))  # fmt: skip
    section(report, "Coarse-to-fine against one scale, judged", 40 if quick else 80,
            lambda end: scales(report, device, [64] if quick else [512, 1024],
                               [3] if quick else [6, 20], end))  # fmt: skip
    section(report, "Peer benchmark", 60 if quick else 80,
            lambda end: peers(report, device, 64 if quick else 512, end))  # fmt: skip
    if not quick:
        section(report, "The sample catalog, final profile", 80,
                lambda end: sample_build(report, device, end))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
