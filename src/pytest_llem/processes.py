"""Process facts pytest-llem relies on: identity across PID reuse, group membership, parent death,
and killing a process's descendants.

Linux-specific where the kernel gives a guarantee nothing else can (`PR_SET_PDEATHSIG`).

Killing and reaping call only functions bound when this module is first imported (below),
never `os.kill` or psutil looked up at call time: in the preloaded interpreter this module is
imported before any workload module (`isolation.forkserver` imports it first), so a module
that replaces `os.kill`, `os.killpg`, `signal.signal` or psutil's functions when it is
imported cannot disarm the teardown of the groups forked after it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import signal
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import psutil

# Bound at import, before any workload module: see the module's docstring.
_kill = os.kill
_killpg = os.killpg
_waitpid = os.waitpid
_getpid = os.getpid
_listdir = os.listdir
_open = os.open
_read = os.read
_close = os.close
_pidfd_open = getattr(os, "pidfd_open", None)
_pidfd_send_signal = getattr(signal, "pidfd_send_signal", None)
_set_signal_handler = signal.signal
_sleep = time.sleep
_O_RDONLY = os.O_RDONLY
_WNOHANG = os.WNOHANG
_SIGKILL = signal.SIGKILL

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
        _kill(pid, 0)
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


def set_signal_handler(sig: int, handler: Callable[[int, Any], Any] | int) -> None:
    """`signal.signal`, as it was when this module was imported."""
    _set_signal_handler(sig, handler)


def kill_group(pgid: int, sig: int) -> None:
    """Send `sig` to process group `pgid`; nothing if the group is gone."""
    try:
        _killpg(pgid, sig)
    except ProcessLookupError:
        pass


class ProcEntry(NamedTuple):
    """A process as /proc/PID/stat shows it."""

    pid: int
    parent_pid: int
    state: str  # "Z": a zombie
    start_ticks: int  # when it started, in clock ticks since boot: its identity across PID reuse


def proc_entry(pid: int) -> ProcEntry | None:
    """`pid`'s entry in /proc, or None if it is gone."""
    try:
        fd = _open(f"/proc/{pid}/stat", _O_RDONLY)
    except OSError:
        return None
    try:
        data = _read(fd, 4096)
    except OSError:
        return None
    finally:
        _close(fd)
    # The command name (field 2) may hold spaces and parentheses: the fields follow its last ")".
    fields = data.rpartition(b")")[2].split()
    if len(fields) < 20:
        return None
    return ProcEntry(pid, int(fields[1]), fields[0].decode(), int(fields[19]))


def descendants(root: int | None = None) -> list[ProcEntry]:
    """Every process below `root` (this process by default), zombies included, parents
    before their children, read from /proc (whatever group or session each moved to)."""
    root = _getpid() if root is None else root
    children: dict[int, list[ProcEntry]] = {}
    try:
        names = _listdir("/proc")
    except OSError:
        return []
    for name in names:
        if name.isdigit() and (entry := proc_entry(int(name))) is not None:
            children.setdefault(entry.parent_pid, []).append(entry)
    found: list[ProcEntry] = []
    parents = [root]
    while parents:
        below = [entry for parent in parents for entry in children.get(parent, ())]
        found += below
        parents = [entry.pid for entry in below]
    return found


def live_descendants(root: int | None = None) -> list[ProcEntry]:
    """The descendants that are not zombies."""
    return [entry for entry in descendants(root) if entry.state != "Z"]


def kill_process(entry: ProcEntry, sig: int = _SIGKILL) -> bool:
    """Send `sig` to the process `entry` describes, if it is still that process (not another
    that got its PID since). Through a pidfd where there is one, so no PID reuse can come
    between the check and the signal. False if it is gone."""
    if _pidfd_open is None or _pidfd_send_signal is None:
        now = proc_entry(entry.pid)
        if now is None or now.start_ticks != entry.start_ticks:
            return False
        try:
            _kill(entry.pid, sig)
        except ProcessLookupError:
            return False
        return True
    try:
        fd = _pidfd_open(entry.pid)
    except OSError:
        return False
    try:
        now = proc_entry(entry.pid)
        if now is None or now.start_ticks != entry.start_ticks:
            return False
        _pidfd_send_signal(fd, sig)
        return True
    except ProcessLookupError:
        return False
    finally:
        _close(fd)


#: Killing descendants goes in rounds: one may fork meanwhile, and orphans come to a subreaper.
_KILL_ROUNDS = 200
_KILL_ROUND_PAUSE_S = 0.01


def kill_descendants(keep: int | None = None, root: int | None = None) -> list[ProcEntry]:
    """SIGKILL every descendant of `root` (this process by default), in rounds; below this
    process, reap its children but `keep` (a child whose owner reaps it: a `Popen`'s).
    Returns the processes the first round found alive.

    Below another process, its descendants can only be found while they stay below it: stop
    it first (SIGSTOP) if it could fork or exit meanwhile."""
    own = root is None or root == _getpid()
    first: list[ProcEntry] | None = None
    for _ in range(_KILL_ROUNDS):
        live = live_descendants(root)
        if first is None:
            first = live
        if not live:
            break
        for entry in live:
            kill_process(entry)
        _sleep(_KILL_ROUND_PAUSE_S)
        if own:
            reap_adopted(keep)
    if own:
        reap_adopted(keep)
    return first or []


def reap_adopted(keep: int | None = None) -> None:
    """Reap this process's exited children other than `keep` (whose owner reaps it)."""
    me = _getpid()
    for entry in descendants(me):
        if entry.parent_pid != me or entry.pid == keep:
            continue
        try:
            _waitpid(entry.pid, _WNOHANG)
        except ChildProcessError:
            continue


def command_line(pid: int) -> str:
    """`pid`'s command line, as one line (empty if it is gone or has none)."""
    try:
        fd = _open(f"/proc/{pid}/cmdline", _O_RDONLY)
    except OSError:
        return ""
    try:
        return _read(fd, 4096).rstrip(b"\0").replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""
    finally:
        _close(fd)


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"
