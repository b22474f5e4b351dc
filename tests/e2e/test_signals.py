"""SIGINT, SIGTERM and SIGKILL to a real pytest process while an experiment runs.

The suite's second experiment ignores SIGTERM and spawns grandchildren that ignore it too,
then writes every PID to a file and blocks. After the signal, no descendant may survive.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from helpers import (
    START_METHODS,
    preloaded_interpreters,
    read_pids,
    reports,
    start_llem_pytest,
    wait_for_file,
    wait_until_all_gone,
)

from pytest_llem.store.state import StateManager

pytestmark = pytest.mark.signals

# Grace period (2 s) plus polling: the bound a user can count on for teardown.
ALL_GONE_WITHIN_S = 3.0

SUITE = """
import os
from workloads import count_tokens, hang_with_stubborn_children, hang_in_native_code

def test_measured_first(llem):
    assert llem.run(count_tokens).output_tokens == 8

def test_hangs(llem):
    llem.run(globals()[os.environ["HANG_WORKLOAD"]], params={"pid_file": os.environ["PID_FILE"]})

def test_never_reached(llem):
    llem.run(count_tokens)
"""


class Session:
    def __init__(
        self,
        tmp_path: Path,
        hang_workload: str = "hang_with_stubborn_children",
        preload: str = "auto",
        **env: str,
    ) -> None:
        self.tmp_path = tmp_path
        self.state_dir = tmp_path / "state"
        self.pid_file = tmp_path / "pids.json"
        (tmp_path / "test_suite.py").write_text(SUITE)
        self.proc = start_llem_pytest(
            tmp_path,
            self.state_dir,
            "test_suite.py",
            f"--llem-preload={preload}",
            PID_FILE=str(self.pid_file),
            HANG_WORKLOAD=hang_workload,
            **env,
        )

    def wait_until_hanging(self) -> list[int]:
        """The group's processes; `self.preloaded` gets the preloaded interpreter, if any."""
        wait_for_file(self.pid_file)
        time.sleep(0.2)  # let the worker enter its window
        self.preloaded = preloaded_interpreters(self.proc.pid)
        return read_pids(self.pid_file)

    def finish(self, timeout_s: float = 20) -> tuple[int, str]:
        output, _ = self.proc.communicate(timeout=timeout_s)
        return self.proc.returncode, output

    def report(self) -> dict:
        (report,) = reports(self.state_dir)
        return report


@pytest.mark.parametrize("preload", START_METHODS)
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupt_tears_down_the_group_and_reports_what_was_measured(
    tmp_path: Path, sig: signal.Signals, preload: str
):
    session = Session(tmp_path, preload=preload)
    pids = session.wait_until_hanging()
    assert len(pids) == 4  # supervisor, worker, two grandchildren
    assert len(session.preloaded) == (0 if preload == "none" else 1)

    os.kill(session.proc.pid, sig)
    signalled_at = time.monotonic()
    assert wait_until_all_gone(pids, ALL_GONE_WITHIN_S) == []
    print(
        f"{sig.name}: all {len(pids)} descendants gone "
        f"{time.monotonic() - signalled_at:.2f} s after the signal"
    )
    returncode, output = session.finish()
    assert wait_until_all_gone(session.preloaded, 1.0) == []  # stopped as pytest finished

    assert returncode == 130, output
    assert f"interrupted by {sig.name}" in output
    assert "pytest-llem: report written to" in output
    report = session.report()
    assert report["outcome"] == "interrupted" and report["exit_code"] == 130
    measured, interrupted = report["experiments"]  # the third test never ran
    assert measured["phase"] == "done" and measured["result"]["output_tokens"] == 8
    assert interrupted["failed"] and interrupted["result"] is None
    state = StateManager(session.state_dir).load(interrupted["experiment_id"])
    assert state.failed and state.phase.value == "measuring"
    assert state.error_message == f"interrupted by {sig.name}; its process group was killed"


def test_a_second_signal_does_not_abort_cleanup(tmp_path: Path):
    session = Session(tmp_path)
    pids = session.wait_until_hanging()
    os.kill(session.proc.pid, signal.SIGINT)
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGINT):
        time.sleep(0.3)  # inside the 2 s grace period
        os.kill(session.proc.pid, sig)
    assert wait_until_all_gone(pids, ALL_GONE_WITHIN_S) == []
    returncode, output = session.finish()
    assert returncode == 130, output
    report = session.report()
    assert report["outcome"] == "interrupted"
    assert report["experiments"][1]["error"] == "interrupted by SIGINT"


