from __future__ import annotations

import json
import multiprocessing
import os
import stat
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from sample_reports import make_result

from pytest_llem import processes
from pytest_llem.errors import InvalidStateTransitionError
from pytest_llem.processes import process_is_alive, process_start_time
from pytest_llem.store.experiments import ExperimentPhase, ExperimentState
from pytest_llem.store.state import StateManager

PHASES = list(ExperimentPhase)


def test_phases_move_forward_one_step_at_a_time(state_dir: Path, store_url):
    states = StateManager(state_dir, store_url)
    states.create("exp", "h" * 16)
    assert states.advance("exp", ExperimentPhase.MEASURING).phase is ExperimentPhase.MEASURING
    assert states.advance("exp", ExperimentPhase.DONE).phase is ExperimentPhase.DONE
    assert states.load("exp").phase is ExperimentPhase.DONE


@pytest.mark.parametrize(
    ("start", "to"),
    [
        (a, b)
        for a in PHASES
        for b in PHASES
        if (a, b)
        not in {
            (ExperimentPhase.INITIALISING, ExperimentPhase.MEASURING),
            (ExperimentPhase.MEASURING, ExperimentPhase.DONE),
        }
    ],
)
def test_every_other_move_is_refused(state_dir: Path, start, to, store_url):
    state = StateManager(state_dir, store_url).create("exp", "h" * 16)
    state.phase = start
    with pytest.raises(InvalidStateTransitionError, match=f"{start.value} -> {to.value} is not allowed"):
        state.advance(to)
    assert state.phase is start


def test_failed_is_a_flag_that_keeps_the_phase(state_dir: Path, store_url):
    states = StateManager(state_dir, store_url)
    states.create("exp", "h" * 16)
    states.advance("exp", ExperimentPhase.MEASURING)
    failed = states.mark_failed("exp", "boom")
    assert (failed.phase, failed.failed, failed.error_message) == (ExperimentPhase.MEASURING, True, "boom")
    with pytest.raises(InvalidStateTransitionError, match="has failed"):
        states.advance("exp", ExperimentPhase.DONE)


def test_unknown_fields_are_rejected(state_dir: Path, store_url):
    state = StateManager(state_dir, store_url).create("exp", "h" * 16)
    data = json.loads(state.model_dump_json()) | {"surprise": 1}
    with pytest.raises(ValueError, match="surprise"):
        ExperimentState.model_validate(data)


def test_state_dir_is_private_and_states_live_in_the_store(state_dir: Path):
    state_dir.mkdir(mode=0o755)
    states = StateManager(state_dir)
    states.ensure_dirs()
    for i in range(5):
        states.create(f"exp{i}", "h" * 16)
    assert stat.S_IMODE(state_dir.stat().st_mode) == 0o700
    assert (state_dir / "llem.sqlite3").is_file()
    assert not states.experiments_dir.exists()  # no JSON state files any more
    assert [s.experiment_id for s in states.all_states()] == [f"exp{i}" for i in range(5)]


@pytest.mark.parametrize("bad_id", ["../escape", "/etc/passwd", "a/b", ".hidden"])
def test_unsanitised_ids_are_refused(state_dir: Path, bad_id: str, store_url):
    states = StateManager(state_dir, store_url)
    state = states.create("fine", "h" * 16).model_copy(update={"experiment_id": bad_id})
    with pytest.raises(ValueError, match="not sanitised"):
        states.save(state)
    assert [s.experiment_id for s in states.all_states()] == ["fine"]


def test_find_by_config_hash_newest_first(state_dir: Path, store_url):
    states = StateManager(state_dir, store_url)
    for name in ("old", "new"):
        states.create(name, "a" * 16)
    states.create("other", "b" * 16)
    assert [s.experiment_id for s in states.find_by_config_hash("a" * 16)] == ["new", "old"]


def _write_many(state_dir: str, store_url: str, writer: int, rounds: int) -> None:
    states = StateManager(Path(state_dir), store_url)
    for i in range(rounds):
        state = states.create("shared", f"{writer:016d}")
        state.error_message = "x" * (1000 * (i % 7))  # sizes differ, so torn writes would show
        states.save(state)


def test_concurrent_writers_never_leave_a_torn_state(state_dir: Path, store_url):
    StateManager(state_dir, store_url).ensure_dirs()  # the store exists before the writers start
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_write_many, args=(str(state_dir), store_url, w, 60)) for w in range(4)]
    for p in procs:
        p.start()
    states = StateManager(state_dir, store_url)
    reads = 0
    while any(p.is_alive() for p in procs):
        state = states.load("shared")
        if state is not None:
            # Each writer's message length is tied to its round; a torn write would mix them.
            assert set(state.error_message or "") <= {"x"}
            reads += 1
    for p in procs:
        p.join()
        assert p.exitcode == 0
    final = states.load("shared")
    assert final is not None and final.config_hash in {f"{w:016d}" for w in range(4)}
    assert [s.experiment_id for s in states.all_states()] == ["shared"]
    assert reads > 0


