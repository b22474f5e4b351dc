"""The worker as a real process (`python -m pytest_llem.isolation.worker WORK_DIR`), started
the way its supervisor starts it: it runs the request's workload measured and writes the
result, or the failure as data (a workload's traceback without pytest-llem's frames, its own
errors as one plain line), appends its phases, and refuses to run under any other parent.
And the worker's own flags on what it measured: rounds shorter than the minimum window
(`short_window`) and a host busy with other processes (`host_busy`)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import workloads
from helpers import SUPPORT_DIR

from pytest_llem.config import build_config
from pytest_llem.energy import quality
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
from pytest_llem.results import ExperimentResult
from pytest_llem.session import BenchmarkSession
from pytest_llem.settings import LlemSettings


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


CASE = "tests/test_worker.py::case"
# Processes that keep a CPU busy, per CPU: the experiment's own and the planted load alike, so
# the planted load takes a large share whatever else this machine runs.
SPINNERS_PER_CPU = 4


def run_in_session(state_dir: Path, workload, fields: dict, **settings) -> ExperimentResult:
    session = BenchmarkSession(
        LlemSettings(enabled=True, state_dir=state_dir, energy="none", preload="none", **settings)
    )
    session.start()
    return session.run_experiment(CASE, workload, [fields])


@contextmanager
def planted_load(processes: int, folder: Path) -> Iterator[str]:
    """Processes outside the experiment's tree (children of this pytest process) that spin on
    the CPUs while the window of `spinning_case` is open; yields the flag file that case
    holds meanwhile. They spin only then: the share is measured over the window, and a load
    before it would only slow the experiment's start (most of this test's time, it was).

    Each in a session of its own: where the kernel groups the scheduling by session
    (autogroup), CPU time is shared between sessions before processes, so spinners in one
    session would together get no more than the experiment's session, and a single busy
    process elsewhere on the machine would get as much as either."""
    folder.mkdir(parents=True, exist_ok=True)
    flag = folder / "window-open"
    spinners = [
        subprocess.Popen(
            [sys.executable, "-c", workloads.SPIN_WHILE_FLAGGED, str(flag)], start_new_session=True
        )
        for _ in range(processes)
    ]
    try:
        deadline = time.monotonic() + 60
        while len(list(folder.glob("window-open.ready-*"))) < processes:  # all waiting for the flag
            assert time.monotonic() < deadline, "the planted load did not start within 60 s"
            time.sleep(0.01)
        yield str(flag)
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait()


def spinning_case(state_dir: Path, flag: str | None = None, **settings) -> ExperimentResult:
    spinners = SPINNERS_PER_CPU * (os.cpu_count() or 1)
    fields = {"min_window_s": 0, "params": {"processes": spinners, "spin_s": 1.5, "flag": flag}}
    return run_in_session(state_dir, workloads.spinning_children, fields, **settings)


def host_busy(result: ExperimentResult) -> list[str]:
    return [w.message for w in result.warnings if w.code == quality.HOST_BUSY]


def test_a_case_run_beside_a_busy_process_is_flagged_host_busy_with_the_share(tmp_path: Path):
    with planted_load(SPINNERS_PER_CPU * (os.cpu_count() or 1), tmp_path / "load") as flag:
        result = spinning_case(tmp_path / "state", flag, host_busy_share=0.25)
    share = result.host_other_cpu_share
    # As many spinners outside as inside: about half the CPUs' time is others', more if the
    # machine is busy besides.
    assert share is not None and share >= 0.35
    (message,) = host_busy(result)
    assert message.startswith(f"other processes took {share:.0%} of the host's CPU time")
    assert "(limit 25%, --llem-host-busy-share)" in message
    assert result.flagged  # so the gate leaves it out unless --llem-gate-flagged


# It compares the share of the CPUs other processes took in two runs: other tests beside the
# quiet run make it no quieter than the loaded one.
@pytest.mark.alone
def test_a_case_without_the_planted_load_measures_less_of_others_and_is_not_flagged(tmp_path: Path):
    # The limit is what the planted load took: this machine may run other jobs, so the quiet
    # run is compared with the busy one, not with zero. Three spinners outside for each one
    # inside, each in a session of its own: the loaded run's share is 3/4 or more however busy
    # the machine is, and the quiet run's stays below it unless others run three times as
    # many busy sessions as the case has spinners. (Failed when the planted spinners shared
    # one session and a single busy process ran beside the tests: with the kernel's
    # autogroup scheduling that process alone took as much CPU as the experiment.)
    with planted_load(3 * SPINNERS_PER_CPU * (os.cpu_count() or 1), tmp_path / "load") as flag:
        loaded = spinning_case(tmp_path / "loaded", flag)
    assert loaded.host_other_cpu_share is not None
    quiet = spinning_case(tmp_path / "quiet", host_busy_share=loaded.host_other_cpu_share)
    assert quiet.host_other_cpu_share is not None
    assert quiet.host_other_cpu_share < loaded.host_other_cpu_share
    assert host_busy(quiet) == []


def test_a_cpu_case_runs_its_passes_for_the_cpus_minimum_window_by_default(tmp_path: Path):
    result = run_in_session(tmp_path / "state", workloads.sleeping_passes, {"params": {"pass_s": 0.05}})
    assert result.extra["min_window_s"] == quality.MIN_CPU_WINDOW_S
    assert result.duration_s >= quality.MIN_CPU_WINDOW_S and result.extra["passes"] > 1
    assert quality.SHORT_WINDOW not in [w.code for w in result.warnings]
    assert result.host_other_cpu_share is not None  # measured, flagged or not


def test_a_short_cpu_window_is_flagged_short_window_with_no_energy_meter(tmp_path: Path):
    result = run_in_session(tmp_path / "state", workloads.two_windows, {}, host_busy_share=1.0)
    (short,) = [w for w in result.warnings if w.code == quality.SHORT_WINDOW]
    assert f"under min_window_s={quality.MIN_CPU_WINDOW_S:g} s" in short.message
    assert result.flagged


def test_a_limit_of_one_never_flags_host_busy(tmp_path: Path):
    with planted_load(os.cpu_count() or 1, tmp_path / "load") as flag:
        result = spinning_case(tmp_path / "state", flag, host_busy_share=1.0)
    assert result.host_other_cpu_share is not None and result.host_other_cpu_share > 0
    assert host_busy(result) == []
