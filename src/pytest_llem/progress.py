"""What an experiment is doing now: the phases its child reports to the pytest process.

The worker and the workload (through `ExperimentContext.phase`) report each phase as it
begins; the pytest process shows them live and the result keeps how long each took. One
phase lasts until the next begins. The events travel as JSON lines in a file of the
experiment's work folder (see `isolation.protocol`), so nothing here touches the disk.
A phase's name and detail are redacted (`base.redaction`) as each event is made or read, so
no secret a workload puts in one reaches a progress line, a result or a report.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Protocol

from pydantic import BaseModel, Field, field_validator

from pytest_llem.base.redaction import redact_secrets

#: The phases pytest-llem itself reports; a workload may name its own with `ctx.phase(...)`.
STARTING = "starting"
IMPORTING = "importing"
LOADING_MODEL = "loading model"
WARM_UP = "warm-up"
MEASURING = "measuring"
TEARING_DOWN = "tearing down"

MAX_PHASE_NAME = 60
#: Where output is not a terminal (a CI log), the longest the session goes without a line while
#: something runs or is awaited: a log that stays silent longer looks hung.
LINE_INTERVAL_S = 10.0


class ProgressEvent(BaseModel):
    """A phase that began at `at` (seconds since the epoch: parent and child share the clock)."""

    phase: str = Field(min_length=1, max_length=MAX_PHASE_NAME)
    at: float
    #: Which measured round began (from 1) and of how many, while measuring rounds.
    round: int | None = Field(default=None, ge=1)
    rounds: int | None = Field(default=None, ge=1)
    detail: str | None = Field(default=None, max_length=200)

    @field_validator("phase", "detail", mode="before")
    @classmethod
    def _no_secrets(cls, text: object) -> object:
        # In the child (the workload names phases) and again in the pytest process (which
        # reads them, and may know more names to redact: --llem-redact-env).
        return redact_secrets(text) if isinstance(text, str) else text

    @classmethod
    def now(cls, phase: str, **fields: object) -> ProgressEvent:
        return cls(phase=phase, at=time.time(), **fields)  # type: ignore[arg-type]

    def describe(self) -> str:
        """`measuring round 2/3 (detail)`, for people."""
        text = self.phase
        if self.round is not None and self.rounds is not None:
            text += f" round {self.round}/{self.rounds}"
        if self.detail:
            text += f" ({self.detail})"
        return text


def phase_durations(events: Iterable[ProgressEvent], end: float) -> dict[str, float]:
    """Seconds spent in each phase, in the order first entered; each lasts until the next
    event (the last one until `end`). A phase entered several times adds up."""
    ordered = list(events)
    durations: dict[str, float] = {}
    ends = [following.at for following in ordered[1:]] + [end]
    for event, until in zip(ordered, ends, strict=False):
        durations[event.phase] = durations.get(event.phase, 0.0) + max(0.0, until - event.at)
    return durations


def add_durations(parts: Iterable[dict[str, float]]) -> dict[str, float]:
    """Phase durations of several processes added up, phase by phase."""
    total: dict[str, float] = {}
    for part in parts:
        for phase, seconds in part.items():
            total[phase] = total.get(phase, 0.0) + seconds
    return total


class ProgressListener(Protocol):
    """Who follows experiments as they run (the terminal's `output.live.LiveProgress`)."""

    def started(self, nodeid: str, process: int = 1, processes: int = 1) -> None: ...

    def update(self, events: list[ProgressEvent]) -> None: ...

    def ended(self, outcome: str) -> None: ...

    def notice(self, text: str) -> None:
        """A line about the session itself (the preloaded interpreter starting, a wait for
        GPUs), between experiments or in the middle of one."""
        ...
