"""Decoding input images: the one decoder every stage uses (sources, the painter, the site).

Only JPEG, PNG, WebP, GIF, TIFF and BMP are decoded, so a hostile file cannot reach e.g.
Pillow's EPS plugin (Ghostscript). Sizes are checked from the header before any pixel is
decoded; images come out upright, 8-bit RGB, in sRGB, with no metadata.
"""

from __future__ import annotations

import io
import re
import warnings
from dataclasses import dataclass

from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError

from ..errors import InputImageError

# PIL format name -> suffix of the stored file.
ACCEPTED_FORMATS = {
    "JPEG": ".jpg",
    "PNG": ".png",
    "WEBP": ".webp",
    "GIF": ".gif",
    "TIFF": ".tif",
    "BMP": ".bmp",
}
# Phone cameras write MPO: a JPEG with extra frames appended. Pillow's JPEG opener returns it
# under its own name; it is a JPEG.
_FORMAT_ALIASES = {"MPO": "JPEG"}
ACCEPTED_NAMES = "JPEG, PNG, WebP, GIF, TIFF or BMP"
_EXIF_ORIENTATION = 0x0112

RGB = tuple[int, int, int]
WHITE: RGB = (255, 255, 255)


@dataclass(frozen=True)
class DecodeLimits:
    """What an input image may be."""

    max_pixels: int = 64_000_000  # decompression-bomb limit (width*height)
    min_side: int = 16  # smaller images are refused (too small to paint)
    max_aspect: float = 8.0  # long/short side; beyond is refused
    # Scans of a progressive JPEG. Each is a pass over the whole image, so the decoding work
    # is scans × pixels, not bytes: 3,000 copies of one small scan (535 KB) take minutes to
    # decode at 64 Mpx. Encoders write 1 (baseline) to about 10 (progressive) scans.
    max_jpeg_scans: int = 100


DEFAULT_LIMITS = DecodeLimits()


@dataclass(frozen=True)
class Where:
    """Which catalog entry an error is about: every message names the src."""

    src: str
    pair: str | None = None
    field: str = "src"

    def error(
        self, message: str, hint: str = "", kind: type[InputImageError] = InputImageError
    ) -> InputImageError:
        return kind(f"{self.src}: {message}", pair=self.pair, field=self.field, hint=hint)


def decode_image(
    data: bytes,
    limits: DecodeLimits = DEFAULT_LIMITS,
    *,
    pair: str | None = None,
    field: str = "src",
    src: str = "",
    background: RGB = WHITE,
) -> Image.Image:
    """Decode image bytes to upright 8-bit sRGB, or raise InputImageError saying why not.

    The pixel count is checked from the header before any pixel is decoded; the image is
    loaded in full so that truncated or corrupt files fail here. Animated images give their
    first frame; EXIF orientation is applied; alpha is composited on ``background``; ICC
    profiles are converted to sRGB; 16-bit and float images are scaled, not clipped; the
    result carries no metadata. ``src`` names the image in messages.
    """
    image, _ = decode(data, limits, Where(src or "the image", pair, field), background)
    return image


def decode(
    data: bytes, limits: DecodeLimits, where: Where, background: RGB = WHITE
) -> tuple[Image.Image, str]:
    """The decoded image and its format (see decode_image)."""
    image, fmt = _open_checked(data, limits, where)
    with image:
        try:
            image.seek(0)
            image.load()
        except Exception as exc:
            # Pillow's decoders raise OSError, SyntaxError, ValueError, EOFError… on bad input;
            # whichever it is, the file cannot be used.
            raise where.error(
                f"the {fmt} data is damaged or truncated ({exc})",
                hint="download or export the image again",
            ) from None
        rgb = _to_rgb(_upright(image), where, background)
    # Nothing of the file's metadata travels on (a JPEG comment would be copied into every
    # JPEG saved from this image): the pixels only.
    rgb.info.clear()
    return rgb, fmt


