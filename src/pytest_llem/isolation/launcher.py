"""Running one experiment in an isolated child and tearing it down safely.

The child is a supervisor process started in a new session, so it leads its own process
group and Ctrl-C in the terminal never reaches it directly. While it runs, SIGINT and
SIGTERM to pytest are only *recorded* by the caller's `InterruptGuard`; the wait loop then
runs the kill sequence in ordinary code: SIGTERM to the whole group, up to `GRACE_PERIOD_S`
for it to exit, then SIGKILL. Because the guard never raises, a second signal cannot abort
that sequence. The same loop reads the phases the worker reports (`PROGRESS_FILE`) and hands
them to the caller's `on_progress` at every poll (an empty list when nothing is new), so the
terminal can show what the experiment is doing. Between polls it sleeps on a pidfd of the
leader, so the leader's exit ends the wait at once rather than at the next poll.
"""

from __future__ import annotations

import os
import re
import select
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from pytest_llem.backends import BACKEND_ENV_DEFAULTS
from pytest_llem.base.redaction import holds_url_password
from pytest_llem.config import ExperimentConfig
from pytest_llem.errors import ExperimentFailed, ExperimentInterrupted
from pytest_llem.isolation.files import REQUEST_FILE
from pytest_llem.isolation.leases import cpu_only_reason
from pytest_llem.isolation.outcome import ProgressCallback, ProgressRelay, read_outcome
from pytest_llem.isolation.protocol import ExperimentRequest, write_model
from pytest_llem.isolation.relay import OutputRelay
from pytest_llem.isolation.signals import InterruptGuard
from pytest_llem.processes import kill_group, live_group_members, process_is_alive, signal_name
from pytest_llem.results import ExperimentResult
from pytest_llem.store.urls import STORE_ENV

#: How a local experiment that must end early (a signal, its timeout) is ended, as its failure says.
GROUP_KILLED = "process group was killed"
GRACE_PERIOD_S = 2.0
POLL_INTERVAL_S = 0.05
#: Work folders are `pytest-llem-<pytest pid>-<random>` in the temporary folder.
WORK_DIR_PREFIX = "pytest-llem-"
_WORK_DIR_NAME = re.compile(re.escape(WORK_DIR_PREFIX) + r"(\d+)-\w+")


def reclaim_work_dirs(tmp_dir: Path | None = None) -> list[Path]:
    """Remove this user's work folders whose pytest process is gone (one SIGKILLed, say)."""
    removed = []
    root = Path(tmp_dir or tempfile.gettempdir())
    for path in root.glob(f"{WORK_DIR_PREFIX}*"):
        match = _WORK_DIR_NAME.fullmatch(path.name)
        try:
            info = path.lstat()
        except OSError:
            continue
        if match is None or not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
            continue
        if process_is_alive(int(match[1])):
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed


#: The results store's credentials: the pytest process alone writes the store (the child
#: never opens it), so no experiment's child, nor anything its workload starts, is given them.
STORE_CREDENTIAL_ENV = (STORE_ENV, "PGPASSWORD")


def build_experiment_env(
    config: ExperimentConfig,
    experiment_id: str,
    base_env: Mapping[str, str] | None = None,
    store_url: str | None = None,
) -> dict[str, str]:
    """The child's whole environment, built in one place (local, preloaded and Slurm starts).

    Precedence, lowest first: the backend's defaults, the user's environment, `config.env`.
    The store's credentials are left out: `STORE_CREDENTIAL_ENV`, and any variable that holds
    `store_url` when it has a password (`PYTEST_ADDOPTS="--llem-store=..."`).
    """
    base = dict(os.environ if base_env is None else base_env)
    for name in STORE_CREDENTIAL_ENV:
        base.pop(name, None)
    if store_url is not None and holds_url_password(store_url):
        base = {name: value for name, value in base.items() if store_url not in value}
    env: dict[str, str] = {}
    if config.backend is not None:
        env.update(BACKEND_ENV_DEFAULTS.get(config.backend, {}))
    env.update(base)
    token = base.get("HF_TOKEN") or base.get("HUGGING_FACE_HUB_TOKEN")
    if token:
        env["HF_TOKEN"] = env["HUGGING_FACE_HUB_TOKEN"] = token
    # NVML numbers GPUs by PCI bus; CUDA must too, so index i is the same GPU to both.
    env.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
    if isinstance(config.gpus, list):  # a GPU lease (isolation.leases) may name them by UUID instead
        env["CUDA_VISIBLE_DEVICES"] = ",".join(str(g) for g in config.gpus)
    elif cpu_only_reason(config) is not None:
        # A CPU-only case owns no GPU (no lease): CUDA must not hand it one a neighbour holds.
        # Only here, by the case's own choice: an empty value inherited from a host would make
        # a GPU case (vLLM's workers, say) fall back to the CPU silently, so it is never added
        # to a case that may use GPUs.
        env["CUDA_VISIBLE_DEVICES"] = ""
    env.update(config.env)
    env["PYTEST_LLEM_EXPERIMENT_ID"] = experiment_id
    model_files = model_files_to_preload(config)
    if model_files is not None:
        env[MODEL_FILES_ENV] = model_files
    return env


