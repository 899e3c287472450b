"""The contract every executor keeps, proved against each one (local, process, ray): the
same bytes as the local executor, a bad job fails alone, a stop keeps what is finished and
the next build completes, a job whose worker died is tried again alone, and one that keeps
killing its worker fails alone (``ledger.RETRIES``). Also the ledger itself, by property.

The stand-in engine (``support.engines.StandIn``) paints without a network and misbehaves on
cue for the pair marked with ``BAD_SEED``; Ray's workers import it from the tests' folder.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from support.builds import link_weights, many_pairs_catalog, options, plain_catalog, results
from support.builds import statuses as statuses_of
from support.engines import StandIn
from support.rays import local_ray_instance

from covergen.build import build
from covergen.executors import EXECUTORS, ExecutorSettings, JobOutcome, make_executor
from covergen.executors.ledger import RETRIES, Finished, JobLedger, Started, job_id
from covergen.executors.local import LocalExecutor
from covergen.executors.painter import Painter, StoreInputs
from covergen.nst import StyleParams
from covergen.plan import ImageInput, Job

Factory = Callable[..., Any]  # (project, engine=None) -> an executor


@pytest.fixture(scope="module")
def ray_instance() -> Iterator[None]:
    """A local Ray instance for the module's Ray cases, started when the first asks."""
    pytest.importorskip("ray")
    with local_ray_instance():
        yield


def _local(project: Path, engine: StandIn | None = None) -> Any:
    settings = ExecutorSettings(cache_dir=project / "cache", devices=("cpu",))
    if engine is None:
        return LocalExecutor(settings)
    return LocalExecutor(settings, Painter(StoreInputs(settings.cache_dir), engine))


def _process(project: Path, engine: StandIn | None = None) -> Any:
    from covergen.executors.process import ProcessExecutor

    return ProcessExecutor(ExecutorSettings(cache_dir=project / "cache", devices=("cpu",)), engine)


def _ray(project: Path, engine: StandIn | None = None) -> Any:
    from covergen.executors.raycluster import RayExecutor

    settings = ExecutorSettings(cache_dir=project / "cache", devices=("auto",), offline=True)
    return RayExecutor(settings, engine)


SLOW = pytest.mark.slow
EVERY = [
    pytest.param("local", id="local"),
    pytest.param("process", marks=SLOW, id="process"),
    pytest.param("ray", marks=SLOW, id="ray"),
]
ELSEWHERE = EVERY[1:]  # executors whose workers are processes that can die


@pytest.fixture
def executor(request: pytest.FixtureRequest) -> Factory:
    name = request.param
    if name == "ray":
        request.getfixturevalue("ray_instance")
    return {"local": _local, "process": _process, "ray": _ray}[name]


def test_every_executor_is_made_by_its_name(tmp_path: Path):
    made = {name: make_executor(name, ExecutorSettings(cache_dir=tmp_path)) for name in ("local",)}
    assert made["local"].name == "local"
    assert set(EXECUTORS) == {"local", "process", "ray"}


@pytest.mark.parametrize("executor", ELSEWHERE, indirect=True)
def test_the_same_bytes_as_the_local_executor(
    executor: Factory, project: Path, converted_weights: Path
):
    plain_catalog(project)
    for cache in ("cache-local", "cache"):
        link_weights(converted_weights, project / cache)
    # fp32: a worker may run torch on another number of threads, and bf16's kernels (what
    # `auto` picks on a CPU where they pay) round differently on another number.
    local = build(options(project, "cache-local", precision="fp32"))
    assert set(statuses_of(local).values()) == {"built"}, [o.error for o in local.outcomes]

    elsewhere = build(options(project, precision="fp32"), executor=executor(project))

    assert statuses_of(elsewhere) == statuses_of(local)
    painted = results(project, "cache")
    assert painted == results(project, "cache-local") and len(painted) == 3
    assert {o.device for o in elsewhere.outcomes} == {"cpu"}


@pytest.mark.parametrize("executor", EVERY, indirect=True)
def test_a_bad_job_fails_alone(executor: Factory, project: Path):
    many_pairs_catalog(project, 3, bad=2)

    summary = build(options(project), executor=executor(project, StandIn(on_bad="raise")))

    assert statuses_of(summary) == {"band0-album": "built", "band1-album": "built",
                                    "band2-album": "failed"}  # fmt: skip
    error = next(o.error for o in summary.outcomes if o.status == "failed")
    assert "upsets the stand-in engine" in error


class Heard:
    """Build events as a display hears them: each batch's start and its progress."""

    def __init__(self) -> None:
        self.started: list[tuple[str, str]] = []
        self.progressed: set[str] = set()

    def stage(self, text: str) -> None: ...
    def planned(self, *args: Any) -> None: ...
    def pair_done(self, outcome: Any) -> None: ...

    def batch_started(self, worker: str, jobs: Any) -> None:
        self.started += [(worker, job.pair) for job in jobs]

    def progress(self, worker: str, jobs: Any, event: Any) -> None:
        self.progressed.update(job.pair for job in jobs)


@pytest.mark.parametrize("executor", EVERY, indirect=True)
def test_the_display_hears_each_jobs_start_and_progress_under_a_worker_name(
    executor: Factory, project: Path
):
    many_pairs_catalog(project, 3)
    run = executor(project, StandIn(iterations=4))
    heard = Heard()

    summary = build(options(project), heard, run)

    pairs = set(statuses_of(summary))
    assert sorted(pair for _, pair in heard.started) == sorted(pairs)
    assert heard.progressed == pairs
    assert {worker for worker, _ in heard.started} <= set(run.prepare() or ["cpu"])


