"""Engine benchmarks on the current device, all in one process so the ratios are fair.

Sections (``--sections``, all by default):
- ``timing``: per size, seconds per iteration of the engine (steady state, targets excluded)
  and seconds per forward+backward of the bare network through the same layers, the floor on
  this device, measured interleaved so both see the same machine; their ratio (goal < 1.10);
- ``scales``: coarse-to-fine schedules against one scale within the same wall-clock budget,
  judged along the way by the quality measures: how soon each takes the cover to a given
  ``style_taken`` with the photo still recognisable;
- ``stopping``: where the early-stopping rule ends the final scale at each tolerance, and
  the judged quality there against the quality at the end of the iteration budget (each
  pair painted once at the defaults, stopping off; the rule replayed on its losses);
- ``optimiser``: L-BFGS against Adam within the same budget;
- ``costs``: what the defaults cost at the draft profile, as ratios to a fixed-weight pair
  without face detection, painted in turns in the same process: face detection, the
  automatic content weight, and both (the defaults);
- ``photo``: photo mode's cost per iteration as a ratio to the artistic mode's, and the
  matting Laplacian's build time, size and estimated peak memory per image size;
- ``cpu``: what the field tries on a CPU, per iteration at the smallest size, against fp32
  in turns in the same process: channels-last, ``torch.compile`` of the network (its
  compile time apart), bf16 autocast, and one thread instead of all.

The fixed-parameter sections pin ``content_weight: 1`` and ``protect_faces: false`` so they
time the optimisation alone.

Usage: python scripts/bench.py [--sizes 256 512] [--budget S ...] [--device auto]
                               [--quick] [--sections timing costs ...]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from covergen.nst import Cancelled, Engine, Progress, Runtime, StyleParams, imaging
from covergen.nst.layers import deepest_layer
from covergen.nst.objective import EarlyStop as _EarlyStop
from covergen.nst.params import AUTO_AIM, fit_long_side

ROOT = Path(__file__).resolve().parent.parent
PHOTO = ROOT / "samples" / "photos" / "astronaut.jpg"
COVER = ROOT / "samples" / "covers" / "pulsar.png"
SECTIONS = ("timing", "scales", "stopping", "optimiser", "costs", "photo", "cpu")
KEEP_EVERY = 5  # final-scale iterations between the images the judged sections keep
# The fixed-parameter sections time the optimisation alone.
FIXED = {"content_weight": 1, "protect_faces": False}
# catalog.yaml's draft profile, with early stopping off so every variant runs as long.
DRAFT = {
    "size": 256, "scales": 2, "min_size": 128, "coarse_iterations": 60, "iterations": 60,
    "tolerance": 0,
}  # fmt: skip
COST_VARIANTS = {
    "fixed weight, no faces (baseline)": {"content_weight": 1, "protect_faces": False},
    "face detection": {"content_weight": 1, "protect_faces": True},
    "content_weight auto": {"content_weight": "auto", "protect_faces": False},
    "defaults (auto and faces)": {},
}


def synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved_seconds(
    engine: Engine, photo: Image.Image, cover: Image.Image, params: StyleParams
) -> tuple[float, float]:
    """Median seconds of an engine iteration and of a bare network pass, interleaved.

    After each engine iteration (in the progress callback) one forward+backward pass of the
    bare network through the same layers runs and is timed on its own, so both figures are
    taken under the same conditions even on a busy machine; the engine's figure excludes
    the bare pass. The first iterations (warm-up) are dropped.
    """
    encoder = engine.encoder(params)
    layers = list(dict.fromkeys([*params.content_layers, *params.style_layers]))
    assert deepest_layer(params.network, layers) == encoder.layer_names[-1]
    width, height = photo.size
    scale = params.size / max(width, height)
    x = torch.rand(
        1, 3, round(height * scale), round(width * scale), device=engine.device, requires_grad=True
    )
    engine_times: list[float] = []
    bare_times: list[float] = []
    resumed: list[float] = []

    def tick(_event: object) -> None:
        synchronise(engine.device)
        if resumed:
            engine_times.append(time.perf_counter() - resumed[-1])
        start = time.perf_counter()
        feats = engine.features(encoder, x, layers)
        torch.autograd.grad(sum(f.float().sum() for f in feats.values()), x)
        synchronise(engine.device)
        bare_times.append(time.perf_counter() - start)
        resumed.append(time.perf_counter())

    engine.stylize(photo, cover, params, progress=tick)
    return statistics.median(engine_times[2:]), statistics.median(bare_times[2:])


def loss_within_budget(
    engine: Engine, photo: Image.Image, cover: Image.Image, params: StyleParams, budget: float
) -> tuple[float, int]:
    """Final-size loss reached when the budget runs out (or at convergence), iterations run."""
    final_scale = len(params.scale_sizes()) - 1
    state = {"loss": float("nan"), "iterations": 0, "start": time.perf_counter()}

    def tick(event) -> None:
        state["iterations"] += 1
        if event.scale == final_scale:
            state["loss"] = event.losses[0].total

    def out_of_time() -> bool:
        return time.perf_counter() - state["start"] > budget

    state["start"] = time.perf_counter()
    with contextlib.suppress(Cancelled):
        engine.stylize(photo, cover, params, progress=tick, cancel=out_of_time)
    return state["loss"], state["iterations"]


def timing_table(engine: Engine, photo, cover, sizes: list[int], iterations: int) -> dict:
    print("\n| size | engine s/iter | network fwd+bwd s | ratio |")
    print("| --- | --- | --- | --- |")
    per_size: dict[int, float] = {}
    for size in sizes:
        params = StyleParams(size=size, scales=1, iterations=iterations + 3, tolerance=0, **FIXED)
        engine.stylize(photo, cover, params.replace(iterations=2))  # weights, targets warm
        per_iteration, per_pass = interleaved_seconds(engine, photo, cover, params)
        print(
            f"| {size} | {per_iteration:.4f} | {per_pass:.4f} | {per_iteration / per_pass:.3f} |",
            flush=True,
        )
        per_size[size] = per_iteration
    return per_size


def quality_over_time(
    engine: Engine,
    photo: Image.Image,
    cover: Image.Image,
    params: StyleParams,
    budget: float,
    losses: list[float] | None = None,
    images: list[torch.Tensor] | None = None,
) -> list[tuple[float, float, float]]:
    """Paint for ``budget`` seconds, keeping the image every KEEP_EVERY iterations of the
    final scale (copies excluded from the clock), then judge every kept image: a list of
    (seconds, content_kept, style_taken). ``losses``, if given, receives the final scale's
    total loss at every iteration, as the early-stopping rule sees it, and ``images`` the
    kept images."""
    width, height = fit_long_side(*photo.size, params.size)
    kept: list[tuple[float, torch.Tensor]] = []
    clock = {"start": 0.0, "paused": 0.0, "steps": 0}

    def record(event: Progress) -> None:
        if losses is not None and event.stage == "paint" and event.size == (width, height):
            losses.append(event.losses[0].total)

    def elapsed() -> float:
        return time.perf_counter() - clock["start"] - clock["paused"]

    def observe(event: Progress, images: torch.Tensor) -> None:
        if event.stage == "paint" and event.size == (width, height):
            clock["steps"] += 1
            if clock["steps"] % KEEP_EVERY == 0:
                synchronise(engine.device)
                before = time.perf_counter()
                kept.append((elapsed(), images[:1].clamp(0, 1).float().cpu().clone()))
                clock["paused"] += time.perf_counter() - before

    engine.observer = observe
    try:
        clock["start"] = time.perf_counter()
        with contextlib.suppress(Cancelled):
            engine.stylize(photo, cover, params, progress=record, cancel=lambda: elapsed() > budget)
    finally:
        engine.observer = None
    photo_t = imaging.pil_to_tensor(imaging.resized(photo, (width, height)))
    cover_t = imaging.pil_to_tensor(imaging.resized(cover, fit_long_side(*cover.size, params.size)))
    scores = engine.judge.score_many(photo_t, cover_t, [image for _, image in kept])
    if images is not None:
        images.extend(image for _, image in kept)
    return [(t, s.content_kept, s.style_taken) for (t, _), s in zip(kept, scores, strict=True)]


def first_time(curve: list[tuple[float, float, float]], style: float) -> str:
    """When the cover is taken to ``style`` with the photo still recognisable (AUTO_AIM)."""
    for seconds, content, taken in curve:
        if taken >= style and content >= AUTO_AIM:
            return f"{seconds:.0f}"
    return "—"


def schedule_text(params: StyleParams) -> str:
    """A schedule as the race's tables name it: "2 scales from 256, 50 coarse"."""
    sizes = params.scale_sizes()
    if len(sizes) == 1:
        return "one scale"
    return f"{len(sizes)} scales from {sizes[0]}, {params.coarse_iterations} coarse"


