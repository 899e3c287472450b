"""Generate the hard sample photos: a close portrait and a group of six, from the sample photos.

Usage: python samples/make_hard_photos.py [OUTDIR]
    OUTDIR defaults to samples/photos-hard/ next to this file.

The hard pairs (samples/hard.yaml) put these against the hard covers: a face that fills the
frame, and six small faces in one image, are what face protection and the automatic content
weight must keep recognisable. Both are made from the public-domain and CC0 sample photos in
photos/ (credits in CREDITS.md): crops, mirror images and resizes on a plain gradient backdrop,
nothing drawn on the people. The face boxes below were drawn by hand on the sample photos;
tests/test_faces.py checks the detector against them.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

PHOTOS = Path(__file__).resolve().parent / "photos"
Box = tuple[float, float, float, float]

# Faces drawn by hand, in pixels (left, top, right, bottom): forehead to chin, cheek to cheek
# (ear to nose tip for the cameraman, who is seen three-quarters from the side).
KNOWN_FACES: dict[str, Box] = {
    "astronaut.jpg": (180, 75, 268, 170),
    "grace_hopper.jpg": (168, 145, 362, 325),
    "camera.png": (180, 112, 252, 197),
}
# Square head-and-shoulders crops around those faces: the group's tiles.
PORTRAITS: dict[str, Box] = {
    "astronaut.jpg": (104, 2, 344, 242),
    "grace_hopper.jpg": (115, 85, 415, 385),
    "camera.png": (126, 62, 306, 242),
}
# The group: (photo, tile side, mirrored, left, top) on a GROUP_SIZE backdrop, two rows of
# three, about the proportions of a band photo.
GROUP_SIZE = (640, 440)
GROUP = (
    ("astronaut.jpg", 180, False, 20, 20),
    ("grace_hopper.jpg", 200, True, 220, 10),
    ("camera.png", 170, False, 440, 30),
    ("camera.png", 180, True, 30, 240),
    ("astronaut.jpg", 170, True, 240, 255),
    ("grace_hopper.jpg", 190, False, 430, 235),
)
# The close portrait: Grace Hopper's face filling most of a square frame, at PORTRAIT_SIDE.
PORTRAIT_CROP: Box = (140, 110, 390, 360)
PORTRAIT_SIDE = 512


def group_photo() -> tuple[Image.Image, list[Box]]:
    """Six portraits (two of each sample, some mirrored, all resized) on a gradient backdrop,
    and their faces' boxes in pixels."""
    width, height = GROUP_SIZE
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    backdrop = 60 + (y / height)[..., None] * np.array([72, 84, 108])
    backdrop = backdrop + (x / width)[..., None] * 40
    image = Image.fromarray(backdrop.astype(np.uint8))
    boxes = []
    for name, side, mirrored, left, top in GROUP:
        crop = PORTRAITS[name]
        tile = Image.open(PHOTOS / name).convert("RGB").crop(crop)
        tile = tile.resize((side, side), Image.Resampling.LANCZOS)
        scale = side / (crop[2] - crop[0])
        x1, y1, x2, y2 = ((v - crop[i % 2]) * scale for i, v in enumerate(KNOWN_FACES[name]))
        if mirrored:
            tile, x1, x2 = ImageOps.mirror(tile), side - x2, side - x1
        image.paste(tile, (left, top))
        boxes.append((left + x1, top + y1, left + x2, top + y2))
    return image, boxes


def portrait_photo() -> Image.Image:
    """A close portrait: the face fills most of the frame."""
    crop = Image.open(PHOTOS / "grace_hopper.jpg").convert("RGB").crop(PORTRAIT_CROP)
    return crop.resize((PORTRAIT_SIDE, PORTRAIT_SIDE), Image.Resampling.LANCZOS)


def main(argv: list[str]) -> int:
    out = Path(argv[1]) if len(argv) > 1 else Path(__file__).resolve().parent / "photos-hard"
    out.mkdir(parents=True, exist_ok=True)
    # JPEG at quality 92 without chroma subsampling: small files, no visible loss.
    options = {"quality": 92, "subsampling": 0, "optimize": True}
    portrait_photo().save(out / "portrait.jpg", **options)
    group_photo()[0].save(out / "group.jpg", **options)
    for name in ("portrait.jpg", "group.jpg"):
        print(f"wrote {out / name} ({(out / name).stat().st_size // 1024} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
