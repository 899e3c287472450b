"""The Ray executor on a real local Ray instance with two fake GPUs (this machine has none:
the actors see CUDA_VISIBLE_DEVICES but torch sees no CUDA, so they paint on the CPU).

One instance serves the module (starting one takes seconds); each build starts and kills
its own actors. The stand-in engine (``StandIn`` of test_procexec) paints where the painting
is not the point, and fails or kills its worker on cue.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_procexec import (
    StandIn,
    convert_weights,
    link_weights,
    many_pairs_catalog,
    options,
    plain_catalog,
    results,
    statuses,
)

from covergen.errors import CovergenError
from covergen.rayexec import RayExecutor, start_local_ray
from covergen.scheduler import ExecutorSettings, make_executor

ray = pytest.importorskip("ray")
TESTS = Path(__file__).parent


@pytest.fixture(scope="module", autouse=True)
def local_ray() -> Iterator[None]:
    """A local instance with 2 CPUs and 2 fake GPUs, shut down after the module."""
    with pytest.MonkeyPatch.context() as patch:
        # Workers unpickle the stand-in engine by importing test_procexec, as a cluster's
        # workers import covergen: from their own path.
        path = os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")]))
        patch.setenv("PYTHONPATH", path)
        start_local_ray(num_cpus=2, num_gpus=2)
        try:
            yield
        finally:
            ray.shutdown()


@pytest.fixture(scope="module")
def converted_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return convert_weights(tmp_path_factory.mktemp("weights"))


def executor(project: Path, engine: StandIn | None = None, **values: Any) -> RayExecutor:
    settings = ExecutorSettings(cache_dir=project / "cache", devices=("auto",))
    return RayExecutor(settings, engine, **values)


class Events:
    """Records what the display would show; ``stop_after`` built pairs, sets ``stop``."""

    def __init__(self, stop: threading.Event | None = None, stop_after: int = 0):
        self.stop, self.stop_after = stop, stop_after
        self.started: list[tuple[str, list[str]]] = []
        self.progress_events: list[tuple[str, str, int]] = []
        self.built = 0
        self.stopped_at = 0.0

    def stage(self, text: str) -> None: ...
    def planned(self, *args: Any) -> None: ...

    def batch_started(self, worker: str, jobs: Any) -> None:
        self.started.append((worker, [job.pair for job in jobs]))

    def progress(self, worker: str, jobs: Any, event: Any) -> None:
        self.progress_events.append((worker, jobs[0].pair, event.iteration))

    def pair_done(self, outcome: Any) -> None:
        if outcome.status == "built":
            self.built += 1
            if self.stop is not None and self.built == self.stop_after:
                self.stopped_at = time.monotonic()
                self.stop.set()


# ---------------------------------------------------------------------- the tests


@pytest.mark.slow
def test_ray_paints_the_same_bytes_as_the_local_executor(project: Path, converted_weights: Path):
    plain_catalog(project)
    for cache in ("cache-local", "cache-ray"):
        link_weights(converted_weights, project / cache)
    # fp32: a Ray worker may run torch on another number of threads, and bf16's kernels
    # (what `auto` picks on a CPU where they pay) round differently on another number.
    local = build_with(options(project, "cache-local", precision="fp32"))
    assert set(statuses(local).values()) == {"built"}, [o.error for o in local.outcomes]
    events = Events()

    on_ray = build_with(
        options(project, "cache-ray", executor="ray", device="auto", precision="fp32"), events
    )

    assert statuses(on_ray) == statuses(local)
    painted = results(project, "cache-ray")
    assert painted == results(project, "cache-local") and len(painted) == 3
    # The fake GPUs' actors fell back to the CPU; the display heard of every pair's start.
    assert {o.device for o in on_ray.outcomes} == {"cpu"}
    assert sorted(p for _, pairs in events.started for p in pairs) == sorted(statuses(local))
    assert all(worker.startswith(("gpu0:cpu@", "gpu1:cpu@")) for worker, _ in events.started)
    assert {pair for _, pair, _ in events.progress_events} == set(statuses(local))


def test_a_worker_killed_mid_job_is_replaced_and_the_job_reruns_elsewhere(
    project: Path, tmp_path: Path
):
    many_pairs_catalog(project, 4, bad=1)
    run = executor(project, StandIn(str(tmp_path), "kill-once"))

    summary = build_with(options(project, device="auto"), executor=run)

    assert set(statuses(summary).values()) == {"built"}, [o.error for o in summary.outcomes]
    tries = sorted((tmp_path / "tries").iterdir())
    assert len(tries) == 2  # killed in one process, painted in another
    assert len(results(project, "cache")) == 4


def test_a_job_that_kills_every_worker_fails_alone(project: Path, tmp_path: Path):
    many_pairs_catalog(project, 3, bad=0)
    run = executor(project, StandIn(str(tmp_path), "kill"), retries=1)

    summary = build_with(options(project, device="auto"), executor=run)

    assert statuses(summary) == {"band0-album": "failed", "band1-album": "built",
                                 "band2-album": "built"}  # fmt: skip
    error = next(o.error for o in summary.outcomes if o.status == "failed")
    assert "its worker died 2 times while painting it" in error
    assert "ActorDiedError" in error and "the other pairs went on" in error
    assert len(list((tmp_path / "tries").iterdir())) == 2  # two processes, each killed


def test_a_bad_pair_fails_alone(project: Path):
    many_pairs_catalog(project, 3, bad=2)

    summary = build_with(
        options(project, device="auto"), executor=executor(project, StandIn(on_bad="raise"))
    )

    assert statuses(summary) == {"band0-album": "built", "band1-album": "built",
                                 "band2-album": "failed"}  # fmt: skip
    error = next(o.error for o in summary.outcomes if o.status == "failed")
    assert "upsets the stand-in engine" in error


def test_a_stop_keeps_finished_results_cancels_the_rest_and_the_next_build_completes(
    project: Path,
):
    many_pairs_catalog(project, 6)
    stop = threading.Event()
    events = Events(stop, stop_after=1)
    slow = executor(project, StandIn(delay=1.5, iterations=30))

    summary = build_with(options(project, device="auto"), events, executor=slow, stop=stop)
    waited = time.monotonic() - events.stopped_at

    assert summary.interrupted
    done = statuses(summary)
    assert list(done.values()).count("cancelled") >= 3 and "failed" not in done.values()
    assert waited < 1.5  # the workers were killed, not waited for
    kept = [o for o in summary.outcomes if o.status == "built"]
    assert len(results(project, "cache")) == len(kept) >= 1
    again = build_with(options(project, device="auto"), executor=executor(project, StandIn()))
    assert list(statuses(again).values()).count("reused") == len(kept)
    assert {s for s in statuses(again).values()} <= {"built", "reused"}


@pytest.mark.slow
def test_ctrl_c_stops_a_ray_build_which_the_next_build_resumes(
    project: Path, converted_weights: Path
):
    """The real CLI, its own local Ray instance and the real engine; Ctrl-C to the whole
    process group as a terminal sends it (Ray's processes hear it too)."""
    plain_catalog(project)
    link_weights(converted_weights, project / "cache")
    catalog = project / "catalog.yaml"
    text = catalog.read_text().replace("iterations: 3", "iterations: 100000")
    text = text.replace("    cover: covers/x.png\n", "    cover: covers/x.png\n"
                        "    overrides: {iterations: 3}\n", 1)  # fmt: skip
    catalog.write_text(text)
    command = [sys.executable, "-m", "covergen", "build", "--catalog", "catalog.yaml",
               "--executor", "ray", "--no-site", "--offline"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    build_process = subprocess.Popen(
        command, cwd=project, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env=env, start_new_session=True,
    )  # fmt: skip
    output = []
    try:
        assert build_process.stdout is not None
        for line in build_process.stdout:
            output.append(line)
            if "built" in line:  # the short pair is done; the long ones are painting
                break
        time.sleep(1)
        os.killpg(build_process.pid, signal.SIGINT)
        rest, _ = build_process.communicate(timeout=60)
    finally:
        if build_process.poll() is None:
            os.killpg(build_process.pid, signal.SIGKILL)
            build_process.wait()
    text = "".join(output) + rest
    assert build_process.returncode == 130, text
    assert "Traceback" not in text
    # Its own local instance, on this machine's CPUs: one worker for the node.
    assert "painting 3 pairs on cpu0:cpu@" in text and "(ray executor)" in text
    from covergen.cache import cache_paths
    from covergen.runlog import RunLog

    latest = RunLog(cache_paths(project / "cache")["runlog"]).latest()
    assert {pair: r.status for pair, r in latest.items()} == {
        "alpha-one": "built",
        "beta-two": "cancelled",
        "gamma-three": "cancelled",
    }
    # The next build starts from there: the finished pair is reused, the others wait.
    plan = build_with(options(project, dry_run=True))
    assert statuses(plan) == {"alpha-one": "reused", "beta-two": "planned",
                              "gamma-three": "planned"}  # fmt: skip


def test_without_ray_the_ray_executor_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "ray" else real(name, *a)
    )
    with pytest.raises(CovergenError) as caught:
        make_executor("ray", ExecutorSettings())
    assert caught.value.field == "executor"
    assert caught.value.describe() == (
        "executor: the ray executor needs Ray\n  → pip install 'covergen[ray]'"
    )


def test_device_kind_starts_no_ray():
    code = (
        "import ray\n"
        "from covergen.rayexec import RayExecutor\n"
        "from covergen.scheduler import ExecutorSettings\n"
        "print(RayExecutor(ExecutorSettings()).device_kind(), ray.is_initialized())\n"
        "print(RayExecutor(ExecutorSettings(devices=('cpu',)), local_resources={'num_gpus': 2})"
        ".device_kind())\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.split() == ["cpu", "False", "cpu"], done.stderr
    # On the module's instance, the fake GPUs count: the profile will be the GPU one.
    assert RayExecutor(ExecutorSettings()).device_kind() == "gpu"


def build_with(opts: Any, events: Any = None, **values: Any) -> Any:
    from covergen.build import build

    return build(opts, events, **values)


def test_the_cli_offers_every_executor_and_the_address(capsys: pytest.CaptureFixture[str]):
    from covergen import catalog
    from covergen.cli import build_parser
    from covergen.scheduler import EXECUTORS

    assert catalog.EXECUTORS == EXECUTORS

    parser = build_parser()
    for command in ("build", "rerun"):
        pair = ["some-pair"] if command == "rerun" else []
        for name in EXECUTORS:
            args = parser.parse_args([command, *pair, "--executor", name, "--ray-address", "auto"])
            assert (args.executor, args.ray_address) == (name, "auto")
        assert parser.parse_args([command, *pair]).executor is None  # the catalog's, or local
    with pytest.raises(SystemExit):
        parser.parse_args(["build", "--executor", "dask"])
    assert "invalid choice: 'dask'" in capsys.readouterr().err
