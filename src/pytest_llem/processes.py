"""Process facts pytest-llem relies on: identity across PID reuse, group membership, parent death.

Linux-specific where the kernel gives a guarantee nothing else can (`PR_SET_PDEATHSIG`).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import signal

import psutil

_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36
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


@functools.cache
def _libc() -> ctypes.CDLL:
    # Looked up once per process: `find_library` runs `ldconfig -p`, milliseconds each time,
    # and a preloaded interpreter's forks inherit the handle.
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def _prctl(option: int, value: int, name: str) -> None:
    libc = _libc()
    if libc.prctl(option, value, 0, 0, 0) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"prctl({name}) failed: {os.strerror(errno)}")


def set_parent_death_signal(sig: int) -> None:
    """Ask the kernel to send `sig` to this process when its parent thread exits."""
    _prctl(_PR_SET_PDEATHSIG, int(sig), "PR_SET_PDEATHSIG")


def become_child_subreaper() -> None:
    """Orphaned descendants (double forks, `setsid()` daemons) become this process's
    children instead of init's, so it can still find and kill them."""
    _prctl(_PR_SET_CHILD_SUBREAPER, 1, "PR_SET_CHILD_SUBREAPER")


def live_descendants() -> list[psutil.Process]:
    """Every non-zombie process below this one, whatever group or session it moved to."""
    live = []
    for proc in psutil.Process().children(recursive=True):
        try:
            if proc.status() != psutil.STATUS_ZOMBIE:
                live.append(proc)
        except psutil.Error:
            continue
    return live


def reap_adopted(keep: int | None = None) -> None:
    """Reap this process's exited children other than `keep` (whose owner reaps it)."""
    for proc in psutil.Process().children():
        if proc.pid == keep:
            continue
        try:
            os.waitpid(proc.pid, os.WNOHANG)
        except ChildProcessError:
            continue


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"
