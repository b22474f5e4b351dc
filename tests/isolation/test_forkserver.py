"""What the preloaded interpreter checks before it forks, and its forked worker's wait."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import types
from pathlib import Path

import pytest

from pytest_llem.isolation import forkserver


def test_a_running_thread_makes_forking_unsafe():
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait, name="busy-helper")
    thread.start()
    try:
        hazard = forkserver.fork_hazard()
    finally:
        stop.set()
        thread.join()
    assert hazard is not None and "Python thread(s) running" in hazard and "busy-helper" in hazard


def test_cuda_initialised_makes_forking_unsafe(monkeypatch: pytest.MonkeyPatch):
    fake_torch = types.SimpleNamespace(cuda=types.SimpleNamespace(is_initialized=lambda: True))
    monkeypatch.setitem(__import__("sys").modules, "torch", fake_torch)
    assert forkserver.fork_hazard() == "CUDA is initialised in the preloaded interpreter"
    fake_torch.cuda.is_initialized = lambda: False
    assert "CUDA" not in (forkserver.fork_hazard() or "")


def test_an_import_that_fails_is_named_in_one_line():
    assert forkserver.import_modules(["json", "no_such_module_y", "os"]) == (
        "importing no_such_module_y failed (ModuleNotFoundError: No module named 'no_such_module_y')"
    )
    assert forkserver.import_modules(["json"]) is None


def test_a_forked_worker_waits_with_a_timeout_and_gives_popens_exit_status():
    pid = os.fork()
    if pid == 0:
        import time

        time.sleep(0.3)
        os._exit(7)
    worker = forkserver.ForkedWorker(pid)
    with pytest.raises(subprocess.TimeoutExpired):
        worker.wait(timeout=0.01)
    assert worker.wait() == 7 and worker.returncode == 7


def test_model_files_are_read_whole_and_anything_but_a_regular_file_is_skipped(tmp_path: Path):
    blobs, snapshot = tmp_path / "blobs", tmp_path / "snapshot"
    blobs.mkdir()
    (snapshot / "sub").mkdir(parents=True)
    (blobs / "weights").write_bytes(b"x" * (9 << 20))  # more than one read
    (snapshot / "model.safetensors").symlink_to(blobs / "weights")  # a hub cache's layout
    (snapshot / "sub" / "tokenizer.json").write_text("{}")
    os.mkfifo(snapshot / "pipe")  # would block a plain open, and never end
    (snapshot / "dangling").symlink_to(tmp_path / "gone")
    read = forkserver.read_into_page_cache(str(snapshot))
    assert (read["path"], read["files"], read["bytes"]) == (str(snapshot), 2, (9 << 20) + 2)
    assert read["read_s"] >= 0


def run_script(script: str) -> list[str]:
    """`script` in a fresh interpreter (it kills its own descendants: never this process's);
    its stdout lines."""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.splitlines()


KILL_WITH_KILL_REPLACED = """
import os, signal, subprocess, sys
import psutil
from pytest_llem.isolation.supervisor import kill_descendants  # as the preloaded interpreter does

# A child in a session of its own, and then what a workload module may do when imported.
child = subprocess.Popen([sys.executable, "-c", "import os, time; os.setsid(); time.sleep(600)"])
real_kill = os.kill
def kill_nothing(*args):
    return None
os.kill = os.killpg = kill_nothing
psutil.Process.send_signal = kill_nothing
kill_descendants(keep=child.pid)
try:
    print(child.wait(timeout=5))
except subprocess.TimeoutExpired:
    print("survived")
    real_kill(child.pid, signal.SIGKILL)
"""


def test_the_teardown_kills_with_the_functions_of_before_the_workload_imports():
    assert run_script(KILL_WITH_KILL_REPLACED) == ["-9"]


WHAT_THE_IMPORTS_STARTED = """
import os, subprocess, sys
from pytest_llem.isolation.forkserver import kill_what_the_imports_started

print(kill_what_the_imports_started())
# A process started meanwhile, as a module that spawns a helper when it is imported does.
helper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
print(helper.pid)
print(kill_what_the_imports_started())
print(os.path.exists(f"/proc/{helper.pid}"))  # killed and reaped
"""


def test_what_the_imports_started_is_killed_and_named():
    nothing, pid, reason, still_there = run_script(WHAT_THE_IMPORTS_STARTED)
    assert nothing == "None"
    killed = "1 process(es) started by the imports in the preloaded interpreter, killed"
    assert reason.startswith(f"{killed}: {pid} (")
    assert "time.sleep(600)" in reason
    assert still_there == "False"


WHILE_GROUPS_RUN = """
import os, subprocess, sys
from pytest_llem.isolation.forkserver import kill_what_the_imports_started

# A forked group's leader with a child of its own, as a shared interpreter has while it imports
# for another pytest process; then a helper an import started.
leader = subprocess.Popen([sys.executable, "-c", "import subprocess, sys, time; "
    "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)']); time.sleep(600)"])
import time; time.sleep(1.0)
helper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
print(helper.pid)
print(kill_what_the_imports_started(groups=[leader.pid]))
print(os.path.exists(f"/proc/{helper.pid}"), leader.poll())
import psutil
below = psutil.Process(leader.pid).children()
print(len(below))
for process in [*below, psutil.Process(leader.pid)]:
    process.kill()
"""


def test_what_the_imports_started_is_killed_but_the_running_groups_are_spared():
    pid, reason, helper_and_leader, below = run_script(WHILE_GROUPS_RUN)
    assert reason.startswith(
        f"1 process(es) started by the imports in the preloaded interpreter, killed: {pid} ("
    )
    assert helper_and_leader == "False None"  # the helper killed and reaped, the leader running
    assert below == "1"  # and its own child too


def test_the_processes_killed_are_reaped_even_when_they_are_slow_to_die():
    # Killed 0.3 s into the wait: as a SIGKILLed process on a busy machine, it is not gone the
    # moment the signal is sent, and a single look would leave it a zombie.
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    time.sleep(0.3)
    threading.Timer(0.3, os.kill, (child.pid, signal.SIGKILL)).start()
    assert forkserver.reap_killed({child.pid, os.getppid()}, timeout_s=10.0) == set()  # the parent: not ours
    assert not Path(f"/proc/{child.pid}").exists()  # reaped: no zombie left
    child.returncode = -signal.SIGKILL  # reaped above, not by Popen


def test_the_groups_and_what_runs_below_them_are_left_out():
    from pytest_llem.processes import ProcEntry

    entries = [
        ProcEntry(10, 1, "S", 0),  # a group's leader
        ProcEntry(11, 1, "S", 0),  # something an import started
        ProcEntry(20, 10, "S", 0),  # the leader's worker
        ProcEntry(21, 11, "S", 0),  # the import's helper's child
        ProcEntry(30, 20, "S", 0),  # the worker's child
    ]
    assert [e.pid for e in forkserver.outside_groups(entries, [10])] == [11, 21]
    assert [e.pid for e in forkserver.outside_groups(entries, [])] == [10, 11, 20, 21, 30]


def module_at(path: Path) -> types.ModuleType:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("")
    module = types.ModuleType(path.stem)
    module.__file__ = str(path)
    return module


def test_only_installed_top_level_modules_are_learnable(tmp_path: Path):
    site = tmp_path / "venv" / "site-packages"
    modules = {
        "installed": module_at(site / "installed" / "__init__.py"),
        "installed.sub": module_at(site / "installed" / "sub.py"),  # its package stands for it
        # An extension a package registers under a top-level name it cannot be imported by.
        "_registered": module_at(site / "installed" / "_registered.cpython-311-x86_64-linux-gnu.so"),
        "test_shipped": module_at(site / "test_shipped.py"),  # a test file, even installed
        "conftest": module_at(site / "conftest.py"),
        "project": module_at(tmp_path / "project" / "project.py"),  # the user's own
        "__main__": module_at(site / "__main__.py"),
        "json": sys.modules["json"],  # the standard library
        "this": module_at(site / "this.py"),  # on the deny-list wherever it is
        "sys": sys,  # built in: no file
        "gone": None,
    }
    modules["_private"] = module_at(site / "_private.py")  # a package's own half, never alone
    search_path = [str(site), str(tmp_path / "project"), *sys.path]
    assert forkserver.learnable_modules(modules, search_path) == ["installed", "json"]
    # Without the folder on the import path, its modules are no installed package's.
    assert forkserver.learnable_modules(modules, search_path[1:]) == ["json"]


ASYNC_LOAD_THEN_LEARN = """
import asyncio, sys
from pytest_llem.isolation.forkserver import learnable_modules

async def in_a_task():
    return asyncio.current_task() is not None

asyncio.run(in_a_task())  # a worker that ran an async load: asyncio and _asyncio imported
print(" ".join(learnable_modules(dict(sys.modules), sys.path)))
"""
# The preloaded interpreter's part: import what was learnt, in that order, freeze, fork; the
# fork runs the next case's async load.
IMPORT_THEN_FORK = """
import gc, importlib, os, sys
for name in sys.argv[1:]:
    importlib.import_module(name)
gc.freeze()
pid = os.fork()
if pid == 0:
    import asyncio

    async def in_a_task():
        return asyncio.current_task() is not None
    print(asyncio.run(in_a_task()))
    sys.stdout.flush()
    os._exit(0)
os.waitpid(pid, 0)
"""


def test_what_an_async_load_teaches_keeps_asyncio_working_in_the_next_fork():
    # `_asyncio` imported on its own before `asyncio` left forks without a current task
    # inside asyncio.run (httpx and anyio then fail with AsyncLibraryNotFoundError).
    learnt = subprocess.run(
        [sys.executable, "-c", ASYNC_LOAD_THEN_LEARN], capture_output=True, text=True, timeout=120, check=True
    ).stdout.split()
    assert "asyncio" in learnt and not any(name.startswith("_") for name in learnt)
    forked = subprocess.run(
        [sys.executable, "-c", IMPORT_THEN_FORK, *learnt], capture_output=True, text=True, timeout=120
    )
    assert forked.stdout.split() == ["True"], forked.stderr
    # What it guards against: the private half first, as learning once did.
    broken = subprocess.run(
        [sys.executable, "-c", IMPORT_THEN_FORK, "_asyncio", *learnt],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert broken.stdout.split() == ["False"]


LEARN_IN_A_FRESH_INTERPRETER = """
import json, sys
sys.path.insert(0, sys.argv[1])
from pytest_llem.isolation.forkserver import import_learnt, fork_hazard

print(json.dumps(import_learnt(["plain_one", "this", "json", "missing_one", "ticks", "after_ticks"])))
print("plain_one" in sys.modules, "this" in sys.modules, "after_ticks" in sys.modules)
print(fork_hazard() is not None)
"""


def test_learnt_imports_stop_at_the_first_module_after_which_forking_is_unsafe(tmp_path: Path):
    (tmp_path / "plain_one.py").write_text("VALUE = 1\n")
    (tmp_path / "after_ticks.py").write_text("VALUE = 1\n")
    (tmp_path / "ticks.py").write_text(
        "import threading, time\n"
        "threading.Thread(target=lambda: time.sleep(3600), name='import-ticker', daemon=True).start()\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", LEARN_IN_A_FRESH_INTERPRETER, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    reply_line, present, hazard = proc.stdout.splitlines()
    reply = json.loads(reply_line)
    assert reply["imported"] == ["plain_one", "ticks"]  # json was there already, `this` is denied
    assert reply["failed"] == {
        "missing_one": "importing missing_one failed (ModuleNotFoundError: No module named 'missing_one')"
    }
    assert reply["culprit"] == "ticks" and reply["untried"] == ["after_ticks"]
    assert reply["problem"] == "1 Python thread(s) running in the preloaded interpreter (import-ticker)"
    assert present == "True False False"
    assert hazard == "True"


def test_learnt_imports_that_leave_forking_safe_say_no_problem(tmp_path: Path):
    (tmp_path / "plain_two.py").write_text("VALUE = 2\n")
    script = (
        "import json, sys\nsys.path.insert(0, sys.argv[1])\n"
        "from pytest_llem.isolation.forkserver import import_learnt\n"
        "print(json.dumps(import_learnt(['plain_two', 'plain_two'])))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {
        "imported": ["plain_two"],
        "failed": {},
        "problem": None,
        "culprit": None,
        "untried": [],
    }


def test_a_learnt_module_another_one_imported_first_counts_as_imported(tmp_path: Path):
    (tmp_path / "imports_leaf.py").write_text("import leaf_module\n")
    (tmp_path / "leaf_module.py").write_text("VALUE = 1\n")
    script = (
        "import json, sys\nsys.path.insert(0, sys.argv[1])\n"
        "from pytest_llem.isolation.forkserver import import_learnt\n"
        "print(json.dumps(import_learnt(['json', 'imports_leaf', 'leaf_module'])['imported']))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == ["imports_leaf", "leaf_module"]
