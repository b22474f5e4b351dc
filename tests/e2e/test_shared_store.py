"""Real `pytest --llem` sessions on a results store: a PostgreSQL store shared by two state dirs
that share nothing else, an unreachable one, several sessions writing one SQLite store at
once, and a session SIGKILLed mid-run whose experiment the next session marks failed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from postgres_server import free_port

from pytest_llem.store.history import RunHistory
from pytest_llem.store.state import StateManager

SUITE = """
import os, time
import pytest

def steady(ctx):
    rate = float(os.environ.get("SIM_TOKENS_PER_S", "1000"))
    with ctx.window():
        time.sleep(float(os.environ.get("SIM_WINDOW_S", "0.1")))
    ctx.record(output_tokens=max(1, round(rate * 0.1)))

@pytest.mark.parametrize("batch_size", [1, 2])
def test_case(llem, batch_size):
    llem.run(steady, batch_size=batch_size, energy="none")
"""


def llem_pytest(cwd: Path, *args: str, **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--llem", "--llem-baseline=0", *args],
        cwd=cwd,
        env=dict(os.environ, **env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def finished(proc: subprocess.Popen[str], timeout_s: float = 300) -> tuple[int, str]:
    output, _ = proc.communicate(timeout=timeout_s)
    return proc.returncode, output


@pytest.fixture
def suite(tmp_path: Path) -> Path:
    folder = tmp_path / "suite"
    folder.mkdir()
    (folder / "test_x.py").write_text(SUITE)
    return folder


def test_a_gate_works_across_two_state_dirs_that_share_only_a_postgresql_store(
    suite: Path, tmp_path: Path, postgres_server
):
    url = postgres_server.new_database()
    first = llem_pytest(
        suite, f"--llem-state-dir={tmp_path / 'runner-a'}", "--llem-save=main", PYTEST_LLEM_STORE=url
    )
    code, output = finished(first)
    assert code == 0, output
    gate = ("--llem-compare=main", "--llem-compare-fail=tokens_per_s:30%")
    slower = llem_pytest(
        suite,
        f"--llem-state-dir={tmp_path / 'runner-b'}",
        *gate,
        f"--llem-store={url}",
        SIM_TOKENS_PER_S="250",
    )
    code, output = finished(slower)
    assert code == 1, output
    assert "pytest-llem: REGRESSION" in output
    assert not (tmp_path / "runner-b" / "llem.sqlite3").exists()  # nothing went to a local store
    history = RunHistory(tmp_path / "runner-b", url)
    assert [run.outcome for run in history.summaries()] == ["passed", "failed"]


def test_an_unreachable_postgresql_store_stops_the_session_before_anything_runs(suite: Path, tmp_path: Path):
    pytest.importorskip("psycopg")
    port = free_port()
    url = f"postgresql://bench:hunter2secret@127.0.0.1:{port}/llem"
    code, output = finished(
        llem_pytest(suite, f"--llem-state-dir={tmp_path / 'state'}", f"--llem-store={url}")
    )
    assert code == 4, output
    assert "hunter2secret" not in output
    (line,) = [line for line in output.splitlines() if "pytest-llem:" in line]
    assert f"server 127.0.0.1:{port}" in line
    assert "passed" not in output and not (tmp_path / "state" / "runs").exists()


def test_sessions_and_an_xdist_session_write_one_sqlite_store_at_once(suite: Path, tmp_path: Path):
    state = tmp_path / "state"
    procs = [llem_pytest(suite, f"--llem-state-dir={state}") for _ in range(4)]
    procs.append(llem_pytest(suite, f"--llem-state-dir={state}", "-n", "2"))
    for proc in procs:
        code, output = finished(proc)
        assert code == 0, output
    runs = RunHistory(state).summaries()
    assert len(runs) == 5 and all(run.outcome == "passed" for run in runs)
    assert sorted(run.experiment_count for run in runs) == [2] * 5
    states = StateManager(state).all_states()
    assert len(states) == 10
    assert all(s.phase.value == "done" and not s.failed for s in states)


def test_a_session_killed_mid_run_leaves_a_store_the_next_session_repairs(suite: Path, tmp_path: Path):
    state = tmp_path / "state"
    killed = llem_pytest(suite, f"--llem-state-dir={state}", SIM_WINDOW_S="60")
    deadline = time.monotonic() + 120
    measuring = []
    while time.monotonic() < deadline and not measuring:
        time.sleep(0.5)
        if (state / "llem.sqlite3").exists():
            measuring = [s for s in StateManager(state).all_states() if s.phase.value == "measuring"]
    assert measuring, "the first experiment never started measuring"
    os.kill(killed.pid, signal.SIGKILL)
    killed.wait()
    # The child group dies with its parent (PDEATHSIG); wait for it, as the next session would.
    leader = measuring[0].subprocess_pid
    while leader is not None and time.monotonic() < deadline:
        try:
            os.kill(leader, 0)
        except ProcessLookupError:
            break
        time.sleep(0.2)

    (killed_run,) = RunHistory(state).summaries()
    assert killed_run.outcome == "running"

    code, output = finished(llem_pytest(suite, f"--llem-state-dir={state}"))
    assert code == 0, output
    stale = StateManager(state).load(measuring[0].experiment_id)
    assert stale.failed and stale.error_message.startswith("stale: its process is gone")
    (newest,) = RunHistory(state).summaries(limit=1)
    assert RunHistory(state).find(newest.run_id).stale_experiments == [measuring[0].experiment_id]
    # The killed run is completed, not left running for good, and is never a baseline.
    assert [run.outcome for run in RunHistory(state).summaries()] == ["interrupted", "passed"]
    repaired = RunHistory(state).find(killed_run.run_id)
    assert repaired.repaired and not repaired.can_be_baseline
    assert "completed the report of 1 earlier run(s)" in output and killed_run.run_id in output
    assert RunHistory(state).latest(None).run_id == newest.run_id


WAITING_SUITE = """
import os, time
from pathlib import Path