def inspect(data: bytes, limits: DecodeLimits, where: Where) -> tuple[int, int, str]:
    """Upright width, height and format from the header alone, with the same checks."""
    image, fmt = _open_checked(data, limits, where)
    with image:
        width, height = image.size
        try:
            orientation = image.getexif().get(_EXIF_ORIENTATION)
        except Exception:
            orientation = None  # unreadable EXIF: _upright ignores it too
    if orientation in (5, 6, 7, 8):  # the transposing and 90° rotations
        width, height = height, width
    return width, height, fmt


def _open_checked(data: bytes, limits: DecodeLimits, where: Where) -> tuple[Image.Image, str]:
    """Identify the image and check format, pixel count, size and aspect, decoding nothing."""
    accepted = f"use a {ACCEPTED_NAMES} image"
    try:
        with warnings.catch_warnings():
            # Pillow's own bomb warning follows a process-wide setting; the check below, against
            # limits.max_pixels, is the one that decides.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=tuple(ACCEPTED_FORMATS))
    except Image.DecompressionBombError:
        raise where.error(
            f"declares more pixels than can be decoded safely (the limit is {limits.max_pixels:,})",
            hint="use a smaller image",
        ) from None
    except UnidentifiedImageError:
        raise where.error(_not_an_image(data), hint=accepted) from None
    except Exception as exc:
        raise where.error(f"cannot be read as an image ({exc})", hint=accepted) from None
    fmt = _FORMAT_ALIASES.get(image.format or "", image.format or "")
    width, height = image.size
    problem: tuple[str, str] | None = None
    if fmt not in ACCEPTED_FORMATS:
        problem = (f"is a {fmt or 'unknown'} image, which covergen does not read", accepted)
    elif width * height > limits.max_pixels:
        problem = (
            f"is {width}×{height} = {width * height:,} pixels, more than the limit of "
            f"{limits.max_pixels:,} (a decompression bomb, or simply too large)",
            "scale the image down, or raise max_pixels",
        )
    elif min(width, height) < limits.min_side:
        problem = (
            f"is only {width}×{height} pixels; at least {limits.min_side} on each side "
            "are needed to paint",
            "use a larger image",
        )
    elif (ratio := max(width, height) / min(width, height)) > limits.max_aspect:
        problem = (
            f"is {width}×{height} pixels, an aspect ratio of {ratio:.1f}:1, beyond the limit "
            f"of {limits.max_aspect:g}:1",
            "crop the image closer to a usual shape, or raise max_aspect",
        )
    elif fmt == "JPEG" and (scans := jpeg_scans(data)) > limits.max_jpeg_scans:
        problem = (
            f"is a JPEG of {scans:,} scans, more than the limit of {limits.max_jpeg_scans} "
            "(each scan is a pass over the whole image: decoding it would take too long)",
            "save the image again as an ordinary JPEG or PNG",
        )
    if problem is not None:
        image.close()
        raise where.error(*problem)
    return image, fmt


# After a scan's header, its entropy-coded data runs to the next marker: 0xFF followed by a
# byte that is neither a stuffed zero nor a restart marker (0xD0-0xD7).
_NEXT_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")
_ANY_MARKER = re.compile(rb"\xff[^\x00\xff]")


def jpeg_scans(data: bytes) -> int:
    """How many scans (SOS segments) the first image of a JPEG file holds, read from its
    markers without decoding, up to its end (EOI): an MPO's other frames are not counted.
    Bytes where a marker is due are skipped to the next marker, as libjpeg itself does (it
    warns and decodes on), so junk cannot hide scans from the count."""
    scans = 0
    pos = 2  # after SOI
    end = len(data)
    while pos + 1 < end:
        if data[pos] != 0xFF:
            found = _ANY_MARKER.search(data, pos)
            if found is None:
                return scans
            pos = found.start()
            continue
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == 0xD9:  # EOI
            return scans
        if marker == 0x00 or marker == 0x01 or 0xD0 <= marker <= 0xD8:  # no length follows
            pos += 2
            continue
        if pos + 4 > end:
            return scans
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        pos += 2 + max(length, 2)
        if marker == 0xDA:  # SOS: a scan; skip its entropy-coded data
            scans += 1
            found = _NEXT_MARKER.search(data, pos)
            if found is None:
                return scans
            pos = found.start()
    return scans


