"""The host's CPU time taken by others: real readings of this process and its children, and
the arithmetic that turns two readings into a share."""

from __future__ import annotations

import subprocess
import sys
import time

import psutil
import pytest

from pytest_llem.energy import host_load
from pytest_llem.energy.host_load import CpuSnapshot

# Burns this many seconds of CPU time (not wall time), then exits: the same work however
# loaded the host is.
BURN = (
    "import sys, time\nend = time.process_time() + float(sys.argv[1])\nwhile time.process_time() < end: pass"
)
# /proc's CPU times count clock ticks (10 ms); allow a few.
TICKS_S = 0.05


def test_a_child_that_exits_inside_the_window_counts_as_the_experiments_own_time():
    start = host_load.snapshot()
    subprocess.run([sys.executable, "-c", BURN, "0.4"], check=True)  # reaped: its time moves to ours
    end = host_load.snapshot()
    assert start is not None and end is not None
    assert end.own_s - start.own_s >= 0.4 - TICKS_S
    # The host spent at least that too: the share leaves it out instead of blaming others.
    assert end.host_busy_s - start.host_busy_s >= 0.4 - TICKS_S


def test_the_experiments_processes_are_its_group_and_descendants():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"], start_new_session=True)
    try:
        pids = host_load.own_pids()
    finally:
        child.kill()
        child.wait()
    # A child that moved to a session of its own is still the experiment's.
    assert child.pid in pids and psutil.Process().pid in pids
    assert 1 not in pids


def test_own_cpu_time_grows_with_the_work_done_in_this_process():
    pids = host_load.own_pids()
    before = host_load.own_cpu_s(pids)
    end = time.process_time() + 0.3
    while time.process_time() < end:
        pass
    assert host_load.own_cpu_s(pids) - before >= 0.3 - TICKS_S
    assert host_load.own_cpu_s({2**22 + 1}) == 0.0  # no such process: nothing, not an error


@pytest.mark.parametrize(
    ("busy_s", "own_s", "share"),
    [
        (2.0, 2.0, 0.0),  # the host spent only what the experiment did
        (2.0, 1.0, 0.25),  # others took 1 of the 4 CPU-seconds (2 s x 2 CPUs)
        (4.0, 0.0, 1.0),
        (1.0, 1.2, 0.0),  # tick rounding can make own time exceed the host's: never below 0
    ],
)
def test_the_share_is_others_time_over_the_hosts_capacity(monkeypatch, busy_s, own_s, share):
    monkeypatch.setattr(psutil, "cpu_count", lambda logical=True: 2)
    start = CpuSnapshot(at_s=10.0, host_busy_s=100.0, own_s=5.0)
    end = CpuSnapshot(at_s=12.0, host_busy_s=100.0 + busy_s, own_s=5.0 + own_s)
    assert host_load.other_cpu_share(start, end) == pytest.approx(share)


def test_no_share_without_both_readings_or_any_time():
    reading = CpuSnapshot(at_s=1.0, host_busy_s=1.0, own_s=0.0)
    assert host_load.other_cpu_share(None, reading) is None
    assert host_load.other_cpu_share(reading, None) is None
    assert host_load.other_cpu_share(reading, reading) is None


def test_windows_combine_into_their_time_weighted_share():
    assert host_load.combined_share([(0.5, 1.0), (0.0, 3.0)]) == pytest.approx(0.125)
    assert host_load.combined_share([(0.4, 1.0), (None, 9.0)]) == pytest.approx(0.4)
    assert host_load.combined_share([(None, 1.0)]) is None
    assert host_load.combined_share([]) is None
    assert host_load.combined_share([(0.3, 0.0), (0.6, 0.0)]) == pytest.approx(0.6)
