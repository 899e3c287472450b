"""The site's staging: what a killed build left is swept, and nothing else ever is."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from covergen.site.staging import MARKER, MARKER_TEXT, REPLACED_MARKER, StagedSite


def _killed_mid_render(site: Path) -> Path:
    """A staging folder as a build killed (SIGKILL) while rendering into ``site`` leaves it."""
    script = (
        "import os, sys\n"
        "from covergen.site.staging import StagedSite\n"
        "staged = StagedSite(sys.argv[1])\n"
        "staged.write('index.html', b'half')\n"
        "print(staged.staging, flush=True)\n"
        "os.kill(os.getpid(), 9)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(site)], capture_output=True, text=True, check=False
    )
    assert done.returncode == -signal.SIGKILL
    return Path(done.stdout.strip())


def test_what_a_killed_build_left_is_swept_by_the_next(tmp_path: Path):
    site = tmp_path / "site"
    leftover = _killed_mid_render(site)
    assert leftover.is_dir()
    old = tmp_path / ".site.old-1a2b3c4d"  # a previous version, from a swap cut short
    old.mkdir()
    (old / MARKER).write_bytes(MARKER_TEXT + b"{}")
    (old / REPLACED_MARKER).write_bytes(MARKER_TEXT)
    with StagedSite(site) as staged:
        staged.write("index.html", b"<p>new</p>")
        staged.commit()
    assert not leftover.exists() and not old.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["site"]


def test_only_what_covergen_made_is_swept(tmp_path: Path):
    # A site folder named like a pattern; folders a user made beside it, some named as
    # covergen's own staging folders are named, none of them marked as ours.
    site = tmp_path / "*"
    keep = [
        tmp_path / ".a.new-12345678",
        tmp_path / ".site.old-backup",
        tmp_path / ".*.new-abcdefgh",
        tmp_path / ".*.old-0badf00d",
    ]
    for folder in keep:
        folder.mkdir()
        (folder / "notes.txt").write_text("mine")
    (tmp_path / "site").mkdir()
    with StagedSite(site) as staged:
        staged.write("index.html", b"<p>gallery</p>")
        staged.commit()
    for folder in keep:
        assert (folder / "notes.txt").read_text() == "mine", folder
    assert (site / "index.html").read_bytes() == b"<p>gallery</p>"
    # a new version's staging folder never reaches the site it becomes
    assert sorted(os.listdir(site)) == [MARKER, "index.html"]


def test_a_copy_of_the_site_is_never_swept(tmp_path: Path):
    site = tmp_path / "site"
    with StagedSite(site) as staged:
        staged.write("index.html", b"<p>one</p>")
        staged.commit()
    backups = [tmp_path / ".site.old-backup", tmp_path / ".site.old-2026_12_05"]
    for backup in backups:
        shutil.copytree(site, backup)  # a user's copy: it carries the site's marker
    for version in (b"<p>two</p>", b"<p>three</p>"):
        with StagedSite(site) as staged:
            staged.write("index.html", version)
            staged.commit()
    for backup in backups:
        assert (backup / "index.html").read_bytes() == b"<p>one</p>"
    assert not (site / REPLACED_MARKER).exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [*(b.name for b in backups), "site"]
    )


def test_a_fifo_in_place_of_the_marker_is_refused_not_waited_on(tmp_path: Path):
    # Opening a FIFO that no one writes would block forever: the marker is opened without
    # blocking and must be a regular file, so the folder is refused as not covergen's.
    import threading

    import pytest

    from covergen.errors import CovergenError
    from covergen.site.staging import check_replaceable

    site = tmp_path / "site"
    site.mkdir()
    os.mkfifo(site / MARKER)
    (site / "index.html").write_text("not ours")
    caught: list[BaseException] = []

    def check() -> None:
        try:
            check_replaceable(site)
        except BaseException as exc:
            caught.append(exc)

    worker = threading.Thread(target=check, daemon=True)
    worker.start()
    worker.join(60)  # a hang is the failure; the check itself takes milliseconds
    assert not worker.is_alive(), "check_replaceable blocked on the FIFO"
    assert len(caught) == 1 and isinstance(caught[0], CovergenError)
    with pytest.raises(CovergenError, match="did not write"):
        raise caught[0]
