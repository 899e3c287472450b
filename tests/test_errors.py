"""Holding Ctrl-C around an import: only the main thread, where signals arrive, may hold."""

from __future__ import annotations

import threading

from covergen.errors import hold_interrupt, interrupts_held


def test_another_threads_block_never_makes_the_main_thread_hold_an_interrupt():
    inside, release = threading.Event(), threading.Event()

    def worker() -> None:
        with interrupts_held():
            inside.set()
            release.wait(30)

    thread = threading.Thread(target=worker)
    thread.start()
    assert inside.wait(30)
    try:
        # What the CLI's signal handler asks in the main thread: raise now, do not hold.
        assert hold_interrupt() is False
    finally:
        release.set()
        thread.join(30)


def test_the_main_threads_block_holds_an_interrupt_and_raises_it_at_its_end():
    import pytest

    with pytest.raises(KeyboardInterrupt), interrupts_held():
        assert hold_interrupt() is True  # a Ctrl-C arrives: held
    assert hold_interrupt() is False
