"""Real `pytest --llem` sessions on a results store: a PostgreSQL store shared by two state dirs
that share nothing else, an unreachable one, several sessions writing one SQLite store at
once, and a session SIGKILLed mid-run whose experiment the next session marks failed."""

from __future__ import annotations

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

    code, output = finished(llem_pytest(suite, f"--llem-state-dir={state}"))
    assert code == 0, output
    stale = StateManager(state).load(measuring[0].experiment_id)
    assert stale.failed and stale.error_message.startswith("stale: its process is gone")
    (newest,) = RunHistory(state).summaries(limit=1)
    assert RunHistory(state).find(newest.run_id).stale_experiments == [measuring[0].experiment_id]
