"""`InterruptGuard`: SIGINT and SIGTERM recorded instead of acted on, while cleanup must finish.

Installed around each experiment (spawn, wait, teardown, state update) and around writing
the session report. Its handler only notes the first signal, never raises, so a second
Ctrl-C cannot abort a kill sequence or a half-written state; the code it protects checks
`received` at safe points. The previous handlers come back when it is uninstalled.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

from pytest_llem.errors import ExperimentInterrupted
from pytest_llem.processes import signal_name

INTERRUPT_SIGNALS = (signal.SIGINT, signal.SIGTERM)


WAKE_UP_S = 0.05


class InterruptGuard:
    def __init__(self) -> None:
        self.received: int | None = None

    def _record(self, signum: int, frame: FrameType | None) -> None:
        if self.received is None:
            self.received = signum

    @contextmanager
    def installed(self) -> Iterator[InterruptGuard]:
        if threading.current_thread() is not threading.main_thread():
            yield self  # only the main thread may install handlers; pytest runs tests there
            return
        previous = {sig: signal.signal(sig, self._record) for sig in INTERRUPT_SIGNALS}
        try:
            yield self
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def sleep_unless_interrupted(seconds: float, guard: InterruptGuard) -> None:
    """Sleep `seconds`, but raise `ExperimentInterrupted` as soon as `guard` records a signal."""
    deadline = time.monotonic() + seconds
    while guard.received is None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return
        time.sleep(min(WAKE_UP_S, remaining))
    raise ExperimentInterrupted(signal_name(guard.received))
