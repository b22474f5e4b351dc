"""The `pytest-llem` command's own behaviour (`cli.main`): what each subcommand's options do
beyond the end-to-end runs in tests/e2e/test_cli.py (the newest N runs, keeping N per
machine, the store from the environment, importing, publishing the chosen runs), usage
errors, a reader that goes away (`| head`, a real pipe), and `export_text` and `parse_date`
as functions."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import pytest
from sample_reports import EPYC, GPT2, make_entry, make_report, make_result, sample_history

from pytest_llem.cli import EXIT_BROKEN_PIPE, EXIT_OK, EXIT_USAGE, export_text, main, parse_date
from pytest_llem.errors import LlemError
from pytest_llem.settings import STATE_DIR_ENV
from pytest_llem.store.database import close_stores, default_store_url
from pytest_llem.store.report import SessionReport, write_report
from pytest_llem.store.urls import STORE_ENV

needs_matplotlib = pytest.mark.skipif(
    importlib.util.find_spec("matplotlib") is None, reason="the html extra (matplotlib) is not installed"
)


@pytest.fixture(autouse=True)
def plain_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No state dir or store from the environment this suite runs in; each test's stores closed."""
    monkeypatch.delenv(STATE_DIR_ENV, raising=False)
    monkeypatch.delenv(STORE_ENV, raising=False)
    yield
    close_stores()


def save(state_dir: Path, run_id: str, days: float, **fields) -> SessionReport:
    report = make_report(run_id, [make_entry(GPT2, make_result([5.0, 5.1]))], days_after_t0=days, **fields)
    write_report(report, state_dir)
    return report


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, list[str], list[str]]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out.splitlines(), err.splitlines()


def test_without_a_command_the_usage_says_one_is_needed(capsys):
    with pytest.raises(SystemExit) as exited:
        main([])
    assert exited.value.code == EXIT_USAGE
    assert "error: the following arguments are required: COMMAND" in capsys.readouterr().err


def test_list_limit_shows_only_the_newest_runs_oldest_first(tmp_path: Path, capsys):
    for day, run_id in enumerate(["r-1", "r-2", "r-3", "r-4"]):
        save(tmp_path, run_id, day)
    code, out, _ = cli(capsys, "list", "--limit", "2", "--state-dir", str(tmp_path))
    assert code == EXIT_OK
    assert [line.split()[0] for line in out[1:]] == ["r-3", "r-4"]


def test_the_store_comes_from_the_environment_when_not_given(tmp_path: Path, capsys, monkeypatch):
    elsewhere = tmp_path / "shared"
    save(elsewhere, "shared-run", 0)
    empty = tmp_path / "empty"
    code, out, _ = cli(capsys, "list", "--state-dir", str(empty))
    assert out == [f"no saved runs in {empty}"]

    monkeypatch.setenv(STORE_ENV, default_store_url(elsewhere))
    code, out, _ = cli(capsys, "list", "--state-dir", str(empty))
    assert code == EXIT_OK and [line.split()[0] for line in out[1:]] == ["shared-run"]


def test_clean_keep_keeps_the_newest_runs_of_each_project_and_machine(tmp_path: Path, capsys):
    for run_id, day, machine in [
        ("h-old", 0, None),
        ("h-new", 1, None),
        ("e-old", 2, EPYC),
        ("e-new", 3, EPYC),
    ]:
        save(tmp_path, run_id, day, **({"machine": machine} if machine else {}))
    code, out, _ = cli(capsys, "clean", "--keep", "1", "--state-dir", str(tmp_path))
    assert code == EXIT_OK
    assert out == [
        "removed h-old (started 2026-01-01 00:00:00 UTC)",
        "removed e-old (started 2026-01-03 00:00:00 UTC)",
        "removed 2 run(s) beyond the newest 1 per project and machine",
    ]
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["e-new", "h-new"]


def test_clean_by_date_and_count_together_names_both_rules(tmp_path: Path, capsys):
    save(tmp_path, "old", 0)
    save(tmp_path, "new", 10)
    code, out, _ = cli(
        capsys, "clean", "--older-than", "2026-01-05", "--keep", "5", "--state-dir", str(tmp_path)
    )
    assert code == EXIT_OK
    assert (
        out[-1]
        == "removed 1 run(s) started before 2026-01-05 and beyond the newest 5 per project and machine"
    )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("clean", "--keep", "-1"), "pytest-llem: --keep: -1 is not a number of runs; give 0 or more"),
        (
            ("list", "--limit", "-3"),
            "pytest-llem: --limit: -3 is not a number of runs to show; give 1 or more",
        ),
    ],
)
def test_a_negative_count_is_one_line_naming_the_option(tmp_path: Path, capsys, argv, message):
    code, out, err = cli(capsys, *argv, "--state-dir", str(tmp_path))
    assert (code, out, err) == (EXIT_USAGE, [], [message])


