"""The process executor's own promise: a killed driver takes its worker processes with it.
What every executor promises (the same bytes, a bad job, a stop, a dead worker) is proved
for it in test_executors."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from support.builds import endless_catalog
from support.processes import CliBuild, command_line, descendants, kill_left, wait_until_ended

# Real processes, Ray or a browser: `make test-fast` leaves them out.
pytestmark = pytest.mark.slow


# ---------------------------------------------------------------------- a stand-in engine


# ---------------------------------------------------------------------- the tests


def test_a_killed_driver_takes_its_worker_processes_with_it(project: Path, converted_weights: Path):
    """SIGKILL to the driver of a process build mid-painting: its worker process (and the
    multiprocessing resource tracker) end too, instead of painting on for no one and then
    waiting for ever."""
    endless_catalog(project, converted_weights)
    workers: dict[int, int] = {}
    with CliBuild(project, "--executor", "process") as driver:
        try:
            driver.wait_for("process0:cpu", "iteration")  # a worker is painting
            below = descendants(driver.pid)
            workers = {
                pid: started
                for pid, started in below.items()
                if "multiprocessing" in command_line(pid)  # spawn_main, resource_tracker
            }
            assert any("spawn_main" in command_line(pid) for pid in workers), below

            os.kill(driver.pid, signal.SIGKILL)
            assert driver.end(60) == -signal.SIGKILL
            left = wait_until_ended(workers, timeout=30)
        finally:
            kill_left(workers, workers)
    assert not left, [command_line(pid) for pid in left]
