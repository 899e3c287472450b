"""The Ray executor on a real local Ray instance with two fake GPUs (this machine has none:
the actors see CUDA_VISIBLE_DEVICES but torch sees no CUDA, so they paint on the CPU).

One instance serves the module (starting one takes seconds); each build starts and kills
its own actors. What every executor promises (the same bytes, a bad job, a stop, a dead
worker) is proved for Ray in test_executors; here is what only Ray does. Builds through the
command line (``CliBuild``) start instances of their own, or join the module's by its address.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from support.builds import (
    endless_catalog,
    many_pairs_catalog,
    options,
    statuses,
)
from support.processes import (
    CliBuild,
    command_line,
    descendants,
    kill_left,
    running,
    wait_until_ended,
)
from support.rays import local_ray_instance

from covergen.errors import CovergenError
from covergen.executors import ExecutorSettings, make_executor
from covergen.executors.raycluster import RayExecutor

# Real processes, Ray or a browser: `make test-fast` leaves them out.
pytestmark = pytest.mark.slow

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module", autouse=True)
def local_ray() -> Iterator[None]:
    """One instance for the module, shut down after it."""
    with local_ray_instance():
        yield


# ---------------------------------------------------------------------- the tests


def test_ctrl_c_stops_a_ray_build_which_the_next_build_resumes(
    project: Path, converted_weights: Path
):
    """The real CLI, its own local Ray instance and the real engine; Ctrl-C to the whole
    process group as a terminal sends it (Ray's processes hear it too)."""
    stop_a_ray_build(project, converted_weights, lambda pid: os.killpg(pid, signal.SIGINT))


def test_sigterm_stops_a_ray_build_as_ctrl_c_does(project: Path, converted_weights: Path):
    """SIGTERM to the driver alone, after ray.init put handlers of Ray's own on it: exit
    130, no C++ stack dump nor abort, the build recorded interrupted, finished pairs kept."""
    text = stop_a_ray_build(project, converted_weights, lambda pid: os.kill(pid, signal.SIGTERM))

    for crash in ("SIGTERM received", "terminate called", "core dumped", "SIGABRT", "Aborted"):
        assert crash not in text, text


def stop_a_ray_build(project: Path, converted: Path, send: Callable[[int], None]) -> str:
    """A CLI build on its own local instance, stopped by ``send(pid)`` while it paints (its
    first pair built, the second painting); checks that it ends as an interrupted build
    that the next one resumes, and returns its output."""
    endless_catalog(project, converted, short_first=True)
    with CliBuild(project, "--executor", "ray") as driver:
        driver.wait_for("built", "alpha-one")
        driver.wait_for("beta-two", "iteration 1/")
        send(driver.pid)
        code = driver.end(timeout=60)
    text = driver.output
    assert code == 130, text
    assert "done (interrupted)" in text and "Traceback" not in text
    # Its own local instance, on this machine's CPUs: one worker for the node.
    assert "painting 3 pairs on cpu0:cpu@" in text and "(ray executor)" in text
    from covergen.runlog import RunLog
    from covergen.store import cache_paths

    runlog = RunLog(cache_paths(project / "cache")["runlog"])
    last = runlog.last_build()
    assert last is not None and last["status"] == "interrupted", last
    latest = runlog.latest()
    assert {pair: r.status for pair, r in latest.items()} == {
        "alpha-one": "built",
        "beta-two": "cancelled",
        "gamma-three": "cancelled",
    }
    # The next build starts from there: the finished pair is reused, the others wait.
    plan = build_with(options(project, dry_run=True))
    assert statuses(plan) == {"alpha-one": "reused", "beta-two": "planned",
                              "gamma-three": "planned"}  # fmt: skip
    return text


def test_a_killed_driver_leaves_no_process_of_its_local_ray_instance(
    project: Path, converted_weights: Path
):
    """SIGKILL to a driver that started its own Ray instance: every process of that
    instance (GCS, raylet, agents, workers) ends, and so does the watchdog that ended them;
    the module's instance, another build's, is left alone."""
    endless_catalog(project, converted_weights)
    instance: dict[int, int] = {}
    with CliBuild(project, "--executor", "ray") as driver:
        try:
            driver.wait_for("iteration 1/")  # its worker is painting
            instance = descendants(driver.pid)
            programs = " ".join(command_line(pid) for pid in instance)
            assert "raylet" in programs and "gcs_server" in programs, programs
            assert "ray::PaintingWorker" in programs, programs
            others = module_instance(exclude=set(instance) | {driver.pid})

            os.kill(driver.pid, signal.SIGKILL)
            assert driver.end(timeout=60) == -signal.SIGKILL
            left = wait_until_ended(instance, timeout=30)
        finally:
            kill_left(instance, instance)
    assert not left, [command_line(pid) for pid in left]
    assert running(others) == list(others)
    assert ray.get(ray.put("still here")) == "still here"


def module_instance(exclude: set[int]) -> dict[int, int]:
    """The long-lived processes of this module's Ray instance, by pid: their start time."""
    kept = ("raylet", "gcs_server", "ray::DashboardAgent", "ray::RuntimeEnvAgent")
    below = descendants(os.getpid())
    found = {
        pid: started
        for pid, started in below.items()
        if pid not in exclude and any(name in command_line(pid) for name in kept)
    }
    assert len(found) >= 2, found
    return found


class SilentListener:
    """A TCP server on every interface (Ray dials this machine's address for 127.0.0.1)
    that accepts connections and never says a word."""

    def __init__(self) -> None:
        self.server = socket.create_server(("", 0))
        self.port = self.server.getsockname()[1]
        self.accepted = threading.Event()
        self._held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):  # closed
            while True:
                self._held.append(self.server.accept()[0])
                self.accepted.set()

    def __enter__(self) -> SilentListener:
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.close()
        for connection in self._held:
            connection.close()


