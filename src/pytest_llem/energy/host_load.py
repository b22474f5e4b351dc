"""The host's CPU time that others took during a measured window: `host_other_cpu_share`.

A CPU case's tokens/s falls with whatever else runs on the host, and no energy counter
says so. At each window's edges this reads the host's busy CPU time (`psutil.cpu_times`,
every CPU) and the CPU time of the experiment's own processes: its process group's leader
(the supervisor) and everything below it, wherever it moved. What the host spent beyond the
experiment's own, over the host's capacity in the window (seconds x CPUs), is the share
others took: other processes, the kernel's interrupt work, and time a hypervisor gave to
other machines (steal).

Each own process counts its reaped children's time too, so a child that exits inside the
window is not mistaken for another process's work. Figures are in clock ticks (10 ms on
Linux); a window of a few ticks gives a coarse share.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import psutil

from pytest_llem.processes import descendants


@dataclass(frozen=True)
class CpuSnapshot:
    """The host's and the experiment's CPU seconds at one moment."""

    at_s: float  # time.perf_counter()
    host_busy_s: float  # every CPU's non-idle time, added up
    own_s: float  # the experiment's processes', their reaped children's included


def host_busy_s() -> float:
    """Every CPU's time spent neither idle nor waiting for I/O (guest time is already in user)."""
    times = psutil.cpu_times()
    idle = times.idle + getattr(times, "iowait", 0.0)
    guest = getattr(times, "guest", 0.0) + getattr(times, "guest_nice", 0.0)
    return sum(times) - idle - guest


def own_pids() -> set[int]:
    """The experiment's processes: this process group's leader (the supervisor, a subreaper
    to which orphans return) and everything below it, whatever group or session a process
    moved to; and this process's descendants, should it not be below the leader."""
    leader, me = os.getpgrp(), os.getpid()
    below = {entry.pid for entry in descendants(leader) if entry.state != "Z"}
    if me != leader and me not in below:
        below |= {entry.pid for entry in descendants(me) if entry.state != "Z"}
    return below | {leader, me}


def own_cpu_s(pids: set[int]) -> float:
    """CPU seconds used by `pids` and the children they reaped; a process gone meanwhile adds nothing."""
    total = 0.0
    for pid in pids:
        try:
            times = psutil.Process(pid).cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system + times.children_user + times.children_system
    return total


def snapshot() -> CpuSnapshot | None:
    """Now's readings; None where the host's CPU times cannot be read (not Linux, no /proc)."""
    try:
        busy_s = host_busy_s()
        own_s = own_cpu_s(own_pids())
    except (OSError, psutil.Error, NotImplementedError):
        return None
    return CpuSnapshot(at_s=time.perf_counter(), host_busy_s=busy_s, own_s=own_s)


def other_cpu_share(start: CpuSnapshot | None, end: CpuSnapshot | None) -> float | None:
    """The share of the host's CPU capacity between two snapshots that others took, 0 to 1."""
    if start is None or end is None:
        return None
    capacity_s = (end.at_s - start.at_s) * (psutil.cpu_count() or 1)
    if capacity_s <= 0:
        return None
    others_s = (end.host_busy_s - start.host_busy_s) - (end.own_s - start.own_s)
    return min(1.0, max(0.0, others_s / capacity_s))


def combined_share(parts: list[tuple[float | None, float]]) -> float | None:
    """One share over windows given as (share, duration_s): their time-weighted mean over the
    windows that have one; None when none has."""
    measured = [(share, duration_s) for share, duration_s in parts if share is not None]
    total_s = sum(duration_s for _, duration_s in measured)
    if not measured:
        return None
    if total_s <= 0:
        return max(share for share, _ in measured)
    return sum(share * duration_s for share, duration_s in measured) / total_s
