"""Experiments in real isolated children, driven through BenchmarkSession without pytest's plugin."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import workloads
from helpers import START_METHODS, read_pids, wait_until_all_gone

from pytest_llem import session as session_module
from pytest_llem.backends import BACKEND_ENV_DEFAULTS
from pytest_llem.errors import ConfigError, ExperimentFailed, WorkloadError
from pytest_llem.isolation import launcher
from pytest_llem.isolation.launcher import build_experiment_env, reclaim_work_dirs
from pytest_llem.processes import process_start_time
from pytest_llem.session import BenchmarkSession
from pytest_llem.settings import LlemSettings
from pytest_llem.store.experiments import ExperimentPhase
from pytest_llem.store.history import RunHistory
from pytest_llem.store.report import load_report
from pytest_llem.store.state import StateManager


def run(bench: BenchmarkSession, workload, **fields):
    return bench.run_experiment("tests/test_runner.py::case", workload, [fields])


# A fresh preloaded interpreter has not imported torch (a shared one may have learnt it).
@pytest.mark.own_preloaded_interpreter
@pytest.mark.parametrize("preload", START_METHODS)
def test_child_runs_in_its_own_session_and_process_group(bench: BenchmarkSession, preload: str):
    result = run(bench, workloads.report_identity)
    extra = result.extra
    assert extra["pgid"] != os.getpgrp()
    assert extra["sid"] == extra["pgid"] != os.getsid(0)
    assert extra["pid"] != os.getpid()
    assert extra["env"]["PYTEST_LLEM_EXPERIMENT_ID"] == result.experiment_id
    assert extra["torch_imported"] is False
    assert result.start_method == ("cold" if preload == "none" else "preloaded")


def test_token_counts_and_rates_come_back_validated(bench: BenchmarkSession):
    result = run(bench, workloads.count_tokens, batch_size=3)
    assert (result.output_tokens, result.input_tokens, result.window_count) == (24, 4, 1)
    assert result.tokens_per_s == pytest.approx(24 / result.duration_s)
    assert result.energy_j is None and result.energy_per_token_j is None and result.energy_source is None
    assert [w.code for w in result.warnings] == ["energy_not_measured"]
    assert result.workload == "workloads:count_tokens"


def test_windows_add_up_and_exclude_what_is_outside_them(bench: BenchmarkSession):
    result = run(bench, workloads.two_windows)
    assert result.window_count == 2
    assert result.output_tokens == 10
    assert 0.2 <= result.duration_s < 0.5  # two 0.1 s windows; the 0.6 s outside is not counted


def test_whole_call_is_the_window_when_none_is_opened(bench: BenchmarkSession):
    result = run(bench, workloads.no_window)
    assert result.duration_s >= 0.2
    assert bench.states.load(result.experiment_id).phase is ExperimentPhase.DONE


def test_state_goes_through_all_phases_and_keeps_the_result(bench: BenchmarkSession):
    result = run(bench, workloads.count_tokens)
    state = bench.states.load(result.experiment_id)
    assert (state.phase, state.failed) == (ExperimentPhase.DONE, False)
    assert state.result == result
    assert state.subprocess_pid is not None and state.subprocess_start_time is not None


@pytest.mark.parametrize("preload", START_METHODS)
def test_a_workload_exception_comes_back_with_its_traceback(bench: BenchmarkSession):
    with pytest.raises(ExperimentFailed) as excinfo:
        run(bench, workloads.raise_error)
    message = str(excinfo.value)
    assert "workload raised ValueError: the workload broke on purpose" in message
    assert 'workloads.py", line' in message and "raise_error" in message
    assert "pytest_llem" not in message  # the user's frames, not ours
    state = bench.states.all_states()[0]
    assert state.failed and state.phase is ExperimentPhase.INITIALISING


@pytest.mark.parametrize("preload", START_METHODS)
@pytest.mark.parametrize(
    ("workload", "expected"),
    [
        (workloads.exit_three, "child exited with code 3 before reporting a result"),
        (workloads.segfault, "child was killed by SIGSEGV before reporting a result"),
        (workloads.oom_killed, "child was killed by SIGKILL (the out-of-memory killer sends SIGKILL"),
    ],
)
def test_a_crashing_child_fails_with_what_happened(bench: BenchmarkSession, workload, expected):
    with pytest.raises(ExperimentFailed) as excinfo:
        run(bench, workload)
    assert expected in str(excinfo.value)
    assert bench.states.all_states()[0].failed


def test_the_session_goes_on_after_a_crash(bench: BenchmarkSession):
    with pytest.raises(ExperimentFailed):
        run(bench, workloads.exit_three)
    assert run(bench, workloads.count_tokens).output_tokens == 8
    assert [e.status for e in bench.record.entries] == ["failed", "passed"]


@pytest.mark.parametrize("preload", START_METHODS)
def test_timeout_kills_the_whole_group(bench: BenchmarkSession, tmp_path: Path):
    pid_file = tmp_path / "pids.json"
    started = time.monotonic()
    # The limit counts from the spawn, start-up included; it must leave the workload time to
    # start its grandchildren even on a loaded machine (a 1.5 s limit did not, on 2 busy cores).
    killed = r"timed out after 10 s; its process group was killed"
    with pytest.raises(ExperimentFailed, match=killed) as failed:
        run(bench, workloads.hang_with_stubborn_children, timeout=10, params={"pid_file": str(pid_file)})
    # The case's field set the limit, and wins over --llem-timeout: the field is what to raise.
    assert "raise the case's timeout= field (its llem marker or llem.run)" in str(failed.value)
    assert "raise --llem-timeout" not in str(failed.value)
    assert time.monotonic() - started < 10 + 2.0 + 5.0  # limit + grace + slack for a busy machine
    pids = read_pids(pid_file)
    assert len(pids) == 4  # supervisor, worker, two grandchildren that ignore SIGTERM
    assert wait_until_all_gone(pids, timeout_s=0.5) == []
    state = bench.states.all_states()[0]
    assert state.failed and state.phase is ExperimentPhase.MEASURING and "timed out" in state.error_message


def test_settings_timeout_applies_when_the_config_sets_none(state_dir: Path, tmp_path: Path):
    bench = BenchmarkSession(LlemSettings(enabled=True, state_dir=state_dir, timeout_s=8.0))
    try:
        with pytest.raises(ExperimentFailed, match="timed out after 8 s") as failed:
            run(bench, workloads.hang_with_stubborn_children, params={"pid_file": str(tmp_path / "p.json")})
    finally:
        bench.close_preloaded()  # its preloaded interpreter is not left to the next test
    assert "raise --llem-timeout (ini llem_timeout), or give the case a timeout= field" in str(failed.value)
    assert wait_until_all_gone(read_pids(tmp_path / "p.json"), timeout_s=0.5) == []


def test_a_10_mb_result_does_not_deadlock(bench: BenchmarkSession):
    result = run(bench, workloads.big_payload, timeout=60)
    assert len(result.extra["blob"]) == 10 * 1024 * 1024


def _nested_holder():
    def nested(ctx):
        return None

    return nested


@pytest.mark.parametrize(
    ("workload", "match"),
    [
        (lambda ctx: None, "is a lambda"),
        (_nested_holder(), "nested function or closure"),
        (print, "must be a module-level function"),
        ("no_colon", "must be 'module:function'"),
    ],
)
def test_unshippable_workloads_are_refused_before_any_process_starts(
    bench: BenchmarkSession, workload, match
):
    with pytest.raises(WorkloadError, match=match):
        run(bench, workload)
    assert bench.states.all_states() == []


def test_workload_by_string_reference(bench: BenchmarkSession):
    assert run(bench, "workloads:count_tokens").workload == "workloads:count_tokens"


def test_no_workload_and_no_backend_is_a_clear_config_error(bench: BenchmarkSession):
    with pytest.raises(ConfigError, match="needs a workload function, or backend="):
        run(bench, None)


def test_resume_reuses_a_finished_experiment(state_dir: Path):
    first = BenchmarkSession(LlemSettings(enabled=True, state_dir=state_dir))
    original = run(first, workloads.count_tokens, batch_size=2)
    first.close_preloaded()
    again = BenchmarkSession(LlemSettings(enabled=True, state_dir=state_dir, resume=True))
    try:
        resumed = run(again, workloads.count_tokens, batch_size=2, timeout=99)  # timeout is not in the hash
        assert resumed.resumed and resumed.experiment_id == original.experiment_id
        assert resumed.model_dump(exclude={"resumed"}) == original.model_dump(exclude={"resumed"})
        assert again.record.entries[0].status == "resumed"
        assert len(again.states.all_states()) == 1
        fresh = run(again, workloads.count_tokens, batch_size=3)
        assert not fresh.resumed
    finally:
        again.close_preloaded()


def test_resume_skips_failed_experiments(state_dir: Path):
    first = BenchmarkSession(LlemSettings(enabled=True, state_dir=state_dir))
    with pytest.raises(ExperimentFailed):
        run(first, workloads.exit_three)
    first.close_preloaded()
    again = BenchmarkSession(LlemSettings(enabled=True, state_dir=state_dir, resume=True))
    try:
        with pytest.raises(ExperimentFailed):
            run(again, workloads.exit_three)
    finally:
        again.close_preloaded()


def test_no_secret_reaches_any_file(bench: BenchmarkSession, monkeypatch, state_dir: Path):
    secret = "hf_SuperSecretValue123"
    monkeypatch.setenv("HF_TOKEN", secret)
    with pytest.raises(ExperimentFailed, match="could not log in"):
        run(bench, workloads.leak_secret)
    run(bench, workloads.report_identity)
    path = bench.finish("failed", 1)
    assert "***" in load_report(path).experiments[0].error
    written = [p for p in state_dir.rglob("*") if p.is_file()]
    assert written and all(secret.encode() not in p.read_bytes() for p in written)
    assert all(
        str(Path.home()).encode() + b"/" not in p.read_bytes() for p in written if Path.home() != Path("/")
    )
    # The store's compressed parts too, read back as the views see them.
    stored = [s.model_dump_json() for s in StateManager(state_dir).all_states()]
    stored += [r.model_dump_json() for r in RunHistory(state_dir).runs()]
    assert len(stored) == 3 and all(secret not in text for text in stored)


def test_report_has_every_experiment_and_how_the_session_ended(bench: BenchmarkSession):
    ok = run(bench, workloads.count_tokens)
    with pytest.raises(ExperimentFailed):
        run(bench, workloads.exit_three)
    path = bench.finish("failed", 1)
    assert path == bench.settings.state_dir / "runs" / bench.record.report.run_id / "report.json"
    report = json.loads(path.read_text())
    assert report["outcome"] == "failed" and report["exit_code"] == 1
    assert report["plugin_version"] and report["python_version"] == ".".join(map(str, sys.version_info[:3]))
    first, second = report["experiments"]
    assert first["result"]["experiment_id"] == ok.experiment_id and first["phase"] == "done"
    assert first["result"]["tokens_per_s"] == pytest.approx(ok.tokens_per_s)
    assert second["failed"] and "exited with code 3" in second["error"] and second["result"] is None


class TestBuildExperimentEnv:
    def test_copies_hf_token_under_both_names(self, make_config):
        env = build_experiment_env(make_config({}), "exp", {"HF_TOKEN": "t0k3n-value"})
        assert env["HF_TOKEN"] == env["HUGGING_FACE_HUB_TOKEN"] == "t0k3n-value"
        assert env["PYTEST_LLEM_EXPERIMENT_ID"] == "exp"

    def test_no_token_means_neither_name(self, make_config):
        env = build_experiment_env(make_config({}), "exp", {"PATH": "/bin"})
        assert "HF_TOKEN" not in env and "HUGGING_FACE_HUB_TOKEN" not in env

    def test_pins_gpus_over_an_inherited_value(self, make_config):
        env = build_experiment_env(make_config({"gpus": [2, 3]}), "exp", {"CUDA_VISIBLE_DEVICES": ""})
        assert env["CUDA_VISIBLE_DEVICES"] == "2,3"

    def test_leaves_gpus_alone_when_config_names_none(self, make_config):
        env = build_experiment_env(make_config({}), "exp", {"CUDA_VISIBLE_DEVICES": "1"})
        assert env["CUDA_VISIBLE_DEVICES"] == "1"

    @pytest.mark.parametrize("fields", [{"device": "cpu"}, {"gpus": 0}])
    def test_a_cpu_only_case_sees_no_gpu_through_cuda(self, make_config, fields):
        # Unset, CUDA would show it every GPU of the host, a neighbour's leased one included.
        assert build_experiment_env(make_config(fields), "exp", {})["CUDA_VISIBLE_DEVICES"] == ""
        assert (
            build_experiment_env(make_config(fields), "exp", {"CUDA_VISIBLE_DEVICES": "1"})[
                "CUDA_VISIBLE_DEVICES"
            ]
            == ""
        )
        # A case that names its own devices keeps them.
        named = make_config({**fields, "env": {"CUDA_VISIBLE_DEVICES": "0"}})
        assert build_experiment_env(named, "exp", {})["CUDA_VISIBLE_DEVICES"] == "0"

    def test_a_case_that_may_use_gpus_never_gets_an_empty_device_list(self, make_config):
        # An empty value makes vLLM's workers fall back to the CPU silently: never added here.
        assert "CUDA_VISIBLE_DEVICES" not in build_experiment_env(make_config({}), "exp", {})

    def test_vllm_defaults_yield_to_the_user_environment_and_config(self, make_config):
        config = make_config({"backend": "vllm", "env": {"TORCH_COMPILE_DISABLE": "0"}})
        env = build_experiment_env(config, "exp", {"VLLM_WORKER_MULTIPROC_METHOD": "fork"})
        assert (
            env["VLLM_ENABLE_V1_MULTIPROCESSING"]
            == BACKEND_ENV_DEFAULTS["vllm"]["VLLM_ENABLE_V1_MULTIPROCESSING"]
        )
        assert env["VLLM_WORKER_MULTIPROC_METHOD"] == "fork"
        assert env["TORCH_COMPILE_DISABLE"] == "0"

    def test_vllm_defaults_only_for_the_vllm_backend(self, make_config):
        env = build_experiment_env(make_config({"backend": "pytorch"}), "exp", {})
        assert not set(BACKEND_ENV_DEFAULTS["vllm"]) & set(env)

    def test_the_stores_credentials_never_reach_the_child(self, make_config):
        store_url = "postgresql://llem:st0re-pw@db/llem"
        base = {
            "PYTEST_LLEM_STORE": store_url,
            "PGPASSWORD": "st0re-pw",
            "PYTEST_ADDOPTS": f"-q --llem-store={store_url}",
            "DATABASE_URL": "postgresql://app:other-pw@db/app",  # the workload's own: kept
            "PATH": "/bin",
        }
        env = build_experiment_env(make_config({}), "exp", base, store_url=store_url)
        assert not {"PYTEST_LLEM_STORE", "PGPASSWORD", "PYTEST_ADDOPTS"} & set(env)
        assert env["DATABASE_URL"] == base["DATABASE_URL"] and env["PATH"] == "/bin"
        # A store URL without a password leaves the other variables that name it alone.
        plain = build_experiment_env(
            make_config({}), "exp", {"PYTEST_ADDOPTS": "--llem-store=sqlite:///x"}, "sqlite:///x"
        )
        assert plain["PYTEST_ADDOPTS"] == "--llem-store=sqlite:///x"


class TestInterruptGuard:
    def test_records_the_first_signal_without_raising_and_restores_handlers(self):
        import signal

        from pytest_llem.isolation.signals import InterruptGuard

        before = signal.getsignal(signal.SIGTERM)
        guard = InterruptGuard()
        with guard.installed():
            os.kill(os.getpid(), signal.SIGTERM)
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)  # handlers run between bytecodes; give them a chance
        assert guard.received == signal.SIGTERM
        assert signal.getsignal(signal.SIGTERM) is before


def test_rounds_keep_each_rounds_figures_and_their_statistics(bench: BenchmarkSession):
    result = run(bench, workloads.measured_rounds, rounds=3)
    assert [r.index for r in result.rounds] == [0, 1, 2]
    assert all(r.output_tokens == 10 and r.duration_s >= 0.02 for r in result.rounds)
    assert result.output_tokens == 30 and result.window_count == 3
    assert result.duration_s == pytest.approx(sum(r.duration_s for r in result.rounds))
    stats = result.statistics["tokens_per_s"]
    assert stats.n == 3 and stats.min <= stats.median <= stats.max
    assert stats.ci95_low < stats.mean < stats.ci95_high
    single = run(bench, workloads.measured_rounds)
    assert single.rounds == [] and single.statistics == {} and single.output_tokens == 10


def test_passes_repeat_the_work_until_each_round_reaches_min_window_s(bench: BenchmarkSession):
    result = run(bench, workloads.sleeping_passes, rounds=2, min_window_s=0.3, params={"pass_s": 0.05})
    assert all(r.duration_s >= 0.3 for r in result.rounds)
    passes = result.extra["passes"]
    assert passes >= 2 * 6 and result.extra["min_window_s"] == 0.3
    assert result.output_tokens == 3 * passes  # every pass counted, none cut short
    assert "short_window" not in [w.code for w in result.warnings]


def test_without_a_minimum_and_without_a_gpu_meter_one_pass_runs(bench: BenchmarkSession):
    result = run(bench, workloads.sleeping_passes, params={"pass_s": 0.01})
    assert result.extra["passes"] == 1 and result.extra["min_window_s"] == 0.0
    assert [w.code for w in result.warnings] == ["energy_not_measured"]


def test_a_round_shorter_than_min_window_s_is_flagged_with_no_energy_meter(bench: BenchmarkSession):
    # measured_rounds ignores ctx.passes(): 0.02 s rounds against a 0.5 s minimum.
    result = run(bench, workloads.measured_rounds, rounds=2, min_window_s=0.5, energy="none")
    codes = [w.code for w in result.warnings]
    assert codes == ["energy_not_measured", "short_window"] and result.flagged
    (short,) = [w for w in result.warnings if w.code == "short_window"]
    assert (
        short.message.startswith("round 1 was measured for 0.0")
        and "under min_window_s=0.5 s" in short.message
    )
    assert "round 2 was measured" in short.message


def test_rounds_need_a_workload_that_iterates_them(bench: BenchmarkSession):
    with pytest.raises(ExperimentFailed, match=r"^rounds=2, but the workload never iterates ctx.rounds\(\)"):
        run(bench, workloads.count_tokens, rounds=2)


@pytest.mark.parametrize("preload", START_METHODS)
def test_repeats_run_the_experiment_in_fresh_children_and_pool_their_rounds(bench: BenchmarkSession):
    result = run(bench, workloads.measured_rounds, rounds=2, repeats=3)
    assert [(r.index, r.process) for r in result.rounds] == [(0, 0), (1, 0), (2, 1), (3, 1), (4, 2), (5, 2)]
    assert result.output_tokens == 60 and result.window_count == 6 and result.extra["repeats"] == 3
    assert result.statistics["tokens_per_s"].n == 6
    state = bench.states.load(result.experiment_id)
    assert state is not None and state.phase is ExperimentPhase.DONE and not state.failed
    # Whole-call workloads become one round per process.
    whole = run(bench, workloads.count_tokens, repeats=2)
    assert [r.process for r in whole.rounds] == [0, 1] and whole.output_tokens == 2 * 8


@pytest.mark.parametrize(
    "fields",
    [
        {"env": {"FOO": "a\0b"}},
        {"env": {"FOO=BAR": "x"}},
        {"experiment_id": "..."},
        {"params": {"x": float("nan")}},
        {"budget": {"energy_per_token_j": float("inf")}},
    ],
    ids=["nul-in-env", "equals-in-env-key", "dots-id", "nan-param", "inf-budget"],
)
def test_a_config_that_cannot_run_fails_in_one_line_and_leaves_no_state(
    bench: BenchmarkSession, state_dir: Path, fields: dict
):
    with pytest.raises(ConfigError) as excinfo:
        run(bench, workloads.count_tokens, **fields)
    assert "\n" not in str(excinfo.value)
    (entry,) = bench.record.entries
    assert entry.failed and entry.error == str(excinfo.value)
    assert StateManager(state_dir).all_states() == []


@pytest.fixture
def other_live_session():
    """A live process standing in for another pytest session on this machine."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield proc.pid
    proc.kill()
    proc.wait()


