"""Derived images for the site: each source in several widths, as WebP and as JPEG.

Everything is addressed by content. A source is known by the SHA-256 of its bytes; its
derived files are cached under ``derived/`` by that hash and a digest of the recipe (the
widths, the encoder settings, the encoder versions), never by file dates, so a fresh checkout
reuses nothing stale and a settings change re-derives. The same recipe names the files in the
site (``img/<key>-<width>.webp``), so a changed file always has a new name and long caching
headers are safe.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import PIL
from PIL import Image, features

from ..atomic import write_bytes
from ..decode import decode_image
from ..errors import InputImageError

log = logging.getLogger(__name__)

# 2: decoded by covergen.decode (no metadata carried over); 3: paintings enlarged (below)
RECIPE_VERSION = 3
# Widths offered to srcset; a source gets those below its own width, plus its own width
# (capped at MAX_WIDTH). Photos and covers are never upscaled.
WIDTHS = (160, 320, 480, 640, 960, 1280, 1920)
MAX_WIDTH = 2560
# A ladder step this close to the source width adds bytes and no sharpness: skip it.
MIN_STEP = 0.85
# A painting is the pair page's hero, shown as large as the window allows, but a CPU draft is
# painted small (218 × 256). Paintings narrower than ENLARGE_BELOW also get the ladder's wider
# steps up to ENLARGE_TO (at most ENLARGE_LIMIT times their width), resized with a bicubic
# filter: smooth, no ringing, the same softness on every browser (whose own enlargement
# varies), with the pixels a screen needs for the size shown. Wider paintings fill a phone
# and most of a desktop's hero as they are: enlarged files would cost bytes, show nothing.
ENLARGE_BELOW = 640
ENLARGE_TO = 1280
ENLARGE_LIMIT = 6.0
ENLARGE_FILTER = Image.Resampling.BICUBIC
# method=4 is libwebp's default: method 6 takes over twice as long for about 1% fewer bytes.
# libwebp and libjpeg are deterministic for fixed settings and versions (the versions are
# part of the recipe), so the same source always gives the same bytes.
WEBP_OPTIONS: Mapping[str, Any] = {"quality": 80, "method": 4}
JPEG_OPTIONS: Mapping[str, Any] = {
    "quality": 84,
    "optimize": True,
    "progressive": True,
    "subsampling": "4:2:0",
}
# Transparent sources are flattened onto the gallery's background colour.
BACKGROUND = (12, 12, 14)
EXTENSIONS = {"webp": "webp", "jpeg": "jpg"}


@dataclass(frozen=True)
class Variant:
    """One derived file: a width in one format."""

    name: str  # the file name in the site's img/ folder (content-addressed)
    format: str  # webp or jpeg
    width: int
    height: int
    sha256: str
    path: Path  # the cached file


@dataclass(frozen=True)
class DerivedImage:
    """All derived files of one source image."""

    source: str  # SHA-256 of the source bytes
    key: str  # sha256(source, recipe), the prefix of every file name
    width: int  # after EXIF orientation
    height: int
    variants: tuple[Variant, ...]

    def of(self, fmt: str) -> tuple[Variant, ...]:
        """The variants of one format, narrowest first."""
        return tuple(v for v in self.variants if v.format == fmt)


def recipe() -> dict[str, Any]:
    """Everything besides the source bytes that decides a derived file's bytes."""
    return {
        "version": RECIPE_VERSION,
        "widths": list(WIDTHS),
        "max_width": MAX_WIDTH,
        "min_step": MIN_STEP,
        "enlarge": [ENLARGE_BELOW, ENLARGE_TO, ENLARGE_LIMIT, ENLARGE_FILTER.name],
        "webp": dict(WEBP_OPTIONS),
        "jpeg": dict(JPEG_OPTIONS),
        "background": list(BACKGROUND),
        "pillow": PIL.__version__,
        "libwebp": features.version("webp"),
        "libjpeg": features.version("jpg"),
    }


def recipe_digest() -> str:
    return hashlib.sha256(json.dumps(recipe(), sort_keys=True).encode()).hexdigest()


def target_widths(width: int, *, enlarge: bool = False) -> list[int]:
    """The widths derived from a source ``width`` pixels wide, narrowest first; ``enlarge``
    (paintings) adds wider steps up to ENLARGE_TO for a source narrower than ENLARGE_BELOW."""
    top = min(width, MAX_WIDTH)
    widths = [w for w in WIDTHS if w <= top * MIN_STEP] + [top]
    if enlarge and width < ENLARGE_BELOW:
        limit = min(ENLARGE_TO, width * ENLARGE_LIMIT)
        widths += [w for w in WIDTHS if top / MIN_STEP <= w <= limit]
    return widths


