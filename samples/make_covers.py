"""Generate the sample album covers: original, seeded artwork that style transfer can copy.

Usage: python samples/make_covers.py [OUTDIR [HARD_OUTDIR]]
    OUTDIR defaults to samples/covers/ next to this file, HARD_OUTDIR to OUTDIR with "-hard"
    appended (samples/covers-hard/).

The hard covers are extremes for testing the engine and its quality measures: a near-black field
with sparse stars, bold high-contrast lines, a dense small pattern and one flat colour. They live in
their own folder so that the gallery's covers stay as they are.

Each cover is drawn from numpy noise and Pillow primitives with a fixed seed, so a rerun gives the
same pixels. The covers echo the look of well-known sleeves (see samples/CREDITS.md) but copy none:
they are original work, released under CC0. No fonts and no text are used.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

SIZE = 1024
# Committed files stay small: each cover must fit in this many bytes (checked after writing).
MAX_BYTES = 600_000

Array = np.ndarray


# --- shared tools ---------------------------------------------------------------------------


def hex_rgb(colour: str) -> Array:
    """'#rrggbb' -> float32 array in [0, 1]."""
    colour = colour.lstrip("#")
    return np.array([int(colour[i : i + 2], 16) / 255 for i in (0, 2, 4)], dtype=np.float32)


def smooth_noise(
    rng: np.random.Generator, cells: tuple[int, int], size: tuple[int, int] = (SIZE, SIZE)
) -> Array:
    """Value noise in about [0, 1]: a random (rows, cols) grid, bicubically upscaled to (h, w)."""
    rows, cols = cells
    # One cell of margin on each side keeps the bicubic kernel away from the clamped border.
    grid = rng.random((rows + 2, cols + 2), dtype=np.float32)
    img = Image.fromarray(grid).resize(
        (size[1], size[0]), Image.Resampling.BICUBIC, box=(1, 1, cols + 1, rows + 1)
    )
    return np.asarray(img, dtype=np.float32)


def fbm(
    rng: np.random.Generator,
    cells: tuple[int, int],
    octaves: int,
    gain: float = 0.5,
    size: tuple[int, int] = (SIZE, SIZE),
) -> Array:
    """Fractal noise normalised to [0, 1]: octaves of smooth_noise, each twice as fine."""
    total = np.zeros(size, dtype=np.float32)
    amp = 1.0
    for i in range(octaves):
        scale = 2**i
        total += amp * smooth_noise(rng, (cells[0] * scale, cells[1] * scale), size)
        amp *= gain
    return normalise(total)


def normalise(a: Array) -> Array:
    lo, hi = float(a.min()), float(a.max())
    return ((a - lo) / (hi - lo + 1e-12)).astype(np.float32)


class PeriodicNoise:
    """Value noise on a periodic grid, sampled at any (x, y) in cell units, for domain warping."""

    def __init__(self, rng: np.random.Generator, cells: int) -> None:
        self.cells = cells
        self.grid = rng.random((cells, cells), dtype=np.float32)

    def __call__(self, x: Array, y: Array) -> Array:
        n = self.cells
        ix, iy = np.floor(x), np.floor(y)
        fx, fy = x - ix, y - iy
        # Quintic fade hides the grid better than smoothstep.
        fx = fx * fx * fx * (fx * (fx * 6 - 15) + 10)
        fy = fy * fy * fy * (fy * (fy * 6 - 15) + 10)
        x0, y0 = ix.astype(np.int64) % n, iy.astype(np.int64) % n
        x1, y1 = (x0 + 1) % n, (y0 + 1) % n
        g = self.grid
        top = g[y0, x0] + (g[y0, x1] - g[y0, x0]) * fx
        bottom = g[y1, x0] + (g[y1, x1] - g[y1, x0]) * fx
        return top + (bottom - top) * fy


def warped_fbm(noises: list[PeriodicNoise], x: Array, y: Array, base: float) -> Array:
    """Fractal sum of periodic noises, each octave rotated a little so the grid never lines up."""
    total = np.zeros_like(x)
    amp, freq, norm = 1.0, base, 0.0
    for i, noise in enumerate(noises):
        angle = 0.6 * i
        c, s = np.cos(angle), np.sin(angle)
        total += amp * noise((c * x - s * y) * freq + 0.37 * i, (s * x + c * y) * freq + 0.71 * i)
        norm += amp
        amp *= 0.5
        freq *= 2.03
    return total / norm


def ramp(t: Array, stops: list[tuple[float, str]]) -> Array:
    """Map t in [0, 1] through colour stops [(position, '#rrggbb'), ...] to an RGB image."""
    pos = [p for p, _ in stops]
    cols = np.stack([hex_rgb(c) for _, c in stops])
    return np.stack([np.interp(t, pos, cols[:, ch]) for ch in range(3)], axis=-1).astype(np.float32)


def screen(base: Array, light: Array) -> Array:
    return 1 - (1 - base) * (1 - light)


def blur(a: Array, sigma: float) -> Array:
    """Separable Gaussian blur over the first two axes (Pillow cannot blur float images)."""
    pad = max(1, int(3 * sigma + 0.5))
    k = np.exp(-0.5 * (np.arange(-pad, pad + 1) / sigma) ** 2).astype(np.float32)
    k /= k.sum()
    out = a.astype(np.float32)
    for axis in (0, 1):
        widths = [(0, 0)] * out.ndim
        widths[axis] = (pad, pad)
        padded = np.pad(out, widths, mode="reflect")
        n = out.shape[axis]
        out = sum(w * np.take(padded, np.arange(i, i + n), axis=axis) for i, w in enumerate(k))
    return out


def radial(cx: float, cy: float, rx: float, ry: float | None = None) -> Array:
    """exp(-d²) falloff around (cx, cy), in units of the image size."""
    ry = rx if ry is None else ry
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32) / SIZE
    return np.exp(-(((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2)).astype(np.float32)


def to_image(rgb: Array) -> Image.Image:
    return Image.fromarray((np.clip(rgb, 0, 1) * 255 + 0.5).astype(np.uint8))


def quantised(img: Image.Image, colours: int) -> Image.Image:
    """Palette image with Floyd-Steinberg dither: it keeps PNGs small and hides banding."""
    # Image.quantize only dithers when handed a palette, so pick the palette first.
    palette = img.quantize(colors=colours, method=Image.Quantize.MEDIANCUT)
    return img.quantize(palette=palette, dither=Image.Dither.FLOYDSTEINBERG)


# --- the covers -----------------------------------------------------------------------------


def smooth_series(rng: np.random.Generator, n: int, sigma: float) -> Array:
    """1-D Gaussian-smoothed white noise with unit standard deviation."""
    pad = int(4 * sigma) + 1
    raw = rng.standard_normal(n + 2 * pad)
    k = np.exp(-0.5 * (np.arange(-pad, pad + 1) / sigma) ** 2)
    out = np.convolve(raw, k / k.sum(), mode="valid")[:n]
    return out / (out.std() + 1e-12)


def pulsar(rng: np.random.Generator) -> Image.Image:
    """Stacked pulse ridgelines, white on black, each hiding the ones behind it."""
    ss = 3  # supersampling for anti-aliased lines
    s = SIZE * ss
    img = Image.new("L", (s, s), 0)
    draw = ImageDraw.Draw(img)
    n_lines, n_pts = 76, 420
    x0, x1 = 0.17 * s, 0.83 * s
    y_top, y_bottom = 0.17 * s, 0.87 * s
    gap = (y_bottom - y_top) / (n_lines - 1)
    u = np.linspace(0.0, 1.0, n_pts)
    xs = x0 + u * (x1 - x0)
    # A flat-topped envelope: calm shoulders, a busy middle.
    envelope = 1.0 / (1.0 + ((u - 0.5) / 0.19) ** 6)
    for i in range(n_lines):
        strength = 0.55 + 0.45 * np.sin(np.pi * (i + 3) / (n_lines + 6)) * rng.uniform(0.7, 1.2)
        peaks = np.zeros(n_pts)
        for _ in range(rng.integers(3, 8)):
            centre = rng.normal(0.5, 0.085)
            width = rng.uniform(0.008, 0.035)
            peaks += rng.uniform(0.3, 1.0) ** 1.5 * np.exp(-(((u - centre) / width) ** 2))
        busy = 0.9 * smooth_series(rng, n_pts, 2.5) + 0.6 * smooth_series(rng, n_pts, 8.0)
        calm = 0.1 * smooth_series(rng, n_pts, 2.5) + 0.1 * smooth_series(rng, n_pts, 9)
        height = envelope * (7.0 * strength * peaks + 0.8 * busy + 0.8) + (1 - envelope) * calm
        ys = y_top + i * gap - height * gap
        pts = list(zip(xs.tolist(), ys.tolist(), strict=True))
        draw.polygon([*pts, (x1, s), (x0, s)], fill=0)
        draw.line(pts, fill=255, width=int(1.9 * ss), joint="curve")
    return img.resize((SIZE, SIZE), Image.Resampling.LANCZOS)


def bezier(ctrl: Array, n: int) -> tuple[Array, Array, Array]:
    """Points, unit normals and parameter of a cubic Bezier (ctrl: 4x2)."""
    t = np.linspace(0.0, 1.0, n)[:, None]
    path = (
        (1 - t) ** 3 * ctrl[0]
        + 3 * (1 - t) ** 2 * t * ctrl[1]
        + 3 * (1 - t) * t**2 * ctrl[2]
        + t**3 * ctrl[3]
    )
    tangent = np.gradient(path, axis=0)
    tangent /= np.linalg.norm(tangent, axis=1, keepdims=True) + 1e-9
    normal = np.stack([-tangent[:, 1], tangent[:, 0]], axis=1)
    return path, normal, t[:, 0]


def brush_stroke(
    draw: ImageDraw.ImageDraw, rng: np.random.Generator, ctrl: Array, width: float, dryness: float
) -> None:
    """Draw one bristly stroke along a cubic Bezier (ctrl in pixels) into an L mask.

    The stroke is a bundle of thin bristle lines: each has its own tone and width, the edges
    wobble, and the paint runs dry towards the end, first at the edges, leaving scraped streaks.
    """
    n = 320
    path, normal, tt = bezier(ctrl, n)
    # Pressure: a quick attack, a swell, a long lift-off, with a wobble.
    pressure = np.clip(tt / 0.04, 0, 1) ** 0.4 * (1 - 0.45 * tt**3)
    pressure *= 1 + 0.12 * smooth_series(rng, n, 20)
    half = 0.5 * width * pressure
    edge_lo = -1 + 0.05 * smooth_series(rng, n, 2) + 0.06 * smooth_series(rng, n, 25)
    edge_hi = 1 + 0.05 * smooth_series(rng, n, 2) + 0.06 * smooth_series(rng, n, 25)
    n_bristles = int(np.clip(width / 1.2, 30, 260))
    for _ in range(n_bristles):
        offset = rng.uniform(-1, 1)
        side = np.where(offset < 0, -edge_lo, edge_hi)
        wander = 0.03 * smooth_series(rng, n, 30)
        pts = path + normal * ((offset * side + wander) * half)[:, None]
        tone = rng.uniform(0.5, 1.0) ** 0.7
        line_w = int(rng.integers(2, 6))
        start = rng.uniform(0.0, 0.04)
        # Paint runs out towards the end of the stroke, first at its edges.
        end = 1.0 - dryness * rng.uniform(0.0, 1.0) ** 0.7 * (0.3 + 0.7 * abs(offset))
        scrape = smooth_series(rng, n, 4) < -2.2 + 3.5 * dryness * tt**1.5 * (0.5 + abs(offset))
        keep = (tt >= start) & (tt <= end) & ~scrape
        # Draw each unbroken run as its own polyline.
        edges = np.flatnonzero(np.diff(np.concatenate([[0], keep.astype(np.int8), [0]])))
        for a, b in zip(edges[::2], edges[1::2], strict=True):
            if b - a >= 2:
                draw.line(
                    [tuple(p) for p in pts[a:b].tolist()],
                    fill=int(255 * tone),
                    width=line_w,
                    joint="curve",
                )


def splatter(
    draw: ImageDraw.ImageDraw, rng: np.random.Generator, at: Array, heading: Array, reach: float
) -> None:
    """Flicked drops thrown forward from a point, smaller the further they fly."""
    heading = heading / (np.linalg.norm(heading) + 1e-9)
    side = np.array([-heading[1], heading[0]])
    for _ in range(int(rng.integers(6, 16))):
        f = rng.uniform(0.05, 1.0)
        centre = at + heading * f * reach + side * rng.normal(0, 0.18 * reach * f)
        r = reach * 0.05 * (1.1 - f) * rng.uniform(0.3, 1.0)
        stretch = 1 + 1.5 * rng.uniform()
        c = centre - heading * r * (stretch - 1)
        pts = [
            c + heading * r * stretch * np.cos(a) + side * r * np.sin(a)
            for a in np.linspace(0, 2 * np.pi, 16)
        ]
        draw.polygon([tuple(p) for p in pts], fill=255)


def redlines(rng: np.random.Generator) -> Image.Image:
    """Energetic red brush strokes crossing on cream paper, with a few black accents."""
    ss = 2
    s = SIZE * ss
    # Paper: warm cream, softly mottled, with a fine tooth.
    mottle = fbm(rng, (3, 3), 6)
    tooth = blur(rng.normal(0, 1, (SIZE, SIZE)).astype(np.float32), 0.8)
    paper = ramp(mottle, [(0, "#e6d7b8"), (0.6, "#f1e7cf"), (1, "#f8f1de")])
    paper *= (0.88 + 0.12 * radial(0.5, 0.5, 0.8))[..., None]
    canvas = to_image(paper).resize((s, s), Image.Resampling.BICUBIC)
    canvas = np.asarray(canvas, np.float32) / 255

    # (control points in units of the cover, width as a fraction, colour, dryness)
    strokes: list[tuple[list[tuple[float, float]], float, str, float]] = [
        ([(-0.06, 0.86), (0.28, 0.62), (0.60, 0.34), (1.06, 0.12)], 0.17, "#c8231c", 0.45),
        ([(0.04, 0.06), (0.36, 0.30), (0.66, 0.60), (0.98, 0.97)], 0.12, "#dc3020", 0.6),
        ([(-0.05, 0.44), (0.32, 0.49), (0.66, 0.39), (1.05, 0.50)], 0.075, "#a9141a", 0.5),
        ([(0.60, -0.05), (0.53, 0.34), (0.64, 0.68), (0.52, 1.05)], 0.095, "#e3401f", 0.65),
        ([(0.03, 0.95), (0.38, 0.83), (0.70, 0.93), (1.04, 0.79)], 0.05, "#c51f1d", 0.7),
        ([(0.20, -0.04), (0.16, 0.30), (0.28, 0.62), (0.19, 0.88)], 0.04, "#9e1119", 0.7),
        # black accents: one dry diagonal, two quick thin lines
        ([(0.74, 0.03), (0.83, 0.24), (0.80, 0.46), (0.93, 0.64)], 0.045, "#121010", 0.7),
        ([(0.06, 0.66), (0.26, 0.71), (0.44, 0.61), (0.66, 0.70)], 0.016, "#151313", 0.5),
        ([(0.33, 0.04), (0.44, 0.12), (0.38, 0.22), (0.49, 0.31)], 0.012, "#161414", 0.4),
        # fast hairlines in red
        ([(-0.02, 0.26), (0.30, 0.12), (0.62, 0.30), (1.02, 0.16)], 0.008, "#b3171b", 0.3),
        ([(0.10, 1.02), (0.30, 0.70), (0.36, 0.40), (0.46, -0.02)], 0.007, "#c8231c", 0.3),
        ([(0.70, 1.02), (0.78, 0.80), (0.96, 0.72), (1.03, 0.60)], 0.010, "#a9141a", 0.4),
    ]
    for ctrl, width, colour, dryness in strokes:
        mask = Image.new("L", (s, s), 0)
        draw = ImageDraw.Draw(mask)
        pts = np.array(ctrl, dtype=np.float64) * s
        pts += rng.normal(0, 0.008 * s, pts.shape)
        brush_stroke(draw, rng, pts, width * s, dryness)
        if width > 0.06:
            path, normal, _ = bezier(pts, 9)
            heading = path[7] - path[6] + normal[7] * rng.normal(0, 40)
            splatter(draw, rng, path[7], heading, 0.22 * s)
        mask = mask.filter(ImageFilter.GaussianBlur(0.6 * ss))
        box = mask.getbbox()
        if box is None:
            continue
        x0, y0, x1, y1 = box
        alpha = np.asarray(mask.crop(box), np.float32)[..., None] / 255
        # Dense paint where bristle tone is high, thinner and lighter where it scrapes.
        paint = hex_rgb(colour) * (0.66 + 0.42 * alpha)
        cover = np.clip(alpha * 2.2, 0, 1)
        region = canvas[y0:y1, x0:x1]
        canvas[y0:y1, x0:x1] = region * (1 - cover) + paint * cover
    img = to_image(canvas).resize((SIZE, SIZE), Image.Resampling.LANCZOS)
    # The paper's tooth shows through everything.
    rgb = np.asarray(img, np.float32) / 255 * (1 + 0.035 * tooth)[..., None]
    return quantised(to_image(rgb), 48)


def colourfields(rng: np.random.Generator) -> Image.Image:
    """Soft-edged stacked colour fields over a dark ground, with brushwork and canvas weave."""
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32) / SIZE
    ground_tone = 0.6 * fbm(rng, (3, 3), 5) + 0.4 * fbm(rng, (40, 4), 3)
    canvas = ramp(ground_tone, [(0, "#2e0907"), (0.6, "#4a120c"), (1, "#62200f")])

    def field(box: tuple[float, float, float, float], colours: tuple[str, str], feather: float):
        x0, y0, x1, y1 = box
        # Edges frayed by the brush: streaks across horizontal edges, along vertical ones.
        fray = (
            0.012 * (fbm(rng, (3, 48), 4) - 0.5)
            + 0.012 * (fbm(rng, (48, 3), 4) - 0.5)
            + 0.02 * (fbm(rng, (4, 4), 3) - 0.5)
        )
        # Signed distance to the rectangle (negative inside), frayed.
        dx = np.maximum(x0 - xx, xx - x1)
        dy = np.maximum(y0 - yy, yy - y1)
        outside = np.hypot(np.maximum(dx, 0), np.maximum(dy, 0))
        dist = outside + np.minimum(np.maximum(dx, dy), 0) + fray
        edge = np.clip(0.5 - dist / feather, 0, 1)
        alpha = edge * edge * (3 - 2 * edge)
        # Horizontal scumbled brushwork: noise stretched along x.
        strokes = fbm(rng, (64, 6), 4)
        body = fbm(rng, (3, 3), 4)
        tone = np.clip(0.5 * strokes + 0.5 * body, 0, 1)
        paint = ramp(tone, [(0, colours[0]), (1, colours[1])])
        # Thin paint lets the ground glow through in places.
        a = (alpha * (0.78 + 0.22 * strokes))[..., None]
        return paint, a

    for box, colours, feather in [
        ((0.09, 0.07, 0.91, 0.49), ("#c8441b", "#f2922e"), 0.06),
        ((0.16, 0.14, 0.84, 0.36), ("#f0a034", "#fbd06a"), 0.16),  # a glow inside the top field
        ((0.11, 0.545, 0.89, 0.595), ("#5c1020", "#822034"), 0.04),
        ((0.09, 0.65, 0.91, 0.93), ("#a9191a", "#df4f26"), 0.06),
    ]:
        paint, a = field(box, colours, feather)
        canvas = canvas * (1 - a) + paint * a

    # Canvas weave and grain.
    weave = np.sin(2 * np.pi * xx * SIZE / 3.1) * np.sin(2 * np.pi * yy * SIZE / 3.3)
    grain = blur(rng.normal(0, 1, (SIZE, SIZE)).astype(np.float32), 0.7)
    canvas *= (1 + 0.05 * weave + 0.05 * grain)[..., None]
    canvas *= (0.8 + 0.2 * radial(0.5, 0.5, 0.75))[..., None]
    return quantised(to_image(canvas), 48)


def nordic_star(radius: int, petal: float) -> Array:
    """A Selbu-style eight-petal star as a boolean (2r+1)² chart.

    Folded into one 45° wedge, each petal is the rhombus spanned by an axis and a diagonal,
    `petal` cells along each; the axes and diagonals stay empty and separate the petals.
    """
    d = np.arange(-radius, radius + 1)
    y, x = np.meshgrid(d, d, indexing="ij")
    lo = np.minimum(np.abs(x), np.abs(y))
    hi = np.maximum(np.abs(x), np.abs(y))
    chart = (lo > 0) & (lo < hi) & (lo * np.sqrt(2) <= petal) & (hi - lo <= petal)
    chart[radius, radius] = True
    return chart


def knit_chart(rows: int, cols: int) -> Array:
    """Colour index per stitch (0 ground, 1 motif, 2 accent): stacked Fair Isle bands."""
    x = np.arange(cols)

    def lice(height: int, phase: int = 0) -> Array:
        y = np.arange(height)[:, None] + phase
        return ((y % 4 == 0) & ((x + (y // 4) * 2) % 4 == 0)).astype(np.int8)

    def zigzag() -> Array:
        return np.stack([x % 4 == 0, x % 2 == 1, x % 4 == 2]).astype(np.int8) * 2

    def peerie() -> Array:
        # Small red diamonds with a cream heart.
        dy, dx = np.abs(np.arange(5)[:, None] - 2), np.abs((x + 3) % 6 - 3)[None, :]
        ring = (dx + dy == 2) * 2
        return np.where((dx == 0) & (dy == 0), 1, ring).astype(np.int8)

    def stars(shift: int) -> Array:
        star = nordic_star(9, 5.5)
        size = star.shape[0]
        period = size + 7
        motif = np.zeros((size, cols), dtype=bool)
        for start in range(-period + shift, cols, period):
            # A star, then a small diamond in the gap before the next one.
            for j, k in zip(*np.nonzero(star), strict=True):
                if 0 <= start + k < cols:
                    motif[j, start + k] = True
            cx, cy = start + size + 3, size // 2
            j, k = np.nonzero(np.abs(x[None, :] - cx) + np.abs(np.arange(size)[:, None] - cy) == 2)
            motif[j, k] = True
        # Lice in the background, but never touching a motif.
        halo = motif.copy()
        for axis in (0, 1):
            halo |= np.roll(halo, 1, axis) | np.roll(halo, -1, axis)
        band = np.where(halo, 0, lice(size, 2))
        band[motif] = 1
        return band.astype(np.int8)

    blank = np.zeros((1, cols), np.int8)
    repeat = [lice(3), zigzag(), blank, stars(0), blank, zigzag(), blank, peerie(), blank]
    second = [lice(3), zigzag(), blank, stars(13), blank, zigzag(), blank, peerie(), blank]
    chart = np.concatenate(repeat + second + repeat)
    return chart[:rows]


def stitch_tile(w: int, h: int) -> tuple[Array, Array]:
    """Shading and coverage of one knit stitch (a V of two twisted yarn legs), (h, w) each."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    xx = (xx + 0.5) / w
    yy = (yy + 0.5) / h
    shade = np.zeros((h, w), np.float32)
    cover = np.zeros((h, w), np.float32)
    for side in (-1, 1):
        # Each leg runs from an upper outer corner down to the bottom centre.
        cx, cy = 0.5 + side * 0.22, 0.5
        angle = np.deg2rad(side * 28)
        u = (xx - cx) * np.cos(angle) + (yy - cy) * np.sin(angle)
        v = -(xx - cx) * np.sin(angle) + (yy - cy) * np.cos(angle)
        r2 = (u / 0.25) ** 2 + (v / 0.56) ** 2
        inside = np.clip((1 - r2) * 3, 0, 1)
        dome = np.sqrt(np.clip(1 - r2, 0, 1))
        # Plies twisting around the leg.
        ply = 0.5 + 0.5 * np.sin(2 * np.pi * (v * 5.5 + u * 2.2 * side))
        leg = dome * (0.75 + 0.25 * ply)
        shade = np.maximum(shade, leg * inside)
        cover = np.maximum(cover, inside)
    return shade, cover