def _held_by(states, experiment_id: str, pid: int, phase: ExperimentPhase) -> None:
    state = states.create(experiment_id, "f" * 16)
    state.owner_pid, state.owner_start_time = pid, process_start_time(pid)
    state.phase = phase
    states.save(state)


def test_a_fixed_id_held_by_a_running_session_gets_a_unique_suffix(
    bench: BenchmarkSession, other_live_session
):
    _held_by(bench.states, "fixed", other_live_session, ExperimentPhase.MEASURING)
    result = run(bench, workloads.count_tokens, experiment_id="fixed")
    assert result.experiment_id.startswith("fixed-")
    assert bench.record.entries[0].experiment_id == result.experiment_id
    assert bench.states.load(result.experiment_id).phase is ExperimentPhase.DONE
    assert bench.states.load("fixed").owner_pid == other_live_session  # theirs, untouched
    assert any("'fixed' is in use by a session still running" in p for p in bench.problems)


def test_a_fixed_id_taken_over_during_the_experiment_loses_neither_result(
    bench: BenchmarkSession, other_live_session, monkeypatch: pytest.MonkeyPatch
):
    real_repeats = session_module.run_repeats

    def run_then_taken_over(*args):
        result = real_repeats(*args)
        # Forced race: the other session creates, measures and finishes the same id meanwhile.
        _held_by(bench.states, "fixed", other_live_session, ExperimentPhase.DONE)
        return result

    monkeypatch.setattr(session_module, "run_repeats", run_then_taken_over)
    result = run(bench, workloads.count_tokens, experiment_id="fixed")
    assert result.experiment_id.startswith("fixed-")
    mine = bench.states.load(result.experiment_id)
    assert mine.phase is ExperimentPhase.DONE and mine.result.output_tokens == 8 and not mine.failed
    theirs = bench.states.load("fixed")
    assert theirs.owner_pid == other_live_session and theirs.phase is ExperimentPhase.DONE
    assert any("'fixed' was taken over by another session" in p for p in bench.problems)


