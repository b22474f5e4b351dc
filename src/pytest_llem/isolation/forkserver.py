"""The preloaded interpreter: imports a session's heavy modules once, then forks experiments.

`python -m pytest_llem.isolation.forkserver SOCKET_FD PYTEST_PID [LISTEN_FD]`, started by the
pytest process (`isolation.preload`) in its own session the first time an experiment needs it,
or by an xdist controller for all its workers, with a listening Unix socket (LISTEN_FD) they
connect to. It imports the modules pytest names (torch, transformers, the built-in backends,
the worker's own machinery), and then only answers requests, one at a time, whichever
connection they come on (`attach` gives a worker its environment and modules):

- `fork`: if forking is safe (one thread, no CUDA context), fork a child that becomes exactly
  what `python -m pytest_llem.isolation.supervisor` is on a cold start: its own session and
  group, a child subreaper with a parent-death signal, and the worker below it, forked too,
  so the workload runs with the modules already imported. The child gets pytest's stdout and
  stderr (passed with the request), the experiment's environment, cwd and `sys.argv`, and
  fresh random seeds: nothing of an earlier experiment, which ran in another fork.
- `import`: import more modules between forks, those a finished worker had imported that
  this interpreter lacked (`learnable_modules`, under `--llem-preload=auto`), one at a time:
  the first one after which forking is no longer safe (a thread, CUDA, a process it started)
  stops the batch and is named in the reply, and pytest then replaces this interpreter.
- `read_files`: read a model directory's files into the page cache, once per directory
  (`preload_model_files`; those the collected cases name are read right after the imports).
- `status`: whether a child has exited, without reaping it (its pid, which is its group's id,
  stays reserved until pytest has sent the group its last SIGKILL, as on a cold start).
- `reap`: reap it and return its exit status.

It never initialises CUDA and never runs a workload. It is a child subreaper from before its
imports: a process an import started (a module that forks, or spawns a helper, when it is
imported) stays below it however it detached, is killed once the imports are done, and makes
every start a cold one, with the reason. Each forked group belongs to the connection that
asked for it: when that connection closes (an xdist worker ended, or was SIGKILLed), the
group is killed and reaped here. It exits when the pytest process that started it has closed
its socket and no one else is connected, or when that process dies (parent-death signal,
SIGKILL included), killing whatever is still below it; each forked supervisor's own
parent-death signal also kills that experiment's group.

`processes` and `supervisor` are imported here, before any workload module, so their teardown
keeps the `os` and `signal` functions of a fresh interpreter whatever those modules replace.
"""

from __future__ import annotations

import gc
import importlib
import io
import json
import os
import random
import select
import signal
import site
import socket
import stat
import struct
import subprocess
import sys
import sysconfig
import threading
import time
import traceback
from collections.abc import Collection, Iterable, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

from pytest_llem.isolation import supervisor
from pytest_llem.processes import (
    ProcEntry,
    become_child_subreaper,
    command_line,
    kill_descendants,
    kill_group,
    kill_process,
    live_descendants,
    proc_entry,
    set_parent_death_signal,
)

#: Signal the kernel sends when pytest exits; the handler checks that pytest is really gone.
PARENT_DEATH_SIGNAL = signal.SIGUSR1
#: Requests and replies are one JSON object per datagram (SOCK_SEQPACKET keeps the boundaries).
MAX_MESSAGE_BYTES = 1 << 20
_WAIT_POLL_S = 0.005
# What a forked supervisor waits with, bound before any workload module is imported.
_waitpid = os.waitpid
_sleep = time.sleep
_monotonic = time.monotonic


