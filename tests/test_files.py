"""Files a user names that are not regular files — a FIFO, a device, a folder — are refused
unread with a message naming the field: never a hang, never a read without end."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from covergen.errors import CovergenError
from covergen.files import read_user_file


def covergen(project: Path, *args: str) -> subprocess.CompletedProcess:
    # The timeout turns a hang into a failure instead of a stuck suite.
    return subprocess.run(
        [sys.executable, "-m", "covergen", *args],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


@pytest.fixture
def fifo(project: Path) -> Path:
    path = project / "fifo.png"
    os.mkfifo(path)
    return path


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (["add", "--catalog", "fifo.png", "--band", "B", "--album", "A", "--photo",
          "photos/a.png", "--cover", "covers/x.png"], "catalog"),
        (["score", "fifo.png", "covers/x.png", "photos/a.png"], "photo"),
        (["stylize", "photos/a.png", "fifo.png", "-o", "out.png"], "cover"),
        (["check", "--catalog", "fifo.png"], "catalog"),
    ],
)  # fmt: skip
def test_a_fifo_is_refused_without_waiting_for_a_writer(project: Path, fifo: Path, args, field):
    done = covergen(project, *args)
    assert done.returncode == 2, done.stderr
    assert f"{field}: " in done.stderr and "FIFO" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (["add", "--catalog", "/dev/zero", "--band", "B", "--album", "A", "--photo",
          "photos/a.png", "--cover", "covers/x.png"], "catalog"),
        (["score", "/dev/zero", "covers/x.png", "photos/a.png"], "photo"),
        (["stylize", "photos/a.png", "covers/x.png", "--content-map", "/dev/urandom",
          "-o", "out.png"], "content_map"),
    ],
)  # fmt: skip
def test_a_device_is_refused_unread(project: Path, args, field):
    done = covergen(project, *args)
    assert done.returncode == 2, done.stderr
    assert f"{field}: " in done.stderr and "character device" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr and "MemoryError" not in done.stderr


def test_a_folder_or_an_oversized_file_is_refused(tmp_path: Path):
    with pytest.raises(CovergenError, match="is a folder, not a regular file"):
        read_user_file(tmp_path, limit=10, field="photo")
    big = tmp_path / "big.png"
    big.write_bytes(b"x" * 11)
    with pytest.raises(CovergenError, match="11 bytes, more than the limit of 10") as caught:
        read_user_file(big, limit=10, field="photo", pair="p")
    assert caught.value.pair == "p" and caught.value.field == "photo"
    assert read_user_file(big, limit=11, field="photo") == b"x" * 11