def test_import_needs_a_folder_and_says_what_it_imported(tmp_path: Path, capsys):
    state_dir = tmp_path / "state"
    not_a_folder = tmp_path / "file.txt"
    not_a_folder.write_text("")
    code, _, err = cli(capsys, "import", str(not_a_folder), "--state-dir", str(state_dir))
    assert (code, err) == (
        EXIT_USAGE,
        [
            f"pytest-llem: import: {not_a_folder} is not a folder; "
            "give a state dir (it holds experiments/ and runs/)"
        ],
    )
    old = tmp_path / "old-state"
    (old / "runs").mkdir(parents=True)
    code, out, _ = cli(capsys, "import", str(old), "--state-dir", str(state_dir))
    assert code == EXIT_OK
    assert out == [f"imported 0 run(s) and 0 experiment state(s) into {default_store_url(state_dir)}"]


def test_a_reader_that_goes_away_ends_the_command_quietly_with_sigpipes_code(tmp_path: Path):
    # A table far larger than a pipe's buffer: the command is still writing when `head` leaves.
    entries = [make_entry(f"t.py::test_{i}", make_result([5.0, 5.1, 5.2])) for i in range(1200)]
    write_report(make_report("big", entries), tmp_path)
    env = {k: v for k, v in os.environ.items() if k not in (STATE_DIR_ENV, STORE_ENV)}
    command = subprocess.Popen(
        [sys.executable, "-m", "pytest_llem.cli", "show", "big", "--state-dir", str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    assert command.stdout.read(10) == b"big: passe"
    command.stdout.close()
    assert command.wait(timeout=60) == EXIT_BROKEN_PIPE
    assert command.stderr.read() == b""  # no traceback, no "Exception ignored" at exit


def test_export_text_gives_each_format_of_one_report():
    report = make_report("r", [make_entry(GPT2, make_result([5.0, 5.1]))])
    assert SessionReport.model_validate_json(export_text(report, "json")) == report
    csv_header = export_text(report, "csv").splitlines()[0].split(",")
    assert csv_header[:2] == ["nodeid", "status"] and "energy_j" in csv_header
    assert GPT2 in export_text(report, "markdown")
    assert json.loads(export_text(report, "json"))["run_id"] == "r"


def test_a_date_is_midnight_utc_and_anything_else_is_one_line():
    assert parse_date("2026-02-28") == datetime(2026, 2, 28, tzinfo=timezone.utc)
    with pytest.raises(LlemError, match=r"^--older-than: '28/02/2026' is not a date; write YYYY-MM-DD$"):
        parse_date("28/02/2026")


def test_bisects_pytest_args_are_what_follows_the_first_double_dash():
    from pytest_llem.cli import split_pytest_args

    argv = ["bisect", "A", "B", "--metric", "energy_j", "--", "tests", "--", "-k", "x"]
    assert split_pytest_args(argv) == (
        ["bisect", "A", "B", "--metric", "energy_j"],
        ["tests", "--", "-k", "x"],
    )
    assert split_pytest_args(["show", "--", "-odd-name"]) == (["show", "--", "-odd-name"], [])


@pytest.fixture
def two_commits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A git repository of two commits, `first` and `second`, as the working directory."""
    repo = tmp_path / "repo"
    repo.mkdir()

    def git(*args: str) -> None:
        subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)

    git("init", "-q", "-b", "main")
    git("config", "user.name", "Bisect Test")
    git("config", "user.email", "bisect@example.invalid")
    for subject in ("first", "second"):
        (repo / "file.txt").write_text(subject)
        git("add", "file.txt")
        git("commit", "-q", "-m", subject)
    monkeypatch.chdir(repo)
    return repo


def save_history(state_dir: Path, project: str, machines=None, days: float = 0) -> None:
    energies = [[5.0 + 0.01 * (i % 3), 5.02, 4.98] for i in range(6)]
    for report in sample_history(energies, machines, project=project):
        report.run_id = f"{project}-{report.run_id}"
        report.started_at = report.started_at.replace(hour=int(days))
        write_report(report, state_dir)


@needs_matplotlib
def test_publish_writes_the_chosen_projects_and_machines_runs_only(tmp_path: Path, capsys):
    state_dir = tmp_path / "state"
    save_history(state_dir, "alpha")
    save_history(state_dir, "beta", machines=[EPYC] * 6, days=1)

    code, out, err = cli(
        capsys,
        "publish",
        str(tmp_path / "site"),
        "--project",
        "beta",
        "--machine",
        "epyc",
        "--state-dir",
        str(state_dir),
        "--metric",
        "energy_j",
    )

    assert (code, err) == (EXIT_OK, [])
    assert out == [
        f"published 1 case(s) from 6 run(s) to {tmp_path / 'site' / 'index.html'} (0 regression(s) found)"
    ]
    index = (tmp_path / "site" / "index.html").read_text()
    assert "project(s): beta; machine(s): epyc" in index
    (page,) = (tmp_path / "site" / "cases").iterdir()
    assert page.read_text().count("<svg") == 1  # energy_j alone


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["main~1", "nope", "--", "t.py"], "bisect: BAD 'nope' is not a commit of this repository; give a"),
        (["main", "main~1", "--", "t.py"], "bisect: GOOD "),
        (["main~1", "main"], "bisect: give the benchmark's pytest arguments after `--`"),
        (["main~1", "main", "--", "t.py", "--llem-save=x"], "bisect: --llem-save in the pytest arguments"),
        (["main~1", "main", "--alpha", "0.2", "--", "t.py"], "--alpha: 0.2 is not a significance level"),
        (
            ["main~1", "main", "--max-runs-per-commit", "2", "--", "t.py"],
            "--max-runs-per-commit: 2 is too few",
        ),
        (
            ["main~1", "main", "--metric", "joules", "--", "t.py"],
            "--metric: unknown metric 'joules' (known: ",
        ),
        (["main~1", "main", "--fail", "energy_j:5", "--", "t.py"], "--fail energy_j:5: a limit needs a unit"),
        (
            ["main~1", "main", "--metric", "energy_j", "--fail", "tokens_per_s:5%", "--", "t.py"],
            "--metric energy_j and --fail tokens_per_s:5% name two metrics",
        ),
    ],
)
def test_bisect_user_errors_are_one_line_and_exit_2(two_commits: Path, tmp_path: Path, capsys, argv, message):
    code, out, err = cli(capsys, "bisect", *argv[:2], "--state-dir", str(tmp_path / "state"), *argv[2:])
    assert code == EXIT_USAGE and out == []
    assert len(err) == 1 and err[0].startswith(f"pytest-llem: {message}"), err
    assert not (tmp_path / "state").exists()  # nothing opened, nothing written
    assert "is not an ancestor of BAD" in err[0] or argv[:2] != ["main", "main~1"]


def test_bisect_outside_a_checkout_is_one_line(tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = cli(capsys, "bisect", "a", "b", "--state-dir", str(tmp_path / "state"), "--", "t.py")
    assert (code, out) == (EXIT_USAGE, [])
    assert err == [
        f"pytest-llem: bisect: {tmp_path} is not inside a git checkout; run it in the repository "
        "whose commits it bisects"
    ]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["--metric", "joules"],
            "pytest-llem: --metric: unknown metric 'joules'; choose among energy_per_token_j, ",
        ),
        (
            ["--project", "gamma"],
            "pytest-llem: publish: no measured runs to publish in {state} of project 'gamma' "
            "(projects with runs: alpha); run pytest --llem first",
        ),
        (
            ["--machine", "nope"],
            "pytest-llem: publish: no measured runs to publish in {state} on machine nope; "
            "run pytest --llem first",
        ),
    ],
    ids=["metric", "project", "machine"],
)
def test_publish_refuses_what_matches_nothing_in_one_line(tmp_path: Path, capsys, argv, message):
    state_dir = tmp_path / "state"
    save_history(state_dir, "alpha")
    code, out, err = cli(capsys, "publish", str(tmp_path / "site"), "--state-dir", str(state_dir), *argv)
    assert (code, out, len(err)) == (EXIT_USAGE, [], 1)
    assert err[0].startswith(message.format(state=state_dir))
    assert not (tmp_path / "site").exists()