def _upright(image: Image.Image) -> Image.Image:
    """The image turned as its EXIF orientation says (always a new image)."""
    try:
        return ImageOps.exif_transpose(image)
    except Exception:
        # Malformed EXIF from some cameras: better an unturned picture than a refused one.
        return image.copy()


def _to_rgb(image: Image.Image, where: Where, background: RGB) -> Image.Image:
    """8-bit RGB: alpha composited on ``background``, CMYK and ICC-tagged images to sRGB,
    deep images scaled."""
    mode = image.mode
    if mode.startswith("I") or mode == "F":
        return _scale_to_8bit(image).convert("RGB")
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info:
        if image.info.get("icc_profile") and mode == "RGBA":
            image = _icc_to_srgb(image, "RGBA") or image
        rgba = image.convert("RGBA")
        ground = Image.new("RGBA", rgba.size, (*background, 255))
        return Image.alpha_composite(ground, rgba).convert("RGB")
    icc = mode in ("RGB", "CMYK") and image.info.get("icc_profile")
    if icc and (converted := _icc_to_srgb(image)) is not None:
        return converted
    if mode == "RGB":
        return image
    try:
        return image.convert("RGB")
    except ValueError as exc:
        raise where.error(
            f"has the colour mode {mode}, which cannot be converted to RGB ({exc})",
            hint="export the image as an ordinary RGB JPEG or PNG",
        ) from None


def _icc_to_srgb(image: Image.Image, mode: str = "RGB") -> Image.Image | None:
    """Convert through the embedded ICC profile (print CMYK, Display P3…); None if it fails."""
    try:
        profile = ImageCms.ImageCmsProfile(io.BytesIO(image.info["icc_profile"]))
        srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
        return ImageCms.profileToProfile(image, profile, srgb, outputMode=mode)
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
        # A broken or mismatched profile: the plain conversion is still a usable picture.
        return None


def _scale_to_8bit(image: Image.Image) -> Image.Image:
    """Greyscale of more than 8 bits (I;16, I, F) scaled to L by its range, never clipped.

    I;16 is scaled from 0–65535. For I and F the values decide: 0–1 (float convention),
    0–255 or 0–65535 are scaled from that range; anything else is stretched min to max.
    """
    import numpy as np

    values = np.asarray(image).astype(np.float32)
    values = np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0)
    low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    if image.mode.startswith("I;16"):
        low, top = 0.0, 65535.0
    elif low >= 0 and high <= 1.0 and image.mode == "F":
        low, top = 0.0, 1.0
    elif low >= 0 and high <= 255:
        low, top = 0.0, 255.0
    elif low >= 0 and high <= 65535:
        low, top = 0.0, 65535.0
    else:
        top = high if high > low else low + 1.0
    scaled = np.rint((values - low) * (255.0 / (top - low)))
    return Image.fromarray(np.clip(scaled, 0, 255).astype(np.uint8), mode="L")


def _not_an_image(data: bytes) -> str:
    """Why Pillow could not identify the bytes, in words, guessing from their start."""
    head = data[:4096].lstrip().lower()
    if not data:
        return "is empty (0 bytes)"
    if b"<svg" in head:
        return "is an SVG (vector) image; covergen paints raster images only"
    if head.startswith((b"<!doctype html", b"<html")) or b"<html" in head[:512]:
        return "is an HTML page, not an image"
    if data[4:8] == b"ftyp":
        brand = data[8:12].decode("ascii", "replace").strip()
        kind = "an AVIF" if brand.startswith("avi") else "a HEIF/HEIC" if brand else "an ISO media"
        return f"is {kind} file, which covergen does not read"
    if head.startswith(b"%pdf"):
        return "is a PDF document, not an image"
    return f"is not a {ACCEPTED_NAMES} image"


def too_large(size: int, limit: int, *, counted: bool = False) -> tuple[str, str]:
    """Message and hint for an image over ``limit`` bytes (``counted``: as it arrived)."""
    amount = f"more than {limit:,} bytes arrived" if counted else f"it is {size:,} bytes"
    return (
        f"the image is too large: {amount}, the limit is {limit:,}",
        "use a smaller version of the image, or raise max_bytes",
    )
