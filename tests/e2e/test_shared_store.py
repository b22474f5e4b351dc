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
from helpers import SIMULATED_RUN, start_llem_pytest
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
    return start_llem_pytest(cwd, None, "--llem-baseline=0", *SIMULATED_RUN, *args, **env)


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


def damage_pages(database: Path, *pages: int, page_size: int = 4096) -> None:
    """Overwrite whole pages of a SQLite file, as a bad disk or a torn copy would."""
    with database.open("r+b") as handle:
        for page in pages:
            handle.seek((page - 1) * page_size)
            handle.write(b"\xee" * page_size)


def checkpointed_store(suite: Path, state: Path) -> Path:
    """A state dir whose store holds one finished run, folded into the main file (no WAL left)."""
    code, output = finished(llem_pytest(suite, f"--llem-state-dir={state}"))
    assert code == 0, output
    import sqlite3

    database = state / "llem.sqlite3"
    conn = sqlite3.connect(database)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.execute("PRAGMA journal_mode=DELETE")
    conn.close()
    return database


def the_experiments_pages(database: Path) -> list[int]:
    import sqlite3

    conn = sqlite3.connect(database)
    try:
        query = "SELECT rootpage FROM sqlite_master WHERE tbl_name = 'experiments'"
        return [page for (page,) in conn.execute(query)]
    finally:
        conn.close()


@pytest.mark.parametrize(
    "damage",
    ["random bytes", "malformed pages", "a URL that cannot be parsed", "sqlite://", "sqlite:///:memory:"],
)
def test_a_store_that_cannot_be_used_stops_the_session_in_one_line_with_exit_code_4(
    suite: Path, tmp_path: Path, damage: str
):
    state = tmp_path / "state"
    store_args: tuple[str, ...] = ()
    if damage == "random bytes":
        state.mkdir()
        (state / "llem.sqlite3").write_bytes(os.urandom(20_000))
    elif damage == "malformed pages":
        database = checkpointed_store(suite, state)
        damage_pages(database, *the_experiments_pages(database))
    elif damage == "a URL that cannot be parsed":
        store_args = ("--llem-store=postgresql://u:hunter2secret@[::1/db",)
    else:
        store_args = (f"--llem-store={damage}",)

    code, output = finished(llem_pytest(suite, f"--llem-state-dir={state}", *store_args))

    assert code == 4, output
    assert "INTERNALERROR" not in output and "Traceback" not in output, output
    lines = [line for line in output.splitlines() if "pytest-llem:" in line]
    assert len(lines) == 1, output
    assert "store" in lines[0] and "hunter2secret" not in output


def test_files_too_large_or_with_values_the_store_cannot_hold_are_skipped_with_a_named_line(
    suite: Path, tmp_path: Path
):
    state = tmp_path / "state"
    checkpointed_store(suite, state)
    (run_dir,) = (state / "runs").iterdir()
    # Files of an earlier release, taken in when another store first meets this state dir.
    huge = state / "runs" / "20260101T000000Z-huge00" / "report.json"
    huge.parent.mkdir(parents=True)
    with huge.open("wb") as handle:
        handle.truncate(1 << 30)  # 1 GiB, sparse: never read
    overflowing = state / "runs" / "20260101T000000Z-big000" / "report.json"
    document = json.loads((run_dir / "report.json").read_text())
    overflowing.parent.mkdir(parents=True)
    overflowing.write_text(json.dumps(dict(document, run_id="20260101T000000Z-big000", exit_code=2**63)))
    other_store = f"sqlite:///{tmp_path / 'other.sqlite3'}"

    code, output = finished(llem_pytest(suite, f"--llem-state-dir={state}", f"--llem-store={other_store}"))

    assert code == 0, output
    assert "INTERNALERROR" not in output and "Traceback" not in output, output
    skipped = "skipped runs/20260101T000000Z-{}/report.json in the state dir: {}"
    assert skipped.format("huge00", "unreadable: 1024 MiB, larger than the 256 MiB limit") in output
    assert skipped.format("big000", "not a report: exit_code: Input should be less than") in output
    assert [run.run_id for run in RunHistory(state, other_store).summaries()][0] == run_dir.name


def test_damaged_rows_of_the_store_are_skipped_with_a_named_line_and_the_session_goes_on(
    suite: Path, tmp_path: Path
):
    import sqlite3

    state = tmp_path / "state"
    database = checkpointed_store(suite, state)
    conn = sqlite3.connect(database)
    (run_id,) = conn.execute("SELECT run_id FROM runs").fetchone()
    conn.execute("UPDATE run_reports SET report_z = ?", (b"not zlib",))  # the newest run's report
    conn.execute("UPDATE experiments SET phase = 'teleporting', active = 1, failed = 0")  # an unknown phase
    conn.commit()
    conn.close()

    code, output = finished(llem_pytest(suite, f"--llem-state-dir={state}", "--llem-compare"))

    assert code == 0, output
    assert "INTERNALERROR" not in output and "Traceback" not in output, output
    assert f"skipped the store's row of run {run_id}: the store's row is not a report: damaged" in output
    assert "skipped the store's row of experiment " in output and "left alone: " in output


