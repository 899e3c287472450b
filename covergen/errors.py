"""Exceptions of the covergen stages; the CLI turns them into messages and exit codes."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator


class CovergenError(Exception):
    """A problem the user can fix: what went wrong, where (pair, field) and what to do."""

    def __init__(
        self, message: str, *, pair: str | None = None, field: str | None = None, hint: str = ""
    ):
        self.message = message
        self.pair = pair
        self.field = field
        self.hint = hint
        super().__init__(self.describe())

    def describe(self) -> str:
        where = ": ".join(
            part for part in (self.pair and f"pair {self.pair!r}", self.field) if part
        )
        text = f"{where}: {self.message}" if where else self.message
        return f"{text}\n  → {self.hint}" if self.hint else text


class InputImageError(CovergenError):
    """An input image is missing, unreadable or unusable."""


# Ctrl-C raised while a C extension runs Python code of its own (torch's import does,
# through pybind11) cannot unwind through it: the process aborts ("terminate called after
# throwing an instance of 'pybind11::error_already_set'") instead of stopping cleanly. The
# CLI's handler asks here first and, inside such a block, holds the interrupt until it ends.
_shielded = 0
_held = False


@contextlib.contextmanager
def interrupts_held() -> Iterator[None]:
    """Hold covergen's Ctrl-C handling for the block (an import of torch, for one), then
    raise the KeyboardInterrupt it held, if any. Main thread only, as signal handlers are."""
    global _shielded, _held
    if threading.current_thread() is not threading.main_thread():
        # Signals reach the main thread only: another thread's block must not make the
        # main thread hold an interrupt that this thread would then raise (and swallow).
        yield
        return
    _shielded += 1
    try:
        yield
    finally:
        _shielded -= 1
    if _shielded == 0 and _held:
        _held = False
        raise KeyboardInterrupt


def hold_interrupt() -> bool:
    """For a signal handler about to raise KeyboardInterrupt: True when it must not now (an
    ``interrupts_held`` block is running; it raises the interrupt when it ends)."""
    global _held
    if _shielded:
        _held = True
        return True
    return False
