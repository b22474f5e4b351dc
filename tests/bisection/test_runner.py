"""Each commit's `pytest --llem` command line, and its process stopped on SIGINT or SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pytest_llem.bisection import runner
from pytest_llem.bisection.git import BisectError, Commit
from pytest_llem.bisection.runner import (
    CommitRun,
    Interrupted,
    bisect_project,
    checked_pytest_args,
    run_name,
    run_pytest,
    signals_as_exceptions,
)

COMMIT = Commit("a" * 40, "subject")


def test_each_benchmark_bisected_has_a_project_of_its_own():
    tests, other = bisect_project("proj-1234", ["tests"]), bisect_project("proj-1234", ["tests", "-k", "x"])
    assert tests.startswith("proj-1234/bisect-") and len(tests) == len("proj-1234/bisect-") + 8
    assert tests == bisect_project("proj-1234", ("tests",)) and tests != other


def test_pytest_args_are_kept_with_llem_left_out():
    assert checked_pytest_args(["--llem", "tests/bench", "-k", "x", "--llem-energy=none"]) == [
        "tests/bench",
        "-k",
        "x",
        "--llem-energy=none",
    ]


def test_missing_pytest_args_say_where_they_go():
    with pytest.raises(
        BisectError, match=r"^bisect: give the benchmark's pytest arguments after `--`, e\.g\. "
    ):
        checked_pytest_args([])


@pytest.mark.parametrize(
    "arg", ["--llem-save=x", "--llem-repeats", "--llem-compare-fail=tokens_per_s:5%", "--llem-state-dir=/s"]
)
def test_an_option_bisect_sets_itself_is_refused_by_name(arg: str):
    option = arg.split("=")[0]
    with pytest.raises(BisectError, match=rf"^bisect: {option} in the pytest arguments: bisect sets it"):
        checked_pytest_args(["tests", arg])


def test_good_runs_every_process_and_the_others_compare_with_it(tmp_path: Path):
    run = CommitRun(("tests",), tmp_path, None, "proj-1234/bisect-0a1b2c3d", 6, "tokens_per_s:15%")
    assert run_name(COMMIT) == "bisect-" + "a" * 40
    good = run.command(COMMIT, None)
    assert good[:5] == [sys.executable, "-m", "pytest", "--llem", "tests"]
    assert good[5:] == [
        f"--llem-save=bisect-{'a' * 40}",
        f"--llem-state-dir={tmp_path}",
        "--llem-project=proj-1234/bisect-0a1b2c3d",
        "--llem-repeats=6",
    ]
    other = run.command(COMMIT, "bisect-good")
    assert other[5:8] == good[5:8]
    assert other[8:] == [
        "--llem-repeats=auto:6",
        "--llem-compare=bisect-good",
        "--llem-compare-fail=tokens_per_s:15%",
    ]
    with_store = CommitRun(("tests",), tmp_path, "sqlite:///x.db", "p", 3, "energy_j:5%").command(
        COMMIT, None
    )
    assert "--llem-store=sqlite:///x.db" in with_store


CHILD = """
import signal, sys, time
def stop(signum, frame):
    open(sys.argv[1], "w").write(signal.Signals(signum).name)
    sys.exit(130)
signal.signal(signal.SIGINT, stop)
signal.signal(signal.SIGTERM, stop)
print("started", flush=True)
time.sleep(60)
"""


def signal_self_later(signum: int, after_s: float) -> subprocess.Popen[bytes]:
    code = f"import os, time; time.sleep({after_s}); os.kill({os.getpid()}, {int(signum)})"
    return subprocess.Popen([sys.executable, "-c", code])


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_is_passed_on_to_pytest_which_stops_before_bisect_does(tmp_path: Path, signum: int):
    seen = tmp_path / "seen"
    output = (tmp_path / "out.log").open("w")
    sender = signal_self_later(signum, 1.0)
    before = signal.getsignal(signum)
    with pytest.raises(Interrupted) as raised, signals_as_exceptions():
        try:
            run_pytest([sys.executable, "-c", CHILD, str(seen)], tmp_path, output)
        finally:
            # While the cleanup runs, a second signal is ignored.
            assert signal.getsignal(signal.SIGINT) is signal.getsignal(signal.SIGTERM) is signal.SIG_IGN
    sender.wait()
    assert raised.value.signum == signum and raised.value.exit_code == 128 + signum
    assert seen.read_text() == signal.Signals(signum).name  # the child got it, and had exited
    assert (tmp_path / "out.log").read_text() == "started\n"
    assert signal.getsignal(signum) is before


def test_a_pytest_that_will_not_stop_is_killed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(runner, "STOP_TIMEOUT_S", 0.5)
    stubborn = "import signal, time; signal.signal(signal.SIGINT, signal.SIG_IGN); time.sleep(60)"
    sender = signal_self_later(signal.SIGINT, 1.0)
    started = time.monotonic()
    with pytest.raises(Interrupted), signals_as_exceptions():
        run_pytest([sys.executable, "-c", stubborn], tmp_path, open(os.devnull, "w"))
    sender.wait()
    assert time.monotonic() - started < 30


def test_the_handlers_are_put_back_after_the_block(tmp_path: Path):
    before = signal.getsignal(signal.SIGTERM)
    with signals_as_exceptions():
        assert signal.getsignal(signal.SIGTERM) is not before
        assert run_pytest([sys.executable, "-c", "raise SystemExit(3)"], tmp_path, open(os.devnull, "w")) == 3
    assert signal.getsignal(signal.SIGTERM) is before
