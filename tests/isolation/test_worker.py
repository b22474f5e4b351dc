"""The worker as a real process (`python -m pytest_llem.isolation.worker WORK_DIR`), started
the way its supervisor starts it: it runs the request's workload measured and writes the
result, or the failure as data (a workload's traceback without pytest-llem's frames, its own
errors as one plain line), appends its phases, and refuses to run under any other parent."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from helpers import SUPPORT_DIR

from pytest_llem.config import build_config
from pytest_llem.isolation.files import OUTCOME_FILE, REQUEST_FILE
from pytest_llem.isolation.protocol import (
    ChildOutcome,
    ExperimentRequest,
    ProgressReader,
    read_model,
    write_model,
)
from pytest_llem.isolation.workload import WorkloadSpec
from pytest_llem.progress import IMPORTING, TEARING_DOWN


def run_worker(work_dir: Path, ref: str, supervisor_pid: int | None = None, **fields) -> int:
    request = ExperimentRequest(
        experiment_id="exp-1",
        config=build_config({"energy": "none", **fields}),
        config_hash="h" * 16,
        workload=WorkloadSpec(ref=ref),
        state_dir=str(work_dir / "state"),
        sys_path=[str(SUPPORT_DIR)],  # how the child finds the test's modules: the request says
    )
    write_model(work_dir, REQUEST_FILE, request)
    # This process stands where the supervisor would: the worker's parent, named in its environment.
    env = dict(os.environ, PYTEST_LLEM_SUPERVISOR_PID=str(supervisor_pid or os.getpid()))
    done = subprocess.run(
        [sys.executable, "-m", "pytest_llem.isolation.worker", str(work_dir)], env=env, timeout=60
    )
    return done.returncode


def outcome(work_dir: Path) -> ChildOutcome:
    read = read_model(work_dir, OUTCOME_FILE, ChildOutcome)
    assert read is not None
    return read


def test_the_workloads_result_is_written_with_the_requests_identity(tmp_path: Path):
    assert run_worker(tmp_path, "workloads:count_tokens", batch_size=2) == 0
    result = outcome(tmp_path).result
    assert (result.experiment_id, result.config_hash, result.workload) == (
        "exp-1",
        "h" * 16,
        "workloads:count_tokens",
    )
    assert (result.output_tokens, result.input_tokens) == (
        16,
        4,
    )  # what count_tokens records for batch_size=2
    assert result.extra["checksum"] == sum(i * i for i in range(40_000))
    assert result.config["batch_size"] == 2 and result.window_count == 1
    assert result.energy_j is None  # energy="none"


def test_the_phases_begin_with_importing_and_end_with_tearing_down(tmp_path: Path):
    assert run_worker(tmp_path, "workloads:slow_phases", params={"phase_s": 0.05}) == 0
    phases = [event.phase for event in ProgressReader(tmp_path).read_new()]
    assert phases[0] == IMPORTING and phases[-1] == TEARING_DOWN
    assert len(phases) > 2  # the workload's own phases in between
    assert set(outcome(tmp_path).result.phase_durations_s) >= {IMPORTING, *phases[1:-1]}


def test_a_workloads_exception_comes_back_as_data_with_only_the_users_frames(tmp_path: Path):
    assert run_worker(tmp_path, "workloads:raise_error") == 1
    failure = outcome(tmp_path).failure
    assert (failure.exception_type, failure.message, failure.plain) == (
        "ValueError",
        "the workload broke on purpose",
        False,
    )
    assert failure.traceback.rstrip().endswith("ValueError: the workload broke on purpose")
    assert "workloads.py" in failure.traceback
    assert "pytest_llem" not in failure.traceback


def test_rounds_the_workload_never_iterates_are_a_plain_one_line_failure(tmp_path: Path):
    assert run_worker(tmp_path, "workloads:count_tokens", rounds=3) == 1
    failure = outcome(tmp_path).failure
    assert failure.plain and failure.exception_type == "ConfigError"
    assert failure.message == (
        "rounds=3, but the workload never iterates ctx.rounds(); loop `for _ in ctx.rounds():` "
        "around its measured windows"
    )


def test_a_worker_whose_parent_is_not_its_supervisor_runs_nothing(tmp_path: Path):
    # Its supervisor already gone (the worker reparented): nothing would tear it down in time.
    assert run_worker(tmp_path, "workloads:count_tokens", supervisor_pid=os.getpid() + 1_000_000) == 1
    assert not (tmp_path / OUTCOME_FILE).exists()
    assert ProgressReader(tmp_path).read_new() == []


def test_the_outcome_lists_the_installed_modules_the_workload_imported(tmp_path: Path):
    # `import_inside` imports them inside the function: a stdlib module nothing else here
    # imports, one on the deny-list, and one of the tests' own folder (installed nowhere).
    modules = ["tabnanny", "this", "simulated_windows"]
    assert run_worker(tmp_path, "workloads:import_inside", params={"modules": modules}) == 0
    reported = outcome(tmp_path).imported_modules
    assert "tabnanny" in reported and "pydantic" in reported
    assert not {"this", "simulated_windows", "workloads", "__main__"} & set(reported)
    assert reported == sorted(reported) and all("." not in name for name in reported)


def test_a_failed_workload_still_lists_what_it_imported(tmp_path: Path):
    assert (
        run_worker(tmp_path, "workloads:import_inside", params={"modules": ["tabnanny", "no_such_mod"]}) == 1
    )
    read = outcome(tmp_path)
    assert read.failure is not None and "tabnanny" in read.imported_modules
