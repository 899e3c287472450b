"""The local executor: worker threads on this machine, one per device, painting whole batches."""

from __future__ import annotations

import queue
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .contract import DevicesHere, ExecutorSettings, JobOutcome, batch_limit, make_batches
from .ledger import JobLedger, LedgerExecutor

if TYPE_CHECKING:
    from .painter import Painter


@dataclass
class LocalExecutor(DevicesHere, LedgerExecutor):
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

    def paint(self, ledger: JobLedger) -> bool:
        if self.painter is None:
            from .painter import Painter, StoreInputs  # the engine: torch, when painting starts

            self.painter = Painter.from_settings(
                self.settings, StoreInputs(self.settings.cache_dir)
            )
        painter = self.painter
        devices, events, stop = self.prepare(), ledger.events, ledger.stop
        # A deque's popleft is atomic: the workers share it without a lock.
        batches = deque(make_batches(ledger.jobs, batch_limit(devices, self.settings.max_batch)))
        outcomes: queue.Queue[JobOutcome | None] = queue.Queue()

        def work(device: str) -> None:
            try:
                while not stop.is_set():
                    try:
                        batch = batches.popleft()
                    except IndexError:  # no batch left
                        return
                    for outcome in painter.run_batch(device, batch, events, stop):
                        outcomes.put(outcome)
            finally:
                outcomes.put(None)

        for d in devices:
            threading.Thread(target=work, args=(d,), name=f"covergen-{d}", daemon=True).start()
        for _ in devices:  # until every worker has said None
            for outcome in iter(outcomes.get, None):
                ledger.report(outcome)
        return ledger.close()
