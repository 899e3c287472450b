"""The job ledger every executor keeps, and the messages its workers send back. Torch-free.

Whatever runs the jobs (threads, worker processes, Ray actors), the driver's side is the same
bookkeeping: each job's outcome is handed to the caller once, in the caller's thread; a job
whose worker died is tried again alone a bounded number of times (one retry policy) before it
fails by itself; and when the run ends, every job that never came back is reported cancelled.
Executors that paint elsewhere receive typed messages (``Started``, ``Progressed``,
``Finished``, ``BatchFailed``) that the ledger turns into the display's events and outcomes.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..plan import Job
from .contract import JobOutcome, OutcomeSink, SchedulerEvents

JobId = tuple[str, str]
# More tries, each alone, for a job whose worker died while painting it.
RETRIES = 2


def job_id(job: Job) -> JobId:
    """A job as the driver knows it: two pairs with the same inputs and parameters share a
    key (and a result), but each is owed its own outcome."""
    return (job.pair, job.key)


# ------------------------------------------------------------------------------ messages


@dataclass(frozen=True)
class Started:
    """A worker began painting these jobs (one batch)."""

    jobs: tuple[JobId, ...]


@dataclass(frozen=True)
class Progressed:
    """An iteration of a batch: the engine's ``Progress`` event."""

    jobs: tuple[JobId, ...]
    event: Any


@dataclass(frozen=True)
class Finished:
    """A job's outcome, painted or not."""

    outcome: JobOutcome


@dataclass(frozen=True)
class BatchFailed:
    """The worker failed outside the painter's own isolation: its batch fails with this."""

    error: str


Message = Started | Progressed | Finished | BatchFailed


@dataclass
class MessageEvents:
    """The painter's events on a worker, sent to the driver as messages: progress at most every
    ``interval`` seconds (a batch's first and last iteration of each scale always)."""

    send: Callable[[Message], None]
    interval: float = 0.0
    _last: float = 0.0

    def batch_started(self, worker: str, jobs: Sequence[Job]) -> None:
        self._last = 0.0
        self.send(Started(tuple(job_id(job) for job in jobs)))

    def progress(self, worker: str, jobs: Sequence[Job], event: Any) -> None:
        now = time.monotonic()
        edge = event.iteration in (1, event.iterations)
        if edge or now - self._last >= self.interval:
            self._last = now
            self.send(Progressed(tuple(job_id(job) for job in jobs), event))


# -------------------------------------------------------------------------------- ledger


@dataclass
class JobLedger:
    """One run's jobs on the driver: outcomes handed on once each, deaths counted, the rest
    cancelled at the end. Used from the caller's thread only."""

    jobs: Sequence[Job]
    on_outcome: OutcomeSink
    events: SchedulerEvents | None
    stop: threading.Event
    retries: int = RETRIES
    started: set[JobId] = field(default_factory=set)
    _done: set[JobId] = field(default_factory=set)
    _deaths: dict[JobId, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._by_id = {job_id(job): job for job in self.jobs}

    def unreported(self, jobs: Iterable[Job]) -> list[Job]:
        return [job for job in jobs if job_id(job) not in self._done]

    def report(self, outcome: JobOutcome) -> bool:
        """Hand ``outcome`` to the caller, with the driver's own copy of its job; False (and
        nothing handed on) when that job was reported already."""
        key = job_id(outcome.job)
        if key in self._done:
            return False
        self._done.add(key)
        job = self._by_id.get(key)
        if job is not None and job is not outcome.job:
            outcome = dataclasses.replace(outcome, job=job)
        self.on_outcome(outcome)
        return True

    def fail(self, jobs: Iterable[Job], error: str, device: str = "") -> None:
        for job in self.unreported(jobs):
            self.report(JobOutcome(job, "failed", device=device, error=error))

    def receive(self, worker: str, message: Message, batch: Sequence[Job] = ()) -> None:
        """A worker's message: outcomes reported, progress relayed to the display; a
        ``BatchFailed`` fails the jobs of ``batch`` not reported yet."""
        if isinstance(message, Finished):
            self.report(message.outcome)
        elif isinstance(message, BatchFailed):
            self.fail(batch, message.error)
        else:
            known = [self._by_id[i] for i in message.jobs if i in self._by_id]
            if isinstance(message, Started):
                self.started.update(message.jobs)
            if self.events is None or not known:
                return
            if isinstance(message, Started):
                self.events.batch_started(worker, known)
            else:
                self.events.progress(worker, known, message.event)

    def worker_died(self, jobs: Iterable[Job], why: str, device: str = "") -> list[Job]:
        """The worker painting ``jobs`` died: count a death for each unreported one; those
        that died ``retries + 1`` times fail alone, the others are returned to be tried
        again, each alone (a batch-mate that took the worker down cannot do it again)."""
        again = []
        for job in self.unreported(jobs):
            deaths = self._deaths[job_id(job)] = self._deaths.get(job_id(job), 0) + 1
            if deaths <= self.retries and not self.stop.is_set():
                again.append(job)
                continue
            error = (
                f"its worker died {deaths} times while painting it (last: {why}); "
                "the other pairs went on, and the next build paints it again"
            )
            self.report(JobOutcome(job, "failed", device=device, error=error))
        return again

    def close(self) -> bool:
        """Report every job without an outcome as cancelled; False when the run was stopped."""
        for job in self.unreported(self.jobs):
            sent = job_id(job) in self.started
            why = "interrupted" if sent else "stopped before it started"
            self.report(JobOutcome(job, "cancelled", error=why))
        return not self.stop.is_set()


class LedgerExecutor:
    """The Executor protocol's ``run`` for executors that keep their books in a
    ``JobLedger``: ``paint`` runs the ledger's jobs and returns ``ledger.close()``."""

    retries: int = RETRIES

    def run(
        self,
        jobs: Sequence[Job],
        on_outcome: OutcomeSink,
        events: SchedulerEvents | None,
        stop: threading.Event,
    ) -> bool:
        return self.paint(JobLedger(jobs, on_outcome, events, stop, self.retries))

    def paint(self, ledger: JobLedger) -> bool:
        raise NotImplementedError