def fork_hazard() -> str | None:
    """Why forking now could hand a child a broken copy of this process, or None if it is safe."""
    torch = sys.modules.get("torch")
    cuda = getattr(torch, "cuda", None)
    try:
        if cuda is not None and cuda.is_initialized():
            return "CUDA is initialised in the preloaded interpreter"
    except Exception as exc:  # a half-imported torch: do not trust it
        return f"cannot tell whether CUDA is initialised ({type(exc).__name__}: {exc})"
    threads = threading.active_count()
    if threads != 1:
        names = ", ".join(sorted(t.name for t in threading.enumerate() if t is not threading.main_thread()))
        return f"{threads - 1} Python thread(s) running in the preloaded interpreter ({names})"
    task_dir = Path("/proc/self/task")
    if task_dir.is_dir():
        native = len(os.listdir(task_dir)) - 1
        if native > openblas_server_threads():
            return f"{native} native thread(s) running in the preloaded interpreter"
    return None


def openblas_server_threads() -> int:
    """Idle threads OpenBLAS starts when it is loaded (numpy's, imported by torch), which are
    safe to fork over: OpenBLAS stops them in its `pthread_atfork` prepare handler and starts
    them again when it next computes. Any native thread beyond these makes a fork unsafe."""
    from threadpoolctl import threadpool_info

    return sum(
        max(pool["num_threads"] - 1, 0) for pool in threadpool_info() if pool["internal_api"] == "openblas"
    )


def outside_groups(entries: Iterable[ProcEntry], leaders: Collection[int]) -> list[ProcEntry]:
    """`entries` (parents before their children, as `processes.descendants` lists them) less
    the forked groups' leaders and everything below them: the experiments other pytest
    processes run from this interpreter while it imports for one of them."""
    spared = set(leaders)
    kept = []
    for entry in entries:
        if entry.pid in spared or entry.parent_pid in spared:
            spared.add(entry.pid)
        else:
            kept.append(entry)
    return kept


#: Rounds of killing what imports started (one may fork meanwhile), as `processes.kill_descendants`.
_KILL_ROUNDS = 200
_KILL_ROUND_PAUSE_S = 0.01
#: How long the processes killed may take to exit before they are left unreaped (zombies).
_REAP_TIMEOUT_S = 5.0


def reap_killed(pids: set[int], timeout_s: float = _REAP_TIMEOUT_S) -> set[int]:
    """Reap those of `pids` that are this process's children, waiting up to `timeout_s` for
    them to die; the ones still unreaped. A SIGKILLed process takes a moment to exit on a busy
    machine, and one not reaped then would stay a zombie for as long as this interpreter."""
    pending = set(pids)
    deadline = time.monotonic() + timeout_s
    while pending:
        for pid in list(pending):
            try:
                if os.waitpid(pid, os.WNOHANG)[0] == pid:
                    pending.discard(pid)
            except ChildProcessError:  # not ours (it was reaped, or another process's child)
                pending.discard(pid)
        if not pending or time.monotonic() >= deadline:
            break
        time.sleep(_KILL_ROUND_PAUSE_S)
    return pending


def kill_what_the_imports_started(groups: Collection[int] = ()) -> str | None:
    """Kill every process still running below this one (whatever the imports started) but
    the forked `groups` (their leaders' pids) and what runs below them, and say why that rules
    out forking, or None if there was none.

    A fork would not copy such a process, so children would not run beside what a cold
    start's worker runs beside; and left alone it would outlive pytest."""
    if not groups:  # nothing forked yet (the first imports): sweep all, reaping as it goes
        found = [(entry.pid, command_line(entry.pid)) for entry in live_descendants()]
        found += [(entry.pid, "") for entry in kill_descendants()]
    else:
        found = []
        for _ in range(_KILL_ROUNDS):
            live = outside_groups(live_descendants(), groups)
            if not live:
                break
            found += [(entry.pid, command_line(entry.pid)) for entry in live]
            for entry in live:
                kill_process(entry)
            time.sleep(_KILL_ROUND_PAUSE_S)
        # Only these: the groups' leaders stay unreaped for their pytest.
        reap_killed({pid for pid, _ in found})
    started: dict[int, str] = {}
    for pid, line in found:
        started.setdefault(pid, line)  # the first line read of each
    if not started:
        return None
    named = ", ".join(f"{pid} ({line or '?'})" for pid, line in list(started.items())[:3])
    return f"{len(started)} process(es) started by the imports in the preloaded interpreter, killed: {named}"


