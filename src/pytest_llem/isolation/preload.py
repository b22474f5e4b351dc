"""The pytest side of the preloaded start method: which modules to preload, and the handle
that starts the preloaded interpreter (`isolation.forkserver`) and asks it for each group.

Start methods are the launcher's swappable axis: `launcher.cold_start` spawns fresh
interpreters; `Preloader.start` forks the group from a preloaded interpreter started once per
pytest process (so once per xdist worker): at the end of collection when the collected cases
say what to import (`Preloader.prestart`, so its imports run beside the session's fixtures),
else when the first experiment needs it. Any
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
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from pytest_llem.backends import BACKEND_WORKLOADS
from pytest_llem.isolation.files import OUTCOME_FILE
from pytest_llem.isolation.forkserver import is_test_file
from pytest_llem.isolation.launcher import MODEL_FILES_ENV, ChildOutput, StartedGroup, cold_start
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
#: at import (pytest-llem's own per experiment, pytest's current test; CUDA's device list is
#: read at CUDA's start, which only ever happens in the child).
PER_EXPERIMENT_ENV_PREFIXES = ("PYTEST_LLEM_", "PYTEST_CURRENT_TEST", "CUDA_VISIBLE_DEVICES")
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


def describe_start(modules: Iterable[str], read_files: Iterable[str] = ()) -> str:
    """What a starting preloaded interpreter does, for people: the packages it imports (not
    pytest-llem's own) and the model folders it reads."""
    tops = (module.partition(".")[0] for module in modules)
    packages = list(dict.fromkeys(top for top in tops if top != "pytest_llem"))
    doing = [f"importing {', '.join(packages)}"] if packages else []
    folders = len(list(read_files))
    if folders:
        doing.append(f"then reading {folders} model folder(s)")
    return "starting the preloaded interpreter" + (f" ({', '.join(doing)})" if doing else "") + " ..."


def env_difference(preloaded: Mapping[str, str], wanted: Mapping[str, str]) -> list[str]:
    """The variables (names only) whose values differ, besides the per-experiment ones."""
    names = set(preloaded) ^ set(wanted) | {
        k for k in set(preloaded) & set(wanted) if preloaded[k] != wanted[k]
    }
    return sorted(n for n in names if not n.startswith(PER_EXPERIMENT_ENV_PREFIXES))


class PreloadedGroup:
    """A group forked by the preloaded interpreter, which is the leader's parent: it answers
    whether the leader exited (unreaped, as `launcher._leader_exited`) and reaps it, then
    calls `on_reaped` (the worker's outcome is in its work folder by then)."""

    def __init__(self, server: _ForkServer, pid: int, on_reaped: Callable[[], None] = lambda: None) -> None:
        self._server = server
        self.pid = pid
        self.returncode: int | None = None
        self._on_reaped = on_reaped

    def exited(self) -> bool:
        reply = self._server.ask({"op": "status", "pid": self.pid})
        return reply is None or bool(reply.get("exited"))

    def wait(self) -> int:
        if self.returncode is None:
            reply = self._server.ask({"op": "reap", "pid": self.pid}, timeout_s=None)
            # The preloaded interpreter died meanwhile: the leader's parent-death signal killed it.
            self.returncode = int(reply["returncode"]) if reply is not None else -9
            self._on_reaped()
        return self.returncode


class _ForkServer:
    """The running preloaded interpreter and its socket. Starting it (`__init__`) does not
    wait for its imports; `wait_ready` does, before the first fork."""

    def __init__(self, modules: list[str], env: Mapping[str, str], read_files: Iterable[str] = ()) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
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
        self._launched = time.monotonic()
        self._launched_at = time.time()
        #: Seconds from its launch until its imports and reads were done, once `wait_ready` saw it.
        self.took_s: float | None = None
        try:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "pytest_llem.isolation.forkserver",
                    str(theirs.fileno()),
                    str(os.getpid()),
                ],
                env=self.env,
                pass_fds=[theirs.fileno()],
                start_new_session=True,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        finally:
            theirs.close()
        self.sock = ours
        hello = {"modules": modules, "sys_path": [p for p in sys.path if p], "read_files": list(read_files)}
        self.sock.send(json.dumps(hello).encode())

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
            elif self.proc.poll() is not None and (reply := self._receive(0)) is None:
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
        try:
            self.sock.send(json.dumps({"op": "import", "modules": modules}).encode())
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
        self.sock.settimeout(timeout_s)
        try:
            data = self.sock.recv(1 << 20)
        except OSError:  # TimeoutError included
            return None
        return json.loads(data) if data else None

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

    def close(self) -> None:
        """Stop it; closing again does nothing more."""
        # Busy: it would see the socket's end only once done.
        if not self.ready or self._reading or self._learning is not None:
            self._kill()
        self.sock.close()  # it exits on end of file, killing whatever is below it
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._kill()
            self.proc.wait()

    def _kill(self) -> None:
        """Kill it and everything below it now, without waiting for it to answer: stopped first,
        so that it forks nothing more and what its imports started stays below it (it is a
        child subreaper) while it is killed."""
        if self.proc.poll() is not None:
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

    def prestart(self, env: Mapping[str, str], read_files: Iterable[str] = ()) -> None:
        """Start the preloaded interpreter now, for children whose environment will be `env`,
        without waiting for its imports: they run while pytest goes on (session fixtures,
        say) and the first `start` waits only for what is left of them. It then reads the
        model directories `read_files` into the page cache (`preload_model_files`)."""
        if self.disabled is None and self._server is None:
            server_env = {k: v for k, v in env.items() if not k.startswith(PER_EXPERIMENT_ENV_PREFIXES)}
            modules, read_files = list(dict.fromkeys([*self._modules(), *self._learnt])), list(read_files)
            try:
                self._server = _ForkServer(modules, server_env, read_files)
            except OSError as exc:
                self._disable(str(exc))
                return
            self._notify(describe_start(modules, read_files))

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

            try:
                server.wait_ready(self._interrupted, waiting)
            except RuntimeError as exc:
                self._disable(str(exc))
                return
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
        reply = self._server.ask(request, fds=[output.stdout_fd, output.stderr_fd])
        if reply is None or "pid" not in reply:
            self._disable(
                str(reply["refused"])
                if reply and "refused" in reply
                else "the preloaded interpreter stopped answering"
            )
            return self._cold(work_dir, env, output, self.disabled or "")
        server = self._server
        group = PreloadedGroup(server, int(reply["pid"]), on_reaped=lambda: self._learn_from(work_dir))
        preloaded = list(dict.fromkeys([*server.modules, *server.learnt]))
        return StartedGroup(group, "preloaded", extra=extra, preloaded_modules=preloaded)

    def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
