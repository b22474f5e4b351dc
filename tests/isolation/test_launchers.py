"""The launcher seam: `make_launcher` picks one from `--llem-launcher`, and the session runs
each experiment through it, whichever it is (a local child group, a Slurm job, or another)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import workloads

from pytest_llem.config import build_config
from pytest_llem.errors import ConfigError, ExperimentInterrupted
from pytest_llem.isolation import preload
from pytest_llem.isolation.launchers import LocalLauncher, make_launcher
from pytest_llem.isolation.leases import LEASE_DIR, TABLE_FILE, LeaseTable
from pytest_llem.isolation.signals import InterruptGuard
from pytest_llem.isolation.slurm import SlurmLauncher
from pytest_llem.session import BenchmarkSession
from pytest_llem.settings import LlemSettings

NODEID = "tests/test_runner.py::case"


def _settings(tmp_path: Path, **fields: Any) -> LlemSettings:
    fields = {"energy": "none", "preload": "none", **fields}
    return LlemSettings(enabled=True, state_dir=tmp_path / "state", **fields)


def _made(settings: LlemSettings):
    return make_launcher(settings, note_problem=print, notify=print, interrupted=lambda: False)


def test_the_launcher_setting_picks_the_launcher(tmp_path: Path):
    local = _made(_settings(tmp_path))
    slurm = _made(_settings(tmp_path, launcher="slurm"))
    assert isinstance(local, LocalLauncher)
    assert (local.how_stopped, local.shares_host) == ("process group was killed", True)
    assert isinstance(slurm, SlurmLauncher)
    assert (slurm.how_stopped, slurm.shares_host) == ("Slurm job was cancelled", False)


class Recorder:
    """A launcher that passes every call on to `launcher` and notes its name."""

    def __init__(self, launcher: Any) -> None:
        self._launcher = launcher
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._launcher, name)
        if not callable(value):
            return value

        def recorded(*args: Any, **kwargs: Any) -> Any:
            self.calls.append(name)
            return value(*args, **kwargs)

        return recorded


def test_the_session_prepares_launches_each_process_places_and_releases(tmp_path: Path):
    bench = BenchmarkSession(_settings(tmp_path))
    bench.start()
    recorder = bench.launcher = Recorder(bench.launcher)
    result = bench.run_experiment(NODEID, workloads.count_tokens, [{"repeats": 2}])
    assert recorder.calls == ["workload_named", "prepare", "launch", "launch", "placed", "release"]
    assert result.placement is not None and result.placement.host
    assert LeaseTable(bench.settings.state_dir).rows() == []  # placed: the lease is gone


class StoppedLauncher(LocalLauncher):
    """A launcher whose experiments a signal always stops, in its own way."""

    how_stopped = "simulated job was stopped"

    def launch(self, *args: Any, **kwargs: Any) -> Any:
        raise ExperimentInterrupted("SIGTERM")


def test_an_interrupted_experiments_state_says_how_its_launcher_stopped_it(tmp_path: Path):
    bench = BenchmarkSession(_settings(tmp_path))
    bench.start()
    bench.launcher = StoppedLauncher(bench.settings)
    with pytest.raises(ExperimentInterrupted):
        bench.run_experiment(NODEID, workloads.count_tokens, [{}])
    (entry,) = bench.record.entries
    state = bench.states.load(entry.experiment_id)
    assert state is not None
    assert state.error_message == "interrupted by SIGTERM; its simulated job was stopped"
    assert LeaseTable(bench.settings.state_dir).rows() == []  # released on the way out


def test_what_the_local_launcher_meets_reaches_the_sessions_problems(tmp_path: Path):
    state_dir = tmp_path / "state"
    LeaseTable(state_dir).acquire("old", None, [])
    path = state_dir / LEASE_DIR / TABLE_FILE
    rows = json.loads(path.read_text())
    for row in rows["leases"].values():
        row["pid_start_time"] -= 3600  # the holder it names is gone
    path.write_text(json.dumps(rows))
    bench = BenchmarkSession(_settings(tmp_path))
    bench.start()
    bench.run_experiment(NODEID, workloads.count_tokens, [{}])
    assert bench.problems == [
        f"reclaimed the lease of old (0 GPU(s)): its pytest process (pid {os.getpid()}) is gone"
    ]


def test_the_local_launcher_waits_for_the_preloaded_interpreter_only_to_measure_idle(
    fake_nvml, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    """A meter that measures no idle baseline ("none", as in smoke mode) waits for nothing."""
    fake_nvml.configure([fake_nvml.FakeGpu(uuid="GPU-0000-sim")])
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    waits = []
    wait_ready = preload.Preloader.wait_ready
    monkeypatch.setattr(preload.Preloader, "wait_ready", lambda self: (waits.append(1), wait_ready(self)))
    settings = _settings(
        tmp_path, preload="pytest_llem.isolation.worker", baseline_s=0.05, sample_interval_s=0.01
    )
    launcher = LocalLauncher(settings)
    guard = InterruptGuard()
    unmeasured, measured = build_config({"energy": "none"}), build_config({"energy": "nvml"})
    launcher.cases_collected([unmeasured], will_run=True)
    try:
        options = launcher.prepare(unmeasured, "smoke", {}, guard)
        launcher.release()
        assert waits == [] and options.baseline_power_w == {}
        assert options.gpu_uuids == ["GPU-0000-sim"]  # the lease, even with nothing to measure
        options = launcher.prepare(measured, "measured", {}, guard)
        launcher.release()
    finally:
        launcher.close()
    assert waits == [1]
    (conditions,) = options.baseline_conditions.values()
    assert "after the preloaded interpreter had finished its imports and model reads" in conditions


def test_the_slurm_launcher_holds_no_lease_and_measures_nothing_here(tmp_path: Path):
    settings = _settings(tmp_path, launcher="slurm", energy="nvml")
    launcher = SlurmLauncher(settings)
    env: dict[str, str] = {}
    options = launcher.prepare(build_config({"gpus": 2}), "e", env, InterruptGuard())
    assert options == settings.meter_options() and env == {}
    assert not (settings.state_dir / LEASE_DIR).exists()


def test_the_slurm_launcher_refuses_to_start_without_slurms_commands(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    monkeypatch.setenv("PATH", str(tmp_path))
    bench = BenchmarkSession(_settings(tmp_path, launcher="slurm"))
    with pytest.raises(ConfigError, match="srun, scancel, scontrol not found on PATH"):
        bench.start()


def test_a_session_runs_its_experiment_as_a_slurm_job(
    slurm_cluster, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    for name, value in slurm_cluster.env.items():
        monkeypatch.setenv(name, value)
    bench = BenchmarkSession(_settings(tmp_path, launcher="slurm"))
    bench.start()
    try:
        result = bench.run_experiment(NODEID, workloads.count_tokens, [{}])
    finally:
        bench.close_preloaded()
    assert bench.start_notes[0].startswith("Slurm jobs exchange requests and results through the state dir")
    assert result.output_tokens > 0 and result.start_method == "cold"
    assert result.placement is not None and result.placement.job_id is not None
    assert bench.problems == []


def test_an_xdist_controllers_launcher_shares_one_preloaded_interpreter_that_workers_fork_from(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    from helpers import new_preloaded_interpreters, preloaded_interpreters

    monkeypatch.delenv("PYTEST_LLEM_STORE", raising=False)
    # Under xdist an earlier test on this worker may leave its interpreter until its session is
    # collected: only the ones this test starts count.
    before = preloaded_interpreters(os.getpid())
    controller = _made(_settings(tmp_path, preload="auto"))
    address = controller.share_preloaded()
    assert address is not None and controller.share_preloaded() == address  # one, however asked
    (server,) = new_preloaded_interpreters(before, os.getpid(), count=1)
    sessions = [BenchmarkSession(_settings(tmp_path, preload="auto")) for _ in range(2)]
    try:
        for bench in sessions:
            bench.start()
            bench.launcher.attach_preloaded(address)
        results = [bench.run_experiment(NODEID, workloads.report_start, [{}]) for bench in sessions]
        assert [r.start_method for r in results] == ["preloaded", "preloaded"], [
            r.start_note for r in results
        ]
        assert [r.extra["starter_pid"] for r in results] == [server, server]
        assert [pid for pid in preloaded_interpreters(os.getpid()) if pid not in before] == [server]
    finally:
        for bench in sessions:
            bench.close_preloaded()
        controller.close()
    assert [pid for pid in preloaded_interpreters(os.getpid()) if pid not in before] == []


def test_no_preloaded_interpreter_is_shared_without_preloading_or_under_slurm(tmp_path: Path):
    assert _made(_settings(tmp_path, preload="none")).share_preloaded() is None
    assert _made(_settings(tmp_path, launcher="slurm")).share_preloaded() is None
