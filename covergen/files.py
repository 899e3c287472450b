"""Reading a file a user named: a regular file, read to a limit, or a clear refusal.

A path on the command line or in a catalog can name anything: a FIFO (reading it waits for a
writer that never comes), a device (``/dev/zero`` never ends), a folder, a file larger than
anything we would decode. ``read_user_file`` opens without blocking, asks the open file
itself what it is (no window between a check and the read for the path to change), and reads
at most ``limit`` bytes, so every such argument either gives its bytes or a message naming
the field.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from .errors import CovergenError

_KINDS = (
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISFIFO, "a FIFO (a named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def file_kind(mode: int) -> str:
    """What a file of this ``st_mode`` is, in words: "a folder", "a FIFO (a named pipe)"…"""
    return next((words for test, words in _KINDS if test(mode)), "not a regular file")


def read_user_file(
    path: Path,
    *,
    limit: int,
    field: str,
    what: str = "file",
    pair: str | None = None,
    error: type[CovergenError] = CovergenError,
) -> bytes:
    """The bytes of the regular file at ``path``, at most ``limit`` of them.

    Raises ``error`` (a CovergenError type) naming ``field`` when the path is missing,
    unreadable, not a regular file (FIFO, device, socket, folder) or larger than ``limit``.
    ``what`` names the file in messages ("catalog", "image"…).
    """
    path = Path(path)

    def refuse(message: str, hint: str) -> CovergenError:
        return error(message, pair=pair, field=field, hint=hint)

    try:
        # O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise refuse(f"no such file: {path}", "check the path") from None
    except OSError as exc:
        if exc.errno == errno.ENXIO:  # a socket, or a FIFO nobody writes to (some systems)
            raise refuse(f"{path} is not a regular file", f"give the path of a {what}") from None
        raise refuse(
            f"cannot read {path} ({exc.strerror or exc})", "check the path and its permissions"
        ) from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            hint = (
                f"give the {what} inside it"
                if stat.S_ISDIR(info.st_mode)
                else f"give the path of a {what} (a regular file)"
            )
            raise refuse(f"{path} is {file_kind(info.st_mode)}, not a regular file", hint)
        if info.st_size > limit:
            raise refuse(
                f"{path} is {info.st_size:,} bytes, more than the limit of {limit:,}",
                f"use a smaller {what}",
            )
        os.set_blocking(fd, True)
        chunks = []
        total = 0
        while total <= limit:
            chunk = os.read(fd, min(1 << 20, limit + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
    except OSError as exc:
        raise refuse(
            f"cannot read {path} ({exc.strerror or exc})", "check the file and its permissions"
        ) from None
    finally:
        os.close(fd)
    if total > limit:  # it grew while we read
        raise refuse(f"{path} is larger than the limit of {limit:,} bytes", f"use a smaller {what}")
    return b"".join(chunks)