def knit(rng: np.random.Generator) -> Image.Image:
    """A Fair Isle knit: rows of V stitches, a Nordic star band, yarn shading."""
    sw, sh = 16, 14  # stitch cell in pixels
    cols, rows = SIZE // sw, SIZE // sh + 2
    chart = knit_chart(rows, cols)
    palette = np.stack([hex_rgb("#1f2c4d"), hex_rgb("#efe4cc"), hex_rgb("#b3262b")])
    tile_h = int(sh * 1.55)  # a stitch overlaps the row above it
    shade, cover = stitch_tile(sw, tile_h)
    canvas = np.zeros((rows * sh + tile_h, SIZE, 3), np.float32)
    canvas[:] = palette[0] * 0.25
    fuzz = fbm(rng, (SIZE // 8, SIZE // 8), 2, size=(canvas.shape[0], SIZE))
    for row in range(rows):
        colours = palette[chart[row]]  # (cols, 3)
        jitter = 1 + rng.normal(0, 0.06, (cols, 1))
        strip_colour = np.repeat(colours * jitter, sw, axis=0)[None, :, :]  # (1, W, 3)
        strip_shade = np.tile(shade, (1, cols))[..., None]
        strip_cover = np.tile(cover, (1, cols))[..., None]
        y0 = row * sh
        block = canvas[y0 : y0 + tile_h]
        lit = strip_colour * (0.28 + 0.9 * strip_shade)
        block[:] = block * (1 - strip_cover) + lit * strip_cover
    canvas = canvas[sh : sh + SIZE]
    canvas *= (0.9 + 0.2 * fuzz[sh : sh + SIZE])[..., None]
    canvas *= (0.85 + 0.15 * radial(0.5, 0.45, 0.8))[..., None]
    return quantised(to_image(canvas), 64)


def greenhaze(rng: np.random.Generator) -> Image.Image:
    """Green smoke: domain-warped noise, light leaks, a hazy orb and film grain."""
    low = 384  # the haze is soft: compute it small and upscale
    yy, xx = np.mgrid[0:low, 0:low].astype(np.float32) / low
    octaves = [PeriodicNoise(rng, 64) for _ in range(6)]
    qx = warped_fbm(octaves, xx, yy, 1.5)
    qy = warped_fbm(octaves, xx + 5.2, yy + 1.3, 1.5)
    rx = warped_fbm(octaves, xx + 1.2 * qx + 1.7, yy + 1.2 * qy + 9.2, 1.5)
    ry = warped_fbm(octaves, xx + 1.2 * qx + 8.3, yy + 1.2 * qy + 2.8, 1.5)
    smoke = normalise(warped_fbm(octaves, xx + 1.7 * rx, yy + 1.7 * ry, 2.0))
    # Thin curling filaments where the warped field crosses its middle.
    wisps = np.clip(1 - np.abs(smoke - 0.55) / 0.05, 0, 1) ** 2

    def up(a: Array) -> Array:
        img = Image.fromarray(a.astype(np.float32))
        return np.asarray(img.resize((SIZE, SIZE), Image.Resampling.BICUBIC))

    smoke, wisps = up(smoke), up(wisps)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32) / SIZE
    glow = radial(0.35, 0.3, 0.7, 0.55)
    tone = 0.1 + 0.55 * smoke * (0.35 + 0.65 * glow) + 0.25 * glow + 0.12 * wisps
    col = ramp(
        np.clip(tone, 0, 1),
        [(0, "#010904"), (0.25, "#062a16"), (0.5, "#1b6a3c"), (0.72, "#5fb866"), (1, "#e2f7bd")],
    )
    # Light leaks: warm lime from the top left, a cold cyan bleed at the bottom right.
    col = screen(col, hex_rgb("#d9f25a") * (0.55 * radial(-0.05, 0.0, 0.4, 0.55))[..., None])
    col = screen(col, hex_rgb("#2fe3b0") * (0.35 * radial(1.05, 0.95, 0.35, 0.3))[..., None])
    streak = np.exp(-(((xx - 0.12 - 0.05 * yy) / 0.05) ** 2)) * (0.4 + 0.6 * yy)
    col = screen(col, hex_rgb("#fff0a0") * (0.25 * streak)[..., None])
    # A hazy sun low in the frame, half lost in the smoke.
    dist = np.hypot(xx - 0.64, yy - 0.62)
    orb = np.clip((0.15 - dist) / 0.035, 0, 1) * 0.3 + np.exp(-((dist / 0.3) ** 2)) * 0.3
    col = screen(col, hex_rgb("#d8ffc0") * (orb * (0.45 + 0.55 * smoke))[..., None])
    col *= (0.5 + 0.5 * radial(0.5, 0.5, 0.7))[..., None]
    grain = blur(rng.normal(0, 1, (SIZE, SIZE)).astype(np.float32), 0.6)
    col *= (1 + 0.06 * grain)[..., None]
    return quantised(to_image(col), 40)


def neongrid(rng: np.random.Generator) -> Image.Image:
    """A synthwave night: striped sunset sun, wireframe hills, a glowing perspective grid."""
    ss = 2
    s = SIZE * ss
    horizon = 0.64
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32) / SIZE
    sky = ramp(
        np.clip(yy / horizon, 0, 1),
        [(0, "#07021a"), (0.45, "#2a0950"), (0.78, "#8c1a6e"), (1, "#ff6b4a")],
    )
    # Stars, fewer and fainter towards the horizon.
    stars = np.zeros((SIZE, SIZE), np.float32)
    n = 420
    sx, sy = rng.integers(0, SIZE, n), (rng.random(n) ** 1.6 * horizon * SIZE).astype(int)
    stars[sy, sx] = rng.random(n) ** 2 * (1 - sy / (horizon * SIZE))
    stars = blur(stars, 0.7) * 4 + blur(stars, 2.5) * 6
    canvas = screen(sky, np.clip(stars, 0, 1)[..., None] * hex_rgb("#fff4ff"))

    # The sun: gradient disc, cut by widening bands in its lower half, with a wide glow.
    cx, cy, r = 0.5, 0.44, 0.24
    dist = np.hypot(xx - cx, yy - cy)
    disc = np.clip((r - dist) * SIZE / 1.5, 0, 1)
    v = (yy - (cy - r)) / (2 * r)
    sun_col = ramp(np.clip(v, 0, 1), [(0, "#fff27a"), (0.45, "#ffa03c"), (1, "#ff2d8a")])
    band_pos = (yy - cy) / r  # 0 at the centre, 1 at the bottom
    period = 0.16
    phase = np.mod(band_pos, period) / period
    gap = np.clip((band_pos - 0.05) * 0.9, 0, 0.75)
    disc *= np.where(band_pos > 0.05, (phase > gap).astype(np.float32), 1)
    disc *= yy < horizon
    canvas = canvas * (1 - disc[..., None]) + sun_col * disc[..., None]
    glow = np.exp(-((np.maximum(dist - r, 0) / 0.12) ** 2)) * (yy < horizon)
    canvas = screen(canvas, hex_rgb("#ff3d8f") * (0.45 * glow)[..., None])

    lines = Image.new("L", (s, s), 0)  # grid and hill outlines, for the glow pass
    draw = ImageDraw.Draw(lines)
    hy = horizon * s
    # Hills: a jagged silhouette on the horizon with wireframe ridges.
    ridge_x = np.linspace(0, s, 90)
    bumps = np.abs(smooth_series(rng, 90, 3.0)) * 0.6 + np.abs(smooth_series(rng, 90, 1.2)) * 0.4
    centre_dip = 1 - 0.85 * np.exp(-(((ridge_x / s - 0.5) / 0.2) ** 2))
    ridge_y = hy - bumps * centre_dip * 0.13 * s
    hills = Image.new("L", (s, s), 0)
    hd = ImageDraw.Draw(hills)
    outline = list(zip(ridge_x.tolist(), ridge_y.tolist(), strict=True))
    hd.polygon([*outline, (s, hy), (0, hy)], fill=255)
    draw.line(outline, fill=255, width=3 * ss)
    for k in range(1, 5):  # contour lines inside the hills
        f = k / 5
        contour = [(x, y + (hy - y) * f) for x, y in outline]
        draw.line(contour, fill=150, width=ss)

    # Ground grid: horizontals bunch up towards the horizon, verticals meet at the centre.
    for i in range(1, 21):
        z = i / 20
        y = hy + (s - hy) * z**2.2
        draw.line([(0, y), (s, y)], fill=255, width=max(ss, int(4 * ss * z)))
    for i in range(-70, 71):
        draw.line([(s / 2, hy), (s / 2 + i * s * 0.085, s)], fill=255, width=2 * ss)
    hill_mask = np.asarray(hills.resize((SIZE, SIZE), Image.Resampling.LANCZOS), np.float32) / 255
    line_mask = np.asarray(lines.resize((SIZE, SIZE), Image.Resampling.LANCZOS), np.float32) / 255

    ground = ramp(np.clip((yy - horizon) / (1 - horizon), 0, 1), [(0, "#2b0640"), (1, "#07010f")])
    below = (yy >= horizon)[..., None]
    canvas = np.where(below, ground, canvas)
    canvas = canvas * (1 - hill_mask[..., None]) + hex_rgb("#12031f") * hill_mask[..., None]
    # The grid fades into the distance instead of piling up into a solid band.
    depth = np.clip((yy - horizon) / 0.2, 0, 1) ** 1.5
    line_mask = np.where(yy >= horizon, line_mask * (0.15 + 0.85 * depth), line_mask)
    neon = np.where(below, hex_rgb("#ff2bd6"), hex_rgb("#35e8ff"))
    halo = blur(line_mask, 6) * 1.6 + blur(line_mask, 2) * 0.8
    canvas = screen(canvas, neon * np.clip(line_mask + halo, 0, 1)[..., None])
    # A haze of light along the horizon.
    canvas = screen(
        canvas, hex_rgb("#ff5fa2") * (0.5 * np.exp(-(((yy - horizon) / 0.03) ** 2)))[..., None]
    )

    # CRT feel: scanlines, a little channel offset, grain.
    canvas *= (0.9 + 0.1 * (np.sin(yy * SIZE * np.pi / 2) ** 2))[..., None]
    canvas[..., 0] = np.roll(canvas[..., 0], 2, axis=1)
    canvas[..., 2] = np.roll(canvas[..., 2], -2, axis=1)
    canvas *= (1 + 0.05 * rng.normal(0, 1, (SIZE, SIZE)).astype(np.float32))[..., None]
    canvas *= (0.75 + 0.25 * radial(0.5, 0.5, 0.75))[..., None]
    return quantised(to_image(canvas), 64)