class ImageDeriver:
    """Derives and caches the site's images under ``root`` (``cache/derived``)."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.recipe = recipe_digest()

    def key(self, source_sha256: str, enlarge: bool = False) -> str:
        kind = ":enlarged" if enlarge else ""
        return hashlib.sha256(f"{source_sha256}:{self.recipe}{kind}".encode()).hexdigest()[:20]

    def derive_all(
        self,
        sources: Mapping[str, Path],
        workers: int | None = None,
        *,
        enlarge: frozenset[str] = frozenset(),
    ) -> dict[str, DerivedImage]:
        """Derive every ``{sha256: path}`` source; unreadable ones are left out (logged).
        Sources in ``enlarge`` (paintings) also get wider steps (see ENLARGE_TO)."""
        items = sorted(sources.items())
        workers = workers or min(8, os.cpu_count() or 1)
        # Encoding releases the GIL, so threads use several cores; the output does not
        # depend on the order, each source is derived on its own.
        with ThreadPoolExecutor(max_workers=workers) as pool:
            derived = list(
                pool.map(lambda item: self.derive(*item, enlarge=item[0] in enlarge), items)
            )
        return {sha: image for (sha, _), image in zip(items, derived, strict=True) if image}

    def derive(
        self, source_sha256: str, source: Path, *, enlarge: bool = False
    ) -> DerivedImage | None:
        """The derived files of one source, from the cache when they are all there and intact."""
        key = self.key(source_sha256, enlarge)
        cached = self._load(key, source_sha256)
        if cached is not None:
            return cached
        try:
            data = Path(source).read_bytes()
        except OSError as exc:
            log.warning("cannot read %s: %s", source, exc)
            return None
        if hashlib.sha256(data).hexdigest() != source_sha256:
            log.warning("%s does not match its SHA-256 %s; left out", source, source_sha256[:12])
            return None
        try:
            image = decode_image(data, src=str(source), background=BACKGROUND)
        except InputImageError as exc:
            log.warning("cannot decode %s: %s", source, exc.message)
            return None
        variants = []
        for width in target_widths(image.width, enlarge=enlarge):
            height = max(1, round(image.height * width / image.width))
            if width == image.width:
                sized = image
            elif width < image.width:
                sized = image.resize((width, height), Image.Resampling.LANCZOS)
            else:
                sized = image.resize((width, height), ENLARGE_FILTER)
            for fmt in ("webp", "jpeg"):
                encoded = _encode(sized, fmt)
                name = f"{key}-{width}.{EXTENSIONS[fmt]}"
                path = self._folder(key) / name
                write_bytes(path, encoded)
                variants.append(
                    Variant(name, fmt, width, height, hashlib.sha256(encoded).hexdigest(), path)
                )
        derived = DerivedImage(source_sha256, key, image.width, image.height, tuple(variants))
        self._save(derived)
        return derived

    def _folder(self, key: str) -> Path:
        return self.root / key[:2]

    def _manifest(self, key: str) -> Path:
        return self._folder(key) / f"{key}.json"

    def _save(self, derived: DerivedImage) -> None:
        # Written last: a manifest means every file it lists was written before it.
        data = {
            "source": derived.source,
            "recipe": self.recipe,
            "width": derived.width,
            "height": derived.height,
            "variants": [
                {
                    "name": v.name,
                    "format": v.format,
                    "width": v.width,
                    "height": v.height,
                    "sha256": v.sha256,
                }
                for v in derived.variants
            ],
        }
        write_bytes(self._manifest(derived.key), json.dumps(data, indent=1).encode())

    def _load(self, key: str, source_sha256: str) -> DerivedImage | None:
        try:
            data = json.loads(self._manifest(key).read_text())
            if data["source"] != source_sha256 or data["recipe"] != self.recipe:
                return None
            variants = []
            for v in data["variants"]:
                path = self._folder(key) / v["name"]
                # Small files, read once per build: a damaged cache must never reach the site.
                if hashlib.sha256(path.read_bytes()).hexdigest() != v["sha256"]:
                    return None
                variants.append(
                    Variant(v["name"], v["format"], v["width"], v["height"], v["sha256"], path)
                )
            return DerivedImage(source_sha256, key, data["width"], data["height"], tuple(variants))
        except (OSError, ValueError, KeyError, TypeError):
            return None


def _encode(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    if fmt == "webp":
        image.save(buffer, "WEBP", **WEBP_OPTIONS)
    else:
        image.save(buffer, "JPEG", **JPEG_OPTIONS)
    return buffer.getvalue()
