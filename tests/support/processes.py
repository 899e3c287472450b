"""Processes as a test sees them: the real command in a subprocess, read as it writes, and
/proc helpers that follow processes by pid and start time (a pid alone may be reused)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable
from pathlib import Path


class CliBuild:
    """``covergen build`` run in a subprocess, in a session of its own; its output (stdout
    and stderr together) collected by a thread as it comes, so a test can wait for a line."""

    def __init__(self, project: Path, *arguments: str):
        command = [sys.executable, "-m", "covergen", "build", "--catalog", "catalog.yaml",
                   "--no-site", "--offline", *arguments]  # fmt: skip
        self.process = subprocess.Popen(
            command,
            cwd=project,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
            start_new_session=True,
        )
        self.pid = self.process.pid
        self.lines: list[str] = []
        self._ended = False
        self._news = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            with self._news:
                self.lines.append(line)
                self._news.notify_all()
        with self._news:
            self._ended = True
            self._news.notify_all()

    @property
    def output(self) -> str:
        with self._news:
            return "".join(self.lines)

    def wait_for(self, *texts: str, timeout: float = 120) -> None:
        """Until a line holds every one of ``texts``; fails if the output ends first."""

        def seen() -> bool:
            return any(all(t in line for t in texts) for line in self.lines)

        with self._news:
            self._news.wait_for(lambda: seen() or self._ended, timeout)
            assert seen(), f"no line with {texts} in:\n{''.join(self.lines)}"

    def end(self, timeout: float) -> int:
        """The exit status, once the process has ended (and its output, unless a process
        it left behind still holds the pipe)."""
        code = self.process.wait(timeout)
        self._reader.join(min(timeout, 10))
        return code

    def __enter__(self) -> CliBuild:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGKILL)
            self.process.wait()


def process_stat(pid: int) -> tuple[str, int, int] | None:
    """(state, parent pid, start time) of a process, from /proc; None when there is none."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()  # after the command's name, which may hold ")"
    return fields[0], int(fields[1]), int(fields[19])


def command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def descendants(pid: int) -> dict[int, int]:
    """Every process below ``pid`` (children, theirs, …), by pid: its start time."""
    stats = {int(n): process_stat(int(n)) for n in os.listdir("/proc") if n.isdigit()}
    found: dict[int, int] = {}
    parents = {pid}
    while parents:
        children = {
            child: stat[2]
            for child, stat in stats.items()
            if stat is not None and stat[1] in parents and child not in found
        }
        found.update(children)
        parents = set(children)
    return found


def running(processes: dict[int, int]) -> list[int]:
    """Those of ``processes`` (pid: start time) still running; a zombie has ended."""
    left = []
    for pid, started in processes.items():
        stat = process_stat(pid)
        if stat is not None and stat[2] == started and stat[0] != "Z":
            left.append(pid)
    return left


def wait_until_ended(processes: dict[int, int], timeout: float) -> list[int]:
    """Poll /proc until every one of ``processes`` has ended; those left at the deadline."""
    deadline = time.monotonic() + timeout
    while (left := running(processes)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


def kill_left(processes: dict[int, int], pids: Iterable[int]) -> None:
    """SIGKILL those of ``pids`` that are still the processes recorded in ``processes``."""
    for pid in running({pid: processes[pid] for pid in pids}):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