@pytest.mark.parametrize("preload", START_METHODS)
def test_processes_that_left_the_group_or_the_session_die_with_a_passing_experiment(
    bench: BenchmarkSession, tmp_path: Path
):
    pid_file = tmp_path / "pids.json"
    result = run(bench, workloads.escape_the_group, params={"pid_file": str(pid_file)})
    assert result.output_tokens == 1
    supervisor, worker, own_group, daemon = read_pids(pid_file)
    extra = result.extra
    assert extra["own_group_pgid"] == own_group != extra["group"]  # left the experiment's group
    assert extra["daemon_sid"] != extra["session"]  # left the session, and its parent (double fork)
    assert wait_until_all_gone([supervisor, worker, own_group, daemon], timeout_s=3.0) == []


def test_work_folders_of_dead_sessions_are_reclaimed_and_live_ones_kept(
    tmp_path: Path, other_live_session: int
):
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    dead_pid = int(dead.stdout)
    left = tmp_path / f"pytest-llem-{dead_pid}-abc123"
    live = tmp_path / f"pytest-llem-{other_live_session}-def456"
    mine = tmp_path / f"pytest-llem-{os.getpid()}-ghi789"
    unrelated = tmp_path / "pytest-llem-notes"
    for folder in (left, live, mine, unrelated):
        folder.mkdir()
        (folder / "request.json").write_text("{}")
    assert reclaim_work_dirs(tmp_path) == [left]
    assert not left.exists() and live.exists() and mine.exists() and unrelated.exists()


@pytest.mark.skipif(not hasattr(os, "pidfd_open"), reason="needs os.pidfd_open (Linux 5.3+)")
def test_the_wait_wakes_on_the_leaders_exit_and_leaves_it_unreaped(monkeypatch: pytest.MonkeyPatch):
    leader = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    waiter = launcher._LeaderExit(leader.pid)
    try:
        assert waiter._fd is not None
        assert waiter._poller.poll(0) == []  # alive: nothing to wake on
        leader.stdin.close()  # it exits
        assert [fd for fd, _ in waiter._poller.poll(30_000)] == [waiter._fd]
        monkeypatch.setattr(launcher, "POLL_INTERVAL_S", 60.0)
        started = time.monotonic()
        waiter.sleep()  # returns on the exit, not after the (now long) poll interval
        assert time.monotonic() - started < 30.0
        # Exited, not reaped: its pid (the group's id) stays reserved until `wait`.
        assert launcher._leader_exited(leader.pid)
        assert leader.returncode is None
    finally:
        waiter.close()
        leader.wait()
    assert waiter._fd is None
