"""The process executor: each device's batches painted in a worker process of its own.

It proves that jobs travel as plain data: a worker is started with the "spawn" method (a
fresh interpreter that shares nothing with the driver), receives pickled ``Job``s with the
bytes of their input images, which the driver read from its own image store, and sends back
``JobOutcome``s carrying PNG bytes, painted by ``Painter.run_batch`` like everywhere else.
The driver stays the only writer of the results, the run log and the site; the workers, on
this machine, share the engine's own caches (converted weights, feature targets) as the
local executor's threads do.

A worker that dies (SIGKILL, the OOM killer) is replaced by a new one (``restarts`` times
per device), and the unfinished jobs of the batch it was painting are tried again, each
alone, before anything else, as the ledger's retry policy says (``ledger.RETRIES``); a job
that keeps killing its worker fails alone, with the exit code; the next build paints it
again. A stop tells the workers to stop at the next iteration; their jobs come back
cancelled and every finished result is kept.

A worker dies with the driver, however the driver dies (SIGKILL included): on Linux the
kernel kills it (``PR_SET_PDEATHSIG``), and everywhere a thread in the worker ends it when
its pipe from the driver closes. Left alone it would finish its painting for no one and then
wait for ever. The multiprocessing resource tracker the driver started ends on its own once
no worker is left to hold its pipe.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import multiprocessing.connection
import os
import queue
import signal
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import CovergenError
from ..plan import Job
from .contract import DevicesHere, ExecutorSettings, batch_limit, make_batches
from .ledger import RETRIES, Finished, JobLedger, LedgerExecutor, Message, MessageEvents, job_id
from .painter import BytesInputs, EngineFactory, Painter

# How long stopped workers get to hand back their cancelled jobs before they are ended.
STOP_GRACE = 10.0
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
IDLE = "idle"  # a worker's last word on a batch: it is ready for the next one


# ------------------------------------------------------------------------ the worker side


def work(
    device: str,
    settings: ExecutorSettings,
    engine_factory: EngineFactory | None,
    inbox: Any,
    outbox: Any,
    cancel: Any,
    driver: int,
) -> None:
    """A worker process's life: batches from ``inbox`` until None, messages to ``outbox``.

    ``cancel`` (a multiprocessing Event) is the driver's stop, seen by the engine at every
    iteration; ``driver`` the driver's pid, whose death ends this process.
    """
    die_with_driver(driver)
    # Ctrl-C reaches the whole process group: the driver hears it and tells us by ``cancel``.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    inputs: dict[str, bytes] = {}  # replaced in place per batch; the painter keeps its engine
    painter = Painter.from_settings(settings, BytesInputs(inputs), engine_factory)
    events = MessageEvents(outbox.put)
    while (task := inbox.get()) is not None:
        jobs, data = task
        inputs.clear()
        inputs.update(data)
        for outcome in painter.run_batch(device, jobs, events, cancel):
            outbox.put(Finished(outcome))
        outbox.put(IDLE)


def die_with_driver(driver: int) -> None:
    """End this worker process when the driver (pid ``driver``, our parent) ends, however it
    ends: its queues would never answer again, and the worker would paint on for no one.

    Linux: the kernel sends SIGKILL when the parent dies (``PR_SET_PDEATHSIG``); a parent
    that died before that was set is seen by ``getppid``. Everywhere: a thread waits on the
    pipe multiprocessing keeps open from the driver, which closes when the driver is gone.
    """
    if sys.platform.startswith("linux"):
        try:
            prctl = ctypes.CDLL(None, use_errno=True).prctl
            prctl.argtypes = [ctypes.c_int, *[ctypes.c_ulong] * 4]
            prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):  # no prctl here: the thread below still watches
            pass
    if os.getppid() != driver:  # orphaned already
        os._exit(1)
    parent = multiprocessing.parent_process()
    if parent is not None and parent.sentinel is not None:
        threading.Thread(
            target=_exit_when_ready, args=(parent.sentinel,), name="covergen-driver", daemon=True
        ).start()


def _exit_when_ready(sentinel: int) -> None:
    multiprocessing.connection.wait([sentinel])  # readable: the driver's end is closed
    os._exit(1)


# ------------------------------------------------------------------------ the driver side


@dataclass
class _Worker:
    name: str
    device: str
    process: Any = None
    inbox: Any = None
    # Its own queue back: a process killed while writing to a shared queue would leave the
    # queue's lock held, and every other worker's next message would wait for ever.
    outbox: Any = None
    batch: list[Job] | None = None  # what it is painting
    restarts: int = 0


@dataclass
class ProcessExecutor(DevicesHere, LedgerExecutor):
    """One worker process per device, fed pickled jobs and their input bytes.

    ``engine_factory`` (picklable: a module-level callable) replaces the real engine in
    tests; ``trust_devices`` takes the device names unchecked, for stand-ins that play a GPU.
    """

    settings: ExecutorSettings = field(default_factory=ExecutorSettings)
    engine_factory: EngineFactory | None = None
    trust_devices: bool = False
    restarts: int = 3  # new workers per device after one died
    retries: int = RETRIES  # more tries, each alone, for a job whose worker died
    name: str = "process"
    _devices: list[str] = field(default_factory=list)

    def prepare(self) -> list[str]:
        return [f"process{i}:{device}" for i, device in enumerate(self.devices_here())]

    def paint(self, ledger: JobLedger) -> bool:
        run = _Run(self, ledger)
        try:
            return run.loop()
        finally:
            run.close()


class _Run:
    """One run's driver loop over the worker processes."""

    def __init__(self, executor: ProcessExecutor, ledger: JobLedger):
        from ..sources import ImageStore

        names = executor.prepare()
        self.workers = [_Worker(n, d) for n, d in zip(names, executor._devices, strict=True)]
        self.executor, self.ledger, self.stop = executor, ledger, ledger.stop
        self.context = multiprocessing.get_context("spawn")
        self.cancel = self.context.Event()
        self.store = ImageStore(Path(executor.settings.cache_dir) / "images")
        size = batch_limit(executor._devices, executor.settings.max_batch)
        self.batches = deque(make_batches(ledger.jobs, size))
        self.stopped_at: float | None = None
        self.checked_at = time.monotonic()
        for worker in self.workers:
            self._start(worker)

    def loop(self) -> bool:
        while True:
            if self.stop.is_set() and self.stopped_at is None:
                self.stopped_at = time.monotonic()
                self.cancel.set()  # the engines stop at their next iteration
            if self.stopped_at is None:
                self._dispatch()
            if all(w.batch is None for w in self.workers):
                if self.batches and not self.stop.is_set():  # no worker left to paint them
                    error = (
                        f"every worker process died {self.executor.restarts + 1} times; "
                        "the next build paints it again"
                    )
                    self.ledger.fail((job for batch in self.batches for job in batch), error)
                break
            if self.stopped_at is not None and time.monotonic() - self.stopped_at > STOP_GRACE:
                break
            self._receive(0.2)
            if time.monotonic() - self.checked_at > 0.5:  # progress may never pause
                self.checked_at = time.monotonic()
                self._check_alive()
        return self.ledger.close()

    def _receive(self, timeout: float) -> bool:
        """Handle what the workers have sent, waiting up to ``timeout`` for a first message;
        whether anything came."""
        end = time.monotonic() + timeout
        while True:
            got = False
            for worker in self.workers:
                try:
                    message: Message | str = worker.outbox.get_nowait()
                except queue.Empty:
                    continue
                got = True
                if message == IDLE:
                    worker.batch = None
                else:
                    self.ledger.receive(worker.name, message, worker.batch or ())
            if got or time.monotonic() >= end:
                return got
            time.sleep(0.01)

    def _start(self, worker: _Worker) -> None:
        # Started by the thread that runs the build, which the kernel's parent-death signal
        # follows (see die_with_driver): that thread outlives its workers (``close``).
        worker.inbox = self.context.Queue()
        worker.outbox = self.context.Queue()
        worker.process = self.context.Process(
            target=work,
            args=(
                worker.device,
                self.executor.settings,
                self.executor.engine_factory,
                worker.inbox,
                worker.outbox,
                self.cancel,
                os.getpid(),
            ),
            name=f"covergen-{worker.name}",
            daemon=True,
        )
        worker.process.start()

    def _dispatch(self) -> None:
        for worker in self.workers:
            if worker.batch is None and worker.process is not None and self.batches:
                batch = self.batches.popleft()
                try:
                    data = {
                        sha: self.store.verified_bytes(sha)
                        for job in batch
                        for sha in (job.photo.sha256, job.cover.sha256)
                    }
                except CovergenError as exc:  # checked before painting, so damaged since
                    self.ledger.fail(batch, exc.describe())
                    continue
                worker.batch = batch
                # Sent is as good as started: a stop now interrupts it.
                self.ledger.started.update(job_id(job) for job in batch)
                worker.inbox.put((batch, data))

    def _check_alive(self) -> None:
        """A worker that died fails its batch's unfinished jobs; another takes its place."""
        dead = [w for w in self.workers if w.process is not None and not w.process.is_alive()]
        if not dead:
            return
        # What it sent before it died comes first (it may finish the batch); the others may
        # never pause, so a second at most.
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline and self._receive(0.05):
            pass
        for worker in dead:
            why = f"worker process {worker.name}, exit code {worker.process.exitcode}"
            again = self.ledger.worker_died(worker.batch or [], why, worker.device)
            # Each alone and first: a batch-mate that brought the worker down (or the
            # batch's memory) cannot take it down again.
            self.batches.extendleft([job] for job in reversed(again))
            worker.batch = None
            if worker.restarts < self.executor.restarts and not self.stop.is_set():
                worker.restarts += 1
                self._start(worker)
            else:
                worker.process = None

    def close(self) -> None:
        """Ask every worker to quit, and end those that do not within a few seconds."""
        for worker in self.workers:
            if worker.process is not None and worker.process.is_alive():
                worker.inbox.put(None)
        deadline = time.monotonic() + 5
        for worker in self.workers:
            if worker.process is None:
                continue
            worker.process.join(max(0.0, deadline - time.monotonic()))
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join()
