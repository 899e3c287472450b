"""Atomic file writes: write aside, fsync, rename — a reader sees the old file or the new one.

The one writer every stage uses (and the engine, for its weights cache: it needs nothing but
the standard library). Temporary files are named ``.<final name>.<random>.tmp`` beside the
target, so that ``remove_leftovers`` can find what a killed writer left.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO


@contextlib.contextmanager
def atomic_writer(path: Path, *, mode: int | None = None) -> Iterator[BinaryIO]:
    """Yield a binary handle whose content replaces ``path`` only if the block succeeds.

    The new file gets ``mode`` when given (to keep a file's permission bits across an
    edit), else the usual 0o666 less the umask, like any file the user creates.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666 if mode is None else mode)
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            if mode is not None:
                os.fchmod(handle.fileno(), mode)  # the umask may have masked some bits
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except OSError as exc:
        temp.unlink(missing_ok=True)
        if exc.filename is None or Path(exc.filename) == temp:
            # Name the file being written, not the temporary one nor nothing at all (a full
            # disk reads "No space left on device" with no path otherwise).
            raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from exc
        raise
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def write_bytes(path: Path, data: bytes, *, mode: int | None = None) -> None:
    """Replace ``path`` with ``data`` atomically."""
    with atomic_writer(path, mode=mode) as handle:
        handle.write(data)


def remove_leftovers(root: Path) -> int:
    """Delete the temporary files of writers killed mid-write under ``root``; return how many.

    Only call it while no other process can be writing there: the build holds the cache's
    lock when it does.
    """
    found = root.rglob(".*.tmp") if root.is_dir() else ()
    leftovers = [path for path in found if path.is_file() and not path.is_symlink()]
    for path in leftovers:
        path.unlink(missing_ok=True)
    return len(leftovers)


def fsync_dir(folder: Path) -> None:
    """Make renames in ``folder`` durable (flush its entries); a no-op where folders cannot
    be opened."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
