"""What a build (or one `stylize`) shows the user: rich progress bars on a terminal, plain
lines elsewhere, and a summary at the end. Everything is written through ``Printer``.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, TextIO

from .console import Printer, styled
from .nst.params import total_iterations
from .outcome import HAS_RESULT, Metrics, PairStatus

# Outcomes that end a painting the progress bar counted.
PAINTING_ENDS = frozenset({PairStatus.BUILT, PairStatus.FAILED, PairStatus.CANCELLED})

if TYPE_CHECKING:
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


class BuildReport:
    """Implements the build's events. ``quiet`` shows failures only; ``plain`` forces lines."""

    def __init__(
        self, *, quiet: bool = False, plain: bool | None = None, stream: TextIO | None = None
    ):
        self.printer = Printer(stream or sys.stderr, plain=plain)
        self.quiet = quiet
        self.plain = self.printer.plain
        self._lock = threading.Lock()
        self._progress: Any = None
        self._overall: Any = None
        self._workers: dict[str, Any] = {}
        self._done = 0
        self._to_run = 0
        self._last_line: dict[str, float] = {}

    # -- lifecycle -------------------------------------------------------------------------
    def __enter__(self) -> BuildReport:
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop_bars()

    def _stop_bars(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def _line(self, *pieces: Any, always: bool = False) -> None:
        if self.quiet and not always:
            return
        if self._progress is not None:  # above the bars
            self._progress.console.print(self.printer.text(*pieces))
        else:
            self.printer.line(*pieces)

    def _bars(self, total: int) -> None:
        """Start the progress display (terminal only), with an overall bar of ``total``."""
        if self._progress is not None or self.plain or self.quiet:
            return
        from rich import progress as bars

        self._progress = bars.Progress(
            bars.TextColumn("{task.description}", markup=False),
            bars.BarColumn(bar_width=30),
            bars.MofNCompleteColumn(),
            bars.TextColumn("{task.fields[losses]}", markup=False),
            bars.TimeElapsedColumn(),
            bars.TimeRemainingColumn(),
            console=self.printer.console,
            transient=True,
        )
        self._progress.start()
        self._overall = self._progress.add_task("pairs", total=total, losses="")

    # -- build events ----------------------------------------------------------------------
    def stage(self, text: str) -> None:
        self._line(styled("·", "dim"), " ", text)

    def planned(self, to_run: Sequence[Job], reused: int, failed: int) -> None:
        self._to_run = len(to_run)
        self._line(
            styled("·", "dim"), f" plan: {len(to_run)} to paint, {reused} reused, {failed} failed"
        )
        if to_run:
            self._bars(len(to_run))

    def batch_started(self, worker: str, jobs: Sequence[Job]) -> None:
        names = ", ".join(job.pair for job in jobs)
        self.paint_started(worker, names, max(total_iterations(job.params) for job in jobs))

    def progress(self, worker: str, jobs: Sequence[Job], event: EngineProgress) -> None:
        self.paint_progress(worker, jobs[0].pair, event)

    def paint_started(self, worker: str, label: str, total: int) -> None:
        """A worker starts painting ``label`` (one job or a batch): ``total`` iterations."""
        with self._lock:
            if self._progress is not None:
                task = self._workers.get(worker)
                if task is not None:
                    self._progress.remove_task(task)
                self._workers[worker] = self._progress.add_task(
                    f"  {worker} {label}", total=total, losses=""
                )
            else:
                self._line(f"  painting {label} on {worker}")

    def paint_progress(self, worker: str, label: str, event: EngineProgress) -> None:
        with self._lock:
            if event.stage == "train":
                text = "training the cover's network"
            elif not event.losses:  # a feed-forward painting: one pass, no loss
                text = "one pass"
            else:
                loss = event.losses[0]
                where = (
                    "choosing the content weight"
                    if event.stage == "probe"
                    else f"scale {event.scale + 1}/{event.scales}"
                )
                text = f"{where} loss {loss.total:.3g} (c {loss.content:.2g} s {loss.style:.2g})"
            if self._progress is not None and worker in self._workers:
                self._progress.update(
                    self._workers[worker], completed=event.done, total=event.total, losses=text
                )
            elif self.plain and not self.quiet:
                now = time.monotonic()
                if now - self._last_line.get(worker, 0) >= 10 or event.iteration == 1:
                    self._last_line[worker] = now
                    self._line(
                        f"  {worker} {label}: {event.size[0]}×{event.size[1]} "
                        f"iteration {event.iteration}/{event.iterations}, {text}"
                    )

    def pair_done(self, outcome: PairOutcome) -> None:
        with self._lock:
            if outcome.status in PAINTING_ENDS and self._to_run:
                self._done += 1
                if self._progress is not None and self._overall is not None:
                    self._progress.update(self._overall, completed=self._done)
        style = STATUS_STYLE.get(outcome.status, "")
        details = []
        if outcome.device:
            details.append(outcome.device)
        if outcome.seconds is not None and outcome.status == "built":
            details.append(f"{outcome.seconds:.0f} s")
        quality = quality_text(outcome.metrics)
        if quality and outcome.status in HAS_RESULT:
            details.append(quality)
        pieces: list[Any] = [styled(f"{outcome.status:>9}", style), " ", outcome.pair]
        if details:
            pieces.append(styled(f" ({', '.join(details)})", "dim"))
        if outcome.error and outcome.status == "failed":
            pieces.append(
                "\n" + "\n".join(f"          {line}" for line in outcome.error.splitlines())
            )
        self._line(*pieces, always=outcome.status == "failed")

    # -- the end ---------------------------------------------------------------------------
    def summary(self, summary: BuildSummary) -> None:
        self._stop_bars()
        for note in summary.notes:
            self.printer.line(styled(f"note: {note}", "yellow"))
        counts = summary.counts()
        printer = self.printer
        if self.quiet:
            if counts["failed"]:
                printer.line(f"{counts['failed']} pair(s) failed")
            return
        site = f"; {summary.site.describe()}" if summary.site is not None else ""
        if self.plain:
            parts = ", ".join(f"{n} {s}" for s, n in counts.items())
            state = " (interrupted)" if summary.interrupted else ""
            printer.line(
                f"done{state}: {parts} in {summary.seconds:.0f} s"
                f" (profile {summary.profile or 'none'}){site}"
            )
            return
        title = "covergen build" + (" — interrupted" if summary.interrupted else "")
        printer.table(
            [*counts, "time", "profile"],
            [
                [
                    *(styled(n, STATUS_STYLE[s]) for s, n in counts.items()),
                    f"{summary.seconds:.0f} s",
                    summary.profile or "none",
                ]
            ],
            title=title,
        )
        if summary.site is not None:
            printer.line(styled(summary.site.describe(), "dim"))


def quality_text(metrics: Any) -> str:
    """The quality scores of a result as a short text: "content 0.62, style 0.71"."""
    return Metrics.of(metrics).summary(", ")
