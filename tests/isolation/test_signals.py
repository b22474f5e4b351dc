"""The interrupt guard around an experiment: a signal is recorded, and a wait stops for it."""

from __future__ import annotations

import os
import signal
import time

import pytest

from pytest_llem.errors import ExperimentInterrupted
from pytest_llem.isolation.signals import INTERRUPT_SIGNALS, InterruptGuard, sleep_unless_interrupted


def test_a_signal_under_the_guard_is_recorded_once_and_the_handlers_come_back():
    before = {sig: signal.getsignal(sig) for sig in INTERRUPT_SIGNALS}
    with InterruptGuard().installed() as guard:
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGINT)
        assert guard.received == signal.SIGTERM  # the first signal is the one reported
    assert {sig: signal.getsignal(sig) for sig in INTERRUPT_SIGNALS} == before


def test_a_wait_ends_at_its_time_or_as_soon_as_a_signal_is_recorded():
    guard = InterruptGuard()
    started = time.monotonic()
    sleep_unless_interrupted(0.05, guard)
    assert time.monotonic() - started >= 0.05
    guard.received = signal.SIGTERM
    started = time.monotonic()
    with pytest.raises(ExperimentInterrupted, match="^interrupted by SIGTERM$") as caught:
        sleep_unless_interrupted(60, guard)
    assert caught.value.signal_name == "SIGTERM" and time.monotonic() - started < 1
