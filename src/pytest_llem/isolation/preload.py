"""The pytest side of the preloaded start method: which modules to preload, and the handle
that starts the preloaded interpreter (`isolation.forkserver`) and asks it for each group.

Start methods are the launcher's swappable axis: `launcher.cold_start` spawns fresh
interpreters; `Preloader.start` forks the group from a preloaded interpreter started once per
pytest process: at the end of collection when the collected cases say what to import
(`Preloader.prestart`, so its imports run beside the session's fixtures), else when the first
experiment needs it. Under pytest-xdist the controller starts one for all its workers
(`Preloader.share`, as the workers start), listening on a Unix socket in a private folder;
each worker attaches to it (`Preloader.shared`) and has it import what its own cases need
before its first fork, or starts its own when its environment differs or those imports fail
there. Any
reason a fork could be unsafe or could measure something else than a cold start would (an
import that failed, a thread or CUDA in the preloaded interpreter, an environment that
differs from the one its modules were imported under) makes that start a cold one, and the
reason is said once (`on_fallback`) and recorded in the result (`start_note`). Its start, a
wait for it (a line every `progress.LINE_INTERVAL_S`) and its readiness with the time it
took are said too (`notify`): its imports take seconds in which nothing else happens.

Under `--llem-preload=auto` it also learns: each worker reports the installed modules it had
imported by its end (`forkserver.learnable_modules`, in its outcome file), and the preloaded
interpreter, alive between forks, imports those it lacks right after that group is reaped, so
that a workload importing torch inside its function finds it imported from the second case
on. The imports run while pytest records the experiment, never beside a measured window (the
next start, and the idle baseline, wait for them). A module after whose import forking is no
longer safe makes that start cold, with the reason, and is never imported again: the next
start gets a fresh preloaded interpreter without it. Each result records the modules imported
before its fork (`preloaded_modules`).
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from pytest_llem.backends import BACKEND_WORKLOADS
from pytest_llem.isolation.files import OUTCOME_FILE
from pytest_llem.isolation.forkserver import is_test_file
from pytest_llem.isolation.launcher import (
    MODEL_FILES_ENV,
    WORK_DIR_PREFIX,
    ChildOutput,
    StartedGroup,
    cold_start,
)
from pytest_llem.isolation.protocol import OutcomeImports, read_model
from pytest_llem.processes import kill_descendants, kill_process, proc_entry
from pytest_llem.progress import LINE_INTERVAL_S

#: `--llem-preload` values that are not module lists.
PRELOAD_AUTO = "auto"
PRELOAD_NONE = "none"
#: What every preloaded fork needs whatever the workload: the worker and what it imports.
#: (`gating.limits` is imported lazily by the request's validation, which every worker runs.)
BASE_MODULES = ("pytest_llem.isolation.worker", "pytest_llem.gating.limits")
#: transformers imports its submodules lazily, on first use: without these, each fork would
#: still pay for the model and generation code (`modeling_utils` alone costs more than
#: `import transformers`).
TRANSFORMERS_MODULES = (
    "transformers",
    "transformers.modeling_utils",
    "transformers.generation.utils",
    "transformers.models.auto.modeling_auto",
    "transformers.models.auto.tokenization_auto",
)
#: The libraries a backend's workload imports, preloaded when a collected case names it.
BACKEND_MODULES: dict[str, tuple[str, ...]] = {
    "pytorch": ("torch", *TRANSFORMERS_MODULES),
    "vllm": ("torch", *TRANSFORMERS_MODULES, "vllm"),
}
#: Learnt packages that import their submodules lazily, on first use: learning one imports
#: these too, as a backend's preload does (else each fork would still import them).
LAZY_SUBMODULES: dict[str, tuple[str, ...]] = {"transformers": TRANSFORMERS_MODULES}
#: Variables that may differ between the preloaded interpreter and a child: nothing reads them
#: at import (pytest-llem's own per experiment, pytest's current test, the xdist worker's name
#: and count, and the terminal's size, which GNU readline sets in an xdist worker that imports
#: it: these differ between the workers sharing one interpreter; CUDA's device list is read at
#: CUDA's start, which only ever happens in the child).
PER_EXPERIMENT_ENV_PREFIXES = (
    "PYTEST_LLEM_",
    "PYTEST_CURRENT_TEST",
    "PYTEST_XDIST_",
    "COLUMNS",
    "LINES",
    "CUDA_VISIBLE_DEVICES",
)
#: The shared preloaded interpreter's socket, in a private folder named like a work folder
#: (`launcher.WORK_DIR_PREFIX` and the controller's pid, so a SIGKILLed controller's is reclaimed).
SHARED_SOCKET_NAME = "preload.sock"
#: How long a reply from the preloaded interpreter may take (imports take the first one).
_IMPORT_TIMEOUT_S = 300.0
_REPLY_TIMEOUT_S = 30.0
_IMPORT_POLL_S = 0.1


def auto_modules(backends: Iterable[str | None], workload_modules: Iterable[str] = ()) -> list[str]:
    """The modules `--llem-preload=auto` imports, in order, without repeats.

    The base, each collected backend's libraries and built-in workload, and those user
    workload modules that are safe to import (`is_library_module`)."""
    modules: list[str] = list(BASE_MODULES)
    for backend in sorted({b for b in backends if b is not None}):
        modules += BACKEND_MODULES.get(backend, ())
        if backend in BACKEND_WORKLOADS:
            modules.append(BACKEND_WORKLOADS[backend].partition(":")[0])
    modules += [m for m in workload_modules if is_library_module(m)]
    return list(dict.fromkeys(modules))


def is_library_module(name: str) -> bool:
    """A workload's module the preloaded interpreter may import on its own: already imported
    by pytest from a file (so importing it worked), and not a test module or conftest, whose
    import may do anything a test session sets up."""
    module = sys.modules.get(name)
    path = getattr(module, "__file__", None)
    if module is None or path is None:
        return False
    return not is_test_file(path)


def describe_start(modules: Iterable[str], read_files: Iterable[str] = (), shared: bool = False) -> str:
    """What a starting preloaded interpreter does, for people: the packages it imports (not
    pytest-llem's own) and the model folders it reads; whether the xdist workers share it."""
    tops = (module.partition(".")[0] for module in modules)
    packages = list(dict.fromkeys(top for top in tops if top != "pytest_llem"))
    doing = [f"importing {', '.join(packages)}"] if packages else []
    folders = len(list(read_files))
    if folders:
        doing.append(f"then reading {folders} model folder(s)")
    which = "the preloaded interpreter the xdist workers share" if shared else "the preloaded interpreter"
    return f"starting {which}" + (f" ({', '.join(doing)})" if doing else "") + " ..."


def env_difference(preloaded: Mapping[str, str], wanted: Mapping[str, str]) -> list[str]:
    """The variables (names only) whose values differ, besides the per-experiment ones."""
    names = set(preloaded) ^ set(wanted) | {
        k for k in set(preloaded) & set(wanted) if preloaded[k] != wanted[k]
    }
    return sorted(n for n in names if not n.startswith(PER_EXPERIMENT_ENV_PREFIXES))


class PreloadedGroup:
    """A group forked by the preloaded interpreter, which is the leader's parent: it answers
    whether the leader exited (unreaped, as `launcher._leader_exited`; through a pidfd where
    there is one, so a shared interpreter busy with another worker's request does not delay
    the answer) and reaps it, then calls `on_reaped` (the worker's outcome is in its work
    folder by then)."""

    def __init__(self, server: _ForkServer, pid: int, on_reaped: Callable[[], None] = lambda: None) -> None:
        self._server = server
        self.pid = pid
        self.returncode: int | None = None
        self._on_reaped = on_reaped
        # The leader stays unreaped until `wait`, so this pid cannot be another process's yet.
        self._pidfd: int | None = None
        pidfd_open = getattr(os, "pidfd_open", None)
        if pidfd_open is not None:
            try:
                self._pidfd = pidfd_open(pid)
            except OSError:
                self._pidfd = None

    def exited(self) -> bool:
        if self._pidfd is not None:
            poller = select.poll()  # not select(): a pidfd may be numbered above its limit of 1024
            poller.register(self._pidfd, select.POLLIN)
            return bool(poller.poll(0))
        reply = self._server.ask({"op": "status", "pid": self.pid})
        return reply is None or bool(reply.get("exited"))

    def wait(self) -> int:
        while self.returncode is None:
            reply = self._server.ask({"op": "reap", "pid": self.pid}, timeout_s=None)
            if reply is not None and reply.get("pending"):
                continue  # on its way out (just SIGKILLed): the interpreter waited a little, ask again
            # The preloaded interpreter died meanwhile: the leader's parent-death signal killed it.
            self.returncode = int(reply["returncode"]) if reply is not None and "returncode" in reply else -9
            if self._pidfd is not None:
                os.close(self._pidfd)
                self._pidfd = None
            self._on_reaped()
        return self.returncode


class _ForkServer:
    """A preloaded interpreter and this process's connection to it. Either this process
    started it (`__init__`, not waiting for its imports; with `listener`, a shared one that
    other processes `attach` to) or it attached to one another process started. `wait_ready`
    waits for its imports (or, attached, for its answer), before the first fork."""

    def __init__(
        self,
        modules: list[str],
        env: Mapping[str, str],
        read_files: Iterable[str] = (),
        listener: socket.socket | None = None,
    ) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self._setup(ours, env, modules)
        pass_fds = [theirs.fileno(), *([listener.fileno()] if listener is not None else [])]
        try:
            self.proc: subprocess.Popen[bytes] | None = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "pytest_llem.isolation.forkserver",
                    str(theirs.fileno()),
                    str(os.getpid()),
                    *([str(listener.fileno())] if listener is not None else []),
                ],
                env=self.env,
                pass_fds=pass_fds,
                start_new_session=True,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        hello = {"modules": modules, "sys_path": [p for p in sys.path if p], "read_files": list(read_files)}
        self.sock.send(json.dumps(hello).encode())

    @classmethod
    def attach(cls, address: str) -> _ForkServer:
        """Connect to the shared preloaded interpreter listening at `address` (OSError if none
        does); its environment and modules come with its answer (`wait_ready`)."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            sock.connect(address)
            sock.send(json.dumps({"op": "attach"}).encode())
        except OSError:
            sock.close()
            raise
        server = cls.__new__(cls)
        server._setup(sock, {}, [])
        server.proc = None
        return server

    def _setup(self, sock: socket.socket, env: Mapping[str, str], modules: list[str]) -> None:
        self.sock = sock
        self.env = dict(env)
        self.modules = modules
        #: Imported since, between forks (`learn`), in order.
        self.learnt: list[str] = []
        self.ready = False
        #: What `learn` sent, being imported: the next reply is `finish_learning`'s, and no
        #: other request is sent before it (one request, one reply).
        self._learning: list[str] | None = None
        #: Reading model files: it answers nothing else meanwhile, not even end of file.
        self._reading = False
        #: Its end of the connection closed (an attached one: it exited).
        self._closed_by_peer = False
        self._launched = time.monotonic()
        self._launched_at = time.time()
        #: Seconds from its launch until its imports and reads were done, once `wait_ready` saw it.
        self.took_s: float | None = None

    @property
    def shared(self) -> bool:
        """Whether another process started it (this one attached)."""
        return self.proc is None

    def _exited(self) -> bool:
        return self._closed_by_peer if self.proc is None else self.proc.poll() is not None

    def _await_reply(
        self,
        interrupted: Callable[[], bool],
        deadline: float,
        doing: str,
        waiting: Callable[[float], None] = lambda waited_s: None,
    ) -> dict[str, Any]:
        """The reply to what the interpreter is `doing`, polled in short slices (a signal to
        pytest must not wait for imports or reads to finish); RuntimeError, the interpreter
        closed, when it is interrupted, exits or passes `deadline`. `waiting` is called with
        the seconds waited so far at each poll without a reply."""
        began = time.monotonic()
        while (reply := self._receive(_IMPORT_POLL_S)) is None:
            waiting(time.monotonic() - began)
            problem = None
            if interrupted():
                problem = f"interrupted while the preloaded interpreter was {doing}"
            elif self._exited() and (reply := self._receive(0)) is None:
                problem = f"the preloaded interpreter exited while {doing}"
            elif time.monotonic() > deadline:
                problem = f"the preloaded interpreter took over {_IMPORT_TIMEOUT_S:g} s {doing}"
            if reply is not None:
                break
            if problem is not None:
                self.close()
                raise RuntimeError(problem)
        return reply

    def wait_ready(
        self, interrupted: Callable[[], bool], waiting: Callable[[float], None] = lambda waited_s: None
    ) -> None:
        """Wait until the imports are done; raise RuntimeError with the reason they failed."""
        if self.ready:
            return
        deadline = self._launched + _IMPORT_TIMEOUT_S
        reply = self._await_reply(interrupted, deadline, f"importing {', '.join(self.modules)}", waiting)
        if not reply.get("ready"):
            self.close()
            raise RuntimeError(str(reply.get("problem")))
        self.ready = True
        if self.shared:  # what the interpreter another process started was started with
            self.env, self.modules = dict(reply["env"]), list(reply["modules"])
        # Its own clock's time of readiness: the reply may have waited here since.
        self.took_s = max(0.0, float(reply.get("ready_at", time.time())) - self._launched_at)

    def read_files(self, path: str, interrupted: Callable[[], bool]) -> dict[str, Any]:
        """Have `path`'s files read into the page cache (once per directory); what was read."""
        try:
            self.sock.send(json.dumps({"op": "read_files", "path": path}).encode())
        except OSError:
            raise RuntimeError("the preloaded interpreter stopped answering") from None
        self._reading = True
        reply = self._await_reply(interrupted, time.monotonic() + _IMPORT_TIMEOUT_S, f"reading {path}")
        self._reading = False
        return reply

    def learn(self, modules: list[str]) -> None:
        """Have `modules` imported now, without waiting (`finish_learning` does)."""
        request = {"op": "import", "modules": modules, "sys_path": [p for p in sys.path if p]}
        try:
            self.sock.send(json.dumps(request).encode())
        except OSError:
            return  # gone: the next request says so
        self._learning = modules

    def finish_learning(self, interrupted: Callable[[], bool]) -> dict[str, Any] | None:
        """The reply to `learn` once its imports are done (None if none was sent); raises
        RuntimeError, the interpreter closed, as `wait_ready`."""
        if self._learning is None:
            return None
        doing = f"importing {', '.join(self._learning)}"
        reply = self._await_reply(interrupted, time.monotonic() + _IMPORT_TIMEOUT_S, doing)
        self._learning = None
        self.learnt += reply.get("imported", [])
        return reply

    def _receive(self, timeout_s: float | None) -> dict[str, Any] | None:
        """The next reply; None on a timeout or once the preloaded interpreter is gone."""
        try:
            self.sock.settimeout(timeout_s)  # OSError too once closed here
            data = self.sock.recv(1 << 20)
        except OSError:  # TimeoutError included
            return None
        if not data:
            self._closed_by_peer = True
            return None
        return json.loads(data)

    def ask(
        self,
        request: Mapping[str, Any],
        fds: list[int] | None = None,
        timeout_s: float | None = _REPLY_TIMEOUT_S,
    ) -> dict[str, Any] | None:
        """One request, one reply; None when the preloaded interpreter is gone or hangs."""
        try:
            socket.send_fds(self.sock, [json.dumps(request).encode()], fds or [])
        except OSError:
            return None
        return self._receive(timeout_s)

    def fork(
        self, request: Mapping[str, Any], fds: list[int], interrupted: Callable[[], bool]
    ) -> dict[str, Any]:
        """Ask for a group; its reply. A shared interpreter may first finish another worker's
        request (imports, model reads): waited for as those are, so a signal ends the wait."""
        try:
            socket.send_fds(self.sock, [json.dumps(request).encode()], fds)
        except OSError:
            raise RuntimeError("the preloaded interpreter stopped answering") from None
        return self._await_reply(interrupted, time.monotonic() + _IMPORT_TIMEOUT_S, "forking a group")

    def close(self) -> None:
        """Stop it (attached: only leave it; its groups are reaped by then); closing again does
        nothing more."""
        if self.proc is None:
            self.sock.close()  # it kills any group of ours still running, and serves the others on
            return
        if not self.ready and not self._reading and self._learning is None:
            reply = self._receive(0)  # a shared one's starter never waited for its readiness
            self.ready = reply is not None and bool(reply.get("ready"))
        # Busy: it would see the socket's end only once done.
        if not self.ready or self._reading or self._learning is not None:
            self._kill()
        # It exits on end of file once no worker is attached, killing whatever is below it.
        self.sock.close()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._kill()
            self.proc.wait()

    def _kill(self) -> None:
        """Kill it and everything below it now, without waiting for it to answer: stopped first,
        so that it forks nothing more and what its imports started stays below it (it is a
        child subreaper) while it is killed."""
        if self.proc is None or self.proc.poll() is not None:
            return  # reaped: its pid may be another process's by now
        entry = proc_entry(self.proc.pid)
        if entry is None:
            return
        kill_process(entry, signal.SIGSTOP)
        kill_descendants(root=entry.pid)
        kill_process(entry, signal.SIGKILL)


