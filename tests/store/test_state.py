from __future__ import annotations

import json
import multiprocessing
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_llem.errors import InvalidStateTransitionError
from pytest_llem.processes import process_is_alive, process_start_time
from pytest_llem.store.state import ExperimentPhase, ExperimentState, StateManager, sanitise_experiment_id

PHASES = list(ExperimentPhase)


def test_phases_move_forward_one_step_at_a_time(state_dir: Path):
    states = StateManager(state_dir)
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
def test_every_other_move_is_refused(state_dir: Path, start, to):
    state = StateManager(state_dir).create("exp", "h" * 16)
    state.phase = start
    with pytest.raises(InvalidStateTransitionError, match=f"{start.value} -> {to.value} is not allowed"):
        state.advance(to)
    assert state.phase is start


def test_failed_is_a_flag_that_keeps_the_phase(state_dir: Path):
    states = StateManager(state_dir)
    states.create("exp", "h" * 16)
    states.advance("exp", ExperimentPhase.MEASURING)
    failed = states.mark_failed("exp", "boom")
    assert (failed.phase, failed.failed, failed.error_message) == (ExperimentPhase.MEASURING, True, "boom")
    with pytest.raises(InvalidStateTransitionError, match="has failed"):
        states.advance("exp", ExperimentPhase.DONE)


def test_unknown_fields_are_rejected(state_dir: Path):
    state = StateManager(state_dir).create("exp", "h" * 16)
    data = json.loads(state.model_dump_json()) | {"surprise": 1}
    with pytest.raises(ValueError, match="surprise"):
        ExperimentState.model_validate(data)


def test_state_dir_is_private_and_writes_leave_no_temp_files(state_dir: Path):
    state_dir.mkdir(mode=0o755)
    states = StateManager(state_dir)
    for i in range(5):
        states.create(f"exp{i}", "h" * 16)
    assert stat.S_IMODE(state_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE(states.experiments_dir.stat().st_mode) == 0o700
    assert sorted(p.name for p in states.experiments_dir.iterdir()) == [f"exp{i}.json" for i in range(5)]


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("../../etc/passwd", "_.._etc_passwd"),
        ("test_x[bs=4]", "test_x_bs_4_"),
        ("..", None),
        ("a" * 500, "a" * 128),
    ],
)
def test_ids_are_sanitised(raw, clean):
    if clean is None:
        with pytest.raises(ValueError, match="no usable characters"):
            sanitise_experiment_id(raw)
    else:
        assert sanitise_experiment_id(raw) == clean


@pytest.mark.parametrize("bad_id", ["../escape", "/etc/passwd", "a/b", ".hidden"])
def test_unsanitised_ids_never_become_paths(state_dir: Path, bad_id: str):
    with pytest.raises(ValueError):
        StateManager(state_dir).path_for(bad_id)
    assert not (state_dir.parent / "escape.json").exists()


def test_corrupt_and_foreign_files_are_skipped_with_a_warning(state_dir: Path, caplog):
    states = StateManager(state_dir)
    states.create("good", "h" * 16)
    (states.experiments_dir / "truncated.json").write_text('{"experiment_id": "tru')
    (states.experiments_dir / "foreign.json").write_text(json.dumps({"hello": "world"}))
    (states.experiments_dir / "binary.json").write_bytes(b"\xff\xfe\x00")
    assert [s.experiment_id for s in states.all_states()] == ["good"]
    assert states.load("truncated") is None
    skipped = " ".join(r.getMessage() for r in caplog.records)
    for name in ("truncated.json", "foreign.json", "binary.json"):
        assert name in skipped


def test_find_by_config_hash_newest_first(state_dir: Path):
    states = StateManager(state_dir)
    for name in ("old", "new"):
        states.create(name, "a" * 16)
    states.create("other", "b" * 16)
    assert [s.experiment_id for s in states.find_by_config_hash("a" * 16)] == ["new", "old"]


