"""State dirs written before the results store (one JSON file per state and per report) are
imported into it: on first use, once, or on demand with `pytest-llem import PATH`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from sample_reports import GPT2, make_entry, make_report, make_result

from pytest_llem.base.atomic import write_model_redacted
from pytest_llem.results import utc_now
from pytest_llem.store.experiments import ExperimentPhase, ExperimentState
from pytest_llem.store.history import RunHistory
from pytest_llem.store.state import StateManager


def write_json_state_dir(state_dir: Path) -> ExperimentState:
    """A state dir as the JSON-file releases left it: two states, one run, and foreign files."""
    experiments = state_dir / "experiments"
    experiments.mkdir(parents=True)
    now = utc_now()
    result = make_result([1.0, 1.2]).model_copy(update={"experiment_id": "done-exp"})
    result.batch_latencies_s = [0.5, 0.25]
    done = ExperimentState(
        experiment_id="done-exp",
        phase=ExperimentPhase.DONE,
        config_hash="c" * 16,
        started_at=now,
        last_updated=now,
        owner_pid=1,
        hostname="somewhere",
        result=result,
    )
    orphan = done.model_copy(
        update={"experiment_id": "orphan", "phase": ExperimentPhase.MEASURING, "result": None}
    )
    for state in (done, orphan):
        write_model_redacted(experiments / f"{state.experiment_id}.json", state)
    (experiments / "truncated.json").write_text('{"experiment_id": "tru')
    (experiments / "foreign.json").write_text(json.dumps({"hello": "world"}))
    (experiments / "misnamed.json").write_text(done.model_dump_json())  # done's state, another name
    (experiments / "linked.json").symlink_to(experiments / "done-exp.json")
    os.mkfifo(experiments / "pipe.json")  # opening it for reading would block
    report = make_report("20260101T000000Z-aaaaaa", [make_entry(GPT2, result)], name="nightly")
    report.experiments[0].experiment_id = "done-exp"
    run_dir = state_dir / "runs" / report.run_id
    run_dir.mkdir(parents=True)
    write_model_redacted(run_dir / "report.json", report)
    broken = state_dir / "runs" / "20260102T000000Z-bbbbbb"
    broken.mkdir()
    (broken / "report.json").write_text('{"run_id": "20260102T0000')
    return done


def test_a_json_state_dir_is_imported_on_first_use_and_only_once(state_dir: Path):
    done = write_json_state_dir(state_dir)
    states = StateManager(state_dir)

    assert [s.experiment_id for s in states.all_states()] == ["done-exp", "orphan"]
    assert states.find_resumable("c" * 16).result == done.result  # bulky parts included
    broken_run = "runs/20260102T000000Z-bbbbbb/report.json"
    assert states.skipped == {
        "experiments/foreign.json": states.skipped["experiments/foreign.json"],
        "experiments/linked.json": "unreadable: a symbolic link, not followed",
        "experiments/misnamed.json": "holds the state of another experiment (done-exp)",
        "experiments/pipe.json": "unreadable: not a regular file (a FIFO, device, socket or folder)",
        "experiments/truncated.json": states.skipped["experiments/truncated.json"],
        broken_run: states.skipped[broken_run],
    }
    assert states.skipped[broken_run].startswith("not a report: ")
    assert states.skipped["experiments/foreign.json"].startswith("not a state: ")
    history = RunHistory(state_dir)
    assert history.find("nightly").experiments[0].result == done.result
    # Imported once: a state deleted from the store is not brought back by the files.
    with states.store.write() as conn:
        conn.exec_driver_sql("DELETE FROM experiments WHERE experiment_id = 'orphan'")
    assert [s.experiment_id for s in StateManager(state_dir).all_states()] == ["done-exp"]


def test_pytest_llem_import_brings_another_state_dir_into_the_store(tmp_path: Path, state_dir: Path):
    old = tmp_path / "old-state"
    write_json_state_dir(old)
    command = [sys.executable, "-m", "pytest_llem.cli", "import", str(old), "--state-dir", str(state_dir)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("imported 1 run(s) and 2 experiment state(s) into sqlite:///")
    assert "skipped experiments/pipe.json in the state dir: unreadable: not a regular file" in done.stderr
    assert RunHistory(state_dir).find("nightly").run_id == "20260101T000000Z-aaaaaa"
    assert StateManager(state_dir).load("orphan").phase is ExperimentPhase.MEASURING


def test_reports_are_imported_in_batches_and_a_broken_one_costs_only_itself(
    tmp_path: Path, store_url, monkeypatch
):
    from pytest_llem.store import legacy
    from pytest_llem.store.database import open_store

    monkeypatch.setattr(legacy, "IMPORT_BATCH_RUNS", 2)
    old = tmp_path / "old-state"
    result = make_result([1.0]).model_copy(update={"batch_latencies_s": [0.5]})
    run_ids = [f"2026010{day}T000000Z-aaaaaa" for day in range(1, 6)]
    for day, run_id in enumerate(run_ids):
        report = make_report(run_id, [make_entry(GPT2, result)], name=f"night-{day}", days_after_t0=day)
        (old / "runs" / run_id).mkdir(parents=True)
        write_model_redacted(old / "runs" / run_id / "report.json", report)
    (old / "runs" / "20260103T120000Z-broken").mkdir()
    (old / "runs" / "20260103T120000Z-broken" / "report.json").write_text("{")

    summary = legacy.import_state_dir(old, open_store(store_url))

    assert summary.runs == 5
    assert list(summary.skipped) == ["runs/20260103T120000Z-broken/report.json"]
    history = RunHistory(tmp_path / "state", store_url)
    assert [run.run_id for run in history.summaries()] == run_ids
    assert history.find("night-4").experiments[0].result == result