def test_cleanup_stale_fails_orphans_of_both_unfinished_phases(state_dir: Path, store_url):
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    states = StateManager(state_dir, store_url)
    for name, phase in (("init", ExperimentPhase.INITIALISING), ("meas", ExperimentPhase.MEASURING)):
        state = states.create(name, "h" * 16)
        state.phase = phase
        state.owner_pid = state.subprocess_pid = gone.pid
        states.save(state)
    finished = states.create("done", "h" * 16)
    finished.phase, finished.owner_pid = ExperimentPhase.DONE, gone.pid
    states.save(finished)

    marked = states.cleanup_stale()

    assert sorted(s.experiment_id for s in marked) == ["init", "meas"]
    for name in ("init", "meas"):
        assert states.load(name).failed and "stale" in states.load(name).error_message
    assert not states.load("done").failed


def test_cleanup_stale_keeps_states_of_live_processes(state_dir: Path, store_url):
    states = StateManager(state_dir, store_url)
    states.create("mine", "h" * 16)  # owned by this very process
    assert states.cleanup_stale() == []
    assert not states.load("mine").failed


def test_a_reused_pid_is_not_mistaken_for_the_original_process(state_dir: Path, store_url):
    states = StateManager(state_dir, store_url)
    state = states.create("reused", "h" * 16)
    state.owner_pid = os.getpid()
    state.owner_start_time = process_start_time(os.getpid()) - 3600  # same PID, another process
    states.save(state)
    assert [s.experiment_id for s in states.cleanup_stale()] == ["reused"]


def test_permission_error_from_the_probe_means_alive(monkeypatch):
    def denied(pid, sig):
        raise PermissionError(1, "Operation not permitted")

    # The probe uses the kill function bound when `processes` was imported (a workload module
    # that replaces os.kill cannot change it), so that is the one to deny.
    monkeypatch.setattr(processes, "_kill", denied)
    assert process_is_alive(999_999)


def test_states_of_other_hosts_are_left_alone(state_dir: Path, store_url):
    states = StateManager(state_dir, store_url)
    state = states.create("remote", "h" * 16)
    state.hostname, state.owner_pid = "another-host", 999_999
    states.save(state)
    assert states.cleanup_stale() == []


def test_timestamps_are_kept_in_utc_whatever_zone_they_came_in(state_dir: Path, store_url):
    states = StateManager(state_dir, store_url)
    aware = states.create("aware", "a" * 16)
    eastern = aware.model_copy(
        update={
            "experiment_id": "eastern",
            "started_at": datetime(2020, 1, 1, 5, tzinfo=timezone(timedelta(hours=5))),
            "last_updated": datetime(2020, 1, 1, 5, tzinfo=timezone(timedelta(hours=5))),
        }
    )
    states.save(eastern)
    loaded = states.load("eastern")
    assert loaded.started_at == datetime(2020, 1, 1, 0, tzinfo=timezone.utc)
    assert loaded.started_at.tzinfo is not None
    assert [s.experiment_id for s in states.find_by_config_hash("a" * 16)] == ["aware", "eastern"]


def test_a_result_comes_back_whole_with_its_bulky_parts_kept_apart(state_dir: Path, store_url):
    from sample_reports import make_result

    states = StateManager(state_dir, store_url)
    state = states.create("measured", "c" * 16)
    result = make_result([1.0, 1.1, 0.9]).model_copy(update={"experiment_id": "measured"})
    result.batch_latencies_s = [0.1, 0.2, 0.3]
    state.advance(ExperimentPhase.MEASURING)
    state.advance(ExperimentPhase.DONE)
    state.result = result
    states.save(state)
    assert states.find_resumable("c" * 16).result == result
    # Lookups that do not need them leave the bulky parts in their table.
    (light,) = states.find_by_config_hash("c" * 16)
    assert light.result.batch_latencies_s == [] and light.result.energy_j == result.energy_j


