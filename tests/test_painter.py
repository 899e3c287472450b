"""The scheduler and the painter with a stand-in engine: batching, failures, out of memory,
stopping, and the one device resolver."""

from __future__ import annotations

import threading

import pytest
import torch
from PIL import Image

from covergen.errors import CovergenError
from covergen.executors import ExecutorSettings, checked_devices, make_batches
from covergen.executors.local import LocalExecutor
from covergen.executors.painter import Painter
from covergen.nst import Cancelled, LossValues, StyleParams, StylizeResult, resolve_devices
from covergen.plan import ImageInput, Job


def job(name: str, size=(64, 48), **params) -> Job:
    return Job(
        pair=name,
        key=f"key-{name}",
        label=name,
        photo=ImageInput(f"photo-{name}", *size),
        cover=ImageInput("cover", 40, 40),
        params=StyleParams(size=32, **params),
        weights="w",
    )


class NamedInputs:
    """Images that carry the name of the job they were made for."""

    def image(self, sha256: str) -> Image.Image:
        image = Image.new("RGB", (64, 48))
        image.info["name"] = sha256.removeprefix("photo-")
        return image


class FakeEngine:
    """Records its batches; fails as told."""

    def __init__(
        self,
        device: str,
        log: list,
        *,
        oom_above: int = 99,
        oom_on_gpu: bool = False,
        fail: frozenset[str] = frozenset(),
    ):
        self.device, self.log = device, log
        self.oom_above, self.oom_on_gpu, self.fail = oom_above, oom_on_gpu, fail

    def stylize_batch(self, jobs, progress=None, cancel=None):
        names = [j.content.info["name"] for j in jobs]
        self.log.append((self.device, names))
        if len(jobs) > self.oom_above or (self.oom_on_gpu and self.device != "cpu"):
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        if self.fail & set(names):
            raise RuntimeError(f"bad input {sorted(self.fail & set(names))}")
        if cancel is not None and cancel():
            raise Cancelled("stopped")
        loss = LossValues(1.0, 0.5, 0.4, 0.1)
        return [
            StylizeResult(Image.new("RGB", (4, 3)), [], 7, 0.1, self.device, loss) for _ in jobs
        ]


def run(jobs, devices=("cpu",), max_batch=4, stop=None, **fake):
    """Run jobs through a LocalExecutor whose devices are taken as given (no GPU needed)."""
    log: list = []
    painter = Painter(NamedInputs(), lambda device: FakeEngine(device, log, **fake))
    settings = ExecutorSettings(devices=devices, max_batch=max_batch)
    executor = LocalExecutor(settings, painter, trust_devices=True)  # stand-in GPUs
    outcomes = []
    done = executor.run(jobs, outcomes.append, None, stop or threading.Event())
    return {o.job.pair: o for o in outcomes}, log, done


def test_same_shape_jobs_batch_in_catalog_order():
    jobs = [job("a"), job("b", size=(48, 64)), job("c"), job("d"), job("e", content_weight=9)]
    batches = make_batches(jobs, 2)
    assert [[j.pair for j in b] for b in batches] == [["a", "c"], ["b"], ["d", "e"]]


def test_cpu_runs_one_job_at_a_time_and_every_job_gets_an_outcome():
    outcomes, log, done = run([job("a"), job("b")])
    assert done
    assert [names for _, names in log] == [["a"], ["b"]]
    assert {o.status for o in outcomes.values()} == {"built"}
    assert outcomes["a"].iterations == 7 and outcomes["a"].losses["total"] == 1.0
    # The painting travels as PNG bytes, encoded where it was painted.
    assert outcomes["a"].png.startswith(b"\x89PNG") and (
        outcomes["a"].width,
        outcomes["a"].height,
    ) == (4, 3)


def test_a_failing_job_is_isolated_and_the_others_are_built():
    outcomes, log, _ = run(
        [job("a"), job("bad"), job("c")], devices=("cuda:0",), fail=frozenset({"bad"})
    )
    assert outcomes["bad"].status == "failed" and "bad input" in outcomes["bad"].error
    assert outcomes["a"].status == outcomes["c"].status == "built"
    assert log[0] == ("cuda:0", ["a", "bad", "c"])  # tried together first, then one by one
    assert sorted(names[0] for _, names in log[1:]) == ["a", "bad", "c"]


def test_out_of_memory_halves_the_batch_then_falls_back_to_cpu():
    jobs = [job(n) for n in "abcd"]
    outcomes, log, _ = run(jobs, devices=("cuda:0",), oom_above=1)
    assert [len(names) for _, names in log] == [4, 2, 1, 1, 2, 1, 1]
    assert all(o.status == "built" and o.device == "cuda:0" for o in outcomes.values())
    outcomes, log, _ = run([job("a")], devices=("cuda:0",), oom_on_gpu=True)
    assert log == [("cuda:0", ["a"]), ("cpu", ["a"])]
    assert outcomes["a"].status == "built" and outcomes["a"].device == "cpu"


def test_a_stop_cancels_the_rest_and_reports_every_job():
    stop = threading.Event()
    stop.set()
    outcomes, log, done = run([job("a"), job("b")], stop=stop)
    assert not done
    assert log == []  # nothing was started
    assert {o.status for o in outcomes.values()} == {"cancelled"}


def test_a_bug_in_a_worker_is_not_swallowed_and_its_jobs_are_still_reported(monkeypatch):
    # An IndexError from painting is a bug, not "no batch left": it reaches the thread's
    # excepthook (a traceback on stderr), and the ledger still gives every job an outcome.
    class Broken:
        def run_batch(self, device, batch, events, stop):
            raise IndexError("a bug inside run_batch")
            yield  # a generator, as the painter's is

    seen: list[BaseException | None] = []
    monkeypatch.setattr(threading, "excepthook", lambda hook: seen.append(hook.exc_value))
    executor = LocalExecutor(ExecutorSettings(devices=("cpu",)), Broken(), trust_devices=True)
    outcomes = []
    executor.run([job("a")], outcomes.append, None, threading.Event())
    assert [str(e) for e in seen] == ["a bug inside run_batch"]
    assert [o.job.pair for o in outcomes] == ["a"]


def test_devices_are_resolved_in_one_place():
    assert resolve_devices("cpu") == ["cpu"]
    expected = [f"cuda:{i}" for i in range(torch.cuda.device_count())] or ["cpu"]
    assert resolve_devices("auto") == expected
    if not torch.cuda.is_available():
        with pytest.raises(CovergenError, match="CUDA is not available") as caught:
            checked_devices(["cuda:0"])
        assert caught.value.field == "device"
    with pytest.raises(CovergenError, match="unknown device"):
        checked_devices(["tpu:3"])