@pytest.mark.parametrize("preload", START_METHODS)
@pytest.mark.parametrize("hang_workload", ["hang_with_stubborn_children", "hang_in_native_code"])
def test_sigkill_to_pytest_leaves_no_descendant_and_the_next_session_marks_it_stale(
    tmp_path: Path, hang_workload: str, preload: str
):
    # Its own temporary folder: any pytest-llem session reclaims the work folders of dead
    # pytest processes it finds, and another test's session would take this one's first.
    own_tmp = Path(tempfile.mkdtemp(prefix="llem-"))  # short: a socket's path must fit 108 bytes
    session = Session(tmp_path, hang_workload, preload, TMPDIR=str(own_tmp))
    pids = session.wait_until_hanging() + session.preloaded  # it must die with pytest too
    os.kill(session.proc.pid, signal.SIGKILL)
    killed_at = time.monotonic()
    assert wait_until_all_gone(pids, ALL_GONE_WITHIN_S) == []
    print(
        f"SIGKILL ({hang_workload}): all {len(pids)} descendants gone "
        f"{time.monotonic() - killed_at:.2f} s later"
    )
    session.finish()

    states = StateManager(session.state_dir)
    (orphan,) = [s for s in states.all_states() if s.experiment_id.startswith("test_hangs")]
    assert orphan.active  # nobody was left to mark it
    # The report written after the first experiment survived the kill.
    assert session.report()["outcome"] == "running"

    # Its work folder (request.json) was left behind: the next session reclaims it.
    work_dirs = f"pytest-llem-{session.proc.pid}-*"
    assert list(own_tmp.glob(work_dirs))
    (tmp_path / "test_suite.py").write_text("def test_nothing(llem):\n    pass\n")
    rerun = start_llem_pytest(tmp_path, session.state_dir, TMPDIR=str(own_tmp))
    rerun_output, _ = rerun.communicate(timeout=60)
    assert "marked 1 stale experiment(s)" in rerun_output, rerun_output
    assert not list(own_tmp.glob(work_dirs))
    shutil.rmtree(own_tmp)
    stale = states.load(orphan.experiment_id)
    assert stale.failed and stale.error_message.startswith("stale: its process is gone")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_between_experiments_also_ends_with_130_and_a_report(tmp_path: Path, sig: signal.Signals):
    marker = tmp_path / "sleeping"
    (tmp_path / "test_between.py").write_text(
        "import pathlib, time\n"
        "from workloads import count_tokens\n"
        "def test_measured(llem):\n    llem.run(count_tokens)\n"
        f"def test_plain_sleep():\n    pathlib.Path({str(marker)!r}).touch()\n    time.sleep(60)\n"
    )
    proc = start_llem_pytest(tmp_path, tmp_path / "state", "test_between.py")
    wait_for_file(marker)
    os.kill(proc.pid, sig)
    output, _ = proc.communicate(timeout=20)
    assert proc.returncode == 130, output
    assert "pytest-llem: report written to" in output
    (report,) = reports(tmp_path / "state")
    assert report["outcome"] == "interrupted"
    assert report["experiments"][0]["result"]["output_tokens"] == 8


def test_a_signal_during_the_cool_down_ends_the_wait_at_once(tmp_path: Path):
    (tmp_path / "test_suite.py").write_text(
        "from workloads import count_tokens\n"
        "def test_first(llem):\n    llem.run(count_tokens)\n"
        "def test_second(llem):\n    llem.run(count_tokens)\n"
    )
    state_dir = tmp_path / "state"
    proc = start_llem_pytest(
        tmp_path, state_dir, "test_suite.py", "--llem-cooldown=120", "--llem-energy=none"
    )
    deadline = time.monotonic() + 30
    while not (reports(state_dir) and reports(state_dir)[0]["experiments"][0].get("result")):
        assert time.monotonic() < deadline, "the first experiment never finished"
        time.sleep(0.05)
    time.sleep(0.3)  # now inside the 120 s cool-down before the second experiment
    signalled = time.monotonic()
    os.kill(proc.pid, signal.SIGINT)
    output, _ = proc.communicate(timeout=20)
    assert proc.returncode == 130, output
    assert time.monotonic() - signalled < 5
    (report,) = reports(state_dir)
    first, second = report["experiments"]
    assert first["result"]["output_tokens"] == 8
    assert second["interrupted"] and second["error"] == "interrupted by SIGINT"
    # The interrupted experiment never started: no state of it was left behind.
    assert len(StateManager(state_dir).all_states()) == 1