def free_port() -> int:
    """A port nobody listens on (one the system just handed out and took back)."""
    with socket.create_server(("", 0)) as server:
        return server.getsockname()[1]


def test_an_address_where_nothing_listens_fails_at_once_naming_it(project: Path):
    address = f"127.0.0.1:{free_port()}"

    with CliBuild(project, "--executor", "ray", "--ray-address", address) as driver:
        code = driver.end(timeout=60)  # Ray alone would retry for some fourteen minutes

    text = driver.output
    assert code == 2, text
    assert f"ray_address: nothing answers at the Ray cluster address {address} (" in text
    assert "ray start --head" in text and "Traceback" not in text


def test_joining_a_cluster_that_never_answers_gives_up_at_the_connect_timeout():
    with SilentListener() as listener:
        address = f"127.0.0.1:{listener.port}"
        code = (
            "import time\n"
            "from covergen.errors import CovergenError\n"
            "from covergen.executors.raycluster import RayExecutor\n"
            "from covergen.executors import ExecutorSettings\n"
            f"executor = RayExecutor(ExecutorSettings(ray_address={address!r}), "
            "connect_timeout=2)\n"
            "start = time.monotonic()\n"
            "try:\n"
            "    executor.prepare()\n"
            "except CovergenError as exc:\n"
            "    print(exc.field, time.monotonic() - start, exc.message)\n"
        )
        done = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
        )
        assert listener.accepted.is_set()  # something answered the port, not Ray

    field, seconds, message = done.stdout.split(" ", 2)
    assert field == "ray_address", done.stdout + done.stderr
    assert 2 <= float(seconds) < 20  # the deadline, not Ray's minutes
    assert f"the Ray cluster at {address} did not answer within 2 s" in message


def test_sigterm_while_joining_a_cluster_ends_the_build_at_once_with_130(project: Path):
    with SilentListener() as listener:
        arguments = ("--executor", "ray", "--ray-address", f"127.0.0.1:{listener.port}")
        with CliBuild(project, *arguments) as driver:
            assert listener.accepted.wait(60)  # the build is connecting
            os.kill(driver.pid, signal.SIGTERM)
            code = driver.end(timeout=20)  # Ray's own connect is deaf to it for 30 s and more

    text = driver.output
    assert code == 130, text
    assert text.rstrip().endswith("interrupted") and "Traceback" not in text


def test_a_build_joins_a_running_cluster_by_its_address(project: Path):
    """Through the thread that connects: the module's instance, joined by its address from
    another process, paints and is left running."""
    many_pairs_catalog(project, 2)
    address = ray.get_runtime_context().gcs_address
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from support.builds import options\n"
        "from support.engines import StandIn\n"
        "from covergen.build import build\n"
        "from covergen.executors.raycluster import RayExecutor\n"
        "from covergen.executors import ExecutorSettings\n"
        "project = Path(sys.argv[1])\n"
        "settings = ExecutorSettings(cache_dir=project / 'cache', ray_address=sys.argv[2])\n"
        "summary = build(options(project, device='auto'), "
        "executor=RayExecutor(settings, StandIn()))\n"
        "print(sorted(o.status for o in summary.outcomes))\n"
    )

    done = subprocess.run(
        [sys.executable, "-c", code, str(project), address],
        capture_output=True,
        text=True,
        timeout=300,
    )

    assert "['built', 'built']" in done.stdout.splitlines(), done.stdout + done.stderr
    assert ray.get(ray.put("still here")) == "still here"


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
        "from covergen.executors.raycluster import RayExecutor\n"
        "from covergen.executors import ExecutorSettings\n"
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
    from covergen.executors import EXECUTORS

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


@pytest.mark.parametrize("address", [":0", "localhost:99999", "host", "[::1:6379", "h:x"])
def test_a_malformed_address_is_refused_before_ray_reads_it(address: str):
    from covergen.errors import CovergenError
    from covergen.executors.raycluster import check_address

    with pytest.raises(CovergenError, match="Ray cluster address") as caught:
        check_address(address)
    assert caught.value.field == "ray_address"
    check_address("10.0.0.5:6379")
    check_address("[::1]:6379")
    check_address("auto")
