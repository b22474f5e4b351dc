"""One commit's benchmark: the `pytest --llem` command line bisect runs in the worktree, and
that process, stopped cleanly when the bisection gets SIGINT or SIGTERM.

The run is saved under the name `bisect-<full sha>` (a run's name holds no '/', see
`store.names`) in the project `<the user's project>/bisect-<digest of the pytest arguments>`
(`bisect_project`): a later bisection of the same benchmark finds it, one of other tests (other
arguments) does not take it for theirs, and a bare `--llem-compare` in the user's own runs
never takes an old commit's run for its baseline.

GOOD's run, the baseline of every verdict, runs the most processes a commit may
(`--llem-repeats=N`), so that a commit's few can reach a small p; every other commit's run
adds processes with `--llem-repeats=auto:N` while its comparison with GOOD's run, on the
bisected limit, is undecided (`isolation.repeats`).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from pytest_llem.base.digests import json_digest
from pytest_llem.bisection.git import BisectError, Commit
from pytest_llem.processes import set_parent_death_signal, set_signal_handler
from pytest_llem.settings import setting_named

#: A bisection's runs are saved as `bisect-<sha>`.
RUN_NAME_PREFIX = "bisect-"
#: ... under the user's project with this and a digest of the pytest arguments after it.
PROJECT_SUFFIX = "/bisect-"
#: Hex digits of that digest.
ARGS_DIGEST_LENGTH = 8
#: The settings bisect gives every commit's run itself; in the user's pytest arguments they
#: would fight its own.
OWN_SETTINGS = (
    "save_name",
    "autosave",
    "compare",
    "compare_fail",
    "repeats",
    "state_dir",
    "store_url",
    "project",
    "resume",
    "smoke",
)
#: How long pytest gets to stop its experiment and save what it had after the signal is passed on.
STOP_TIMEOUT_S = 60.0


def run_name(commit: Commit) -> str:
    return f"{RUN_NAME_PREFIX}{commit.sha}"


def bisect_project(user_project: str, pytest_args: tuple[str, ...] | list[str]) -> str:
    """The project a bisection's runs are saved under (see the module docstring)."""
    return f"{user_project}{PROJECT_SUFFIX}{json_digest(list(pytest_args))[:ARGS_DIGEST_LENGTH]}"


def checked_pytest_args(args: list[str]) -> list[str]:
    """The user's pytest arguments (`--llem` left out: every run has it); one line naming the
    argument when there are none or when one is an option bisect sets itself."""
    if not args:
        raise BisectError(
            "bisect: give the benchmark's pytest arguments after `--`, e.g. "
            "pytest-llem bisect GOOD BAD -- tests/bench -k energy"
        )
    own = {setting_named(name).option: name for name in OWN_SETTINGS}
    for arg in args:
        option = arg.split("=", 1)[0]
        if option in own:
            raise BisectError(
                f"bisect: {option} in the pytest arguments: bisect sets it for each commit's run; "
                "leave it out (give --state-dir and --store to pytest-llem bisect itself)"
            )
    return [arg for arg in args if arg != "--llem"]


@dataclass(frozen=True)
class CommitRun:
    """What every commit's `pytest --llem` run is given besides the user's arguments."""

    pytest_args: tuple[str, ...]
    state_dir: Path
    store_url: str | None
    project: str
    repeats_max: int
    #: `METRIC:LIMIT` as the user wrote it.
    limit_spec: str

    def command(self, commit: Commit, baseline: str | None) -> list[str]:
        """`python -m pytest --llem ...` for `commit`; `baseline`: GOOD's run name (None for
        GOOD itself, which runs `repeats_max` processes)."""
        option = {name: setting_named(name).option for name in OWN_SETTINGS}
        command = [
            sys.executable,
            "-m",
            "pytest",
            "--llem",
            *self.pytest_args,
            f"{option['save_name']}={run_name(commit)}",
            f"{option['state_dir']}={self.state_dir}",
            f"{option['project']}={self.project}",
            f"{option['repeats']}={'' if baseline is None else 'auto:'}{self.repeats_max}",
        ]
        if self.store_url is not None:
            command.append(f"{option['store_url']}={self.store_url}")
        if baseline is not None:
            command += [f"{option['compare']}={baseline}", f"{option['compare_fail']}={self.limit_spec}"]
        return command


class Interrupted(Exception):
    """SIGINT or SIGTERM arrived: the bisection stops, its worktree is removed."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


@contextmanager
def signals_as_exceptions() -> Iterator[None]:
    """SIGINT and SIGTERM raise `Interrupted` in the main thread while the block runs; after
    the first, both are ignored until the block ends, so that a second Ctrl-C cannot cut the
    cleanup short (the worktree's removal, pytest's own stop)."""

    def raise_interrupted(signum: int, _frame: object) -> None:
        _ignore_signals()
        raise Interrupted(signum)

    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    for sig in previous:
        set_signal_handler(sig, raise_interrupted)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            set_signal_handler(sig, handler if handler is not None else signal.SIG_DFL)


def _ignore_signals() -> None:
    for sig in (signal.SIGINT, signal.SIGTERM):
        set_signal_handler(sig, signal.SIG_IGN)


def _die_with_parent() -> None:
    # The bisection killed outright (SIGKILL) must not leave a benchmark running.
    set_parent_death_signal(signal.SIGTERM)


def run_pytest(command: list[str], cwd: Path, output: TextIO) -> int:
    """Run `command` in `cwd` in a session of its own, its output to `output`; its exit status.

    On `Interrupted` the signal is passed on to pytest (which stops its experiment, saves what
    it had and exits), SIGKILL after `STOP_TIMEOUT_S`, then `Interrupted` goes on.
    """
    proc = subprocess.Popen(
        command,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=output,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        preexec_fn=_die_with_parent,
    )
    try:
        return proc.wait()
    except Interrupted as interrupted:
        _stop(proc, interrupted.signum)
        raise


def _stop(proc: subprocess.Popen[bytes], signum: int) -> None:
    try:
        os.killpg(proc.pid, signum)
        proc.wait(timeout=STOP_TIMEOUT_S)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()