def import_modules(modules: list[str]) -> str | None:
    """Import `modules`; the first failure as one line, or None."""
    for name in modules:
        try:
            importlib.import_module(name)
        except BaseException as exc:  # SystemExit from a module is a failure too, not our exit
            first_line = str(exc).splitlines()[0] if str(exc) else ""
            return f"importing {name} failed ({type(exc).__name__}: {first_line})"
    return None


#: Top-level modules never learnt, whatever a worker imported: the running script, and modules
#: whose import itself acts (prints, opens a browser or a display, changes the terminal).
DENIED_MODULES = frozenset(
    {
        "__main__",
        "__mp_main__",  # multiprocessing's name for the parent's script
        "__hello__",  # prints
        "__phello__",  # prints
        "this",  # prints the Zen of Python
        "antigravity",  # opens a web browser
        "idlelib",  # a GUI
        "tkinter",  # loads Tk, which may connect to a display
        "turtle",  # imports tkinter
        "readline",  # may write terminal control sequences and reads ~/.inputrc
        "rlcompleter",  # imports readline
        "site",  # runs at every start; its customisations too
        "sitecustomize",
        "usercustomize",
    }
)
#: The folders installers put packages in, besides those the interpreter reports.
_INSTALL_FOLDER_NAMES = ("site-packages", "dist-packages")


def library_roots(search_path: Iterable[str]) -> list[Path]:
    """Where installed packages and the standard library live: the interpreter's own folders
    (standard library, site-packages, the user's) and any import path entry named like an
    installer's folder (`site-packages`, `dist-packages`). A test's rootdir is none of them."""
    paths = sysconfig.get_paths()
    folders = [paths[key] for key in ("stdlib", "platstdlib", "purelib", "platlib") if key in paths]
    folders += [*site.getsitepackages(), site.getusersitepackages()]
    folders += [entry for entry in search_path if Path(entry).name in _INSTALL_FOLDER_NAMES]
    return list(dict.fromkeys(Path(os.path.realpath(folder)) for folder in folders if folder))


def is_test_file(path: str) -> bool:
    """Whether a module's file is a test module or a conftest, whose import may do anything a
    test session sets up."""
    stem = Path(path).stem
    return stem.startswith("test_") or stem.endswith("_test") or stem == "conftest"


def learnable_modules(modules: Mapping[str, ModuleType | None], search_path: Iterable[str]) -> list[str]:
    """The top-level modules among `modules` (a worker's `sys.modules` at its end) that a
    preloaded interpreter may import on its own: importable by that name (the module's file, or
    its package's folder, directly in an import path entry), files of installed packages or the
    standard library (`library_roots`), not test files, not on `DENIED_MODULES`, not private
    (`_asyncio`, `_ssl`: an accelerator imported on its own, before the package that wraps it,
    leaves the package with the wrong half: `asyncio.current_task()` in a fork then finds no
    task inside `asyncio.run`, and anyio and httpx stop working). Built-in and
    namespace modules (no file) are left out: there is nothing to import ahead for them; so are
    extension modules a package registered under a top-level name they cannot be imported by."""
    search_path = list(search_path)
    roots = library_roots(search_path)
    entries = {Path(os.path.realpath(entry)) for entry in search_path if entry}
    found = []
    for name, module in list(modules.items()):
        path = getattr(module, "__file__", None)
        if (
            "." in name
            or name.startswith("_")  # private: imported by its public package, in that package's order
            or name in DENIED_MODULES
            or not isinstance(path, str)
            or is_test_file(path)
        ):
            continue
        resolved = Path(os.path.realpath(path))
        package = resolved.name.startswith("__init__.")
        folder = resolved.parent.parent if package else resolved.parent
        named = (resolved.parent.name if package else resolved.name.split(".")[0]) == name
        if named and folder in entries and any(resolved.is_relative_to(root) for root in roots):
            found.append(name)
    return sorted(found)


