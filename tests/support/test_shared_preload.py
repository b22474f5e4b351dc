"""The tests' shared preloaded interpreter: what one session's children imported is preloaded
for the next session's, and the interpreter ends with the process that started it, whether
that process leaves its block or is SIGKILLed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import workloads
from helpers import SUPPORT_DIR, new_preloaded_interpreters, preloaded_interpreters, wait_until_all_gone
from shared_preload import shared_preloaded_interpreter

from pytest_llem.session import BenchmarkSession
from pytest_llem.settings import LlemSettings


def session_on(address: str | None, state_dir: Path) -> BenchmarkSession:
    session = BenchmarkSession(LlemSettings(enabled=True, state_dir=state_dir, energy="none", preload="auto"))
    session.launcher.attach_preloaded(address)
    session.start()
    return session


def test_what_one_sessions_child_imported_is_preloaded_for_the_next_sessions_first_child(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    site = tmp_path / "site-packages"  # named as an installer's folder: a module that may be learnt
    site.mkdir()
    (site / "learnt_across.py").write_text("VALUE = 1\n")
    monkeypatch.syspath_prepend(str(site))
    before = preloaded_interpreters(os.getpid())
    results = []
    with shared_preloaded_interpreter() as address:
        assert address is not None
        (shared,) = new_preloaded_interpreters(before, os.getpid(), count=1)
        for name in ("first", "second"):
            session = session_on(address, tmp_path / name)
            try:
                params = {"modules": ["learnt_across"]}
                results.append(
                    session.run_experiment("t.py::case", workloads.import_inside, [{"params": params}])
                )
            finally:
                session.close_preloaded()
        # Only the one interpreter: neither session started its own.
        assert [p for p in preloaded_interpreters(os.getpid()) if p not in before] == [shared]
    first, second = results
    assert first.start_method == second.start_method == "preloaded"
    assert first.extra["seen_before"] == [] and "learnt_across" not in first.preloaded_modules
    assert second.extra["seen_before"] == ["learnt_across"] and "learnt_across" in second.preloaded_modules
    assert wait_until_all_gone([shared], timeout_s=5.0) == []  # closed with the block
    assert not Path(address).parent.exists()  # its private socket folder too


# Starts the shared interpreter, says its pid, then waits to be told to go (or to be killed).
OWNER = """
import os, sys
from helpers import new_preloaded_interpreters
from shared_preload import shared_preloaded_interpreter

with shared_preloaded_interpreter() as address:
    (pid,) = new_preloaded_interpreters([], os.getpid(), count=1)
    print(pid, address, flush=True)
    sys.stdin.readline()
"""


@pytest.mark.parametrize("end", ["leaves", "sigkill"])
def test_the_shared_interpreter_ends_with_the_process_that_started_it(end: str):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(SUPPORT_DIR), os.environ.get("PYTHONPATH", "")]))
    owner = subprocess.Popen(
        [sys.executable, "-c", OWNER], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        pid_text, address = owner.stdout.readline().split()
        interpreter = int(pid_text)
        assert os.path.exists(address)
        if end == "sigkill":  # as a SIGKILLed xdist worker: nothing of it runs after
            owner.kill()
        else:
            owner.stdin.close()
        owner.wait(timeout=30)
        assert wait_until_all_gone([interpreter], timeout_s=10.0) == []
        if end == "leaves":
            assert not os.path.exists(os.path.dirname(address))  # its private socket folder too
    finally:
        if owner.poll() is None:
            owner.kill()
            owner.wait()