# --- hard covers: extremes that test the engine and its quality measures ---------------------


def darkfield(rng: np.random.Generator) -> Image.Image:
    """Near-black sky with sparse bright stars: almost no texture, almost all of it dark."""
    sky = 0.012 + 0.01 * fbm(rng, (4, 4), 4)
    field = np.zeros((SIZE, SIZE), np.float32)
    n = 260
    x, y = rng.integers(0, SIZE, n), rng.integers(0, SIZE, n)
    field[y, x] = rng.random(n) ** 2  # mostly faint, a few bright
    # Point cores plus soft halos, so the brightest stars glow a little.
    stars = np.clip(blur(field, 1.0) * 14 + blur(field, 4.0) * 25, 0, 1)
    tint = ramp(rng.random((SIZE, SIZE)).astype(np.float32), [(0, "#cfd8ff"), (1, "#fff1d8")])
    canvas = screen(np.repeat(sky[..., None], 3, axis=2), stars[..., None] * tint)
    return quantised(to_image(canvas), 32)


def boldlines(rng: np.random.Generator) -> Image.Image:
    """Op-art: thick black and white bands bending in waves, hard-edged, full contrast."""
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32) / SIZE
    bend = 0.07 * np.sin(2 * np.pi * (yy * 1.3 + rng.uniform())) * np.sin(np.pi * xx)
    phase = (xx + yy * 0.35 + bend) * 11.0
    ss = 4  # antialias the hard edges by supersampling the threshold along x
    offsets = (np.arange(ss, dtype=np.float32) + 0.5) / ss - 0.5
    ink = np.mean([np.mod(phase + o * 11.0 / SIZE, 1.0) < 0.5 for o in offsets], axis=0)
    return to_image(np.repeat((1.0 - ink)[..., None], 3, axis=2)).convert("L")