def _write_many(state_dir: str, writer: int, rounds: int) -> None:
    states = StateManager(Path(state_dir))
    for i in range(rounds):
        state = states.create("shared", f"{writer:016d}")
        state.error_message = "x" * (1000 * (i % 7))  # sizes differ, so torn writes would show
        states.save(state)


def test_concurrent_writers_never_leave_a_corrupt_file(state_dir: Path):
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_write_many, args=(str(state_dir), w, 60)) for w in range(4)]
    for p in procs:
        p.start()
    states = StateManager(state_dir)
    reads = 0
    while any(p.is_alive() for p in procs):
        path = states.experiments_dir / "shared.json"
        if path.exists():
            ExperimentState.model_validate_json(path.read_text())  # raises on a torn file
            reads += 1
    for p in procs:
        p.join()
        assert p.exitcode == 0
    final = states.load("shared")
    assert final is not None and final.config_hash in {f"{w:016d}" for w in range(4)}
    assert [p.name for p in states.experiments_dir.iterdir()] == ["shared.json"]
    assert reads > 0


def test_cleanup_stale_fails_orphans_of_both_unfinished_phases(state_dir: Path):
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    states = StateManager(state_dir)
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


def test_cleanup_stale_keeps_states_of_live_processes(state_dir: Path):
    states = StateManager(state_dir)
    states.create("mine", "h" * 16)  # owned by this very process
    assert states.cleanup_stale() == []
    assert not states.load("mine").failed


def test_a_reused_pid_is_not_mistaken_for_the_original_process(state_dir: Path):
    states = StateManager(state_dir)
    state = states.create("reused", "h" * 16)
    state.owner_pid = os.getpid()
    state.owner_start_time = process_start_time(os.getpid()) - 3600  # same PID, another process
    states.save(state)
    assert [s.experiment_id for s in states.cleanup_stale()] == ["reused"]


def test_permission_error_from_the_probe_means_alive(monkeypatch):
    def denied(pid, sig):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "kill", denied)
    assert process_is_alive(999_999)


def test_states_of_other_hosts_are_left_alone(state_dir: Path):
    states = StateManager(state_dir)
    state = states.create("remote", "h" * 16)
    state.hostname, state.owner_pid = "another-host", 999_999
    states.save(state)
    assert states.cleanup_stale() == []


def test_symlinks_fifos_and_folders_named_json_are_skipped_once_with_the_reason(
    state_dir: Path, tmp_path: Path
):
    states = StateManager(state_dir)
    good = states.create("good", "h" * 16)
    outside = tmp_path / "outside.json"
    outside.write_text(good.model_copy(update={"experiment_id": "linked"}).model_dump_json())
    (states.experiments_dir / "linked.json").symlink_to(outside)
    os.mkfifo(states.experiments_dir / "pipe.json")  # opening it for reading would block
    (states.experiments_dir / "folder.json").mkdir()
    (states.experiments_dir / "other.json").write_text(good.model_dump_json())  # good's state, misnamed
    for _ in range(2):
        assert [s.experiment_id for s in states.all_states()] == ["good"]
    assert states.cleanup_stale() == []  # never reaches the link's target
    assert states.skipped == {
        "experiments/folder.json": "unreadable: not a regular file (a FIFO, device, socket or folder)",
        "experiments/linked.json": "unreadable: a symbolic link, not followed",
        "experiments/other.json": "holds the state of another experiment (good)",
        "experiments/pipe.json": "unreadable: not a regular file (a FIFO, device, socket or folder)",
    }


def test_timestamps_without_a_time_zone_are_read_as_utc(state_dir: Path):
    states = StateManager(state_dir)
    states.create("aware", "a" * 16)
    naive = json.loads(states.path_for("aware").read_text())
    naive.update(experiment_id="naive", started_at="2020-01-01T00:00:00", last_updated="2020-01-01T00:00:00")
    states.path_for("naive").write_text(json.dumps(naive))
    # Sorting compares the naive file's times with the aware one's: no TypeError.
    assert [s.experiment_id for s in states.find_by_config_hash("a" * 16)] == ["aware", "naive"]
    assert states.load("naive").started_at.tzinfo is not None