def _fork_safety_marks(groups: Collection[int]) -> tuple[int, int, frozenset[int]]:
    """Cheap marks of what `fork_hazard` and `kill_what_the_imports_started` look for: Python
    threads, native threads, the processes below this one (not in the forked `groups`). An
    import that changes none of them needs neither full check."""
    task_dir = Path("/proc/self/task")
    native = len(os.listdir(task_dir)) if task_dir.is_dir() else 0
    below = outside_groups(live_descendants(), groups)
    return threading.active_count(), native, frozenset(entry.pid for entry in below)


def import_learnt(modules: Iterable[str], groups: Collection[int] = ()) -> dict[str, Any]:
    """Import `modules` one at a time (those not imported yet, never a denied one), checking
    after each one that changed the marks that forking is still safe. Returns what was
    `imported`, what `failed` (name to one line), and the `problem` with the module that
    caused it (`culprit`): the batch stops there (the rest `untried`), and this interpreter
    must not fork again. `groups`: the leaders of forked groups still running (a shared
    interpreter imports for one pytest process while others' experiments run), spared."""
    imported: list[str] = []
    failed: dict[str, str] = {}
    names = [name for name in dict.fromkeys(modules) if name not in DENIED_MODULES]
    there_before = {name for name in names if name in sys.modules}
    for index, name in enumerate(names):
        if name in sys.modules:
            if name not in there_before:
                imported.append(name)  # by an earlier one of the batch: `accelerate` imports torch
            continue
        before = _fork_safety_marks(groups)
        failure = import_modules([name])
        if failure is not None:
            failed[name] = failure
        else:
            imported.append(name)
        after = _fork_safety_marks(groups)
        if after != before:
            # Only a process that appeared during this import is its doing: one of an earlier
            # experiment's group may still be on its way out.
            started = after[2] - before[2]
            problem = (kill_what_the_imports_started(groups) if started else None) or fork_hazard()
            if problem is not None:
                return {
                    "imported": imported,
                    "failed": failed,
                    "problem": problem,
                    "culprit": name,
                    "untried": names[index + 1 :],
                }
    # What the new imports left is shared with every later fork too (see `_serve_after_imports`).
    gc.collect()
    gc.freeze()
    return {"imported": imported, "failed": failed, "problem": None, "culprit": None, "untried": []}


#: How much of a model file is read at a time, into one reused buffer: the page cache keeps
#: the file, this process keeps nothing.
_READ_CHUNK_BYTES = 8 << 20


def read_into_page_cache(directory: str) -> dict[str, Any]:
    """Read every regular file under `directory` once (a symlinked file is followed, as a hub
    cache's snapshot links to its blobs), so that a child's model load finds them in the page
    cache. Anything else (a FIFO, a device) is skipped, unopened for reading. Returns what was
    read: files, bytes (held in the page cache, not by any process) and seconds."""
    started = time.perf_counter()
    files = total = 0
    buffer = bytearray(_READ_CHUNK_BYTES)
    for root, _dirs, names in os.walk(directory):
        for name in sorted(names):
            try:
                # O_NONBLOCK: opening a FIFO must not wait for a writer; checked before reading.
                fd = os.open(os.path.join(root, name), os.O_RDONLY | os.O_NONBLOCK)
            except OSError:
                continue
            with os.fdopen(fd, "rb", buffering=0) as fh:
                if not stat.S_ISREG(os.fstat(fd).st_mode):
                    continue
                try:
                    while count := fh.readinto(buffer):
                        total += count
                except OSError:
                    continue
            files += 1
    return {
        "path": directory,
        "files": files,
        "bytes": total,
        "read_s": round(time.perf_counter() - started, 3),
    }


