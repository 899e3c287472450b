"""Contact sheets of the sample pairs: photo | cover | result, one row per pair.

Results are cached under cache/contact/ by the content hash of the inputs, the
parameters and the engine version, so a rerun only computes what changed.

Usage:
  python scripts/contact_sheet.py [--size 512] [--out docs/images/contact-sheet.jpg]
  python scripts/contact_sheet.py --compare network   # vgg19 caffe vs vgg16 torchvision
  python scripts/contact_sheet.py --compare content_weight=0.3,1,3
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from covergen.nst import Engine, Runtime, StyleParams, from_mapping
from covergen.plan import job_key
from covergen.stylize import open_image, save_image

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "samples"
PAIRS = [
    ("photos/astronaut.jpg", "covers/pulsar.png"),
    ("photos/grace_hopper.jpg", "covers/redlines.png"),
    ("photos/camera.png", "covers/knit.png"),
    ("photos/astronaut.jpg", "covers/colourfields.png"),
    ("photos/grace_hopper.jpg", "covers/greenhaze.png"),
]
TILE = 320
LABEL = 26


def cached_result(
    engine: Engine, photo: Path, cover: Path, params: StyleParams, cache: Path
) -> Image.Image:
    key = job_key(_sha256(photo), _sha256(cover), params, engine.weights_identity(params))
    path = cache / f"{key[:24]}.png"
    if path.exists():
        return Image.open(path).convert("RGB")
    start = time.perf_counter()
    result = engine.stylize(open_image(photo, "photo"), open_image(cover, "cover"), params)
    save_image(result.image, path)
    print(
        f"  {photo.name} × {cover.name}: {result.iterations} iterations, "
        f"{time.perf_counter() - start:.0f} s, loss {result.losses.total:.3f}",
        flush=True,
    )
    return result.image


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def fit(image: Image.Image, size: int = TILE) -> Image.Image:
    image = image.convert("RGB")
    image.thumbnail((size, size), Image.Resampling.LANCZOS)
    tile = Image.new("RGB", (size, size), (17, 17, 17))
    tile.paste(image, ((size - image.width) // 2, (size - image.height) // 2))
    return tile


def sheet(rows: list[list[Image.Image]], headings: list[str]) -> Image.Image:
    columns = len(headings)
    gap = 6
    width = columns * TILE + (columns + 1) * gap
    height = LABEL + len(rows) * (TILE + gap) + gap
    canvas = Image.new("RGB", (width, height), (17, 17, 17))
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default(size=16)
    for c, heading in enumerate(headings):
        draw.text((gap + c * (TILE + gap) + 4, 5), heading, fill=(230, 230, 230), font=font)
    for r, row in enumerate(rows):
        for c, image in enumerate(row):
            canvas.paste(fit(image), (gap + c * (TILE + gap), LABEL + r * (TILE + gap)))
    return canvas


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--pairs", type=int, default=len(PAIRS), help="how many sample pairs")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images" / "contact-sheet.jpg")
    parser.add_argument("--compare", help="'network', or NAME=V1,V2,... for one parameter")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--cache-dir", type=Path, default=ROOT / "cache")
    args = parser.parse_args(argv)

    base = from_mapping(dict(item.split("=", 1) for item in args.set), StyleParams(size=args.size))
    variants: list[tuple[str, StyleParams]] = [("result", base)]
    if args.compare == "network":
        variants = [
            ("VGG19, Caffe weights", base.replace(network="vgg19", weights="caffe")),
            ("VGG16, torchvision weights", base.replace(network="vgg16", weights="torchvision")),
        ]
    elif args.compare:
        name, _, values = args.compare.partition("=")
        variants = [(f"{name} = {v}", base.replace(**{name: v})) for v in values.split(",")]

    engine = Engine(Runtime(device=args.device), cache_dir=args.cache_dir)
    rows = []
    for photo_name, cover_name in PAIRS[: args.pairs]:
        photo, cover = SAMPLES / photo_name, SAMPLES / cover_name
        row = [open_image(photo, "photo"), open_image(cover, "cover")]
        for _, params in variants:
            row.append(cached_result(engine, photo, cover, params, args.cache_dir / "contact"))
        rows.append(row)
    image = sheet(rows, ["photo", "cover", *(label for label, _ in variants)])
    save_image(image, args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