RACE_SUITE = """
import os, pathlib, time
from workloads import count_tokens

def test_first(llem):
    pathlib.Path(os.environ["STARTED"]).touch()
    llem.run(count_tokens)

def test_second(llem):
    llem.run(count_tokens)

def test_third(llem):
    llem.run(count_tokens)

def test_never_ends():
    time.sleep(60)
"""

RACE_TRIES = 8


def test_two_or_three_signals_at_random_gaps_always_end_with_130_and_an_interrupted_report(
    tmp_path: Path,
):
    """The double Ctrl-C race: the later signals land anywhere in teardown or report writing.

    It cannot be forced, so it is tried RACE_TRIES times with random timings (seed printed).
    """
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    print(f"seed {seed}")
    (tmp_path / "test_race.py").write_text(RACE_SUITE)
    for attempt in range(RACE_TRIES):
        state_dir = tmp_path / f"state-{attempt}"
        started = tmp_path / f"started-{attempt}"
        proc = start_llem_pytest(tmp_path, state_dir, "test_race.py", STARTED=str(started))
        wait_for_file(started)
        time.sleep(rng.uniform(0, 1.5))
        sent = []
        for _ in range(rng.choice((2, 3))):
            sig = rng.choice((signal.SIGINT, signal.SIGTERM))
            if proc.poll() is None:
                os.kill(proc.pid, sig)
                sent.append(sig.name)
            time.sleep(rng.uniform(0, 0.3))
        output, _ = proc.communicate(timeout=60)
        where = f"try {attempt} (seed {seed}, signals {sent})"
        assert proc.returncode == 130, f"{where}\n{output}"
        assert "Traceback" not in output and "INTERNALERROR" not in output, f"{where}\n{output}"
        (report,) = reports(state_dir)
        assert (report["outcome"], report["exit_code"]) == ("interrupted", 130), where


#: A conftest whose object sends a signal while pytest's interpreter shuts down, after its
#: exit handlers, when the interpreter has put the default actions back on every signal.
LATE_SIGNAL_CONFTEST = """
import os, signal

class SignalWhileTheInterpreterShutsDown:
    def __del__(self, kill=os.kill, pid=os.getpid(), sig=signal.Signals[os.environ["LATE_SIGNAL"]]):
        kill(pid, sig)

late = SignalWhileTheInterpreterShutsDown()
"""


@pytest.mark.parametrize("late", ["SIGINT", "SIGTERM"])
def test_a_signal_while_pytest_shuts_down_still_ends_with_130(tmp_path: Path, late: str):
    """The window the random gaps above found now and then, hit on purpose."""
    (tmp_path / "conftest.py").write_text(LATE_SIGNAL_CONFTEST)
    (tmp_path / "test_late.py").write_text(
        "import os, signal\n"
        "from workloads import count_tokens\n"
        "def test_measured(llem):\n    llem.run(count_tokens)\n"
        "def test_interrupted():\n    os.kill(os.getpid(), signal.SIGINT)\n"
    )
    proc = start_llem_pytest(tmp_path, tmp_path / "state", "test_late.py", LATE_SIGNAL=late)
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, output  # not -2 or -15: killed by the late signal
    (report,) = reports(tmp_path / "state")
    assert (report["outcome"], report["exit_code"]) == ("interrupted", 130)


STORM_TRIES = 3


def test_a_storm_of_signals_until_pytest_exits_ends_with_130_and_an_interrupted_report(tmp_path: Path):
    """SIGINT and SIGTERM every half millisecond from a random moment on, until pytest is gone:
    some land in every phase of stopping, the interpreter's shutdown included."""
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    (tmp_path / "test_race.py").write_text(RACE_SUITE)
    for attempt in range(STORM_TRIES):
        state_dir = tmp_path / f"state-{attempt}"
        started = tmp_path / f"started-{attempt}"
        proc = start_llem_pytest(tmp_path, state_dir, "test_race.py", STARTED=str(started))
        wait_for_file(started)
        time.sleep(rng.uniform(0, 0.5))
        sent = 0
        while proc.poll() is None:
            try:
                os.kill(proc.pid, rng.choice((signal.SIGINT, signal.SIGTERM)))
            except ProcessLookupError:
                break
            sent += 1
            time.sleep(0.0005)
        output, _ = proc.communicate(timeout=60)
        where = f"try {attempt} (seed {seed}, {sent} signals)"
        assert proc.returncode == 130, f"{where}\n{output}"
        assert "Traceback" not in output and "INTERNALERROR" not in output, f"{where}\n{output}"
        (report,) = reports(state_dir)
        assert (report["outcome"], report["exit_code"]) == ("interrupted", 130), where


