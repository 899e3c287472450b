"""The process executor: jobs travel as plain data to spawned workers and come back as the
very same PNG bytes; a dead worker fails its job alone; a stop keeps what is finished; a
killed driver takes its workers with it.

``StandIn`` (an engine factory that pickles by reference) is shared with test_rayexec: it
paints without a network, and a pair marked by its seed fails, or kills its worker, on cue.
So are ``CliBuild`` (the real command in a subprocess, its output read as it comes) and the
/proc helpers that follow processes by pid and start time.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, ImageStat

from covergen.build import BuildOptions, BuildSummary, build
from covergen.cache import cache_paths
from covergen.procexec import ProcessExecutor
from covergen.results import ResultStore
from covergen.scheduler import ExecutorSettings

# Real processes, Ray or a browser: `make test-fast` leaves them out.
pytestmark = pytest.mark.slow

# Settings that need no quality judge and no face detector: these tests are about executors.
PLAIN = "  content_weight: 1\n  protect_faces: false\n"
BAD_SEED = 666  # the seed that marks the pair a stand-in fails or dies on


def plain_catalog(project: Path) -> None:
    """The conftest project's catalog, made to need no judge and no face detector (when it
    does not say so already)."""
    catalog = project / "catalog.yaml"
    text = catalog.read_text()
    missing = "".join(line + "\n" for line in PLAIN.splitlines() if line not in text)
    catalog.write_text(text.replace("  tolerance: 0\n", f"  tolerance: 0\n{missing}", 1))


def many_pairs_catalog(project: Path, count: int, *, bad: int | None = None) -> None:
    """``count`` pairs over the conftest project's images; pair ``bad`` has the bad seed."""
    lines = ["defaults:", "  size: 32", "  scales: 1", "  iterations: 3", PLAIN.rstrip(), "pairs:"]
    for i in range(count):
        lines += [
            f"  - band: Band{i}",
            "    album: Album",
            f"    photo: photos/{'abc'[i % 3]}.png",
            f"    cover: covers/{'xy'[i % 2]}.png",
            f"    overrides: {{seed: {BAD_SEED if i == bad else i}}}",
        ]
    (project / "catalog.yaml").write_text("\n".join(lines) + "\n")


def options(project: Path, cache: str = "cache", **values: Any) -> BuildOptions:
    defaults = {"device": "cpu", "render_site": False, "offline": True}
    return BuildOptions(
        catalog=project / "catalog.yaml",
        cache_dir=project / cache,
        site_dir=project / "site",
        **{**defaults, **values},
    )


def convert_weights(cache: Path) -> Path:
    """The default network's weights, converted into ``cache``; caches then link to them."""
    from covergen.nst import StyleParams
    from covergen.nst.weights import load_weights

    params = StyleParams()
    load_weights(params.network, params.weights, cache_dir=cache, offline=True)
    return cache / "weights"


@pytest.fixture(scope="module")
def converted_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return convert_weights(tmp_path_factory.mktemp("weights"))


def link_weights(converted: Path, cache: Path) -> None:
    """Converting them takes seconds a cache; linking, nothing."""
    (cache / "weights").mkdir(parents=True)
    for file in converted.iterdir():
        os.link(file, cache / "weights" / file.name)


def endless_catalog(project: Path, converted: Path, *, short_first: bool = False) -> None:
    """The conftest project, made to paint for ever (100,000 iterations a pair) with the
    real engine, its weights linked; ``short_first``: the first pair (alpha-one) has 3
    iterations, so it is built while the others paint."""
    plain_catalog(project)
    link_weights(converted, project / "cache")
    catalog = project / "catalog.yaml"
    text = catalog.read_text().replace("iterations: 3", "iterations: 100000")
    if short_first:
        text = text.replace("    cover: covers/x.png\n", "    cover: covers/x.png\n"
                            "    overrides: {iterations: 3}\n", 1)  # fmt: skip
    catalog.write_text(text)


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


def statuses(summary: BuildSummary) -> dict[str, str]:
    return {o.pair: o.status for o in summary.outcomes}


def results(project: Path, cache: str) -> dict[str, bytes]:
    """Every stored painting, by job key."""
    store = ResultStore(cache_paths(project / cache)["results"])
    return {p.stem: p.read_bytes() for p in sorted(store.root.rglob("*.png"))}


# ---------------------------------------------------------------------- a stand-in engine


@dataclass(frozen=True)
class StandIn:
    """An engine factory for any executor: module-level and frozen, so it pickles.

    The pair whose seed is ``BAD_SEED`` raises (``on_bad="raise"``), or SIGKILLs its own
    worker process on every try (``"kill"``) or only on the first (``"kill-once"``: the
    first try leaves a file in ``marks``). Every try of it writes ``tries/<pid>``, so a test
    sees which processes it ran in. ``delay`` seconds per job, for tests that stop a build.
    """

    marks: str = ""
    on_bad: str = ""
    delay: float = 0.0
    iterations: int = 3

    def __call__(self, device: str) -> StandInEngine:
        return StandInEngine(device, self)


