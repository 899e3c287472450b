"""One-off style transfer of image files: the `covergen stylize` command's logic."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from PIL import Image

from .atomic import atomic_writer
from .decode import decode_image
from .errors import InputImageError
from .nst import Engine, StyleParams, StylizeResult
from .nst.engine import CancelCheck, ProgressCallback

OUTPUT_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}


def open_image(path: Path, field: str) -> Image.Image:
    """Decode an image file with the same checks as the build's sources, or say why not."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise InputImageError(f"no such file: {path}", field=field, hint="check the path") from None
    except OSError as exc:
        raise InputImageError(
            f"cannot read {path} ({exc.strerror or exc})",
            field=field,
            hint="check the file's permissions",
        ) from None
    try:
        return decode_image(data, src=str(path))
    except InputImageError as exc:
        raise InputImageError(
            f"cannot read {path} as an image ({exc.message})", field=field, hint=exc.hint
        ) from None


def output_format(path: Path) -> str:
    """The image format an output name asks for, or a clear error."""
    fmt = OUTPUT_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise InputImageError(
            f"cannot write {path.suffix or 'files without a suffix'}",
            field="output",
            hint="end the output name in .png, .jpg or .webp",
        )
    return fmt


def save_image(image: Image.Image, path: Path, quality: int = 92) -> None:
    """Write an image atomically: aside, fsync, rename; never a half-written file.
    ``quality`` is for JPEG and WebP (92: results; sheets of many small tiles need less)."""
    fmt = output_format(path)
    options = {"quality": quality} if fmt in ("JPEG", "WEBP") else {"optimize": True}
    with atomic_writer(path) as handle:
        image.save(handle, fmt, **options)


def stylize_files(
    photo: Path,
    covers: Sequence[Path],
    output: Path,
    params: StyleParams,
    engine: Engine,
    *,
    content_map: Path | None = None,
    init_image: Path | None = None,
    progress: ProgressCallback | None = None,
    cancel: CancelCheck | None = None,
) -> StylizeResult:
    """Paint the photo in the style of the cover(s) and write the result to ``output``."""
    output_format(output)  # refuse a bad name before an hour of painting
    content = open_image(photo, "photo")
    styles = [open_image(path, "cover") for path in covers]
    weight_map = open_image(content_map, "content_map") if content_map else None
    init = open_image(init_image, "init_image") if init_image else None
    result = engine.stylize(
        content,
        styles,
        params,
        content_map=weight_map,
        init_image=init,
        progress=progress,
        cancel=cancel,
    )
    save_image(result.image, output)
    return result


def export_result(result: Path, output: Path) -> None:
    """Copy a stored result to ``output`` in the format its name asks for (a rerun's -o)."""
    output_format(output)
    image = open_image(result, "result")
    save_image(image, output)
