"""What the pytest process learns of an experiment's run, wherever it ran (a local group,
`launcher.run_in_child`, or a Slurm job, `slurm.run_in_slurm_job`): the phases the worker
reports as it goes (`ProgressRelay`), and at the end its outcome from the work folder
(`read_outcome`: the result, or the failure in one message).
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path

from pytest_llem.errors import ExperimentFailed
from pytest_llem.isolation.files import OUTCOME_FILE, WORKER_STATUS_FILE
from pytest_llem.isolation.protocol import ChildOutcome, ProgressReader, WorkerStatus, read_model
from pytest_llem.processes import signal_name
from pytest_llem.progress import ProgressEvent
from pytest_llem.results import ExperimentResult

#: Called at every poll with the phases reported since the last call (often none).
ProgressCallback = Callable[[list[ProgressEvent]], None]


class ProgressRelay:
    """Reads the worker's new phases at each poll and passes them on; remembers the last one."""

    def __init__(self, work_dir: Path, on_progress: ProgressCallback | None) -> None:
        self._reader = ProgressReader(work_dir)
        self._on_progress = on_progress
        self.last_phase: str | None = None

    def poll(self) -> None:
        events = self._reader.read_new()
        if events:
            self.last_phase = events[-1].describe()
        if self._on_progress is not None:
            self._on_progress(events)

    def during(self) -> str:
        return f"last phase: {self.last_phase}; " if self.last_phase else ""


def read_outcome(
    work_dir: Path, supervisor_returncode: int, last_phase: str | None = None
) -> ExperimentResult:
    outcome = read_model(work_dir, OUTCOME_FILE, ChildOutcome)
    if outcome is not None:
        if outcome.result is not None:
            return outcome.result
        if outcome.failure is not None:
            if outcome.failure.plain:
                raise ExperimentFailed(outcome.failure.message)
            raise ExperimentFailed(
                f"workload raised {outcome.failure.exception_type}: {outcome.failure.message}\n"
                f"{outcome.failure.traceback}"
            )
    status = read_model(work_dir, WORKER_STATUS_FILE, WorkerStatus)
    returncode = status.returncode if status is not None else supervisor_returncode
    during = f" (last phase: {last_phase})" if last_phase else ""
    raise ExperimentFailed(describe_exit(returncode) + during)


def describe_exit(returncode: int) -> str:
    if returncode < 0:
        name = signal_name(-returncode)
        hint = " (the out-of-memory killer sends SIGKILL; see dmesg)" if -returncode == signal.SIGKILL else ""
        return f"child was killed by {name}{hint} before reporting a result"
    return f"child exited with code {returncode} before reporting a result"
