"""`SessionInterrupts`: the first signal stops the run, later ones never raise."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator

import pytest

from pytest_llem.isolation.signals import InterruptGuard, SessionInterrupts


@pytest.fixture
def interrupts() -> Iterator[SessionInterrupts]:
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    session = SessionInterrupts()
    session.install()
    try:
        yield session
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


def test_the_first_signal_raises_and_later_ones_are_only_recorded(interrupts: SessionInterrupts):
    with pytest.raises(KeyboardInterrupt, match="SIGTERM"):
        os.kill(os.getpid(), signal.SIGTERM)
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGINT):
        os.kill(os.getpid(), sig)  # must not raise
    assert interrupts.received == signal.SIGTERM
    interrupts.uninstall()  # a stopping process keeps a handler that does not raise
    os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) == interrupts._handle


def test_after_stop_raising_even_the_first_signal_is_only_recorded(interrupts: SessionInterrupts):
    interrupts.stop_raising()
    os.kill(os.getpid(), signal.SIGINT)
    assert interrupts.received == signal.SIGINT


def test_a_signal_caught_by_an_experiment_guard_counts_for_the_session(interrupts: SessionInterrupts):
    guard = InterruptGuard(interrupts)
    with guard.installed():
        os.kill(os.getpid(), signal.SIGINT)
    assert guard.received == interrupts.received == signal.SIGINT
    os.kill(os.getpid(), signal.SIGINT)  # the session handler is back, and stopping: no raise


def test_uninstall_gives_the_previous_handlers_back_when_no_signal_came():
    before = signal.getsignal(signal.SIGINT)
    session = SessionInterrupts()
    session.install()
    assert signal.getsignal(signal.SIGINT) == session._handle
    session.uninstall()
    assert signal.getsignal(signal.SIGINT) == before


LATE_SIGNAL_SCRIPT = """
import os, signal, sys
from pytest_llem.isolation.signals import SessionInterrupts

class SignalWhileTheInterpreterShutsDown:
    # Runs as the interpreter frees this module's globals, after it has put the default
    # actions back on every signal that had a Python handler.
    def __del__(self, kill=os.kill, pid=os.getpid(), sig=signal.Signals[sys.argv[1]], write=os.write):
        kill(pid, sig)
        write(1, b"survived the late signal\\n")

interrupts = SessionInterrupts()
interrupts.install()
interrupts.stop_raising()
os.kill(os.getpid(), signal.SIGINT)  # the session is interrupted
interrupts.uninstall()
late = SignalWhileTheInterpreterShutsDown()
sys.exit(130)
"""


@pytest.mark.parametrize("late", ["SIGINT", "SIGTERM"])
def test_a_signal_while_the_interpreter_shuts_down_does_not_change_an_interrupted_exit(late: str):
    proc = subprocess.run(
        [sys.executable, "-c", LATE_SIGNAL_SCRIPT, late], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 130, proc.stderr  # not -2 or -15: killed by the late signal
    assert proc.stdout == "survived the late signal\n"