def waits_for_the_test(ctx):
    signals = Path(os.environ["SIGNAL_DIR"])
    with ctx.window():
        (signals / "measuring").touch()
        deadline = time.monotonic() + 120
        while not (signals / "go").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
    ctx.record(output_tokens=10)

def test_waits(llem):
    llem.run(waits_for_the_test, energy="none")
"""


def test_a_postgresql_store_stopped_mid_session_keeps_the_result_in_the_report_and_the_next_session_repairs(
    tmp_path: Path, own_postgres_server
):
    suite, signals, state = tmp_path / "suite", tmp_path / "signals", tmp_path / "state"
    suite.mkdir()
    signals.mkdir()
    (suite / "test_waits.py").write_text(WAITING_SUITE)
    url = own_postgres_server.new_database()
    args = (f"--llem-state-dir={state}", f"--llem-store={url}", "--llem-resume")
    first = llem_pytest(suite, *args, SIGNAL_DIR=str(signals))
    deadline = time.monotonic() + 120
    while not (signals / "measuring").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    own_postgres_server.stop()  # the database host goes down while the experiment measures
    (signals / "go").touch()
    code, output = finished(first)

    assert code == 1, output
    assert "Traceback" not in output and "INTERNALERROR" not in output, output
    lines = [line for line in output.splitlines() if "pytest-llem: the store" in line]
    assert len(lines) == 1, output
    assert "failed" in lines[0] and "the results measured are kept in" in lines[0]
    (run_dir,) = (state / "runs").iterdir()
    kept = json.loads((run_dir / "report.json").read_text())
    (entry,) = kept["experiments"]
    assert entry["phase"] == "done" and entry["result"]["output_tokens"] == 10
    assert kept["outcome"] == "failed" and kept["exit_code"] == 1

    assert own_postgres_server.start().returncode == 0
    code, output = finished(llem_pytest(suite, *args, SIGNAL_DIR=str(signals)))

    assert code == 0, output
    history = RunHistory(state, url)
    repaired = history.find(run_dir.name)
    assert (repaired.outcome, repaired.repaired, repaired.can_be_baseline) == ("failed", True, False)
    assert [run.outcome for run in history.summaries()] == ["failed", "passed"]
    state_of = StateManager(state, url).load(entry["experiment_id"])
    assert state_of.phase.value == "done" and not state_of.failed
    # Its result reached done, so the next session's --llem-resume used it.
    (resumed,) = history.find(history.summaries()[-1].run_id).experiments
    assert resumed.resumed and resumed.experiment_id == entry["experiment_id"]