class ForkedWorker:
    """The worker forked by a forked supervisor; the part of `subprocess.Popen` it uses."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else _monotonic() + timeout
        while self.returncode is None:
            pid, status = _waitpid(self.pid, os.WNOHANG)
            if pid == self.pid:
                self.returncode = os.waitstatus_to_exitcode(status)
                break
            if deadline is not None and _monotonic() >= deadline:
                raise subprocess.TimeoutExpired(str(self.pid), timeout or 0.0)
            _sleep(_WAIT_POLL_S)
        return self.returncode


def _fresh_process_state(env: Mapping[str, str], argv: list[str]) -> None:
    """What a fresh interpreter would have: this environment and argv, new random seeds, and
    stdout/stderr objects over fds 1 and 2 buffered as a fresh start would buffer them."""
    os.environ.clear()
    os.environ.update(env)
    sys.argv = list(argv)
    random.seed()
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        numpy.random.seed()
    for fd, name in ((1, "stdout"), (2, "stderr")):
        interactive = os.isatty(fd)
        stream = io.TextIOWrapper(
            io.open(fd, "wb", closefd=False),  # noqa: UP020 (closefd: fds 1 and 2 stay open)
            encoding=getattr(sys, name).encoding,
            errors=getattr(sys, name).errors,
            line_buffering=interactive or name == "stderr",
        )
        setattr(sys, name, stream)
        setattr(sys, f"__{name}__", stream)


def _exit_now(returncode: int) -> None:
    """Leave a forked process without running the preloaded interpreter's exit handlers."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(returncode)


def fork_worker(work_dir: Path, env: Mapping[str, str]) -> ForkedWorker:
    """`supervisor.main`'s worker start on a preloaded fork: the worker forked, not executed."""
    pid = os.fork()
    if pid != 0:
        return ForkedWorker(pid)
    returncode = 1
    try:
        # The supervisor's handlers are not the worker's: a fresh interpreter's defaults.
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(PARENT_DEATH_SIGNAL, signal.SIG_DFL)
        from pytest_llem.isolation import worker

        _fresh_process_state(env, [worker.__file__, str(work_dir)])
        returncode = worker.main(work_dir)
    except SystemExit as exc:
        returncode = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        traceback.print_exc()
    finally:
        _exit_now(returncode)
    raise AssertionError("unreachable")


def _run_group(
    request: dict[str, Any], fds: list[int], server_pid: int, server_socks: Iterable[socket.socket]
) -> None:
    """In the forked child: become the experiment's supervisor, as a cold start would."""
    returncode = 1
    try:
        os.setsid()
        for sock in server_socks:  # no experiment holds another pytest's connection, nor the listener
            sock.close()
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.close(devnull)
        os.dup2(fds[0], 1)
        os.dup2(fds[1], 2)
        for fd in fds:
            os.close(fd)
        os.chdir(request["cwd"])
        signal.signal(PARENT_DEATH_SIGNAL, signal.SIG_DFL)
        work_dir = Path(request["work_dir"])
        _fresh_process_state(request["env"], [supervisor.__file__, str(work_dir), str(server_pid)])
        returncode = supervisor.main(work_dir, server_pid, start_worker=fork_worker)
    except BaseException:
        traceback.print_exc()
    finally:
        _exit_now(returncode)


def _send(sock: socket.socket, reply: Mapping[str, Any]) -> None:
    sock.send(json.dumps(reply).encode())


def _extend_sys_path(entries: Iterable[str]) -> None:
    """Put pytest's import path entries this interpreter lacks first, in pytest's order."""
    for entry in reversed(list(entries)):
        if entry not in sys.path:
            sys.path.insert(0, entry)


#: How long a `reap` request waits for a leader on its way out before saying it is not yet.
_REAP_WAIT_S = 0.1


def _reap(pid: int) -> dict[str, Any]:
    """Reap a leader that has exited (or is about to: it was just SIGKILLed), not waiting long:
    one pytest process's leader stuck on its way out must not hold up the others' requests."""
    deadline = _monotonic() + _REAP_WAIT_S
    while True:
        try:
            reaped, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return {"error": f"{pid} is not a group this interpreter forked"}
        if reaped == pid:
            return {"returncode": os.waitstatus_to_exitcode(status)}
        if _monotonic() >= deadline:
            return {"pending": True}
        _sleep(_WAIT_POLL_S)