def test_resume_passes_over_a_result_that_does_not_validate_with_one_line(suite: Path, tmp_path: Path):
    import sqlite3

    state = tmp_path / "state"
    database = checkpointed_store(suite, state)
    conn = sqlite3.connect(database)
    conn.execute("UPDATE experiments SET result_json = ?", (json.dumps({"output_tokens": "many"}),))
    conn.commit()
    conn.close()

    code, output = finished(llem_pytest(suite, f"--llem-state-dir={state}", "--llem-resume"))

    assert code == 0, output
    assert "2 passed" in output and "validation error" not in output, output
    skipped = [line for line in output.splitlines() if "skipped the store's row of experiment" in line]
    assert len(skipped) == 2 and all("not resumable: " in line for line in skipped), output
    runs = RunHistory(state).summaries()
    assert [entry.resumed for entry in RunHistory(state).find(runs[-1].run_id).experiments] == [False, False]


def test_a_run_name_with_control_characters_is_refused_in_one_line(suite: Path, tmp_path: Path):
    code, output = finished(
        llem_pytest(suite, f"--llem-state-dir={tmp_path / 'state'}", "--llem-save=red\x1b[31m\nfake")
    )

    assert code == 4, output
    assert "\x1b" not in output
    (line,) = [line for line in output.splitlines() if "pytest-llem:" in line]
    assert "cannot name a run: no '/', no control characters" in line


def project_folder(parent: Path, name: str, suite_file: str, ini: str = "") -> Path:
    """A project of its own: a folder with its pytest.ini (pytest's rootdir) and the suite."""
    folder = parent / name
    folder.mkdir()
    (folder / "pytest.ini").write_text(f"[pytest]\n{ini}")
    (folder / suite_file).write_text(SUITE)
    return folder


def compared_with(output: str) -> str | None:
    """The baseline a session's comparison table names, or None when it compared nothing."""
    found = [
        line.removeprefix("compared with ")
        for line in output.splitlines()
        if line.startswith("compared with ")
    ]
    return found[0].removesuffix(":") if found else None


def test_two_projects_sharing_a_state_dir_each_compare_with_their_own_runs(tmp_path: Path):
    state = tmp_path / "state"
    state_option = f"--llem-state-dir={state}"
    alpha = project_folder(tmp_path, "alpha", "test_alpha.py")
    beta = project_folder(tmp_path, "beta", "test_beta.py")
    code, output = finished(llem_pytest(alpha, state_option))
    assert code == 0, output
    (alpha_run,) = RunHistory(state).summaries()

    # Beta's first gated run: alpha's run is the newest in the store, and is not beta's baseline.
    code, output = finished(llem_pytest(beta, state_option, "--llem-compare-fail=tokens_per_s:50%"))
    assert code == 1, output
    beta_first = RunHistory(state).summaries()[-1]
    assert beta_first.project != alpha_run.project
    assert compared_with(output) is None and "missing from this run" not in output
    (nothing,) = [line for line in output.splitlines() if "nothing to compare with" in line]
    assert nothing.startswith(
        f"pytest-llem: nothing to compare with: no earlier run of project {beta_first.project!r}"
    )
    assert nothing.endswith(
        f"the newest run that did is {alpha_run.run_id}, of project {alpha_run.project!r}, compared with "
        f"only when named: --llem-compare={alpha_run.run_id}"
    )
    assert "pytest-llem: GATE FAILED: limits were set but there is no baseline to compare with" in output

    # A bare --llem-compare in beta takes beta's own newest run, though alpha's is in the store.
    code, output = finished(llem_pytest(beta, state_option, "--llem-compare"))
    assert code == 0, output
    assert compared_with(output) == beta_first.run_id
    assert "missing from this run" not in output and "nothing to compare with" not in output

    # Named, alpha's run is compared with from beta.
    code, output = finished(llem_pytest(beta, state_option, f"--llem-compare={alpha_run.run_id}"))
    assert code == 0, output
    assert compared_with(output) == alpha_run.run_id
    assert "missing from this run: test_alpha.py::test_case[1]" in output

    # llem_project in another folder's ini makes it alpha's project: its bare compare takes alpha's run.
    joined = project_folder(tmp_path, "alpha-copy", "test_alpha.py", f"llem_project = {alpha_run.project}\n")
    code, output = finished(llem_pytest(joined, state_option, "--llem-compare"))
    assert code == 0, output
    assert compared_with(output) == alpha_run.run_id and "missing from this run" not in output

    listed = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest_llem.cli",
            "list",
            "--state-dir",
            str(state),
            "--project",
            beta_first.project,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert listed.returncode == 0, listed.stderr
    assert [row.split()[1] for row in listed.stdout.splitlines()[1:]] == [beta_first.project] * 3
