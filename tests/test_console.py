"""Output that goes away — a reader that leaves (`| head -1`), a closed descriptor (`>&-`) —
never stops a command: the work goes on, the exit status is the command's own."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from covergen.console import GuardedStream, Printer
from covergen.runlog import RunLog


def test_a_stream_whose_reader_left_is_dropped_not_raised():
    read, write = os.pipe()
    os.close(read)
    stream = GuardedStream(os.fdopen(write, "w", buffering=1))
    printer = Printer(stream, plain=True)  # type: ignore[arg-type]
    for _ in range(3):
        printer.line("a line nobody reads")
    assert stream.lost
    absent = GuardedStream(None)
    Printer(absent, plain=True).line("to nowhere")  # type: ignore[arg-type]
    assert absent.lost


def test_a_full_disk_behind_the_output_is_recorded_not_raised():
    class FullDisk(io.StringIO):
        def write(self, text: str) -> int:
            raise OSError(28, "No space left on device")

    stream = GuardedStream(FullDisk())
    stream.write("x")
    assert stream.lost and stream.failure is not None and stream.failure.errno == 28


def test_a_full_disk_behind_stderr_stops_no_pair_and_behind_stdout_fails_a_listing(
    project: Path,
):
    done = shell(project, "$COVERGEN build --device cpu --no-site 2>/dev/full; "
                          'echo "status $?"')  # fmt: skip
    assert done.stdout.splitlines()[-1] == "status 0", done.stdout + done.stderr
    records = RunLog(project / "cache" / "runs.sqlite").latest()
    assert {r.status for r in records.values()} == {"built"}
    done = shell(project, "$COVERGEN list > /dev/full")
    assert done.returncode == 2 and "could not be written" in done.stderr


def shell(project: Path, script: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", "-c", script],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1", "COVERGEN": f"{sys.executable} -m covergen"},
    )


def test_a_build_whose_output_reader_leaves_builds_every_pair(project: Path):
    done = shell(project, '$COVERGEN build --device cpu --no-site 2>&1 | head -1; '
                          'echo "status ${PIPESTATUS[0]}"')  # fmt: skip
    assert done.stdout.splitlines()[-1] == "status 0", done.stdout + done.stderr
    records = RunLog(project / "cache" / "runs.sqlite").latest()
    assert {pair: r.status for pair, r in records.items()} == dict.fromkeys(
        ("alpha-one", "beta-two", "gamma-three"), "built"
    )


def test_work_done_with_stdout_closed_is_reported_once_on_stderr(project: Path):
    done = shell(project, "$COVERGEN rerun alpha-one --device cpu >&-")
    assert done.returncode == 0, done.stderr
    assert done.stderr.count("the output was cut before the end") == 1, done.stderr
    assert RunLog(project / "cache" / "runs.sqlite").latest(None)["alpha-one"].status == "built"


@pytest.mark.parametrize("command", ["list", "status", "check", "params"])
def test_a_closed_stdout_is_no_crash(project: Path, command: str):
    done = shell(project, f"$COVERGEN {command} >&-")
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr and "internal error" not in done.stderr
