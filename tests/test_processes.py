"""Process helpers of every process: liveness by PID and start time, descendants, killing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from pytest_llem.processes import (
    command_line,
    descendants,
    kill_descendants,
    kill_process,
    proc_entry,
    process_is_alive,
    process_start_time,
    signal_name,
)

SLEEPER = [sys.executable, "-c", "import time; time.sleep(60)"]


def test_a_live_process_is_alive_only_as_the_process_that_started_then():
    child = subprocess.Popen(SLEEPER)
    try:
        started = process_start_time(child.pid)
        assert started is not None and process_is_alive(child.pid)
        assert process_is_alive(child.pid, started)
        assert not process_is_alive(child.pid, started - 60)  # another process that had the PID
        # Popen returns once the exec is under way; the kernel shows the new command line
        # (empty until then) a moment later, a moment that grows with the machine's load.
        deadline = time.monotonic() + 10
        while command_line(child.pid) == "" and time.monotonic() < deadline:
            time.sleep(0.01)
        assert "time.sleep(60)" in command_line(child.pid)
    finally:
        child.kill()
    child.wait()
    assert not process_is_alive(child.pid) and process_start_time(child.pid) is None
    assert command_line(child.pid) == "" and proc_entry(child.pid) is None


def test_an_unreaped_child_is_a_zombie_and_counts_as_gone():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)  # exited, not reaped
    try:
        assert proc_entry(child.pid).state == "Z"
        assert not process_is_alive(child.pid)
    finally:
        child.wait()


def test_descendants_are_found_parents_first_and_killed_unless_the_pid_was_reused():
    # The child says when its Popen has returned and keeps the Popen: killed earlier (it is in
    # /proc from its fork), the grandchild was reaped by the child's Popen, no zombie left.
    grandchild_code = (
        "import subprocess, time; p = subprocess.Popen(SLEEPER); print(p.pid, flush=True); time.sleep(60)"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", grandchild_code.replace("SLEEPER", repr(SLEEPER))],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        grandchild_pid = int(child.stdout.readline())
        found = descendants()
        assert grandchild_pid in [e.pid for e in found]
        ours = [e for e in found if e.pid == child.pid]
        assert ours and ours[0].parent_pid == os.getpid()
        below = [e for e in found if e.parent_pid == child.pid]
        assert len(below) == 1 and found.index(ours[0]) < found.index(below[0])
        assert not kill_process(below[0]._replace(start_ticks=below[0].start_ticks + 1))  # not that process
        # Below another process only: the session's own other children are not this test's.
        assert [e.pid for e in kill_descendants(root=child.pid)] == [below[0].pid]
        assert proc_entry(below[0].pid).state == "Z" and process_is_alive(child.pid)
    finally:
        child.kill()
        child.wait()


def test_signals_are_named_and_unknown_numbers_still_read():
    assert signal_name(signal.SIGTERM) == "SIGTERM"
    assert signal_name(9) == "SIGKILL"
    assert signal_name(250) == "signal 250"
