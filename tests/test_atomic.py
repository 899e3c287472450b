"""The one writer: a failed write names the file being written and leaves nothing behind."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from covergen.atomic import atomic_writer


def test_a_full_disk_names_the_file_being_written_and_leaves_nothing(tmp_path: Path):
    target = tmp_path / "painting.png"
    with pytest.raises(OSError) as caught, atomic_writer(target) as handle:
        handle.write(b"half")
        raise OSError(errno.ENOSPC, "No space left on device")
    assert caught.value.filename == str(target) and caught.value.errno == errno.ENOSPC
    assert list(tmp_path.iterdir()) == []
