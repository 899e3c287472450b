"""One-off style transfer of image files: the `covergen stylize` command's logic."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from PIL import Image

from .atomic import atomic_writer
from .errors import InputImageError
from .files import read_user_file
from .nst import Engine, StyleParams, StylizeResult
from .nst.engine import CancelCheck, ProgressCallback
from .outputs import check_output, output_format
from .sources.decoding import decode_image

# The build's own limit on an input image's bytes (FetchSettings.max_bytes).
DEFAULT_MAX_BYTES = 50 * 1024 * 1024


def open_image(path: Path, field: str, *, limit: int = DEFAULT_MAX_BYTES) -> Image.Image:
    """Decode an image file with the same checks as the build's sources, or say why not.

    A FIFO, a device or a folder is refused unread; a file over ``limit`` bytes too."""
    data = read_user_file(path, limit=limit, field=field, what="image", error=InputImageError)
    try:
        return decode_image(data, src=str(path))
    except InputImageError as exc:
        raise InputImageError(
            f"cannot read {path} as an image ({exc.message})", field=field, hint=exc.hint
        ) from None


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
    extra_inputs: Sequence[tuple[Path | None, str]] = (),
    protected: Sequence[tuple[Path, str]] = (),
) -> StylizeResult:
    """Paint the photo in the style of the cover(s) and write the result to ``output``."""
    # Refuse a bad name, a folder, or one of the inputs before an hour of painting.
    inputs = [
        (photo, "the photo"),
        *((cover, "a cover") for cover in covers),
        (content_map, "the content map"),
        (init_image, "the starting image"),
        *extra_inputs,
    ]
    check_output(output, inputs, protected=protected)
    result = engine.stylize(
        open_image(photo, "photo"),
        [open_image(path, "cover") for path in covers],
        params,
        content_map=open_image(content_map, "content_map") if content_map else None,
        init_image=open_image(init_image, "init_image") if init_image else None,
        progress=progress,
        cancel=cancel,
    )
    # Again, now: a folder on the way may have become a link to the photos meanwhile.
    check_output(output, inputs, protected=protected)
    save_image(result.image, output)
    return result


def export_result(result: Path, output: Path) -> None:
    """Copy a stored result to ``output`` in the format its name asks for (a rerun's -o;
    the command checked ``output`` with ``check_output`` before painting)."""
    save_image(open_image(result, "result"), output)
