"""The leader of an experiment's process group, whose only job is that nothing outlives pytest.

`python -m pytest_llem.isolation.supervisor WORK_DIR PARENT_PID`, started by pytest in a new session
(a cold start), or forked in a new session by the preloaded interpreter (`isolation.forkserver`,
whose pid is then PARENT_PID).
It runs the worker in its own group and waits. It never imports a workload, so unlike the
worker it cannot be stuck in native code: when pytest dies, even by SIGKILL, the kernel's
parent-death signal reaches this process and it SIGKILLs the whole group, grandchildren
that ignore SIGTERM included.

It is also a child subreaper: a descendant that left the group (`setpgid`), the session
(`setsid`) or its parent (a double fork) is still below it, and before it exits (the worker
done, pytest's SIGTERM, pytest's death) it kills every descendant and reaps them.

In a preloaded fork this process is a copy of an interpreter that imported workload modules:
what it kills with, and how it installs its handlers, is what `processes` bound before any of
them was imported (`processes.kill_descendants`, `set_signal_handler`), so a module that
replaced `os.kill` or `signal.signal` cannot stop it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Protocol

from pytest_llem.base.atomic import atomic_write_text
from pytest_llem.isolation.files import WORKER_STATUS_FILE
from pytest_llem.processes import (
    become_child_subreaper,
    kill_descendants,
    kill_group,
    set_parent_death_signal,
    set_signal_handler,
)

PARENT_DEATH_SIGNAL = signal.SIGUSR1
_PARENT_CHECK_INTERVAL_S = 0.5
_WAKE_UP_S = 0.05


#: After pytest's SIGTERM, how long the group gets before this process kills every
#: descendant itself (pytest's own SIGKILL to the group follows at 2 s).
_SWEEP_AFTER_TERM_S = 1.5
# Bound at import, before any workload module (see the module's docstring).
_getppid = os.getppid
_getpgrp = os.getpgrp
_monotonic = time.monotonic


def kill_own_group() -> None:
    kill_descendants()
    kill_group(_getpgrp(), signal.SIGKILL)


class WorkerProcess(Protocol):
    """The part of `subprocess.Popen` this module uses (a forked worker has it too)."""

    pid: int

    def wait(self, timeout: float | None = None) -> int: ...


def spawn_worker(work_dir: Path, env: Mapping[str, str]) -> WorkerProcess:
    """A cold start's worker: a fresh interpreter."""
    return subprocess.Popen(
        [sys.executable, "-m", "pytest_llem.isolation.worker", str(work_dir)], env=dict(env)
    )


def main(
    work_dir: Path,
    parent_pid: int,
    start_worker: Callable[[Path, Mapping[str, str]], WorkerProcess] = spawn_worker,
) -> int:
    """`start_worker` is `spawn_worker`, or `forkserver.fork_worker` in a preloaded fork."""

    def on_parent_death_signal(signum: int, frame: object) -> None:
        # PR_SET_PDEATHSIG follows the parent *thread*; only act if the parent process is gone.
        if _getppid() != parent_pid:
            kill_own_group()

    set_signal_handler(PARENT_DEATH_SIGNAL, on_parent_death_signal)
    set_parent_death_signal(PARENT_DEATH_SIGNAL)
    become_child_subreaper()
    if _getppid() != parent_pid:  # the parent died before the line above took effect
        kill_own_group()

    # pytest's teardown sends SIGTERM to the whole group: the worker gets it too and may shut
    # down gracefully; this process outlives it to report its status. A handler, not SIG_IGN,
    # so the worker does not inherit an ignored SIGTERM across exec.
    terminated_at: list[float] = []
    set_signal_handler(signal.SIGTERM, lambda signum, frame: terminated_at.append(_monotonic()))
    set_signal_handler(signal.SIGINT, lambda signum, frame: None)

    env = dict(os.environ, PYTEST_LLEM_SUPERVISOR_PID=str(os.getpid()))
    worker = start_worker(work_dir, env)
    while True:
        try:
            returncode = worker.wait(timeout=_WAKE_UP_S if terminated_at else _PARENT_CHECK_INTERVAL_S)
            break
        except subprocess.TimeoutExpired:
            if _getppid() != parent_pid:
                kill_own_group()
            if terminated_at and _monotonic() - terminated_at[0] > _SWEEP_AFTER_TERM_S:
                kill_descendants(keep=worker.pid)  # the worker too: it ignored SIGTERM
    # Whatever the workload left running, in this group or not, dies before this process does.
    kill_descendants(keep=worker.pid)
    # Plain JSON (read back as protocol.WorkerStatus): this process never loads pydantic.
    atomic_write_text(work_dir / WORKER_STATUS_FILE, json.dumps({"returncode": returncode}), durable=False)
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), int(sys.argv[2])))
