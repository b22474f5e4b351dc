"""The files pytest and its isolated child exchange, as validated JSON.

A private work folder per experiment holds four files: the request the parent writes,
the outcome the worker writes (atomically, so the parent never reads half of it), the
worker's exit status the supervisor writes, and the phases the worker appends as it goes
(one JSON line each; the parent reads only complete lines, so a child that dies mid-write
leaves at most one half line, which is never read). Files rather than pipes: a 10 MB result
cannot deadlock a full pipe buffer, and nothing is lost if the parent is busy.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, Field, ValidationError

from pytest_llem.base.atomic import atomic_write_text
from pytest_llem.config import ExperimentConfig
from pytest_llem.energy.meter import MeterOptions
from pytest_llem.isolation.files import PROGRESS_FILE
from pytest_llem.isolation.workload import WorkloadSpec
from pytest_llem.progress import ProgressEvent
from pytest_llem.results import ExperimentResult


class ExperimentRequest(BaseModel):
    experiment_id: str
    config: ExperimentConfig
    config_hash: str
    workload: WorkloadSpec
    state_dir: str
    #: The parent's import path, so test modules import in the child as they did in pytest.
    sys_path: list[str] = Field(default_factory=list)
    meter: MeterOptions = Field(default_factory=MeterOptions)


class WorkloadFailure(BaseModel):
    """An exception raised inside the child, carried back as text."""

    exception_type: str
    message: str
    traceback: str
    #: pytest-llem's own one-line error (a meter that cannot run, ...): shown without a traceback.
    plain: bool = False


class OutcomeImports(BaseModel):
    """The part of the outcome the preloaded start method reads (`preload.Preloader`), without
    validating the rest: the installed top-level modules the worker had imported by its end
    (`forkserver.learnable_modules`), which `--llem-preload=auto` imports before later forks."""

    imported_modules: list[str] = Field(default_factory=list)


class ChildOutcome(OutcomeImports):
    """A result, or the failure that prevented one."""

    result: ExperimentResult | None = None
    failure: WorkloadFailure | None = None


class WorkerStatus(BaseModel):
    """How the worker process ended, as the supervisor saw it (negative: killed by that signal)."""

    returncode: int


def write_model(work_dir: Path, name: str, model: BaseModel) -> None:
    # The work folder is temporary and read back by the live parent: atomic, not fsynced.
    atomic_write_text(work_dir / name, model.model_dump_json(), durable=False)


ModelT = TypeVar("ModelT", bound=BaseModel)


def read_model(work_dir: Path, name: str, model_type: type[ModelT]) -> ModelT | None:
    path = work_dir / name
    if not path.exists():
        return None
    return model_type.model_validate_json(path.read_bytes())


def append_progress(work_dir: Path, event: ProgressEvent) -> None:
    """Append one phase as one line, in a single write to a file opened for appending."""
    line = (event.model_dump_json() + "\n").encode()
    fd = os.open(work_dir / PROGRESS_FILE, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


class ProgressReader:
    """The parent's side: each `read_new` returns the phases appended since the last call."""

    def __init__(self, work_dir: Path) -> None:
        self.path = work_dir / PROGRESS_FILE
        self._offset = 0

    def read_new(self) -> list[ProgressEvent]:
        try:
            with self.path.open("rb") as f:
                f.seek(self._offset)
                data = f.read()
        except FileNotFoundError:
            return []
        complete, _, _ = data.rpartition(b"\n")  # a line still being written waits for the next call
        if not complete:
            return []
        self._offset += len(complete) + 1
        events = []
        for line in complete.split(b"\n"):
            try:
                events.append(ProgressEvent.model_validate_json(line))
            except ValidationError:
                continue  # progress is for display: a bad line is skipped, never fatal
        return events
