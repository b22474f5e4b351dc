"""Live progress of the running experiment, as the terminal shows it.

On a terminal, one status line that updates in place (what the experiment does now, for how
long); elsewhere (CI logs), plain timestamped lines: one per phase, round lines at most every
`ROUND_LINE_INTERVAL_S`, a "still ..." line after `HEARTBEAT_S` without one, and one when
the process ends. With verbosity 1 or more every round gets its line, and each process ends
with a line saying where its time went (on a terminal too). Notices about the session
(`notice`) are lines of their own in both, the status line cleared for them and drawn again.
Every line and status has its secrets blanked out (`base.redaction`): a CI log keeps them.
The plugin passes in how to write; this module knows nothing of pytest.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from pytest_llem.base.redaction import secret_redactor
from pytest_llem.progress import LINE_INTERVAL_S, STARTING, ProgressEvent, phase_durations

HEARTBEAT_S = LINE_INTERVAL_S
ROUND_LINE_INTERVAL_S = 10.0
REDRAW_INTERVAL_S = 0.25


def seconds(value: float) -> str:
    return f"{value:.1f} s" if value < 100 else f"{value:.0f} s"


class LiveProgress:
    """Follows one experiment process at a time: `started`, `update` at every poll, `ended`.

    `line` writes a whole line; `status` redraws the updating status line ("" clears it) and
    is None where output is not a terminal.
    """

    def __init__(
        self,
        line: Callable[[str], None],
        status: Callable[[str], None] | None = None,
        verbosity: int = 0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._line = line
        self._status = status
        self.verbosity = verbosity
        self._clock = clock
        self._label = ""
        self._events: list[ProgressEvent] = []
        self._last_line_at = 0.0
        self._last_draw_at = 0.0
        self._redact = secret_redactor()

    def started(self, nodeid: str, process: int = 1, processes: int = 1) -> None:
        self._redact = secret_redactor()  # the secrets looked up once per process, not per line
        self._label = nodeid + (f" (repeat {process}/{processes})" if processes > 1 else "")
        self._events = []
        self._on_event(ProgressEvent(phase=STARTING, at=self._clock()))

    def update(self, events: list[ProgressEvent]) -> None:
        for event in events:
            self._on_event(event)
        now = self._clock()
        if self._status is not None:
            if now - self._last_draw_at >= REDRAW_INTERVAL_S:
                self._draw(now)
        elif self._events and now - self._last_line_at >= HEARTBEAT_S:
            current = self._events[-1]
            self._write(now, f"still {current.describe()} ({seconds(now - current.at)})")

    def ended(self, outcome: str) -> None:
        now = self._clock()
        if self._status is not None:
            self._status("")
        if self._status is None or self.verbosity >= 1:
            total = now - self._events[0].at if self._events else 0.0
            text = f"{outcome} after {seconds(total)}"
            if self.verbosity >= 1:
                spent = phase_durations(self._events, end=now)
                text += ": " + ", ".join(f"{phase} {seconds(s)}" for phase, s in spent.items())
            self._write(now, text)
        self._events = []

    def notice(self, text: str) -> None:
        now = self._clock()
        if self._status is not None:
            self._status("")
            self._line(self._redact(f"pytest-llem: {text}"))
            self._draw(now)
            return
        stamp = time.strftime("%H:%M:%S", time.localtime(now))
        self._line(self._redact(f"{stamp} pytest-llem: {text}"))
        self._last_line_at = now

    def _on_event(self, event: ProgressEvent) -> None:
        self._events.append(event)
        now = self._clock()
        if self._status is not None:
            self._draw(now)
            return
        if (
            self.verbosity < 1
            and _is_middle_round(event)
            and now - self._last_line_at < ROUND_LINE_INTERVAL_S
        ):
            return
        self._write(event.at, event.describe())

    def _write(self, at: float, text: str) -> None:
        stamp = time.strftime("%H:%M:%S", time.localtime(at))
        self._line(self._redact(f"{stamp} pytest-llem {self._label}: {text}"))
        self._last_line_at = self._clock()

    def _draw(self, now: float) -> None:
        assert self._status is not None
        if not self._events:
            return
        current = self._events[-1]
        total = now - self._events[0].at
        name = self._label.rpartition("::")[2]  # pytest has printed the file already
        spent = f"{seconds(now - current.at)} (in all {seconds(total)})"
        self._status(self._redact(f"pytest-llem {name}: {current.describe()} {spent}"))
        self._last_draw_at = now


def _is_middle_round(event: ProgressEvent) -> bool:
    return event.round is not None and event.round not in (1, event.rounds)