@dataclass
class StandInEngine:
    """Paints the photo at the job's size, tinted with the cover's mean colour."""

    device: str
    plan: StandIn

    def stylize_batch(self, jobs, progress=None, cancel=None):
        from covergen.nst import Cancelled, LossValues, Progress, StylizeResult

        for job in jobs:
            if job.params.seed == BAD_SEED:
                self._misbehave()
        start = time.perf_counter()
        loss = LossValues(1.0, 0.5, 0.4, 0.1)
        steps = self.plan.iterations
        for i in range(1, steps + 1):
            time.sleep(self.plan.delay / steps)
            if cancel is not None and cancel():
                raise Cancelled("stopped")
            if progress is not None:
                size = (jobs[0].params.size, jobs[0].params.size)
                progress(Progress(0, 1, size, i, steps, (loss,) * len(jobs), 0.0, done=i))
        out = []
        for job in jobs:
            photo, size = job.content, job.params.size
            scale = size / max(photo.size)
            shape = (max(1, round(photo.width * scale)), max(1, round(photo.height * scale)))
            mean = tuple(round(c) for c in ImageStat.Stat(job.styles[0]).mean[:3])
            painted = Image.blend(photo.resize(shape), Image.new("RGB", shape, mean), 0.5)
            seconds = time.perf_counter() - start
            out.append(StylizeResult(painted, [], steps, seconds, self.device, loss))
        return out

    def _misbehave(self) -> None:
        plan = self.plan
        if plan.on_bad == "raise":
            raise RuntimeError("this pair's photo upsets the stand-in engine")
        tries = Path(plan.marks) / "tries"
        tries.mkdir(parents=True, exist_ok=True)
        (tries / str(os.getpid())).touch()
        first = Path(plan.marks) / "killed-once"
        if plan.on_bad == "kill" or (plan.on_bad == "kill-once" and not first.exists()):
            first.touch()
            os.kill(os.getpid(), signal.SIGKILL)


class Stages:
    """Build events that keep the stage lines and ignore the rest."""

    def __init__(self, lines: list[str]):
        self.lines = lines

    def stage(self, text: str) -> None:
        self.lines.append(text)

    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: None


# ---------------------------------------------------------------------- the tests


def test_process_executor_paints_the_same_bytes_as_the_local_one(
    project: Path, converted_weights: Path
):
    plain_catalog(project)
    for cache in ("cache-local", "cache-process"):
        link_weights(converted_weights, project / cache)
    local = build(options(project, "cache-local"))
    assert set(statuses(local).values()) == {"built"}, [o.error for o in local.outcomes]

    # The catalog's build settings choose the executor when the command line does not.
    catalog = project / "catalog.yaml"
    catalog.write_text("build:\n  executor: process\n" + catalog.read_text())
    stages: list[str] = []
    process = build(options(project, "cache-process"), Stages(stages))
    assert any("(process executor)" in text for text in stages), stages

    assert statuses(process) == statuses(local)
    painted = results(project, "cache-process")
    assert painted == results(project, "cache-local") and len(painted) == 3
    assert {o.device for o in process.outcomes} == {"cpu"}


def test_a_job_whose_worker_dies_is_tried_once_more_alone(project: Path, tmp_path: Path):
    many_pairs_catalog(project, 3, bad=1)
    settings = ExecutorSettings(cache_dir=project / "cache", devices=("cpu",))
    executor = ProcessExecutor(settings, StandIn(str(tmp_path), "kill-once"))

    first = build(options(project), executor=executor)

    assert set(statuses(first).values()) == {"built"}, [o.error for o in first.outcomes]
    tries = list((tmp_path / "tries").iterdir())
    assert len(tries) == 2 and len({t.name for t in tries}) == 2  # two processes: a new one


def test_a_job_that_kills_its_worker_twice_fails_alone_and_the_next_build_paints_it(
    project: Path, tmp_path: Path
):
    many_pairs_catalog(project, 3, bad=1)
    settings = ExecutorSettings(cache_dir=project / "cache", devices=("cpu",))
    executor = ProcessExecutor(settings, StandIn(str(tmp_path), "kill"))

    first = build(options(project), executor=executor)

    assert statuses(first) == {"band0-album": "built", "band1-album": "failed",
                               "band2-album": "built"}  # fmt: skip
    error = next(o.error for o in first.outcomes if o.status == "failed")
    assert "died (exit code -9)" in error and "again when tried alone" in error
    assert "next build paints it again" in error
    assert len(list((tmp_path / "tries").iterdir())) == 2  # tried twice, not more
    again = build(options(project), executor=ProcessExecutor(settings, StandIn(str(tmp_path))))
    assert statuses(again) == {"band0-album": "reused", "band1-album": "built",
                               "band2-album": "reused"}  # fmt: skip


def test_a_stop_keeps_finished_paintings_and_cancels_the_rest(project: Path):
    many_pairs_catalog(project, 4)
    settings = ExecutorSettings(cache_dir=project / "cache", devices=("cpu",))
    stop = threading.Event()

    class StopAfterFirst:
        def stage(self, text: str) -> None: ...
        def planned(self, *args: Any) -> None: ...
        def batch_started(self, worker: str, jobs: Any) -> None: ...
        def progress(self, worker: str, jobs: Any, event: Any) -> None: ...
        def pair_done(self, outcome: Any) -> None:
            if outcome.status == "built":
                stop.set()

    executor = ProcessExecutor(settings, StandIn(delay=1.0, iterations=20))
    summary = build(options(project), StopAfterFirst(), executor=executor, stop=stop)

    assert summary.interrupted
    assert sorted(statuses(summary).values()) == ["built", "cancelled", "cancelled", "cancelled"]
    again = build(options(project), executor=ProcessExecutor(settings, StandIn()))
    assert sorted(statuses(again).values()) == ["built", "built", "built", "reused"]


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