def test_save_all_writes_many_states_in_one_go_as_single_saves_would(state_dir: Path, store_url, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_sekrit")
    states = StateManager(state_dir, store_url)
    now = datetime.now(timezone.utc)
    result = make_result([1.0, 1.5]).model_copy(update={"batch_latencies_s": [0.5, 0.25]})
    # Known before the batch, with its test and bulky parts: the batch keeps its test, drops its parts.
    states.create("was-here", "a" * 16, run_id="run-0", nodeid="t.py::was_here")
    states.save_all([states.load("was-here").model_copy(update={"result": result.model_copy()})])
    assert states.load("was-here").result.batch_latencies_s == [0.5, 0.25]

    batch = [
        ExperimentState(
            experiment_id=f"exp-{i}",
            phase=ExperimentPhase.DONE,
            config_hash=f"{i:016x}",
            started_at=now,
            last_updated=now,
            owner_pid=1,
            hostname="gpu-runner",
            result=result.model_copy(update={"experiment_id": f"exp-{i}"}),
        )
        for i in range(3)
    ]
    batch.append(
        batch[0].model_copy(
            update={
                "experiment_id": "was-here",
                "result": None,
                "phase": ExperimentPhase.MEASURING,
                "failed": True,
                "error_message": "died holding hf_sekrit",
            }
        )
    )
    states.save_all(batch, run_id="run-1")

    for i in range(3):
        loaded = states.load(f"exp-{i}")
        assert loaded.result == batch[i].result
        assert loaded.result.batch_latencies_s == [0.5, 0.25]  # read back from the compressed parts
        assert states.load(f"exp-{i}", with_parts=False).result.batch_latencies_s == []
    replaced = states.load("was-here")
    assert (replaced.result, replaced.failed, replaced.phase) == (None, True, ExperimentPhase.MEASURING)
    assert replaced.error_message == "died holding ***"
    assert [s.experiment_id for s in states.find_by_config_hash(f"{2:016x}")] == ["exp-2"]
    with states.store.read() as conn:
        kept = conn.exec_driver_sql(
            "SELECT run_id, nodeid FROM experiments WHERE experiment_id = 'was-here'"
        ).one()
        parts = set(conn.exec_driver_sql("SELECT experiment_id FROM experiment_parts").scalars())
    assert tuple(kept) == ("run-1", "t.py::was_here")  # run given anew, test kept
    assert parts == {"exp-0", "exp-1", "exp-2"}  # none left behind for the state that lost its result


def test_save_all_refuses_the_whole_batch_for_one_unsanitised_id(state_dir: Path, store_url):
    states = StateManager(state_dir, store_url)
    good = states.create("good", "a" * 16)
    bad = good.model_copy(update={"experiment_id": "../bad"})
    with pytest.raises(ValueError, match="not sanitised"):
        states.save_all([good.model_copy(update={"failed": True}), bad])
    assert states.load("good").failed is False


def test_a_result_the_busy_store_refused_reaches_done_at_the_end_and_is_resumed(state_dir: Path, monkeypatch):
    import sqlite3
    import threading

    import workloads

    from pytest_llem.session import BenchmarkSession
    from pytest_llem.settings import LlemSettings
    from pytest_llem.store import database

    monkeypatch.setattr(database, "SQLITE_BUSY_TIMEOUT_S", 1.0)
    database.close_stores()
    settings = LlemSettings(enabled=True, state_dir=state_dir, energy="none", preload="none", resume=True)
    layers = [{"params": {"phase_s": 1.0}}]
    bench = BenchmarkSession(settings)
    bench.start()
    locked, release = threading.Event(), threading.Event()

    def hold_the_write_lock_once_measuring() -> None:
        states = StateManager(state_dir)
        while not any(s.phase is ExperimentPhase.MEASURING for s in states.all_states()):
            if release.wait(0.02):
                return
        holder = sqlite3.connect(state_dir / database.DEFAULT_STORE_FILE, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")  # another session's writer, for longer than the timeout
        locked.set()
        release.wait(120)
        holder.execute("ROLLBACK")
        holder.close()

    holder = threading.Thread(target=hold_the_write_lock_once_measuring)
    holder.start()
    try:
        with pytest.raises(database.StoreBusy):
            bench.run_experiment("tests/test_x.py::case", workloads.slow_phases, layers)
    finally:
        release.set()
        holder.join()
    assert locked.is_set()
    (entry,) = bench.record.entries
    assert entry.result is not None and entry.phase == "done"  # kept for the report file

    bench.finish("failed", 1)

    state = StateManager(state_dir).load(entry.experiment_id)
    assert state.phase is ExperimentPhase.DONE and not state.failed
    assert state.result.output_tokens == entry.result.output_tokens
    again = BenchmarkSession(settings)
    again.start()
    resumed = again.run_experiment("tests/test_x.py::case", workloads.slow_phases, layers)
    again.finish("passed", 0)
    assert resumed.resumed and resumed.experiment_id == entry.experiment_id
    database.close_stores()
