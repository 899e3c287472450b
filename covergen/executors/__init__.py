"""Executors: where a build's jobs are painted, chosen by name. Torch-free until one runs.

Each executor runs jobs somewhere and hands every outcome back in the caller's thread:
``local`` (threads on this machine's devices), ``process`` (worker processes that get jobs
as plain data, so a worker's death costs one job), ``ray`` (actors on a Ray cluster). All
of them paint through ``Painter.run_batch`` (same-shape batches, out of memory → half the
batch → the CPU, a failing job isolated) and keep their books in one ``JobLedger`` (each
job reported once, one retry policy, the rest cancelled at a stop). None of them imports
the planner or the build; the build imports this package, which imports an executor's
module only when that executor is asked for.
"""

from __future__ import annotations

import importlib
import threading

from ..errors import CovergenError
from .contract import (
    DevicesHere,
    Executor,
    ExecutorSettings,
    JobOutcome,
    OutcomeSink,
    SchedulerEvents,
    batch_limit,
    checked_devices,
    make_batches,
)

__all__ = [
    "EXECUTORS",
    "DevicesHere",
    "Executor",
    "ExecutorSettings",
    "JobOutcome",
    "OutcomeSink",
    "SchedulerEvents",
    "batch_limit",
    "checked_devices",
    "make_batches",
    "make_executor",
]

# name -> (module of this package, class); each module imported only when chosen.
_CLASSES = {
    "local": ("local", "LocalExecutor"),
    "process": ("process", "ProcessExecutor"),
    "ray": ("raycluster", "RayExecutor"),
}
EXECUTORS = tuple(_CLASSES)


def make_executor(
    name: str, settings: ExecutorSettings, stop: threading.Event | None = None
) -> Executor:
    """The executor called ``name`` (local, process or ray), made with ``settings``;
    ``stop`` for the one that may wait before its jobs run (joining a Ray cluster)."""
    if name not in _CLASSES:
        raise CovergenError(
            f"unknown executor {name!r}",
            field="executor",
            hint=f"use one of {', '.join(EXECUTORS)}",
        )
    module, cls = _CLASSES[name]
    made = getattr(importlib.import_module(f"{__name__}.{module}"), cls)
    return made(settings, stop=stop) if name == "ray" else made(settings)