class StopAfterFirst:
    """Build events that set ``stop`` when the first pair is built."""

    def __init__(self, stop: threading.Event):
        self.stop = stop

    def stage(self, text: str) -> None: ...
    def planned(self, *args: Any) -> None: ...
    def batch_started(self, worker: str, jobs: Any) -> None: ...
    def progress(self, worker: str, jobs: Any, event: Any) -> None: ...

    def pair_done(self, outcome: Any) -> None:
        if outcome.status == "built":
            self.stop.set()


@pytest.mark.parametrize("executor", EVERY, indirect=True)
def test_a_stop_keeps_what_is_finished_and_the_next_build_completes(
    executor: Factory, project: Path
):
    many_pairs_catalog(project, 5)
    stop = threading.Event()
    slow = StandIn(delay=1.0, iterations=20)

    summary = build(options(project), StopAfterFirst(stop), executor(project, slow), stop)

    assert summary.interrupted
    done = statuses_of(summary)
    assert "failed" not in done.values() and "cancelled" in done.values(), done
    assert len(done) == 5  # every pair has its one outcome
    kept = [o for o in summary.outcomes if o.status == "built"]
    assert len(results(project, "cache")) == len(kept) >= 1
    again = build(options(project), executor=executor(project, StandIn()))
    assert list(statuses_of(again).values()).count("reused") == len(kept)
    assert set(statuses_of(again).values()) <= {"built", "reused"}


@pytest.mark.parametrize("executor", ELSEWHERE, indirect=True)
def test_a_job_whose_worker_died_is_tried_again_alone(
    executor: Factory, project: Path, tmp_path: Path
):
    many_pairs_catalog(project, 3, bad=1)

    summary = build(
        options(project), executor=executor(project, StandIn(str(tmp_path), "kill-once"))
    )

    assert set(statuses_of(summary).values()) == {"built"}, [o.error for o in summary.outcomes]
    tries = list((tmp_path / "tries").iterdir())
    assert len(tries) == 2  # killed in one process, painted in another


@pytest.mark.parametrize("executor", ELSEWHERE, indirect=True)
def test_a_job_that_keeps_killing_its_worker_fails_alone_and_the_next_build_paints_it(
    executor: Factory, project: Path, tmp_path: Path
):
    many_pairs_catalog(project, 3, bad=1)

    first = build(options(project), executor=executor(project, StandIn(str(tmp_path), "kill")))

    assert statuses_of(first) == {"band0-album": "built", "band1-album": "failed",
                                  "band2-album": "built"}  # fmt: skip
    error = next(o.error for o in first.outcomes if o.status == "failed")
    assert f"its worker died {RETRIES + 1} times while painting it" in error
    assert "the other pairs went on" in error and "next build paints it again" in error
    assert len(list((tmp_path / "tries").iterdir())) == RETRIES + 1  # not more
    again = build(options(project), executor=executor(project, StandIn(str(tmp_path))))
    assert statuses_of(again) == {"band0-album": "reused", "band1-album": "built",
                                  "band2-album": "reused"}  # fmt: skip


# ------------------------------------------------------------------------------ the ledger


def _job(pair: str, key: str) -> Job:
    image = ImageInput("0" * 64, 8, 8)
    return Job(pair, key, pair, image, image, StyleParams(size=32), "w")


@given(
    st.lists(st.tuples(st.sampled_from("abc"), st.sampled_from("xy")), unique=True, min_size=1),
    st.lists(st.tuples(st.integers(0, 10), st.sampled_from(["built", "failed"])), max_size=20),
    st.sets(st.integers(0, 10)),
    st.booleans(),
)
def test_the_ledger_reports_each_job_once_whatever_arrives(
    ids: list[tuple[str, str]],
    arrivals: list[tuple[int, str]],
    started: set[int],
    stopped: bool,
):
    """Outcomes in any order, repeated or for jobs of other pairs sharing a key: each job of
    the run gets exactly one outcome, the first; the rest are cancelled at the close, as
    interrupted when they had started."""
    jobs = [_job(pair, key) for pair, key in ids]
    stop = threading.Event()
    got: list[JobOutcome] = []
    ledger = JobLedger(jobs, got.append, None, stop)
    for i in started:
        if i < len(jobs):
            ledger.receive("w", Started((job_id(jobs[i]),)))
    first: dict[tuple[str, str], str] = {}
    for i, status in arrivals:
        if i < len(jobs):
            ledger.receive("w", Finished(JobOutcome(jobs[i], status)))
            first.setdefault(job_id(jobs[i]), status)
    if stopped:
        stop.set()

    assert ledger.close() is not stopped
    assert sorted(job_id(o.job) for o in got) == sorted(job_id(j) for j in jobs)
    for outcome in got:
        key = job_id(outcome.job)
        if key in first:
            assert outcome.status == first[key]
        else:
            was_started = any(i < len(jobs) and job_id(jobs[i]) == key for i in started)
            assert outcome.status == "cancelled"
            assert outcome.error == ("interrupted" if was_started else "stopped before it started")


def test_the_ledger_retries_a_dead_workers_jobs_alone_then_fails_them():
    jobs = [_job("a", "k1"), _job("b", "k2")]
    got: list[JobOutcome] = []
    ledger = JobLedger(jobs, got.append, None, threading.Event())

    tries = [ledger.worker_died(jobs, f"death {n}") for n in range(1, RETRIES + 2)]

    assert tries[:RETRIES] == [jobs] * RETRIES and tries[RETRIES] == []
    assert [o.status for o in got] == ["failed", "failed"]
    assert f"died {RETRIES + 1} times" in got[0].error and f"death {RETRIES + 1}" in got[0].error
