"""Ctrl-C and SIGTERM as a cooperative stop: the first sets the stop event and raises
nothing (an import of torch in its way finishes), the second raises, the third exits; a
command with nothing to stop cooperatively raises at the first."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading

import pytest

from covergen.stopping import EXIT_INTERRUPTED, StopSignals


@pytest.fixture(autouse=True)
def _live_sigint():
    # A test run started in the background inherits SIGINT ignored; the signals must be live.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_the_first_signal_sets_the_stop_and_the_second_raises(sig: signal.Signals, capsys):
    stop = threading.Event()
    reached = []
    with StopSignals(stop):
        signal.raise_signal(sig)  # handled before raise_signal returns
        reached.append("after the first")
        assert stop.is_set()
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(sig)
            reached.append("never")
    assert reached == ["after the first"]
    assert "press Ctrl-C again to stop at once" in capsys.readouterr().err


def test_without_a_stop_to_set_the_first_signal_raises():
    with StopSignals(), pytest.raises(KeyboardInterrupt):
        signal.raise_signal(signal.SIGTERM)


def test_the_handlers_before_are_put_back():
    before = signal.getsignal(signal.SIGTERM)
    with StopSignals(threading.Event()):
        assert signal.getsignal(signal.SIGTERM) is not before
    assert signal.getsignal(signal.SIGTERM) is before


def test_the_third_signal_leaves_at_once_and_a_first_one_lets_an_import_of_torch_finish():
    """In a process of its own: the first signal arrives while torch is being imported (a
    KeyboardInterrupt raised inside it used to abort the process from C++), the import
    finishes, the stop is set; the third ends the process with 130 at once."""
    code = (
        "import os, signal, sys, threading\n"
        "from covergen.stopping import StopSignals\n"
        "class SignalMidImport:\n"  # the signal arrives as torch imports its C extension
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'torch._C':\n"
        "            os.kill(os.getpid(), signal.SIGINT)\n"
        "        return None\n"
        "sys.meta_path.insert(0, SignalMidImport())\n"
        "stop = threading.Event()\n"
        "with StopSignals(stop):\n"
        "    import torch\n"
        "    print('imported', stop.is_set(), flush=True)\n"
        "    try:\n"
        "        signal.raise_signal(signal.SIGINT)\n"
        "    except KeyboardInterrupt:\n"
        "        print('second raised', flush=True)\n"
        "    signal.raise_signal(signal.SIGINT)\n"
        "    print('never', flush=True)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == EXIT_INTERRUPTED, done.stderr
    assert done.stdout.splitlines() == ["imported True", "second raised"]
    assert "Traceback" not in done.stderr
