"""Engine benchmarks on the current device, all in one process so the ratios are fair.

For each size it prints:
- seconds per iteration of the engine (steady state, targets excluded) and seconds per
  forward+backward of the bare network through the same layers, the floor on this device,
  measured interleaved so both see the same machine; and their ratio (goal: under 1.10);
- the loss reached at the final size within the same wall-clock budget by single-scale
  and by multi-scale optimisation.

Usage: python scripts/bench.py [--sizes 256 512] [--budget S ...] [--device auto]
                               [--quick] [--timing-only]
"""

from __future__ import annotations

import argparse
import contextlib
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
from PIL import Image

from covergen.nst import Cancelled, Engine, Runtime, StyleParams
from covergen.nst.vgg import deepest_layer

ROOT = Path(__file__).resolve().parent.parent
PHOTO = ROOT / "samples" / "photos" / "astronaut.jpg"
COVER = ROOT / "samples" / "covers" / "pulsar.png"


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
        feats = engine._features(encoder, x, layers)
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
    parser.add_argument("--quick", action="store_true", help="small budgets, fewer repeats")
    parser.add_argument(
        "--timing-only", action="store_true", help="only the engine-versus-network table"
    )
    parser.add_argument("--cache-dir", type=Path, default=ROOT / "cache")
    args = parser.parse_args(argv)

    engine = Engine(Runtime(device=args.device, precision=args.precision), cache_dir=args.cache_dir)
    photo, cover = Image.open(PHOTO).convert("RGB"), Image.open(COVER).convert("RGB")
    device_name = (
        torch.cuda.get_device_name(engine.device)
        if engine.device.type == "cuda"
        else f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    )
    print(
        f"# covergen engine benchmark — {engine.device} ({device_name}), torch "
        f"{torch.__version__}, precision {args.precision}"
    )
    budgets = args.budget or [
        (15 if args.quick else 60) * (s / 256) ** 2 * (0.1 if engine.device.type == "cuda" else 1)
        for s in args.sizes
    ]
    if len(budgets) == 1:
        budgets = budgets * len(args.sizes)
    iterations = 4 if args.quick else args.iterations

    print("\n| size | engine s/iter | network fwd+bwd s | ratio |")
    print("| --- | --- | --- | --- |")
    per_size: dict[int, float] = {}
    for size in args.sizes:
        params = StyleParams(size=size, scales=1, iterations=iterations + 3, tolerance=0)
        engine.stylize(photo, cover, params.replace(iterations=2))  # weights, targets warm
        per_iteration, per_pass = interleaved_seconds(engine, photo, cover, params)
        print(
            f"| {size} | {per_iteration:.4f} | {per_pass:.4f} | {per_iteration / per_pass:.3f} |",
            flush=True,
        )
        per_size[size] = per_iteration

    if args.timing_only:
        return 0
    print(
        "\n| size | budget s | single-scale loss (iterations) | multi-scale loss (iterations) "
        "| multi / single |"
    )
    print("| --- | --- | --- | --- | --- |")
    for size, budget in zip(args.sizes, budgets, strict=True):
        single = StyleParams(size=size, scales=1, iterations=100000, tolerance=0)
        # Two coarser scales at 1/4 and 1/2 the size, each given about 15% of the budget:
        # an iteration there costs about 1/16 and 1/4 of one at full size.
        coarse = max(10, round(0.15 * budget / (per_size[size] / 4)))
        multi = StyleParams(
            size=size,
            scales=3,
            min_size=size // 4,
            iterations=100000,
            coarse_iterations=coarse,
            tolerance=0,
        )
        loss_single, n_single = loss_within_budget(engine, photo, cover, single, budget)
        loss_multi, n_multi = loss_within_budget(engine, photo, cover, multi, budget)
        print(
            f"| {size} | {budget:.0f} | {loss_single:.4f} ({n_single}) | "
            f"{loss_multi:.4f} ({n_multi}) | {loss_multi / loss_single:.3f} |",
            flush=True,
        )

    size = min(args.sizes)
    budget = budgets[args.sizes.index(size)]
    print(f"\n| optimiser ({size} px, single scale) | loss within {budget:.0f} s (iterations) |")
    print("| --- | --- |")
    for optimizer in ("lbfgs", "adam"):
        params = StyleParams(
            size=size, scales=1, iterations=100000, tolerance=0, optimizer=optimizer
        )
        loss, n = loss_within_budget(engine, photo, cover, params, budget)
        print(f"| {optimizer} | {loss:.4f} ({n}) |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