def densepattern(rng: np.random.Generator) -> Image.Image:
    """A tight two-colour grid of small dots and dashes repeating every 16 pixels (4 at 256 px)."""
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    cell = 16
    u, v = xx % cell, yy % cell
    row = (yy // cell) % 2
    dots = np.hypot(u - 7.5, v - 7.5) < 4.5
    dashes = (np.abs(v - 7.5) < 2.5) & (u < 12)
    motif = np.where(row == 0, dots, dashes)
    ground, ink = hex_rgb("#f3e6c4"), hex_rgb("#1d3f8f")
    canvas = np.where(motif[..., None], ink, ground).astype(np.float32)
    # A hint of print: a slight tone drift so the pattern is not purely synthetic.
    canvas *= (0.95 + 0.05 * fbm(rng, (3, 3), 3))[..., None]
    return quantised(to_image(canvas), 16)


def flatfield(rng: np.random.Generator) -> Image.Image:
    """One flat colour, nothing else: the style has no texture at all to give."""
    return Image.new("RGB", (SIZE, SIZE), "#1a3fa8")


# name -> (seed, painter). Each cover has its own seed, so adding one never changes the others.
COVERS: dict[str, tuple[int, Callable[[np.random.Generator], Image.Image]]] = {
    "pulsar": (1, pulsar),
    "redlines": (2, redlines),
    "colourfields": (3, colourfields),
    "knit": (4, knit),
    "greenhaze": (5, greenhaze),
    "neongrid": (6, neongrid),
}

# Written to their own folder (covers-hard/), so the gallery's covers never change with them.
HARD_COVERS: dict[str, tuple[int, Callable[[np.random.Generator], Image.Image]]] = {
    "darkfield": (11, darkfield),
    "boldlines": (12, boldlines),
    "densepattern": (13, densepattern),
    "flatfield": (14, flatfield),
}


def write_png(img: Image.Image, path: Path) -> int:
    """Write atomically (aside, fsync, rename) and return the size in bytes."""
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as f:
        img.save(f, format="PNG", optimize=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path.stat().st_size


def write_covers(
    covers: dict[str, tuple[int, Callable[[np.random.Generator], Image.Image]]], outdir: Path
) -> list[str]:
    """Paint and write each cover into outdir; return the names over MAX_BYTES."""
    outdir.mkdir(parents=True, exist_ok=True)
    too_big = []
    for name, (seed, make) in covers.items():
        start = time.perf_counter()
        img = make(np.random.default_rng(seed))
        assert img.size == (SIZE, SIZE), name
        size = write_png(img, outdir / f"{name}.png")
        print(
            f"{outdir.name}/{name}.png  {size / 1000:6.0f} kB  {time.perf_counter() - start:5.1f} s"
        )
        if size > MAX_BYTES:
            too_big.append(name)
    return too_big


def main(argv: list[str]) -> int:
    outdir = Path(argv[1]) if len(argv) > 1 else Path(__file__).resolve().parent / "covers"
    hard_outdir = Path(argv[2]) if len(argv) > 2 else outdir.with_name(outdir.name + "-hard")
    too_big = write_covers(COVERS, outdir) + write_covers(HARD_COVERS, hard_outdir)
    if too_big:
        print(f"over {MAX_BYTES} bytes: {', '.join(too_big)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