def end_group(pid: int) -> None:
    """Kill a forked group whose pytest process is gone (its connection closed) and reap its
    leader, as its parent-death signal would after a cold start: the leader stopped first, so
    that everything below it (it is a child subreaper) stays there while it is killed, then
    whatever is left in its process group."""
    entry = proc_entry(pid)
    if entry is not None and entry.state != "Z":
        kill_process(entry, signal.SIGSTOP)
        kill_descendants(root=pid)
        kill_process(entry, signal.SIGKILL)
    kill_group(pid, signal.SIGKILL)
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass


def _peer_uid(conn: socket.socket) -> int:
    _pid, uid, _gid = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
    return uid


class _Server:
    """The requests of every pytest process connected to this interpreter, one at a time: the
    one that started it (`owner`, through the socket pair it was started with) and, for a
    shared interpreter, the xdist workers that connected to `listener`. Each forked group
    belongs to the connection that asked for it: when that connection closes (its pytest
    process ended, or died), the group is killed. The owner's end closing stops new
    connections; the interpreter exits once no connection is left."""

    def __init__(
        self,
        owner: socket.socket,
        model_files: dict[str, dict[str, Any]],
        listener: socket.socket | None,
        env: Mapping[str, str],
        modules: list[str],
    ) -> None:
        self.pid = os.getpid()
        self.model_files = model_files
        self.listener = listener
        #: The environment it was started with (imports may have changed `os.environ` since).
        self.env = dict(env)
        #: Every module imported so far, at its start and since (`import`), in order.
        self.preloaded = list(modules)
        self.owner: socket.socket | None = owner
        self.connections: dict[int, socket.socket] = {owner.fileno(): owner}
        #: Forked groups not reaped yet: leader pid -> the connection (fd) that asked for it.
        self.groups: dict[int, int] = {}
        self.poller = select.poll()
        self.poller.register(owner, select.POLLIN)
        if listener is not None:
            self.poller.register(listener, select.POLLIN)

    def run(self) -> None:
        while self.connections:
            for fd, _events in self.poller.poll():
                if self.listener is not None and fd == self.listener.fileno():
                    self._accept()
                elif fd in self.connections:
                    self._answer(self.connections[fd])

    def _accept(self) -> None:
        assert self.listener is not None
        try:
            conn, _addr = self.listener.accept()
        except OSError:
            return
        if _peer_uid(conn) != os.getuid():  # the folder is private; never fork for another user
            conn.close()
            return
        self.connections[conn.fileno()] = conn
        self.poller.register(conn, select.POLLIN)

    def _close(self, conn: socket.socket) -> None:
        fd = conn.fileno()
        for pid in [pid for pid, holder in self.groups.items() if holder == fd]:
            del self.groups[pid]
            end_group(pid)
        self.poller.unregister(fd)
        del self.connections[fd]
        conn.close()
        if conn is self.owner:
            self.owner = None
            if self.listener is not None:  # the pytest process that started it is done: no new worker
                self.poller.unregister(self.listener)
                self.listener.close()
                self.listener = None

    def _answer(self, conn: socket.socket) -> None:
        try:
            data, fds, _flags, _addr = socket.recv_fds(conn, MAX_MESSAGE_BYTES, 2)
        except OSError:  # its pytest process died mid-request
            data, fds = b"", []
        if not data:
            for fd in fds:
                os.close(fd)
            self._close(conn)
            return
        reply = self._handle(json.loads(data), fds, conn)
        try:
            _send(conn, reply)
        except OSError:
            pass  # gone meanwhile: its end of file comes next

    def _handle(self, request: dict[str, Any], fds: list[int], conn: socket.socket) -> dict[str, Any]:
        op = request.get("op")
        if op == "attach":
            return {"ready": True, "ready_at": time.time(), "env": self.env, "modules": self.preloaded}
        if op == "read_files":
            path = request["path"]
            if path not in self.model_files:
                self.model_files[path] = {**read_into_page_cache(path), "read_at_start": False}
            return self.model_files[path]
        if op == "fork":
            hazard = fork_hazard()
            if hazard is not None or len(fds) != 2:
                for fd in fds:
                    os.close(fd)
                return {"refused": hazard or "stdout and stderr were not passed"}
            pid = os.fork()
            if pid == 0:
                socks = [*self.connections.values(), *([self.listener] if self.listener else [])]
                _run_group(request, fds, self.pid, socks)
            for fd in fds:
                os.close(fd)
            self.groups[pid] = conn.fileno()
            return {"pid": pid, "preloaded": self.preloaded}
        if op == "import":
            _extend_sys_path(request.get("sys_path", []))
            reply = import_learnt(request["modules"], self.groups)
            self.preloaded += [m for m in reply["imported"] if m not in self.preloaded]
            return reply
        if op == "status":
            info = os.waitid(os.P_PID, request["pid"], os.WEXITED | os.WNOHANG | os.WNOWAIT)
            return {"exited": info is not None and info.si_pid == request["pid"]}
        if op == "reap":
            reply = _reap(request["pid"])
            if "pending" not in reply:
                self.groups.pop(request["pid"], None)
            return reply
        return {"error": f"unknown request {op!r}"}