XDIST_SUITE = """
import os, pathlib, signal, time
from workloads import count_tokens

def test_one(llem):
    llem.run(count_tokens)

def test_two(llem):
    llem.run(count_tokens)

def test_three(llem):
    llem.run(count_tokens)
    if os.environ.get("KILL_WORKER") == "1":
        os.kill(os.getpid(), signal.SIGKILL)  # the xdist worker dies after its result is checkpointed
    pathlib.Path(os.environ["MARKER_DIR"], os.environ["PYTEST_XDIST_WORKER"]).touch()
    time.sleep(float(os.environ.get("LINGER_S", "0")))
"""


def _xdist_session(tmp_path: Path, **env: str):
    pytest.importorskip("xdist")
    (tmp_path / "test_x.py").write_text(XDIST_SUITE)
    markers = tmp_path / "markers"
    markers.mkdir()
    state_dir = tmp_path / "state"
    proc = start_llem_pytest(
        tmp_path, state_dir, "test_x.py", "-n", "2", "--dist=each", MARKER_DIR=str(markers), **env
    )
    return proc, state_dir, markers


def test_a_killed_xdist_worker_keeps_its_checkpointed_results_in_the_controller_report(tmp_path: Path):
    proc, state_dir, _ = _xdist_session(tmp_path, KILL_WORKER="1")
    output, _ = proc.communicate(timeout=180)
    (report,) = reports(state_dir)
    # Each of the two workers measured three experiments before it was killed.
    assert sorted(e["worker_id"] for e in report["experiments"] if e.get("result")).count("gw0") == 3
    assert len([e for e in report["experiments"] if e.get("result")]) == 6, output


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_to_the_xdist_controller_leaves_every_worker_result_in_its_report(
    tmp_path: Path, sig: signal.Signals
):
    proc, state_dir, markers = _xdist_session(tmp_path, LINGER_S="60")
    wait_for_file(markers / "gw0", timeout_s=120)
    wait_for_file(markers / "gw1", timeout_s=120)
    os.kill(proc.pid, sig)
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, output
    (report,) = reports(state_dir)
    assert report["outcome"] == "interrupted"
    assert len([e for e in report["experiments"] if e.get("result")]) == 6, output


def test_after_sigkill_of_the_xdist_controller_the_cli_completes_the_run(tmp_path: Path):
    proc, state_dir, markers = _xdist_session(tmp_path, LINGER_S="60")
    wait_for_file(markers / "gw0", timeout_s=120)
    wait_for_file(markers / "gw1", timeout_s=120)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=60)
    listing = subprocess.run(
        [sys.executable, "-m", "pytest_llem.cli", "list", "--state-dir", str(state_dir)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "no saved runs" not in listing.stdout, listing.stdout
    (report,) = reports(state_dir)
    assert len([e for e in report["experiments"] if e.get("result")]) == 6


@pytest.mark.parametrize("preload", START_METHODS)
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["SIGINT", "SIGKILL"])
def test_escaped_descendants_die_when_pytest_is_interrupted_or_killed(
    tmp_path: Path, sig: signal.Signals, preload: str
):
    pid_file = tmp_path / "pids.json"
    (tmp_path / "test_escape.py").write_text(
        "from workloads import escape_the_group\n"
        "def test_escapes(llem):\n"
        f"    llem.run(escape_the_group, params={{'pid_file': {str(pid_file)!r}, 'hang': True}})\n"
    )
    proc = start_llem_pytest(tmp_path, tmp_path / "state", "test_escape.py", f"--llem-preload={preload}")
    wait_for_file(pid_file)
    pids = read_pids(pid_file)  # supervisor, worker, a setpgid child, a setsid double-forked daemon
    preloaded = preloaded_interpreters(proc.pid)
    assert len(preloaded) == (0 if preload == "none" else 1)
    os.kill(proc.pid, sig)
    # SIGKILL: the preloaded interpreter's parent-death signal; SIGINT: pytest stops it as it ends.
    assert wait_until_all_gone(pids + (preloaded if sig == signal.SIGKILL else []), ALL_GONE_WITHIN_S) == []
    proc.communicate(timeout=30)
    assert wait_until_all_gone(preloaded, 1.0) == []
