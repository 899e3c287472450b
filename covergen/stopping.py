"""Ctrl-C and SIGTERM as a cooperative stop, for the command that runs.

A build does not unwind from wherever a signal lands: the first Ctrl-C (or SIGTERM) sets the
stop event that the build's stages, every executor and the engine already watch at their
own safe points (between pairs while fetching, between batches, at each iteration). What is
finished is kept, the rest is recorded as cancelled, and the command ends with status 130.
The second signal raises ``KeyboardInterrupt`` where the main thread is, for a stop that
will not wait for a slow step (a download); the third leaves at once. Every write a user
relies on is atomic, so neither loses anything already built.

A command with nothing to stop cooperatively (``serve``, ``publish``) has no stop event:
there the first signal raises.

Handlers are set explicitly, because a process started in the background inherits SIGINT
ignored (Python then never raises ``KeyboardInterrupt`` by itself).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from types import FrameType
from typing import Any

EXIT_INTERRUPTED = 130
SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Stopped(KeyboardInterrupt):
    """A stop that ends a step which cannot finish on its own terms (joining a cluster that
    does not answer): the command ends as interrupted (130), like a second Ctrl-C."""


class StopSignals:
    """While in effect (main thread only), SIGINT and SIGTERM stop the command: the first
    sets ``stop`` (or raises, without one), the second raises, the third exits."""

    def __init__(self, stop: threading.Event | None = None):
        self.stop = stop
        self.count = 0
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in SIGNALS:
                self._previous[sig] = signal.signal(sig, self.handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def handle(self, signum: int, frame: FrameType | None) -> None:
        """The signal handler (also called by code that caught a signal meant for us)."""
        self.count += 1
        if self.count == 1 and self.stop is not None:
            self.stop.set()
            sys.stderr.write(
                "\nstopping: what is finished is kept; press Ctrl-C again to stop at once\n"
            )
            return
        if self.count <= 2:
            raise KeyboardInterrupt
        os._exit(EXIT_INTERRUPTED)
