"""Where a command may write its result (`stylize -o`, `rerun -o`, `sweep -o`): checked before
any painting, so an hour of work never ends by writing over a photo or failing on a folder.

A result never replaces one of the command's own inputs, nor a file the catalog refers to
(its photos and covers, the catalog itself), whatever the spelling: a relative or absolute
path, ``..``, a symbolic link or a hard link to the same file all count as the same file.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import CovergenError
from .files import file_kind
from .safetext import url_scheme

if TYPE_CHECKING:
    from .catalog import Catalog

OUTPUT_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}


def output_format(path: Path, field: str = "output") -> str:
    """The image format an output name asks for, or a clear error."""
    fmt = OUTPUT_FORMATS.get(Path(path).suffix.lower())
    if fmt is None:
        raise CovergenError(
            f"cannot write {Path(path).suffix or 'files without a suffix'}",
            field=field,
            hint="end the output name in .png, .jpg or .webp",
        )
    return fmt


def catalog_inputs(catalog: Catalog) -> list[tuple[Path, str]]:
    """The local files a catalog refers to, each with what it is, the catalog first: the
    images of every pair, those of pairs it cannot read right now included."""
    found: list[tuple[Path, str]] = [(catalog.path, "the catalog")]
    for src in catalog.sources:
        if not url_scheme(src) and "\0" not in src:
            found.append((catalog.root / src, f"an image the catalog refers to ({src})"))
    return found


def cache_folders(cache_dir: Path) -> list[Path]:
    """The cache's stores, where no result may be written (a stored download may be the only
    copy there is); its ``sweeps/`` folder, where sheets go by default, is not one."""
    from .store import cache_paths

    paths = cache_paths(cache_dir)
    return [paths[name] for name in ("images", "results", "features", "derived", "runlog")] + [
        Path(cache_dir) / "weights"
    ]


def check_output(
    path: Path,
    inputs: Iterable[tuple[Path | None, str]],
    *,
    field: str = "output",
    protected: Iterable[tuple[Path, str]] = (),
) -> str:
    """Refuse an output that would replace an input, lie inside a ``protected`` folder (the
    cache's stores, the site), or cannot be written as a file; return its image format.
    ``inputs`` and ``protected``: (path, what it is) pairs; None inputs are skipped."""
    path = Path(path)

    def refuse(message: str, hint: str) -> CovergenError:
        return CovergenError(message, field=field, hint=hint)

    where = Path(os.path.realpath(path))
    for folder, what in protected:
        if where.is_relative_to(os.path.realpath(folder)):
            raise refuse(
                f"{path} lies in {what} ({folder}), which covergen manages",
                "write results outside it",
            )
    try:
        info: os.stat_result | None = path.stat()
    except (FileNotFoundError, NotADirectoryError):  # the latter: a parent is a file
        info = None
    except OSError as exc:
        raise refuse(
            f"cannot write {path} ({exc.strerror or exc})",
            "check the path: its folders must be folders you may write to",
        ) from None
    target = _identity(path, info)
    for source, what in inputs:
        if source is not None and target == _identity(Path(source)):
            raise refuse(
                f"{path} is {what} ({source}); writing the result there would replace it",
                "choose another output name",
            )
    if info is not None and not stat.S_ISREG(info.st_mode):
        a_folder = stat.S_ISDIR(info.st_mode)
        raise refuse(
            f"{path} is {file_kind(info.st_mode)}; the result would replace it",
            f"name a file, e.g. {path / 'painted.png'}" if a_folder else "name an ordinary file",
        )
    parent = _nearest_existing(path.parent)
    if not parent.is_dir():
        raise refuse(
            f"cannot write {path}: {parent} is a file, not a folder", "choose an output in a folder"
        )
    return output_format(path, field)


def _nearest_existing(folder: Path) -> Path:
    """``folder``, or the closest of its parents that exists (the writer makes the rest)."""
    folder = Path(os.path.abspath(folder))
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return folder


def _identity(path: Path, info: os.stat_result | None = None) -> tuple[object, ...]:
    """What makes two spellings one file: device and inode when it exists (links, hard
    links, case-folding file systems), else the fully resolved path."""
    if info is None:
        with contextlib.suppress(OSError):
            info = path.stat()
    if info is not None:
        return ("inode", info.st_dev, info.st_ino)
    return ("path", os.path.realpath(path))
