"""The run's record: the report's checkpoints, storage problems, its last word at the end."""

from __future__ import annotations

import shutil
import signal
import subprocess
from pathlib import Path

import pytest
from sample_reports import make_entry, make_result

from pytest_llem.base.atomic import DiskFull
from pytest_llem.errors import INTERRUPTED_EXIT_CODE, ConfigError
from pytest_llem.fingerprints.source import SHORT_COMMIT_LENGTH
from pytest_llem.isolation.signals import SessionInterrupts
from pytest_llem.roles import SingleProcessRole
from pytest_llem.run_record import RunRecord, new_run_id
from pytest_llem.settings import LlemSettings
from pytest_llem.store import report as report_module
from pytest_llem.store.database import StoreFailed
from pytest_llem.store.projects import project_key
from pytest_llem.store.report import load_report
from pytest_llem.store.state import StateManager

NODE = "tests/test_x.py::case"


def record_in(state_dir: Path, project_dir: Path | None = None, **settings) -> RunRecord:
    llem = LlemSettings(enabled=True, state_dir=state_dir, energy="none", **settings)
    interrupts = SessionInterrupts()
    record = RunRecord(
        llem, SingleProcessRole(), StateManager(state_dir), interrupts, project_dir=project_dir
    )
    record.open_store()
    record.start()
    return record


def test_run_ids_are_plain_names_that_sort_by_time():
    first, second = new_run_id(), new_run_id()
    assert first != second and first[:16] <= second[:16]
    assert first.replace("-", "").isalnum()


def test_a_state_dir_that_cannot_be_made_is_one_line_naming_the_option(tmp_path: Path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    record = RunRecord(
        LlemSettings(enabled=True, state_dir=blocker / "state"),
        SingleProcessRole(),
        StateManager(blocker / "state"),
        SessionInterrupts(),
    )
    with pytest.raises(ConfigError, match="cannot use state dir .*; choose another with --llem-state-dir"):
        record.open_store()


def test_the_run_is_saved_under_its_suites_project_unless_the_option_names_one(tmp_path: Path):
    state_dir, alpha, beta = tmp_path / "state", tmp_path / "alpha", tmp_path / "beta"
    alpha.mkdir()
    beta.mkdir()
    derived = record_in(state_dir, project_dir=alpha)
    assert derived.report.project == project_key(alpha) and derived.report.project.startswith("alpha-")
    assert (
        record_in(state_dir, project_dir=beta).report.project == project_key(beta) != derived.report.project
    )
    named = record_in(state_dir, project_dir=beta, project="shared-bench")
    assert named.report.project == "shared-bench"
    assert named.history.find(named.report.run_id).project == "shared-bench"  # in the store from the start


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_the_run_records_the_commit_of_the_checkout_its_rootdir_is_in(tmp_path: Path):
    repo = tmp_path / "repo"
    repo.mkdir()
    for args in (
        ["init", "-q"],
        [
            "-c",
            "user.email=b@example.com",
            "-c",
            "user.name=B",
            "commit",
            "-q",
            "--allow-empty",
            "-m",
            "first",
        ],
    ):
        subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True).stdout

    record = RunRecord(
        LlemSettings(enabled=True, state_dir=tmp_path / "state", energy="none"),
        SingleProcessRole(),
        StateManager(tmp_path / "state"),
        SessionInterrupts(),
        root=repo,
    )
    record.open_store()
    record.start()

    assert record.report.source is not None and record.report.source.commit == head.strip()
    saved = record.history.find(record.report.run_id)
    assert saved.source == record.report.source
    (listed,) = record.history.summaries()
    assert listed.commit == head[:SHORT_COMMIT_LENGTH]


def test_a_rootdir_outside_any_checkout_records_no_commit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    plain = tmp_path / "plain"
    plain.mkdir()
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    record = record_in(tmp_path / "state", project_dir=plain)  # no rootdir given: the suite's folder
    assert record.report.source is None
    assert [run.commit for run in record.history.summaries()] == [None]


def test_the_final_report_says_how_the_session_ended_and_where_it_is(state_dir: Path):
    record = record_in(state_dir)
    record.entries.append(make_entry(NODE, make_result([1.0])))
    path = record.finish("failed", 1)
    assert path is not None and record.report_written and record.finished
    saved = load_report(path)
    assert (saved.outcome, saved.exit_code, len(saved.experiments)) == ("failed", 1, 1)
    assert record.closing_lines() == [f"report written to {path}"]


