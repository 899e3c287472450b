"""Contact sheets: images side by side in a grid, each with a caption under it.

The one way covergen lays out pictures for people to compare: `covergen sweep` writes one per
pair (each variant with its parameters and its two quality numbers), and the docs' sheets
are made the same way. Torch-free; Pillow only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from PIL import Image, ImageDraw, ImageFont

BACKGROUND = (17, 17, 17)
INK = (232, 232, 230)
MUTED = (160, 158, 152)
GAP = 8


@dataclass(frozen=True)
class Tile:
    """One picture and the lines written under it (the first one brighter)."""

    image: Image.Image
    caption: Sequence[str] = field(default_factory=tuple)


def contact_sheet(rows: Sequence[Sequence[Tile]], tile: int = 320) -> Image.Image:
    """The rows laid out as a grid of ``tile``-pixel squares, captions below each picture."""
    font = ImageFont.load_default(size=max(11, tile // 22))
    line = font.size + 4
    lines = max((len(t.caption) for row in rows for t in row), default=0)
    cell_height = tile + lines * line + (GAP if lines else 0)
    columns = max((len(row) for row in rows), default=0)
    canvas = Image.new(
        "RGB",
        (columns * tile + (columns + 1) * GAP, len(rows) * cell_height + (len(rows) + 1) * GAP),
        BACKGROUND,
    )
    draw = ImageDraw.Draw(canvas)
    for r, row in enumerate(rows):
        top = GAP + r * (cell_height + GAP)
        for c, item in enumerate(row):
            left = GAP + c * (tile + GAP)
            canvas.paste(_fit(item.image, tile), (left, top))
            for n, text in enumerate(item.caption):
                draw.text(
                    (left + 2, top + tile + GAP // 2 + n * line),
                    _clip(draw, text, font, tile - 4),
                    fill=INK if n == 0 else MUTED,
                    font=font,
                )
    return canvas


def _fit(image: Image.Image, size: int) -> Image.Image:
    """The image scaled to fit a square, centred on the background."""
    image = image.convert("RGB")
    scale = size / max(image.size)
    shown = image.resize(
        (max(1, round(image.width * scale)), max(1, round(image.height * scale))),
        Image.Resampling.LANCZOS,
    )
    square = Image.new("RGB", (size, size), BACKGROUND)
    square.paste(shown, ((size - shown.width) // 2, (size - shown.height) // 2))
    return square


def _clip(draw: ImageDraw.ImageDraw, text: str, font: ImageFont.ImageFont, width: int) -> str:
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text + "…"
