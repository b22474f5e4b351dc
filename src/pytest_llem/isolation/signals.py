"""`InterruptGuard`: SIGINT and SIGTERM recorded instead of acted on, while cleanup must finish.

Installed around each experiment (spawn, wait, teardown, state update) and around writing
the session report. Its handler only notes the first signal, never raises, so a second
Ctrl-C cannot abort a kill sequence or a half-written state; the code it protects checks
`received` at safe points. The previous handlers come back when it is uninstalled.

`SessionInterrupts` covers the rest of a session: the first signal outside an experiment
stops the run (as Ctrl-C does, by raising `KeyboardInterrupt`), every later one is only
counted, and once the tests are over (teardown, gate, report writing) none raises at all,
so no number of signals, at any gap, can turn a stopping session into a traceback. Nor into
a death by signal at the very end: the interpreter's shutdown puts the default actions back
before the process exits, so a stopping session's process ignores these signals from its
last exit handler on (`ignore_interrupts_at_exit`).
"""

from __future__ import annotations

import atexit
import functools
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

from pytest_llem.errors import ExperimentInterrupted
from pytest_llem.processes import signal_name

INTERRUPT_SIGNALS = (signal.SIGINT, signal.SIGTERM)


WAKE_UP_S = 0.05


class SessionInterrupts:
    """Session-wide SIGINT/SIGTERM handling (main thread only; elsewhere it does nothing).

    `received` is the first signal, whoever caught it (this handler or an `InterruptGuard`
    that reports to it): the session's outcome is "interrupted" exactly when it is set.
    """

    def __init__(self) -> None:
        self.received: int | None = None
        self.raising = True
        self._previous: dict[int, Any] = {}

    def note(self, signum: int) -> None:
        if self.received is None:
            self.received = signum

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        first = self.received is None
        self.note(signum)
        if first and self.raising:
            raise KeyboardInterrupt(signal_name(signum))

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread() or self._previous:
            return
        self._previous = {sig: signal.signal(sig, self._handle) for sig in INTERRUPT_SIGNALS}

    def stop_raising(self) -> None:
        """From now on (teardown, report writing) signals are only recorded."""
        self.raising = False

    def uninstall(self) -> None:
        """Give the previous handlers back, unless a signal came: the process is stopping then,
        and a late signal must still find a handler that does not raise, until it has exited."""
        if self.received is not None:
            ignore_interrupts_at_exit()
            return
        if not self._previous:
            return
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}


def _ignore_interrupts() -> None:
    for sig in INTERRUPT_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)


@functools.cache  # registered once per process
def ignore_interrupts_at_exit() -> None:
    """Ignore SIGINT and SIGTERM once the interpreter shuts down (from this exit handler on).

    CPython's shutdown resets every signal with a Python handler to its default action after
    the exit handlers ran, and then still frees modules and objects: a signal in that gap
    would kill a process that already chose its exit status (130). An ignored signal keeps
    being ignored through the shutdown, in every thread (a blocked one would not: the
    kernel hands it to any thread that does not block it). An exit handler, so a pytest run
    in-process (pytester) does not change its host until the host exits too."""
    atexit.register(_ignore_interrupts)


class InterruptGuard:
    def __init__(self, session: SessionInterrupts | None = None) -> None:
        self.received: int | None = None
        self._session = session

    def _record(self, signum: int, frame: FrameType | None) -> None:
        if self.received is None:
            self.received = signum
        if self._session is not None:
            self._session.note(signum)

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