def test_the_closing_lines_name_the_saved_run_each_output_written_and_the_report(
    state_dir: Path, tmp_path: Path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    record = record_in(state_dir, save_name="main", html_path=Path("out/report.html"))
    record.entries.append(make_entry(NODE, make_result([1.0])))
    path = record.finish("passed", 0)
    assert (tmp_path / "out" / "report.html").is_file()
    assert record.closing_lines() == [
        "run saved as main (compare with it: --llem-compare=main)",
        "HTML report written to out/report.html",
        f"report written to {path.relative_to(tmp_path)}",  # the state dir is inside the cwd here
    ]


def test_the_verdict_is_the_gates_once_the_session_finished_and_none_when_interrupted(state_dir: Path):
    record = record_in(state_dir)
    over = make_result([3.0], config={"budget": {"energy_per_token_j": 0.1}})
    record.entries.append(make_entry(NODE, over))
    assert record.gate() is True
    assert record.verdict() is None  # not finished yet: the report's last word comes first
    record.finish("failed", 1)
    assert record.verdict() == "gate failed: 1 budget exceeded (each named above)"
    record.interrupts.received = signal.SIGINT
    record.finish("failed", 1)
    assert record.verdict() is None


def test_a_session_that_received_a_signal_ends_interrupted_whatever_it_was_told(state_dir: Path):
    record = record_in(state_dir)
    record.interrupts.received = signal.SIGTERM
    path = record.finish("passed", 0)
    assert (load_report(path).outcome, load_report(path).exit_code) == ("interrupted", INTERRUPTED_EXIT_CODE)


def test_a_signal_after_the_report_was_written_gets_the_last_word_at_exit(state_dir: Path):
    record = record_in(state_dir)
    path = record.finish("passed", 0)
    record.complete_at_exit()
    assert load_report(path).outcome == "passed"  # nothing new: left as it was
    record.interrupts.received = signal.SIGINT
    record.complete_at_exit()
    assert load_report(path).outcome == "interrupted"


def test_a_throwaway_state_dir_is_removed_at_the_end_with_its_report(tmp_path: Path):
    state_dir = tmp_path / "throwaway"
    record = record_in(state_dir, throwaway_state_dir=True)
    record.checkpoint()
    assert record.report_written
    assert record.finish("passed", 0) is None
    assert not state_dir.exists() and record.report_path is None
    (line,) = record.closing_lines()
    assert line.startswith("smoke run: 0 case(s) ran once")


def test_a_failed_store_keeps_the_report_file_and_is_one_line_naming_it(state_dir: Path, monkeypatch):
    record = record_in(state_dir)
    real_write = report_module.write_report

    def write_then_fail(report, state_dir, root, name, store):
        real_write(report, state_dir, root, name, store)  # the file first, as the real one does
        raise StoreFailed("the results store failed: disk I/O error")

    monkeypatch.setattr("pytest_llem.run_record.write_report", write_then_fail)
    record.checkpoint()
    record.storage_failed(StoreFailed("a second failure"))  # the first one is the line
    assert record.report_written and record.report_path.is_file()
    assert record.storage_problem == (
        "the results store failed: disk I/O error; the results measured are kept in "
        f"{record.report_path}, and the next session on this state dir "
        f"(or `pytest-llem import {state_dir}`) takes them into the store"
    )


def test_a_full_disk_at_start_is_its_own_line_and_other_failures_are_not(state_dir: Path):
    record = record_in(state_dir)
    full = DiskFull(state_dir / "report.json", "no space left on device", written=False)
    assert record.full_disk_at_start(full) == str(full)
    assert record.full_disk_at_start(ConfigError("bad option")) is None


def test_a_failed_test_marks_its_experiments_failed_in_the_summary(state_dir: Path):
    record = record_in(state_dir)
    record.entries.extend([make_entry(NODE, make_result([1.0])), make_entry(f"{NODE}2", make_result([1.0]))])
    record.test_failed(NODE)
    assert [e.test_failed for e in record.entries] == [True, False]


def test_files_skipped_in_the_state_dir_are_each_named_once(state_dir: Path):
    record = record_in(state_dir)
    record.skipped["runs/x/report.json"] = "not a report"
    record.skipped["runs/x/report.json"] = "not a report"
    (line,) = record.skipped_files()
    assert "runs/x/report.json" in line and "not a report" in line
