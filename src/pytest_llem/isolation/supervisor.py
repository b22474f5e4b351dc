"""The leader of an experiment's process group, whose only job is that nothing outlives pytest.

`python -m pytest_llem.isolation.supervisor WORK_DIR PARENT_PID`, started by pytest in a new session.
It runs the worker in its own group and waits. It never imports a workload, so unlike the
worker it cannot be stuck in native code: when pytest dies, even by SIGKILL, the kernel's
parent-death signal reaches this process and it SIGKILLs the whole group, grandchildren
that ignore SIGTERM included.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from pytest_llem.isolation.files import WORKER_STATUS_FILE
from pytest_llem.processes import set_parent_death_signal
from pytest_llem.store.atomic import atomic_write_text

PARENT_DEATH_SIGNAL = signal.SIGUSR1
_PARENT_CHECK_INTERVAL_S = 0.5


def kill_own_group() -> None:
    os.killpg(os.getpgrp(), signal.SIGKILL)


def main(work_dir: Path, parent_pid: int) -> int:
    def on_parent_death_signal(signum: int, frame: object) -> None:
        # PR_SET_PDEATHSIG follows the parent *thread*; only act if the parent process is gone.
        if os.getppid() != parent_pid:
            kill_own_group()

    signal.signal(PARENT_DEATH_SIGNAL, on_parent_death_signal)
    set_parent_death_signal(PARENT_DEATH_SIGNAL)
    if os.getppid() != parent_pid:  # the parent died before the line above took effect
        kill_own_group()

    # pytest's teardown sends SIGTERM to the whole group: the worker gets it too and may shut
    # down gracefully; this process outlives it to report its status. A handler, not SIG_IGN,
    # so the worker does not inherit an ignored SIGTERM across exec.
    signal.signal(signal.SIGTERM, lambda signum, frame: None)
    signal.signal(signal.SIGINT, lambda signum, frame: None)

    env = dict(os.environ, PYTEST_LLEM_SUPERVISOR_PID=str(os.getpid()))
    worker = subprocess.Popen([sys.executable, "-m", "pytest_llem.isolation.worker", str(work_dir)], env=env)
    while True:
        try:
            returncode = worker.wait(timeout=_PARENT_CHECK_INTERVAL_S)
            break
        except subprocess.TimeoutExpired:
            if os.getppid() != parent_pid:
                kill_own_group()
    # Plain JSON (read back as protocol.WorkerStatus): this process never loads pydantic.
    atomic_write_text(work_dir / WORKER_STATUS_FILE, json.dumps({"returncode": returncode}))
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), int(sys.argv[2])))
