"""The files pytest and its isolated child exchange, as validated JSON.

A private work folder per experiment holds three files: the request the parent writes,
the outcome the worker writes (atomically, so the parent never reads half of it), and the
worker's exit status the supervisor writes. Files rather than pipes: a 10 MB result
cannot deadlock a full pipe buffer, and nothing is lost if the parent is busy.
"""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, Field

from pytest_llem.config import ExperimentConfig
from pytest_llem.energy.meter import MeterOptions
from pytest_llem.isolation.workload import WorkloadSpec
from pytest_llem.results import ExperimentResult
from pytest_llem.store.atomic import atomic_write_text


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


class ChildOutcome(BaseModel):
    """A result, or the failure that prevented one."""

    result: ExperimentResult | None = None
    failure: WorkloadFailure | None = None


class WorkerStatus(BaseModel):
    """How the worker process ended, as the supervisor saw it (negative: killed by that signal)."""

    returncode: int


def write_model(work_dir: Path, name: str, model: BaseModel) -> None:
    atomic_write_text(work_dir / name, model.model_dump_json())


ModelT = TypeVar("ModelT", bound=BaseModel)


def read_model(work_dir: Path, name: str, model_type: type[ModelT]) -> ModelT | None:
    path = work_dir / name
    if not path.exists():
        return None
    return model_type.model_validate_json(path.read_bytes())
