"""Advisory locks, one per thing that two covergen processes could race on.

- the cache (``cache/build.lock``): one build at a time writes results, features and the
  run log; a second build is refused at once;
- the catalog: `covergen add` reads, edits and replaces the file; two at once would each
  write their own version and one pair would be lost. The lock is taken on the catalog's
  folder, which outlives the file (the edit replaces the file by a rename, so a lock on the
  file would guard an inode that is gone) and needs no lock file beside the user's catalog;
- the site: two builds with different caches rendering into one site folder would sweep
  each other's staging folders. The lock is on the site's parent folder, where staging
  happens.

All are ``flock`` locks: the kernel drops them when the process dies, so a killed process
never leaves a stale lock behind.
"""

from __future__ import annotations

import dataclasses
import fcntl
import os
import time
from dataclasses import KW_ONLY, dataclass
from pathlib import Path

from .errors import CovergenError

POLL_S = 0.05


@dataclass(eq=False)
class Lock:
    """An exclusive lock on ``path``: a lock file (created if missing, holding the holder's
    pid) or, with ``folder=True``, a folder (created if missing).

    ``wait``: seconds to wait for another holder before giving up (0: refuse at once).
    ``busy``, ``field`` and ``hint`` make the message when the lock cannot be had.
    """

    path: Path
    _: KW_ONLY
    busy: str
    field: str
    hint: str
    wait: float = 0.0
    folder: bool = False
    _fd: int | None = dataclasses.field(default=None, init=False)

    def __enter__(self) -> Lock:
        fd = self._open()
        deadline = time.monotonic() + self.wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = self._holder(fd)
                    os.close(fd)
                    raise CovergenError(
                        self.busy + (f" ({holder})" if holder else ""),
                        field=self.field,
                        hint=self.hint,
                    ) from None
                time.sleep(POLL_S)
            except BaseException:
                os.close(fd)
                raise
        self._fd = fd
        if not self.folder:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"pid {os.getpid()}".encode(), 0)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is None:
            return
        if not self.folder:
            os.ftruncate(self._fd, 0)
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None

    def _open(self) -> int:
        try:
            if self.folder:
                self.path.mkdir(parents=True, exist_ok=True)
                return os.open(self.path, os.O_RDONLY | os.O_DIRECTORY)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            return os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise CovergenError(
                f"cannot lock {self.path} ({exc.strerror or exc})",
                field=self.field,
                hint="check that the folder exists and that you may write to it",
            ) from None

    def _holder(self, fd: int) -> str:
        if self.folder:
            return ""
        try:
            return os.pread(fd, 64, 0).decode(errors="replace").strip()
        except OSError:
            return ""


def cache_lock(cache_dir: Path) -> Lock:
    """Held by every command that writes the cache (build, rerun, clean)."""
    from .store import cache_paths

    return Lock(
        cache_paths(cache_dir)["lock"],
        busy=f"another covergen build is using {cache_dir}",
        field="cache",
        hint="wait for the other build to finish, or use another --cache-dir",
    )


def catalog_lock(catalog: Path, wait: float = 30.0) -> Lock:
    """Held while the catalog file is read, edited and replaced."""
    folder = Path(catalog).resolve().parent
    return Lock(
        folder,
        busy=f"another covergen process is editing the catalog in {folder}",
        field="catalog",
        hint="try again in a moment",
        wait=wait,
        folder=True,
    )


def site_lock(site_dir: Path, wait: float = 120.0) -> Lock:
    """Held while a new version of the site is staged and swapped in."""
    folder = Path(site_dir).resolve().parent
    return Lock(
        folder,
        busy=f"another covergen build is rendering into {site_dir}",
        field="site",
        hint="another build is rendering into the same site folder; let it finish",
        wait=wait,
        folder=True,
    )