def race_schedules(size: int) -> dict[str, tuple[str, StyleParams]]:
    """The schedules the race can run at ``size``, by key: (label, parameters)."""
    base = StyleParams(size=size, iterations=100000, tolerance=0, **FIXED)
    chosen = {
        "one": base.replace(scales=1),
        "defaults": base,
        "old": base.replace(scales=3, min_size=128, coarse_iterations=150),
        "three": base.replace(scales=3, min_size=128, coarse_iterations=50),
        "half": base.replace(scales=2, min_size=max(16, size // 2), coarse_iterations=50),
        "quarter": base.replace(scales=2, min_size=max(16, size // 4), coarse_iterations=50),
    }
    labels = {"defaults": "the defaults: ", "old": "the old defaults: "}
    return {key: (labels.get(key, "") + schedule_text(p), p) for key, p in chosen.items()}


SCHEDULES = tuple(race_schedules(512))


def scales_table(engine: Engine, photo, cover, sizes, budgets, keys: list[str]) -> None:
    """Coarse-to-fine against one scale in the same wall-clock budget, judged by the quality
    measures along the way (fixed weights, early stopping off)."""
    print(
        "\n| size | budget s | schedule | final-scale iterations | content / style at the end "
        "| s to style 0.22 | s to style 0.30 |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for size, budget in zip(sizes, budgets, strict=True):
        schedules = race_schedules(size)
        engine.stylize(photo, cover, schedules["one"][1].replace(iterations=1))  # weights loaded
        for key in keys:
            name, params = schedules[key]
            curve = quality_over_time(engine, photo, cover, params, budget)
            end = f"{curve[-1][1]:.2f} / {curve[-1][2]:.2f}" if curve else "never reached"
            print(
                f"| {size} | {budget:.0f} | {name} | {KEEP_EVERY * len(curve)} | {end} "
                f"| {first_time(curve, 0.22)} | {first_time(curve, 0.30)} |",
                flush=True,
            )


STOPPING_PAIRS = (
    ("photos/astronaut.jpg", "covers/pulsar.png"),
    ("photos/grace_hopper.jpg", "covers/redlines.png"),
    ("photos/camera.png", "covers/knit.png"),
    ("photos-hard/portrait.jpg", "covers-hard/darkfield.png"),
)
TOLERANCES = (1e-3, 1e-2, 2e-2, 5e-2)  # the ones docs/benchmarks.md reports


def stop_iteration(losses: list[float], params: StyleParams) -> int:
    """The iteration at which the engine's own early-stopping rule, under ``params``, ends a
    scale whose total loss went ``losses`` (its budget: their number)."""
    stopper = _EarlyStop([params], [len(losses)], torch.device("cpu"))
    for iteration, loss in enumerate(losses, 1):
        stopper.update(iteration, torch.tensor([loss]))
        if not bool(stopper.active[0]):
            return iteration
    return len(losses)


def stopping_table(
    engine: Engine, sizes: list[int], tolerances: list[float], save: Path | None = None
) -> None:
    """Where the early-stopping rule ends the final scale at each tolerance, against the
    judged quality: each pair painted once at the defaults with stopping off, its loss and
    kept images recorded, and the rule replayed on the recorded losses. ``save``: the raw
    runs as JSON (losses; per kept image its seconds, scores, and mean change in 0-255
    levels over the last ``patience`` iterations), to try other rules on."""
    print(
        "\n| size | pair | tolerance | stops at iteration | s to there (of all) "
        "| content / style there | content / style at the budget's end |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    raw = []
    for size in sizes:
        params = StyleParams(size=size, tolerance=0)
        back = params.patience // KEEP_EVERY  # kept images one patience apart
        for photo_name, cover_name in STOPPING_PAIRS:
            photo = Image.open(ROOT / "samples" / photo_name).convert("RGB")
            cover = Image.open(ROOT / "samples" / cover_name).convert("RGB")
            losses: list[float] = []
            images: list[torch.Tensor] = []
            curve = quality_over_time(engine, photo, cover, params, float("inf"), losses, images)
            label = f"{Path(photo_name).stem} × {Path(cover_name).stem}"
            end = f"{curve[-1][1]:.2f} / {curve[-1][2]:.2f}"
            for tolerance in tolerances:
                stop = stop_iteration(losses, params.replace(tolerance=tolerance))
                seconds, content, style = curve[max(0, stop // KEEP_EVERY - 1)]
                print(
                    f"| {size} | {label} | {tolerance:g} | {stop} "
                    f"| {seconds:.0f} ({curve[-1][0]:.0f}) | {content:.2f} / {style:.2f} | {end} |",
                    flush=True,
                )
            changes = [
                float((image - images[i - back]).abs().mean() * 255) if i >= back else None
                for i, image in enumerate(images)
            ]
            raw.append({"size": size, "pair": label, "losses": losses, "kept": [
                [KEEP_EVERY * (i + 1), *point, change]
                for i, (point, change) in enumerate(zip(curve, changes, strict=True))
            ]})  # fmt: skip
            if save is not None:
                save.write_text(json.dumps(raw))


def medians_and_ratios(seconds: dict[str, list[float]]) -> dict[str, tuple[float, float]]:
    """Per variant timed in turns: its median, and the median of its per-round ratio to the
    first variant (the baseline), so a round disturbed for all variants cancels out."""
    baseline = next(iter(seconds.values()))
    return {
        name: (
            statistics.median(times),
            statistics.median(t / b for t, b in zip(times, baseline, strict=True)),
        )
        for name, times in seconds.items()
    }


def iteration_seconds(
    engine: Engine, photo: Image.Image, cover: Image.Image, params: StyleParams
) -> tuple[float, float]:
    """Seconds of a run's first iteration (targets, compilation) and the median of its
    steady iterations (the first two dropped)."""
    marks = [time.perf_counter()]

    def tick(_event: object) -> None:
        synchronise(engine.device)
        marks.append(time.perf_counter())

    engine.stylize(photo, cover, params, progress=tick)
    steps = np.diff(marks)
    return float(steps[0]), float(statistics.median(steps[2:]))


def cpu_table(runtime: Runtime, cache_dir: Path, size: int, iterations: int, rounds: int) -> None:
    """The CPU recipes per iteration at ``size``, each variant on its own engine (weights
    shared), in turns, the ratio to fp32 (contiguous) taken per round. Every variant but
    bf16 is fp32, whatever ``--precision auto`` would pick here."""
    photo, cover = Image.open(PHOTO).convert("RGB"), Image.open(COVER).convert("RGB")
    params = StyleParams(size=size, scales=1, iterations=iterations + 3, tolerance=0, **FIXED)
    runtime = Runtime(runtime.device, "fp32")
    base = Engine(runtime, cache_dir=cache_dir)
    base.stylize(photo, cover, params.replace(iterations=2))  # weights converted and loaded
    threads = torch.get_num_threads()

    def variant(name: str) -> Engine:
        if name == "channels-last":
            engine = Engine(Runtime(runtime.device, "fp32", True), cache_dir=cache_dir)
        elif name == "bf16 autocast (channels-last)":
            engine = Engine(Runtime(runtime.device, "bf16"), cache_dir=cache_dir)
        else:
            engine = Engine(runtime, cache_dir=cache_dir)
        engine._weights = base._weights
        if name == "torch.compile":
            compiled = torch.compile(engine.encoder(params))
            engine.encoder = lambda _params: compiled  # type: ignore[method-assign]
        return engine

    names = [
        "fp32, contiguous",
        "channels-last",
        "torch.compile",
        "bf16 autocast (channels-last)",
        f"1 thread (of {threads})",
    ]
    engines = {name: variant(name) for name in names}
    firsts: dict[str, float] = {}
    seconds: dict[str, list[float]] = {name: [] for name in names}
    for round_ in range(rounds):
        for name, engine in engines.items():
            # bf16 is slow enough on most CPUs that a few iterations say all
            run = params.replace(iterations=4) if name.startswith("bf16") else params
            if name.startswith("1 thread"):
                torch.set_num_threads(1)
            try:
                first, steady = iteration_seconds(engine, photo, cover, run)
            finally:
                torch.set_num_threads(threads)
            seconds[name].append(steady)
            if round_ == 0:
                firsts[name] = first
    print(
        f"\n| {size} px, {platform.machine()} | first iteration s | s/iter (median) "
        f"| × fp32 (median of {rounds} rounds) |"
    )
    print("| --- | --- | --- | --- |")
    for name, (median, ratio) in medians_and_ratios(seconds).items():
        print(f"| {name} | {firsts[name]:.1f} | {median:.4f} | {ratio:.2f} |", flush=True)


def optimiser_table(engine: Engine, photo, cover, size: int, budget: float) -> None:
    print(f"\n| optimiser ({size} px, single scale) | loss within {budget:.0f} s (iterations) |")
    print("| --- | --- |")
    for optimizer in ("lbfgs", "adam"):
        params = StyleParams(
            size=size, scales=1, iterations=100000, tolerance=0, optimizer=optimizer, **FIXED
        )
        loss, n = loss_within_budget(engine, photo, cover, params, budget)
        print(f"| {optimizer} | {loss:.4f} ({n}) |", flush=True)


def costs_table(runtime: Runtime, cache_dir: Path, rounds: int) -> None:
    """The defaults' cost at the draft profile: every variant painted once per round, in
    turns, each on a fresh engine without a target cache (so faces are detected and targets
    computed every time, as for a new pair), the ratio to the baseline taken per round."""
    photo = Image.open(ROOT / "samples" / "photos-hard" / "portrait.jpg").convert("RGB")
    cover = Image.open(ROOT / "samples" / "covers-hard" / "darkfield.png").convert("RGB")
    warm = Engine(runtime, cache_dir=cache_dir)  # weights converted, judge and detector loaded
    warm.stylize(photo, cover, StyleParams(**{**DRAFT, "iterations": 2, "coarse_iterations": 2}))
    seconds: dict[str, list[float]] = {name: [] for name in COST_VARIANTS}
    chosen: dict[str, str] = {}
    for _ in range(rounds):
        for name, overrides in COST_VARIANTS.items():
            engine = Engine(runtime, cache_dir=cache_dir)
            engine._weights, engine._detector, engine._judge = (
                warm._weights, warm._detector, warm._judge
            )  # loaded once per process in a build too  # fmt: skip
            start = time.perf_counter()
            result = engine.stylize(photo, cover, StyleParams(**{**DRAFT, **overrides}))
            synchronise(engine.device)
            seconds[name].append(time.perf_counter() - start)
            chosen[name] = str(result.metrics.get("content_weight", "fixed"))
    print(
        "\n| draft profile, portrait × darkfield | seconds (median) | × baseline (median of "
        f"{rounds} rounds) | content weight |"
    )
    print("| --- | --- | --- | --- |")
    for name, (median, ratio) in medians_and_ratios(seconds).items():
        print(f"| {name} | {median:.1f} | {ratio:.2f} | {chosen[name]} |", flush=True)


def photo_table(engine: Engine, photo, cover, sizes: list[int], iterations: int) -> None:
    """Photo mode per iteration against artistic mode (interleaved, same machine), and the
    matting Laplacian's build per size."""
    import tracemalloc

    from covergen.nst.engine import LAPLACIAN_EPS
    from covergen.nst.photoreal import MattingLaplacian, estimate_laplacian_bytes

    print("\n| size | artistic s/iter | photo s/iter | photo / artistic |")
    print("| --- | --- | --- | --- |")
    for size in sizes:
        base = StyleParams(size=size, scales=1, iterations=iterations + 3, tolerance=0, **FIXED)
        photo_mode = base.replace(mode="photo", smoothing="off")
        times: dict[str, list[float]] = {"artistic": [], "photo": []}
        for params in (base, photo_mode):  # warm: weights, targets, the Laplacian
            engine.stylize(photo, cover, params.replace(iterations=2))
        for _ in range(2):
            for name, params in (("artistic", base), ("photo", photo_mode)):
                times[name].append(interleaved_seconds(engine, photo, cover, params)[0])
        artistic, photographic = (statistics.median(times[n]) for n in ("artistic", "photo"))
        print(f"| {size} | {artistic:.4f} | {photographic:.4f} | {photographic / artistic:.3f} |")
    print("\n| image | build s | nonzeros | matrix MiB | estimated peak MiB | traced peak MiB |")
    print("| --- | --- | --- | --- | --- | --- |")
    for side in (256, 512, 1024):
        image = photo.resize((side, side), Image.Resampling.LANCZOS)
        tensor = torch.from_numpy(np.asarray(image, np.float64) / 255)
        tracemalloc.start()
        start = time.perf_counter()
        laplacian = MattingLaplacian.from_photo(tensor.permute(2, 0, 1), LAPLACIAN_EPS)
        took = time.perf_counter() - start
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        print(
            f"| {side}×{side} | {took:.2f} | {laplacian.matrix.values().numel():,} | "
            f"{laplacian.nbytes / 2**20:.0f} | {estimate_laplacian_bytes(side, side) / 2**20:.0f} "
            f"| {peak / 2**20:.0f} |",
            flush=True,
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--iterations", type=int, default=8, help="timed engine iterations")
    parser.add_argument(
        "--budget",
        type=float,
        nargs="+",
        default=None,
        help="seconds per size for the single- vs multi-scale race",
    )
    parser.add_argument(
        "--schedules",
        nargs="+",
        choices=SCHEDULES,
        default=["one", "defaults", "old", "quarter"],
        help="the scales race's schedules: one scale, the defaults, the old defaults (3 from "
        "128, 150 coarse), 3 from 128 with 50 coarse, 2 from half or a quarter of the size",
    )
    parser.add_argument(
        "--tolerances",
        type=float,
        nargs="+",
        default=list(TOLERANCES),
        help="the early-stopping tolerances the stopping section replays",
    )
    parser.add_argument("--save", type=Path, help="the stopping section's raw runs, as JSON")
    parser.add_argument("--quick", action="store_true", help="small budgets, fewer repeats")
    parser.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    parser.add_argument(
        "--rounds",
        type=int,
        default=None,
        help="rounds of the costs section (3; --quick 1) and the cpu section (2)",
    )
    parser.add_argument("--cache-dir", type=Path, default=ROOT / "cache")
    args = parser.parse_args(argv)

    runtime = Runtime(device=args.device, precision=args.precision)
    engine = Engine(runtime, cache_dir=args.cache_dir)
    photo, cover = Image.open(PHOTO).convert("RGB"), Image.open(COVER).convert("RGB")
    device_name = (
        torch.cuda.get_device_name(engine.device)
        if engine.device.type == "cuda"
        else f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    )
    print(
        f"# covergen engine benchmark — {engine.device} ({device_name}), torch "
        f"{torch.__version__}, precision {args.precision} ({engine.precision})"
    )
    budgets = args.budget or [
        (15 if args.quick else 60) * (s / 256) ** 2 * (0.1 if engine.device.type == "cuda" else 1)
        for s in args.sizes
    ]
    if len(budgets) == 1:
        budgets = budgets * len(args.sizes)
    iterations = 4 if args.quick else args.iterations
    sections = set(args.sections)

    if "timing" in sections:
        timing_table(engine, photo, cover, args.sizes, iterations)
    if "scales" in sections:
        scales_table(engine, photo, cover, args.sizes, budgets, args.schedules)
    if "stopping" in sections:
        stopping_table(engine, args.sizes, args.tolerances, args.save)
    if "optimiser" in sections:
        size = min(args.sizes)
        optimiser_table(engine, photo, cover, size, budgets[args.sizes.index(size)])
    if "costs" in sections:
        costs_table(runtime, args.cache_dir, args.rounds or (1 if args.quick else 3))
    if "photo" in sections:
        photo_table(engine, photo, cover, args.sizes, iterations)
    if "cpu" in sections:
        cpu_table(runtime, args.cache_dir, min(args.sizes), iterations, args.rounds or 2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