#: The model directory a preloaded start reads into the page cache first (`preload_model_files`).
MODEL_FILES_ENV = "PYTEST_LLEM_PRELOAD_MODEL_FILES"


def model_files_to_preload(config: ExperimentConfig) -> str | None:
    """The local model directory whose files `config` asks the preloaded interpreter to read."""
    if not config.preload_model_files or config.model is None:
        return None
    path = Path(config.model).expanduser()
    return str(path.resolve()) if path.is_dir() else None


def _leader_exited(pid: int) -> bool:
    """True once the group leader has exited, *without* reaping it.

    While it is an unreaped zombie its PID, which is also the group's ID, cannot be reused,
    so a later killpg on that ID cannot hit an unrelated group.
    """
    info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    return info is not None and info.si_pid == pid


class ChildGroup(Protocol):
    """A started experiment group, whichever way it started (`GroupStarter`)."""

    pid: int  # the leader's, which is also the group's id
    returncode: int | None  # None until `wait` has reaped the leader

    def exited(self) -> bool:
        """True once the leader has exited; it stays unreaped, so its pid stays reserved."""
        ...

    def wait(self) -> int:
        """Reap the leader; its exit status as `subprocess` gives it (-N: signal N)."""
        ...


class ColdGroup:
    """A group whose leader pytest spawned as a fresh interpreter (`python -m ...supervisor`)."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc
        self.pid = proc.pid

    def exited(self) -> bool:
        return _leader_exited(self.pid)

    @property
    def returncode(self) -> int | None:  # type: ignore[override]
        return self.proc.returncode

    def wait(self) -> int:
        return self.proc.wait()


@dataclass(frozen=True)
class StartedGroup:
    group: ChildGroup
    #: "cold" (fresh interpreters) or "preloaded" (forked from the preloaded interpreter).
    method: str
    #: Why a preloaded start was asked for but a cold one happened; None otherwise.
    note: str | None = None
    #: What the start did for the experiment that its result's `extra` records.
    extra: Mapping[str, Any] = field(default_factory=dict)
    #: The modules imported before the fork (a preloaded start), None on a cold one.
    preloaded_modules: list[str] | None = None


@dataclass(frozen=True)
class ChildOutput:
    """Where the group's stdout and stderr go: the write ends of the pipes `relay.OutputRelay`
    reads, so nothing the workload prints bypasses redaction, whichever way the group starts."""

    stdout_fd: int
    stderr_fd: int


#: Starts the supervisor for the request in `work_dir`, with exactly `env`, in a new session,
#: its stdout and stderr on `ChildOutput`'s descriptors.
GroupStarter = Callable[[Path, Mapping[str, str], ChildOutput], StartedGroup]


def cold_start(
    work_dir: Path, env: Mapping[str, str], output: ChildOutput, note: str | None = None
) -> StartedGroup:
    """Today's start: the supervisor and then the worker are fresh interpreters."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "pytest_llem.isolation.supervisor", str(work_dir), str(os.getpid())],
        env=dict(env),
        start_new_session=True,
        stdin=subprocess.DEVNULL,
        stdout=output.stdout_fd,
        stderr=output.stderr_fd,
    )
    return StartedGroup(ColdGroup(proc), "cold", note)