def serve(
    sock: socket.socket,
    model_files: dict[str, dict[str, Any]],
    listener: socket.socket | None = None,
    env: Mapping[str, str] | None = None,
    modules: Iterable[str] = (),
) -> None:
    """Answer `attach`, `import`, `read_files`, `fork`, `status` and `reap` until the owner
    (pytest, through `sock`) and every process connected to `listener` have closed their
    connections. `model_files`: the directories already read, by path."""
    _Server(sock, model_files, listener, os.environ if env is None else env, list(modules)).run()


def main(sock_fd: int, pytest_pid: int, listen_fd: int | None = None) -> int:
    started_env = dict(os.environ)

    def on_parent_death_signal(signum: int, frame: object) -> None:
        # PR_SET_PDEATHSIG follows the parent *thread*; act only once pytest itself is gone.
        if os.getppid() != pytest_pid:
            kill_descendants()
            os._exit(0)

    signal.signal(PARENT_DEATH_SIGNAL, on_parent_death_signal)
    set_parent_death_signal(PARENT_DEATH_SIGNAL)
    # Before the imports: whatever they start, detached or not, stays below this process.
    become_child_subreaper()
    if os.getppid() != pytest_pid:
        return 0
    listener = socket.socket(fileno=listen_fd) if listen_fd is not None else None
    try:
        return _serve_after_imports(socket.socket(fileno=sock_fd), listener, started_env)
    finally:
        kill_descendants()  # nothing below this process outlives it


def _serve_after_imports(
    sock: socket.socket, listener: socket.socket | None = None, env: Mapping[str, str] | None = None
) -> int:
    hello = json.loads(sock.recv(MAX_MESSAGE_BYTES) or b"{}")
    _extend_sys_path(hello.get("sys_path", []))
    modules = hello.get("modules", [])
    problem = import_modules(modules)
    problem = kill_what_the_imports_started() or problem or fork_hazard()
    # What the imports left is shared with every fork; keep the children's collections off it
    # (CPython's advice for forking servers): a collection writes to each object it visits,
    # which would copy the pages under them into every child, in the middle of its work.
    gc.collect()
    gc.freeze()
    # Directories the collected cases name: read now, while pytest's fixtures run.
    model_files = {
        path: {**read_into_page_cache(path), "read_at_start": True}
        for path in (hello.get("read_files", []) if problem is None else [])
    }
    # Its readiness by the wall clock pytest shares: pytest may read this reply much later.
    _send(sock, {"ready": problem is None, "problem": problem, "ready_at": time.time()})
    if problem is not None:
        return 0
    try:
        serve(sock, model_files, listener, env, modules)
    except (ConnectionError, OSError):
        pass  # pytest is gone: its end of the socket closed mid-request
    return 0


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]) if len(sys.argv) > 3 else None))
