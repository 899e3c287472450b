"""The local executor: worker threads on this machine, one per device, painting whole batches."""

from __future__ import annotations

import queue
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..plan import Job
from .contract import (
    DevicesHere,
    ExecutorSettings,
    JobOutcome,
    OutcomeSink,
    SchedulerEvents,
    batch_limit,
    make_batches,
)
from .ledger import JobLedger

if TYPE_CHECKING:
    from .painter import Painter


@dataclass
class LocalExecutor(DevicesHere):
    """Worker threads on this machine, one per device, each painting whole batches.

    ``painter`` (made on first use when not given) holds the engines; tests pass one with a
    stand-in engine.
    """

    settings: ExecutorSettings = field(default_factory=ExecutorSettings)
    painter: Painter | None = None
    name: str = "local"
    # Take the device names as given, unchecked: for stand-in engines that play a GPU.
    trust_devices: bool = False
    _devices: list[str] = field(default_factory=list)

    def prepare(self) -> list[str]:
        return self.devices_here()

    def run(
        self,
        jobs: Sequence[Job],
        on_outcome: OutcomeSink,
        events: SchedulerEvents | None,
        stop: threading.Event,
    ) -> bool:
        if self.painter is None:
            from .painter import Painter, StoreInputs  # the engine: torch, when painting starts

            self.painter = Painter.from_settings(
                self.settings, StoreInputs(self.settings.cache_dir)
            )
        painter = self.painter
        devices = self.prepare()
        batches: queue.Queue[list[Job]] = queue.Queue()
        for batch in make_batches(jobs, batch_limit(devices, self.settings.max_batch)):
            batches.put(batch)
        outcomes: queue.Queue[JobOutcome | None] = queue.Queue()

        def work(device: str) -> None:
            try:
                while not stop.is_set():
                    try:
                        batch = batches.get_nowait()
                    except queue.Empty:
                        return
                    for outcome in painter.run_batch(device, batch, events, stop):
                        outcomes.put(outcome)
            finally:
                outcomes.put(None)

        workers = [
            threading.Thread(target=work, args=(d,), name=f"covergen-{d}", daemon=True)
            for d in devices
        ]
        for worker in workers:
            worker.start()
        ledger = JobLedger(jobs, on_outcome, events, stop)
        finished = 0
        while finished < len(workers):
            item = outcomes.get()
            if item is None:
                finished += 1
            else:
                ledger.report(item)
        return ledger.close()
