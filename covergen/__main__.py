"""`python -m covergen` and the `covergen` command: start-up itself answers Ctrl-C.

The command line's imports happen inside ``run``, so a Ctrl-C while Python loads them
ends with "interrupted" and status 130, like one at any later moment, not a traceback.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys

from .stopping import EXIT_INTERRUPTED as INTERRUPTED  # light: os, signal, sys


def _terminated(signum: int, frame: object) -> None:
    """SIGTERM before a command sets its own handling (``stopping.StopSignals``): the same
    end as a Ctrl-C (130, no traceback), never the default death by signal (143)."""
    raise KeyboardInterrupt


def run() -> int:
    signal.signal(signal.SIGTERM, _terminated)
    try:
        try:
            from .cli import main
        except KeyboardInterrupt:
            sys.stderr.write("interrupted\n")
            code = INTERRUPTED
        else:
            code = main()
    finally:
        # The work is done (or stopped): a Ctrl-C now, while Python shuts down, has nothing
        # left to stop and must not turn a finished command into a traceback.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    if code == INTERRUPTED:
        # CPython remembers a Ctrl-C that arrived inside an extension's own Python code
        # (torch's import runs some) and, at exit, kills the process with SIGINT after all,
        # although it was handled. Everything is written (atomically) by now: leave directly.
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(AttributeError, OSError, ValueError):  # closed or gone
                stream.flush()
        os._exit(INTERRUPTED)
    return code


if __name__ == "__main__":
    sys.exit(run())