class Preloader:
    """`launcher.GroupStarter` for `--llem-preload`: forks from the preloaded interpreter, or
    starts cold with the reason. `modules` is called when an interpreter starts. With `learn`
    (`auto`), what each forked worker imported is imported before the next fork."""

    def __init__(
        self,
        modules: Callable[[], list[str]],
        on_fallback: Callable[[str], None] = lambda line: None,
        interrupted: Callable[[], bool] = lambda: False,
        notify: Callable[[str], None] = lambda line: None,
        learn: bool = False,
        shared: str | None = None,
    ) -> None:
        self._modules = modules
        self._interrupted = interrupted
        self._on_fallback = on_fallback
        self._notify = notify
        self._server: _ForkServer | None = None
        #: Why no start will be preloaded any more (the interpreter could not be used); None if it can.
        self.disabled: str | None = None
        self._said: set[str] = set()
        self._learn = learn
        #: Learnt and imported safely: a replacement interpreter imports them at its start.
        self._learnt: list[str] = []
        #: Modules never sent again: tried (imported, failed or refused), by name.
        self._tried: set[str] = set()
        #: Why the next start is cold (a learnt import made forking unsafe); said once.
        self._refused: str | None = None
        #: Where the preloaded interpreter an xdist controller shares with its workers listens
        #: (`share`); None: this process starts its own.
        self.shared = shared
        #: The environment, modules and model folders an attached interpreter must match, or
        #: be given, before its first fork (checked once it answers).
        self._wanted: tuple[dict[str, str], list[str], list[str]] | None = None
        #: The private folder of the socket of the interpreter this process shares (`share`).
        self._shared_dir: str | None = None

    def _cold(self, work_dir: Path, env: Mapping[str, str], output: ChildOutput, reason: str) -> StartedGroup:
        if reason not in self._said:
            self._said.add(reason)
            self._on_fallback(f"cold start instead of a preloaded one: {reason}")
        return cold_start(work_dir, env, output, note=reason)

    def _disable(self, reason: str) -> None:
        self.disabled = reason
        if self._server is not None:
            self._server.close()
            self._server = None

    def _leave_shared(self, reason: str) -> None:
        """Stop using the shared preloaded interpreter (said once): this process starts its own."""
        self._notify(f"not using the preloaded interpreter the xdist workers share: {reason}")
        self.shared = None
        self._wanted = None
        if self._server is not None:
            self._server.close()
            self._server = None

    def share(self, env: Mapping[str, str]) -> str | None:
        """Start a preloaded interpreter for xdist workers to share (the controller's part), for
        children whose environment will be `env`, without waiting for its imports; the address
        of its socket (in a private folder), or None if it cannot start (each worker then
        starts its own). Calling again gives the same address."""
        if self.disabled is not None:
            return None
        if self._shared_dir is None:
            server_env = {k: v for k, v in env.items() if not k.startswith(PER_EXPERIMENT_ENV_PREFIXES)}
            modules = list(dict.fromkeys(self._modules()))
            # Named like a work folder, so a SIGKILLed controller's is reclaimed (`reclaim_work_dirs`).
            folder = tempfile.mkdtemp(prefix=f"{WORK_DIR_PREFIX}{os.getpid()}-")
            listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            try:
                listener.bind(os.path.join(folder, SHARED_SOCKET_NAME))  # OSError: a path too long
                listener.listen(64)
                self._server = _ForkServer(modules, server_env, listener=listener)
            except OSError:
                shutil.rmtree(folder, ignore_errors=True)
                return None
            finally:
                listener.close()  # the interpreter holds it now
            self._shared_dir = folder
            self._notify(describe_start(modules, shared=True))
        return os.path.join(self._shared_dir, SHARED_SOCKET_NAME)

    def prestart(self, env: Mapping[str, str], read_files: Iterable[str] = ()) -> None:
        """Start the preloaded interpreter now, for children whose environment will be `env`,
        without waiting for its imports: they run while pytest goes on (session fixtures,
        say) and the first `start` waits only for what is left of them. It then reads the
        model directories `read_files` into the page cache (`preload_model_files`). An xdist
        worker attaches to the interpreter its controller shares instead, if it has one; what
        it lacks of these modules and folders it imports and reads before the first fork, and
        if its environment differs, the worker starts its own after all."""
        if self.disabled is None and self._server is None:
            server_env = {k: v for k, v in env.items() if not k.startswith(PER_EXPERIMENT_ENV_PREFIXES)}
            modules, read_files = list(dict.fromkeys([*self._modules(), *self._learnt])), list(read_files)
            if self.shared is not None:
                try:
                    self._server = _ForkServer.attach(self.shared)
                except OSError as exc:
                    self._leave_shared(f"cannot connect to it ({exc})")
                else:
                    self._wanted = (server_env, modules, read_files)
                    return
            try:
                self._server = _ForkServer(modules, server_env, read_files)
            except OSError as exc:
                self._disable(str(exc))
                return
            self._notify(describe_start(modules, read_files))

    def _fit_shared(self, server: _ForkServer) -> str | None:
        """Once the shared interpreter answered: why this worker cannot fork from it (its
        environment differs, or importing what this worker's cases need failed or made forking
        unsafe), or None once it has imported those modules and read those folders."""
        if self._wanted is None:
            return None
        env, modules, read_files = self._wanted
        differs = env_difference(server.env, env)
        if differs:
            return f"its environment differs in {', '.join(differs[:5])}"
        missing = [m for m in modules if m not in server.modules]
        if missing:
            server.learn(missing)
            reply = server.finish_learning(self._interrupted) or {}
            failed = reply.get("problem") or next(iter(reply.get("failed", {}).values()), None)
            if failed:
                return str(failed)
        for path in read_files:
            server.read_files(path, self._interrupted)
        self._wanted = None
        return None

    @property
    def running(self) -> bool:
        """Whether a preloaded interpreter has been started (ready or still importing)."""
        return self._server is not None

    def wait_ready(self) -> None:
        """Wait until a started preloaded interpreter has finished its imports and the model
        reads it was given (nothing to do when none runs); a failure disables it, with the
        reason said at the next start. The idle baseline waits here: a GPU or CPU busy with
        an import or a read is not at rest."""
        server = self._server
        if server is None:
            return
        if not server.ready:
            said = [0]  # lines said while waiting

            def waiting(waited_s: float) -> None:
                if waited_s >= (said[0] + 1) * LINE_INTERVAL_S:
                    said[0] += 1
                    self._notify(f"still starting the preloaded interpreter ({waited_s:.0f} s waited)")

            wanted = self._wanted
            try:
                server.wait_ready(self._interrupted, waiting)
                problem = self._fit_shared(server) if server.shared else None
            except RuntimeError as exc:
                if not server.shared or self._interrupted():
                    self._disable(str(exc))
                    return
                problem = str(exc)
            if problem is not None:
                self._leave_shared(problem)
                if wanted is not None:  # this worker's own, for what it wanted of the shared one
                    env, _modules, read_files = wanted
                    self.prestart(env, read_files)
                    self.wait_ready()
                return
            if server.shared:
                self._notify(
                    f"the preloaded interpreter the xdist workers share answered after {server.took_s:.1f} s"
                )
            else:
                self._notify(f"preloaded interpreter ready after {server.took_s:.1f} s")
        try:
            self._finish_learning()
        except RuntimeError as exc:
            self._disable(str(exc))

    def _learn_from(self, work_dir: Path) -> None:
        """After a forked group is reaped: have the preloaded interpreter import what its worker
        imported and it lacks (nothing already tried), without waiting for it."""
        server = self._server
        if not self._learn or server is None:
            return
        try:
            report = read_model(work_dir, OUTCOME_FILE, OutcomeImports)
        except (OSError, ValidationError):
            return  # no report, nothing learnt: the outcome's own reading says what went wrong
        if report is None:
            return
        reported = [sub for name in report.imported_modules for sub in (name, *LAZY_SUBMODULES.get(name, ()))]
        new = [m for m in dict.fromkeys(reported) if m not in self._tried]
        if new:
            self._tried.update(new)
            server.learn(new)

    def _finish_learning(self) -> None:
        """Wait for the imports `_learn_from` asked for. A module after which forking is unsafe
        retires this interpreter (its replacement imports what was learnt safely, not that
        module) and makes the next start cold, with the reason."""
        if self._server is None:
            return
        reply = self._server.finish_learning(self._interrupted)
        if reply is None:
            return
        self._learnt += [m for m in reply.get("imported", []) if m != reply.get("culprit")]
        if reply.get("problem"):
            self._tried.difference_update(reply.get("untried", []))  # the next worker reports them again
            culprit = reply["culprit"]
            self._refused = f"{reply['problem']}, after importing {culprit} (it will not be preloaded)"
            if self._server.shared:  # retired for every worker: this one starts its own next
                self.shared = None
            self._server.close()
            self._server = None

    def start(self, work_dir: Path, env: Mapping[str, str], output: ChildOutput) -> StartedGroup:
        self.wait_ready()  # what was learnt from the last group, first
        if self._refused is not None:
            reason, self._refused = self._refused, None
            return self._cold(work_dir, env, output, reason)
        self.prestart(env)
        self.wait_ready()
        if self.disabled is not None or self._server is None:
            return self._cold(
                work_dir, env, output, self.disabled or "the preloaded interpreter did not start"
            )
        differs = env_difference(self._server.env, env)
        if differs:
            return self._cold(
                work_dir,
                env,
                output,
                f"its environment differs from the preloaded interpreter's in {', '.join(differs[:5])}"
                " (preloaded modules may have read them at import)",
            )
        extra = {}
        model_files = env.get(MODEL_FILES_ENV)
        if model_files is not None:
            try:
                extra["model_files_preloaded"] = self._server.read_files(model_files, self._interrupted)
            except RuntimeError as exc:
                self._disable(str(exc))
                return self._cold(work_dir, env, output, str(exc))
        request = {"op": "fork", "work_dir": str(work_dir), "env": dict(env), "cwd": os.getcwd()}
        server = self._server
        try:
            reply = server.fork(request, [output.stdout_fd, output.stderr_fd], self._interrupted)
        except RuntimeError as exc:
            reply = {"refused": str(exc)}
        if "pid" not in reply:
            reason = str(reply.get("refused") or reply)
            if server.shared and not self._interrupted():
                self._leave_shared(reason)  # retired, or gone: this worker's own from now on
                return self.start(work_dir, env, output)
            self._disable(reason)
            return self._cold(work_dir, env, output, reason)
        group = PreloadedGroup(server, int(reply["pid"]), on_reaped=lambda: self._learn_from(work_dir))
        preloaded = reply.get("preloaded") or [*server.modules, *server.learnt]
        return StartedGroup(group, "preloaded", extra=extra, preloaded_modules=list(dict.fromkeys(preloaded)))

    def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        if self._shared_dir is not None:
            shutil.rmtree(self._shared_dir, ignore_errors=True)
            self._shared_dir = None
