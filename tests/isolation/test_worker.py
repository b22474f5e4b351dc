"""The worker's own flags on what it measured, in real isolated children: rounds shorter than
the minimum window (`short_window`) and a host busy with other processes (`host_busy`)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import workloads

from pytest_llem.energy import quality
from pytest_llem.results import ExperimentResult
from pytest_llem.session import BenchmarkSession
from pytest_llem.settings import LlemSettings

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
def planted_load(processes: int) -> Iterator[None]:
    """Processes outside the experiment's tree (children of this pytest process) spinning on the CPUs."""
    spinners = [subprocess.Popen([sys.executable, "-c", workloads.SPIN_FOR, "600"]) for _ in range(processes)]
    try:
        time.sleep(0.5)  # all of them started and spinning before the window opens
        yield
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait()


def spinning_case(state_dir: Path, **settings) -> ExperimentResult:
    spinners = SPINNERS_PER_CPU * (os.cpu_count() or 1)
    fields = {"min_window_s": 0, "params": {"processes": spinners, "spin_s": 1.5}}
    return run_in_session(state_dir, workloads.spinning_children, fields, **settings)


def host_busy(result: ExperimentResult) -> list[str]:
    return [w.message for w in result.warnings if w.code == quality.HOST_BUSY]


def test_a_case_run_beside_a_busy_process_is_flagged_host_busy_with_the_share(tmp_path: Path):
    with planted_load(SPINNERS_PER_CPU * (os.cpu_count() or 1)):
        result = spinning_case(tmp_path / "state", host_busy_share=0.25)
    share = result.host_other_cpu_share
    # As many spinners outside as inside: about half the CPUs' time is others', more if the
    # machine is busy besides.
    assert share is not None and share >= 0.35
    (message,) = host_busy(result)
    assert message.startswith(f"other processes took {share:.0%} of the host's CPU time")
    assert "(limit 25%, --llem-host-busy-share)" in message
    assert result.flagged  # so the gate leaves it out unless --llem-gate-flagged


def test_a_case_without_the_planted_load_measures_less_of_others_and_is_not_flagged(tmp_path: Path):
    # The limit is what the planted load took: this machine may run other jobs, so the quiet
    # run is compared with the busy one, not with zero.
    with planted_load(SPINNERS_PER_CPU * (os.cpu_count() or 1)):
        loaded = spinning_case(tmp_path / "loaded")
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
    with planted_load(os.cpu_count() or 1):
        result = spinning_case(tmp_path / "state", host_busy_share=1.0)
    assert result.host_other_cpu_share is not None and result.host_other_cpu_share > 0
    assert host_busy(result) == []
