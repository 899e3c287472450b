"""The fast method's training, measured: time per cover and the judged quality of its paintings
against the arbitrary method's on the same pairs.

Each cover gets one network, trained on the bundled training photos (``--with-photo``: one per
pair, the pair's photo added, as a job that passes its own photo trains). Every sample photo is
painted at ``--paint-size`` by it and by the arbitrary-style networks, and both are judged
(content_kept, style_taken). ``--sheet`` saves a contact sheet: photo | cover | arbitrary | fast.

Usage: python scripts/fast_train_bench.py [--covers pulsar knit ...] [--photos astronaut ...]
           [--iterations 200] [--batch 1] [--lr 0.02] [--content-weight 1] [--train norm]
           [--fast-size 256] [--paint-size 512] [--precision fp32] [--with-photo]
           [--sheet /tmp/fast_sheet.png] [--json out.json]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch
from PIL import Image, ImageDraw

from covergen.nst import Engine, Runtime, StyleParams, imaging
from covergen.nst.fasttrain import cover_painter, load_photos, train_cover_network
from covergen.nst.feedforward import (
    load_multistyle,
    load_predictor,
    load_transformer,
    stylize_arbitrary,
)

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "samples"
COVERS = sorted([*SAMPLES.glob("covers/*.png"), *SAMPLES.glob("covers-hard/*.png")])
PHOTOS = sorted(
    p
    for p in [*SAMPLES.glob("photos/*"), *SAMPLES.glob("photos-hard/*")]
    if p.suffix in (".jpg", ".png")
)
THUMB = 192


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--covers", nargs="*", help="cover names (stems); default: all")
    parser.add_argument("--photos", nargs="*", help="photo names (stems); default: all")
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--lr", type=float, default=0.02)
    parser.add_argument("--content-weight", default="auto")
    parser.add_argument("--style-loss", default="gram")
    parser.add_argument("--train", default="norm", choices=("norm", "all"))
    parser.add_argument("--fast-size", type=int, default=256)
    parser.add_argument("--paint-size", type=int, default=512)
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--with-photo", action="store_true")
    parser.add_argument(
        "--start", default="mean", choices=("mean", "nearest"), help="the row training starts from"
    )
    parser.add_argument("--no-arbitrary", action="store_true")
    parser.add_argument("--sheet", type=Path)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    covers = [c for c in COVERS if not args.covers or c.stem in args.covers]
    photos = [p for p in PHOTOS if not args.photos or p.stem in args.photos]
    engine = Engine(Runtime(device="cpu", precision=args.precision), offline=True)
    params = StyleParams().replace(
        content_weight=args.content_weight,
        style_loss=args.style_loss,
        fast_iterations=args.iterations,
        fast_batch=args.batch,
        fast_learning_rate=args.lr,
        fast_train=args.train,
        fast_size=args.fast_size,
        seed=args.seed,
    )
    print(
        f"# {len(covers)} covers x {len(photos)} photos; precision {engine.precision}, "
        f"threads {torch.get_num_threads()}; {params.fast_iterations} steps x "
        f"{params.fast_batch} crops of {params.fast_size} px, lr {params.fast_learning_rate}, "
        f"content weight {params.content_weight}, train {params.fast_train}",
        flush=True,
    )
    bundled = load_photos()
    network = load_multistyle()
    predictor, transformer = load_predictor(), load_transformer()
    rows: list[dict] = []
    sheet_rows: list[list[Image.Image]] = []
    photo_images = {p.stem: Image.open(p).convert("RGB") for p in photos}
    photo_tensors = {
        stem: imaging.pil_to_tensor(
            imaging.resized(image, imaging.fit_long_side(*image.size, args.paint_size))
        )
        for stem, image in photo_images.items()
    }
    for cover_path in covers:
        cover_image = Image.open(cover_path).convert("RGB")
        cover = imaging.pil_to_tensor(cover_image)
        trained_for: dict[str | None, tuple[dict, float, list[float]]] = {}
        targets = [stem for stem in photo_tensors] if args.with_photo else [None]
        for stem in targets:
            history: list[float] = []
            clock: list[float] = []
            start = time.perf_counter()
            if args.start == "nearest":
                _start_from_nearest_style(engine, params, cover, bundled)
            extra = [photo_tensors[stem]] if stem is not None else []
            trained = train_cover_network(
                engine,
                params,
                cover,
                [*bundled, *extra],
                progress=lambda step, total, loss, h=history, c=clock: (
                    h.append(loss),
                    c.append(time.perf_counter()),
                ),
            )
            seconds = time.perf_counter() - start
            steps = [b - a for a, b in itertools.pairwise(clock)]
            step_s = statistics.median(steps) if steps else seconds
            trained_for[stem] = (trained, seconds, history, step_s)
            print(
                f"{cover_path.stem:>13} {stem or 'bundled':>12}: trained in {seconds:6.1f} s; "
                f"loss {history[0]:.3f} -> {_tail(history):.3f}; median step {step_s:.2f} s; "
                f"load {os.getloadavg()[0]:.1f}",
                flush=True,
            )
        for stem, photo in photo_tensors.items():
            trained, seconds, history, step_s = trained_for[stem if args.with_photo else None]
            painter = cover_painter(network, trained)
            with torch.no_grad():
                t = time.perf_counter()
                fast = painter(photo).clamp(0, 1)
                paint_s = time.perf_counter() - t
                arbitrary = None
                if not args.no_arbitrary:
                    arbitrary = stylize_arbitrary(
                        photo, cover, predictor=predictor, transformer=transformer
                    ).clamp(0, 1)
            height, width = photo.shape[-2:]
            cover_at = imaging.pil_to_tensor(
                imaging.resized(
                    cover_image, imaging.fit_long_side(*cover_image.size, max(width, height))
                )
            )
            results = [fast] if arbitrary is None else [fast, arbitrary]
            scores = engine.judge.score_many(photo, cover_at, results)
            row = {
                "cover": cover_path.stem,
                "photo": stem,
                "train_s": round(seconds, 1),
                "step_s": round(step_s, 3),
                "paint_s": round(paint_s, 3),
                "loss_first": round(history[0], 4),
                "loss_last": round(_tail(history), 4),
                "fast": [round(scores[0].content_kept, 3), round(scores[0].style_taken, 3)],
            }
            if arbitrary is not None:
                row["arbitrary"] = [
                    round(scores[1].content_kept, 3),
                    round(scores[1].style_taken, 3),
                ]
            rows.append(row)
            print(
                f"{cover_path.stem:>13} {stem:>12}: fast {row['fast']}"
                + (f"  arbitrary {row['arbitrary']}" if arbitrary is not None else ""),
                flush=True,
            )
            sheet_rows.append(
                [
                    photo_images[stem],
                    cover_image,
                    *([imaging.tensor_to_pil(arbitrary)] if arbitrary is not None else []),
                    imaging.tensor_to_pil(fast),
                ]
            )
    _summary(rows)
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "args": vars(args) | {"sheet": str(args.sheet), "json": str(args.json)},
                    "rows": rows,
                },
                indent=1,
            )
        )
    if args.sheet:
        _contact_sheet(sheet_rows, args.sheet)
        print(f"sheet: {args.sheet}")


def _start_from_nearest_style(engine, params, cover, photos) -> None:  # type: ignore[no-untyped-def]
    """Make training start from the one of the 26 styles whose paintings of four fixed crops
    have the lowest loss (a patch of the module's network loader: an experiment)."""
    import covergen.nst.fasttrain as ft
    from covergen.nst.feedforward import NUM_STYLES

    loss_params = ft.fast_loss_params(params)
    encoder = engine.encoder(loss_params)
    problem = ft._problem(engine, encoder, loss_params, cover, 4)
    crops = ft._crops(photos, params.fast_size, 4, torch.Generator().manual_seed(1234))
    network = load_multistyle()
    with torch.no_grad():
        problem.content_targets = engine.features(encoder, crops, list(loss_params.content_layers))
        totals = []
        for k in range(NUM_STYLES):
            norm = network.mix_norm(torch.nn.functional.one_hot(torch.tensor(k), NUM_STYLES))
            totals.append(float(problem.losses(network(crops, norm=norm))["total"].mean()))
    best = min(range(NUM_STYLES), key=totals.__getitem__)
    print(f"# nearest style {best}: loss {totals[best]:.3f} (mean-norm start: see first loss)")

    def loader(device="cpu"):  # type: ignore[no-untyped-def]
        net = load_multistyle(device)
        one_hot = torch.nn.functional.one_hot(torch.tensor(best), NUM_STYLES).float()
        net.mean_norm = lambda: net.mix_norm(one_hot)  # type: ignore[method-assign]
        return net

    ft.load_multistyle = loader  # type: ignore[assignment]


def _tail(history: list[float], n: int = 20) -> float:
    """The mean of the last ``n`` losses (a step's loss depends on its random crops)."""
    return statistics.fmean(history[-n:])


def _summary(rows: list[dict]) -> None:
    for method in ("fast", "arbitrary"):
        pairs = [r[method] for r in rows if method in r]
        if not pairs:
            continue
        content = [c for c, _ in pairs]
        style = [s for _, s in pairs]
        print(
            f"# {method:>9}: content_kept mean {statistics.fmean(content):.3f} "
            f"(min {min(content):.3f}), style_taken mean {statistics.fmean(style):.3f} "
            f"(min {min(style):.3f}); recognisable (>= 0.15) {sum(c >= 0.15 for c in content)}"
            f"/{len(content)}, stylised (>= 0.22) {sum(s >= 0.22 for s in style)}/{len(style)}"
        )
    seconds = sorted({(r["cover"], r["train_s"]) for r in rows})
    if seconds:
        times = [s for _, s in seconds]
        print(f"# training: mean {statistics.fmean(times):.1f} s, max {max(times):.1f} s")


def _contact_sheet(rows: list[list[Image.Image]], path: Path) -> None:
    columns = max(len(r) for r in rows)
    sheet = Image.new("RGB", (columns * THUMB, len(rows) * THUMB), "white")
    draw = ImageDraw.Draw(sheet)
    for y, row in enumerate(rows):
        for x, image in enumerate(row):
            thumb = image.copy()
            thumb.thumbnail((THUMB - 4, THUMB - 4))
            sheet.paste(thumb, (x * THUMB + 2, y * THUMB + 2))
        draw.line([(0, y * THUMB), (columns * THUMB, y * THUMB)], fill="grey")
    sheet.save(path)


if __name__ == "__main__":
    sys.exit(main())