def terminate_group(proc: ChildGroup | subprocess.Popen[bytes], grace_s: float = GRACE_PERIOD_S) -> None:
    """SIGTERM to the whole group, up to `grace_s` to exit, then SIGKILL; reap the leader."""
    pgid = proc.pid
    kill_group(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and live_group_members(pgid):
        time.sleep(POLL_INTERVAL_S)
    kill_group(pgid, signal.SIGKILL)
    proc.wait()


def run_in_child(
    request: ExperimentRequest,
    *,
    env: Mapping[str, str],
    guard: InterruptGuard,
    timeout_s: float | None = None,
    on_progress: ProgressCallback | None = None,
    start: GroupStarter = cold_start,
    on_start: Callable[[int], None] | None = None,
) -> ExperimentResult:
    """Run `request` in an isolated process group and return its validated result.

    `guard` must be installed by the caller; `start` starts the group (`cold_start`, or a
    `preload.Preloader`'s fork). The result records how its group started. `on_start` is
    given the group leader's pid as soon as it runs (the session records it in the
    experiment's state: the child itself never writes to the store). Raises
    `ExperimentFailed` (crash, timeout, workload exception) or `ExperimentInterrupted` (a
    signal reached `guard`; the group has been torn down when it is raised).
    """
    with tempfile.TemporaryDirectory(prefix=f"{WORK_DIR_PREFIX}{os.getpid()}-") as tmp:
        work_dir = Path(tmp)
        write_model(work_dir, REQUEST_FILE, request)
        # What the workload prints reaches pytest's output only through the relay, redacted;
        # the relay owns the pipes' read ends, the started group their write ends.
        stdout_r, stdout_w = os.pipe()
        stderr_r, stderr_w = os.pipe()
        output = OutputRelay(
            os.fdopen(stdout_r, "rb", buffering=0), os.fdopen(stderr_r, "rb", buffering=0), env
        )
        try:
            try:
                started = start(work_dir, env, ChildOutput(stdout_w, stderr_w))
            finally:
                os.close(stdout_w)
                os.close(stderr_w)
        except BaseException:
            output.close()
            raise
        proc = started.group
        progress = ProgressRelay(work_dir, on_progress)
        try:
            try:
                if on_start is not None:
                    on_start(proc.pid)
                _wait_for_leader(proc, guard, timeout_s, progress, request.config)
            except BaseException:
                if proc.returncode is None:
                    terminate_group(proc)
                raise
            # Whatever the workload left running (servers, dataloader workers) dies with it.
            kill_group(proc.pid, signal.SIGKILL)
            supervisor_returncode = proc.wait()
        finally:
            output.close()
        progress.poll()  # the last phases, written just before the worker ended
        try:
            result = read_outcome(work_dir, supervisor_returncode, progress.last_phase)
            result = result.model_copy(
                update={
                    "start_method": started.method,
                    "start_note": started.note,
                    "preloaded_modules": started.preloaded_modules,
                    "extra": {**result.extra, **started.extra},
                }
            )
        except ExperimentFailed:
            if guard.received is not None:
                raise ExperimentInterrupted(signal_name(guard.received)) from None
            raise
        if guard.received is not None:
            # The experiment finished as the signal came: keep its result, still stop.
            raise ExperimentInterrupted(signal_name(guard.received), result=result)
        return result


class _LeaderExit:
    """Sleeps until the leader exits or `POLL_INTERVAL_S` passes, whichever comes first.

    A pidfd becomes readable when its process exits, whoever its parent is (pytest for a
    cold start, the preloaded interpreter for a fork); the leader stays unreaped until
    `wait`, so its pid cannot be reused before the pidfd is opened. Where pidfds are
    missing (Linux before 5.3, other systems), it sleeps the whole interval.
    A signal interrupts the sleep only to run its handler (PEP 475): the guard's flag is
    seen at the next poll, as before.
    """

    def __init__(self, pid: int) -> None:
        self._fd: int | None = None
        # poll, not select: a pidfd may be numbered above select's limit of 1024.
        self._poller = select.poll()
        pidfd_open = getattr(os, "pidfd_open", None)
        if pidfd_open is not None:
            try:
                self._fd = pidfd_open(pid)
            except OSError:
                self._fd = None
            else:
                self._poller.register(self._fd, select.POLLIN)

    def sleep(self) -> None:
        if self._fd is None:
            time.sleep(POLL_INTERVAL_S)
        else:
            self._poller.poll(POLL_INTERVAL_S * 1000)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _wait_for_leader(
    proc: ChildGroup,
    guard: InterruptGuard,
    timeout_s: float | None,
    progress: ProgressRelay,
    config: ExperimentConfig,
) -> None:
    leader_exit = _LeaderExit(proc.pid)
    try:
        _poll_until_exit(proc, guard, timeout_s, progress, leader_exit, config)
    finally:
        leader_exit.close()


def _poll_until_exit(
    proc: ChildGroup,
    guard: InterruptGuard,
    timeout_s: float | None,
    progress: ProgressRelay,
    leader_exit: _LeaderExit,
    config: ExperimentConfig,
) -> None:
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while not proc.exited():
        progress.poll()
        if guard.received is not None:
            terminate_group(proc)
            raise ExperimentInterrupted(signal_name(guard.received))
        if deadline is not None and time.monotonic() > deadline:
            terminate_group(proc)
            raise timed_out(timeout_s, config, GROUP_KILLED, progress)
        leader_exit.sleep()


def timed_out(
    timeout_s: float, config: ExperimentConfig, ended: str, progress: ProgressRelay
) -> ExperimentFailed:
    """The failure of an experiment that ran past its limit (the group or job `ended` already),
    naming the setting that set the limit: the case's `timeout=` field when it has one (it
    wins over `--llem-timeout`, which raising would not help), else `--llem-timeout`."""
    if config.timeout is not None:
        how = "raise the case's timeout= field (its llem marker or llem.run); it overrides --llem-timeout"
    else:
        how = "raise --llem-timeout (ini llem_timeout), or give the case a timeout= field"
    return ExperimentFailed(f"timed out after {timeout_s:g} s; its {ended} ({progress.during()}{how})")
