"""Process facts pytest-llem relies on: identity across PID reuse, group membership, parent death.

Linux-specific where the kernel gives a guarantee nothing else can (`PR_SET_PDEATHSIG`).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal

import psutil

_PR_SET_PDEATHSIG = 1
# psutil rounds start times to the clock tick; allow for float noise when comparing.
_START_TIME_TOLERANCE_S = 0.05


def process_start_time(pid: int) -> float | None:
    """When `pid` started (seconds since the epoch), or None if it is gone."""
    try:
        return psutil.Process(pid).create_time()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


def process_is_alive(pid: int, start_time: float | None = None) -> bool:
    """True if `pid` runs and, when `start_time` is given, is the same process that had it then.

    A PermissionError from the probe means the process exists (it belongs to another user);
    a zombie counts as gone, since it holds no resources and will never run again.
    """
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        if start_time is not None:
            return abs(proc.create_time() - start_time) <= _START_TIME_TOLERANCE_S
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True
    return True


def live_group_members(pgid: int) -> list[int]:
    """PIDs in process group `pgid` that are not zombies."""
    members = []
    for proc in psutil.process_iter(["status"]):
        try:
            if os.getpgid(proc.pid) == pgid and proc.info["status"] != psutil.STATUS_ZOMBIE:
                members.append(proc.pid)
        except (ProcessLookupError, psutil.Error):
            continue
    return members


def set_parent_death_signal(sig: int) -> None:
    """Ask the kernel to send `sig` to this process when its parent thread exits."""
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"prctl(PR_SET_PDEATHSIG) failed: {os.strerror(errno)}")


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"
