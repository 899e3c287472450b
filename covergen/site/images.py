"""Derived images for the site: each source in several widths, as WebP and as JPEG.

Everything is addressed by content. A source is known by the SHA-256 of its bytes; its
derived files are cached under ``derived/`` by that hash and a digest of the recipe (the
widths, the encoder settings, the encoder versions), never by file dates, so a fresh checkout
reuses nothing stale and a settings change re-derives. The same recipe names the files in the
site (``img/<key>-<width>.webp``), so a changed file always has a new name and long caching
headers are safe.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
from collections.abc import Container, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import PIL
from PIL import Image, features

from ..errors import InputImageError
from ..sources.decoding import decode_image
from ..store import Check, Collected, Pixels, RecordError, Sha256, Store, digest, dumps

log = logging.getLogger(__name__)

# 2: decoded by covergen.sources.decoding (no metadata carried over); 3: paintings enlarged (below)
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
# Each format's file extension and Pillow settings, in the order its files are derived.
FORMATS = {"webp": ("webp", WEBP_OPTIONS), "jpeg": ("jpg", JPEG_OPTIONS)}
_VARIANT_NAME = re.compile(r"[0-9a-f]{20}-[0-9]+\.(webp|jpg)")  # key-width.extension


@dataclass(frozen=True)
class VariantRecord:
    """One derived file, a width in one format, as its manifest lists it."""

    # the file name in the site's img/ folder (content-addressed)
    name: Annotated[str, Check(_VARIANT_NAME.fullmatch, "a derived file's name")]
    format: Literal["webp", "jpeg"]
    width: Pixels
    height: Pixels
    sha256: Sha256


@dataclass(frozen=True)
class Variant(VariantRecord):
    """One derived file, and where it is cached."""

    path: Path


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


@dataclass(frozen=True)
class Manifest:
    """The record of one source's derived files, written after them."""

    source: Sha256
    recipe: Sha256
    width: Pixels
    height: Pixels
    variants: tuple[VariantRecord, ...]


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
        self.store = Store(Path(root))
        self.root = self.store.root
        self.recipe = digest(json.dumps(recipe(), sort_keys=True).encode())

    def key(self, source_sha256: str, enlarge: bool = False) -> str:
        kind = ":enlarged" if enlarge else ""
        return digest(f"{source_sha256}:{self.recipe}{kind}".encode())[:20]

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
            derived = pool.map(lambda item: self.derive(*item, enlarge=item[0] in enlarge), items)
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
        if digest(data) != source_sha256:
            log.warning("%s does not match its SHA-256 %s; left out", source, source_sha256[:12])
            return None
        try:
            image = decode_image(data, src=str(source), background=BACKGROUND)
        except InputImageError as exc:
            log.warning("cannot decode %s: %s", source, exc.message)
            return None
        records, files = [], {}
        for width in target_widths(image.width, enlarge=enlarge):
            height = max(1, round(image.height * width / image.width))
            resample = Image.Resampling.LANCZOS if width < image.width else ENLARGE_FILTER
            sized = image if width == image.width else image.resize((width, height), resample)
            for fmt, (extension, options) in FORMATS.items():
                name = f"{key}-{width}.{extension}"
                buffer = io.BytesIO()
                sized.save(buffer, fmt.upper(), **options)
                files[name] = buffer.getvalue()
                records.append(VariantRecord(name, fmt, width, height, digest(files[name])))
        manifest = Manifest(source_sha256, self.recipe, image.width, image.height, tuple(records))
        self.store.put_entry(f"{key}.json", dumps(manifest), files)
        return self._derived(key, manifest)

    def collect(self, keep: Container[str], *, dry_run: bool = False) -> Collected:
        """Remove the derived files of every key (``key``) not in ``keep``."""
        return self.store.collect(keep, dry_run=dry_run)

    def _derived(self, key: str, manifest: Manifest) -> DerivedImage:
        variants = tuple(
            Variant(v.name, v.format, v.width, v.height, v.sha256, self.store.path(v.name))
            for v in manifest.variants
        )
        return DerivedImage(manifest.source, key, manifest.width, manifest.height, variants)

    def _load(self, key: str, source_sha256: str) -> DerivedImage | None:
        def vouched(manifest: Manifest) -> dict[str, str]:
            if (manifest.source, manifest.recipe) != (source_sha256, self.recipe):
                raise RecordError(f"the manifest of {key} is of another source or recipe")
            # Small files, read once per build: a damaged cache must never reach the site.
            return {v.name: v.sha256 for v in manifest.variants}

        found = self.store.get_entry(f"{key}.json", Manifest, vouched)
        return None if found is None else self._derived(key, found)
