"""The group's leader, as a real process in its own session: it starts the worker with its
own pid in the environment, writes the worker's exit status, kills whatever the worker left
behind (in the group or not), outlives pytest's SIGTERM long enough to report, and kills the
whole group when its parent dies. The worker here is a stand-in, so only the supervisor's own
part is under test (the launcher's tests run it with the real worker)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from helpers import is_live, wait_for_file, wait_until_all_gone

from pytest_llem.isolation.files import WORKER_STATUS_FILE

#: Runs `supervisor.main` with a worker that is `python -c WORKER_CODE WORK_DIR`.
DRIVER = textwrap.dedent(
    """
    import os, subprocess, sys
    from pathlib import Path
    from pytest_llem.isolation import supervisor

    work_dir, worker_code = Path(sys.argv[1]), sys.argv[2]

    def start_worker(work_dir, env):
        return subprocess.Popen([sys.executable, "-c", worker_code, str(work_dir)], env=dict(env))

    sys.exit(supervisor.main(work_dir, os.getppid(), start_worker))
    """
)


def start_supervisor(work_dir: Path, worker_code: str) -> subprocess.Popen:
    # Its own session and group, as pytest starts it: it kills its whole group at the end.
    return subprocess.Popen(
        [sys.executable, "-c", DRIVER, str(work_dir), textwrap.dedent(worker_code)], start_new_session=True
    )


def worker_status(work_dir: Path) -> dict:
    return json.loads((work_dir / WORKER_STATUS_FILE).read_text())


def test_the_worker_knows_its_supervisor_and_its_exit_status_is_written(tmp_path: Path):
    supervisor = start_supervisor(
        tmp_path,
        """
        import json, os, sys
        from pathlib import Path
        Path(sys.argv[1], "seen.json").write_text(json.dumps(
            {"env": os.environ["PYTEST_LLEM_SUPERVISOR_PID"], "ppid": os.getppid(), "pgid": os.getpgrp()}))
        sys.exit(7)
        """,
    )
    assert supervisor.wait(timeout=30) == 0  # the worker's failure is reported, not the leader's
    assert worker_status(tmp_path) == {"returncode": 7}
    seen = json.loads((tmp_path / "seen.json").read_text())
    assert seen == {"env": str(supervisor.pid), "ppid": supervisor.pid, "pgid": supervisor.pid}


def test_a_process_the_worker_left_in_another_session_dies_before_the_supervisor_exits(tmp_path: Path):
    supervisor = start_supervisor(
        tmp_path,
        """
        import subprocess, sys
        from pathlib import Path
        sleeper = [sys.executable, "-c", "import time; time.sleep(600)"]
        escaped = subprocess.Popen(sleeper, start_new_session=True)
        Path(sys.argv[1], "escaped.pid").write_text(str(escaped.pid))
        """,
    )
    assert supervisor.wait(timeout=30) == 0
    escaped = int((tmp_path / "escaped.pid").read_text())
    assert worker_status(tmp_path) == {"returncode": 0}
    # The supervisor is the escaped process's subreaper: it has killed and reaped it already.
    assert not is_live(escaped)


def test_after_sigterm_a_worker_that_ignores_it_is_killed_and_its_status_still_written(tmp_path: Path):
    supervisor = start_supervisor(
        tmp_path,
        """
        import signal, sys, time
        from pathlib import Path
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        Path(sys.argv[1], "ready").write_text("")
        time.sleep(600)
        """,
    )
    wait_for_file(tmp_path / "ready")
    os.killpg(supervisor.pid, signal.SIGTERM)  # what pytest's teardown sends to the group
    assert supervisor.wait(timeout=30) == 0
    assert worker_status(tmp_path) == {"returncode": -signal.SIGKILL}


def test_when_its_parent_dies_the_supervisor_kills_the_whole_group(tmp_path: Path):
    # A stand-in for pytest that starts the supervisor, then is SIGKILLed.
    parent_code = textwrap.dedent(
        """
        import subprocess, sys, time
        from pathlib import Path
        supervisor = subprocess.Popen([sys.executable, "-c", sys.argv[1], sys.argv[2], sys.argv[3]],
                                      start_new_session=True)
        Path(sys.argv[2], "supervisor.pid").write_text(str(supervisor.pid))
        time.sleep(600)
        """
    )
    worker_code = textwrap.dedent(
        """
        import os, signal, subprocess, sys, time
        from pathlib import Path
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        grandchild = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        Path(sys.argv[1], "worker.pids").write_text(f"{os.getpid()} {grandchild.pid}")
        time.sleep(600)
        """
    )
    parent = subprocess.Popen([sys.executable, "-c", parent_code, DRIVER, str(tmp_path), worker_code])
    wait_for_file(tmp_path / "worker.pids")
    wait_for_file(tmp_path / "supervisor.pid")
    supervisor_pid = int((tmp_path / "supervisor.pid").read_text())
    group = [supervisor_pid, *map(int, (tmp_path / "worker.pids").read_text().split())]
    assert all(is_live(pid) for pid in group)

    parent.kill()
    parent.wait()
    assert wait_until_all_gone(group, timeout_s=10) == []
    assert not (tmp_path / WORKER_STATUS_FILE).exists()  # killed with its group, nothing reported
