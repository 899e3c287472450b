"""What a build shows the user: rich progress bars on a terminal, plain lines elsewhere."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Sequence
from typing import Any, TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from .build import BuildSummary, PairOutcome
from .nst import Progress as EngineProgress
from .plan import Job

STATUS_STYLE = {
    "built": "green",
    "reused": "cyan",
    "failed": "bold red",
    "cancelled": "yellow",
    "planned": "magenta",
}


def total_iterations(job: Job) -> int:
    p = job.params
    scales = len(p.scale_sizes())
    return p.iterations + (scales - 1) * p.coarse_iterations


class BuildReport:
    """Implements the build's events. ``quiet`` shows failures only; ``plain`` forces lines."""

    def __init__(
        self, *, quiet: bool = False, plain: bool | None = None, stream: TextIO | None = None
    ):
        self.stream = stream or sys.stderr
        self.quiet = quiet
        self.plain = (not self.stream.isatty()) if plain is None else plain
        self.console = Console(
            file=self.stream, highlight=False, force_terminal=not self.plain, soft_wrap=True
        )
        self._lock = threading.Lock()
        self._progress: Progress | None = None
        self._overall: Any = None
        self._workers: dict[str, Any] = {}
        self._done = 0
        self._to_run = 0
        self._scale_base: dict[str, tuple[int, int]] = {}  # worker -> (scale, iterations before)
        self._last_line: dict[str, float] = {}

    # -- lifecycle -------------------------------------------------------------------------
    def __enter__(self) -> BuildReport:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def _line(self, text: str, *, always: bool = False) -> None:
        if self.quiet and not always:
            return
        if self._progress is not None:
            self._progress.console.print(text)
        else:
            self.console.print(text)

    # -- build events ----------------------------------------------------------------------
    def stage(self, text: str) -> None:
        self._line(f"[dim]·[/dim] {text}")

    def planned(self, to_run: Sequence[Job], reused: int, failed: int) -> None:
        self._to_run = len(to_run)
        self._line(f"[dim]·[/dim] plan: {len(to_run)} to paint, {reused} reused, {failed} failed")
        if to_run and not self.plain and not self.quiet:
            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(bar_width=30),
                MofNCompleteColumn(),
                TextColumn("{task.fields[losses]}"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=self.console,
                transient=True,
            )
            self._progress.start()
            self._overall = self._progress.add_task("pairs", total=len(to_run), losses="")

    def batch_started(self, worker: str, jobs: Sequence[Job]) -> None:
        names = ", ".join(job.pair for job in jobs)
        total = sum(total_iterations(job) for job in jobs) // len(jobs)
        with self._lock:
            self._scale_base[worker] = (0, 0)
            if self._progress is not None:
                task = self._workers.get(worker)
                if task is not None:
                    self._progress.remove_task(task)
                self._workers[worker] = self._progress.add_task(
                    f"  {worker} {names}", total=total, losses=""
                )
            else:
                self._line(f"  painting {names} on {worker}")

    def progress(self, worker: str, jobs: Sequence[Job], event: EngineProgress) -> None:
        with self._lock:
            scale, before = self._scale_base.get(worker, (0, 0))
            if event.scale != scale:
                params = jobs[0].params
                before = params.coarse_iterations * event.scale
                self._scale_base[worker] = (event.scale, before)
            loss = event.losses[0]
            text = (
                f"scale {event.scale + 1}/{event.scales} loss {loss.total:.3g} "
                f"(c {loss.content:.2g} s {loss.style:.2g})"
            )
            if self._progress is not None and worker in self._workers:
                self._progress.update(
                    self._workers[worker], completed=before + event.iteration, losses=text
                )
            elif self.plain and not self.quiet:
                now = time.monotonic()
                if now - self._last_line.get(worker, 0) >= 10:
                    self._last_line[worker] = now
                    self._line(
                        f"  {worker} {jobs[0].pair}: {event.size[0]}×{event.size[1]} "
                        f"iteration {event.iteration}/{event.iterations}, {text}"
                    )

    def pair_done(self, outcome: PairOutcome) -> None:
        with self._lock:
            if outcome.status in ("built", "failed", "cancelled") and self._to_run:
                self._done += 1
                if self._progress is not None and self._overall is not None:
                    self._progress.update(self._overall, completed=self._done)
        style = STATUS_STYLE.get(outcome.status, "")
        details = []
        if outcome.device:
            details.append(outcome.device)
        if outcome.seconds is not None and outcome.status == "built":
            details.append(f"{outcome.seconds:.0f} s")
        text = f"[{style}]{outcome.status:>9}[/{style}] {outcome.pair}"
        if details:
            text += f" [dim]({', '.join(details)})[/dim]"
        if outcome.error and outcome.status == "failed":
            text += "\n" + "\n".join(f"          {line}" for line in outcome.error.splitlines())
        self._line(text, always=outcome.status == "failed")

    # -- the end ---------------------------------------------------------------------------
    def summary(self, summary: BuildSummary) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
        counts = {s: summary.count(s) for s in ("built", "reused", "failed", "cancelled")}
        if self.quiet:
            if counts["failed"]:
                self.console.print(f"{counts['failed']} pair(s) failed")
            return
        if self.plain:
            parts = ", ".join(f"{n} {s}" for s, n in counts.items())
            state = " (interrupted)" if summary.interrupted else ""
            self.console.print(
                f"done{state}: {parts} in {summary.seconds:.0f} s"
                f" (profile {summary.profile or 'none'})"
            )
            return
        table = Table(title="covergen build" + (" — interrupted" if summary.interrupted else ""))
        for status in counts:
            table.add_column(status, justify="right", style=STATUS_STYLE[status])
        table.add_column("time", justify="right")
        table.add_column("profile")
        table.add_row(
            *(str(n) for n in counts.values()),
            f"{summary.seconds:.0f} s",
            summary.profile or "none",
        )
        self.console.print(table)
