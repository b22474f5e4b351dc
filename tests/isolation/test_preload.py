"""The preloaded start method from pytest's side: which modules, when to start cold, and the
preloaded interpreter's life (it dies with pytest, SIGKILL included)."""

from __future__ import annotations

import json
import os
import re
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import workloads
from helpers import (
    START_METHODS,
    SUPPORT_DIR,
    is_live,
    new_preloaded_interpreters,
    preloaded_interpreters,
    read_pids,
    reports,
    start_llem_pytest,
    wait_for_file,
    wait_until_all_gone,
)

from pytest_llem.config import build_config
from pytest_llem.isolation.launcher import ChildOutput, run_in_child, terminate_group
from pytest_llem.isolation.preload import (
    BASE_MODULES,
    TRANSFORMERS_MODULES,
    Preloader,
    auto_modules,
    describe_start,
    env_difference,
    is_library_module,
)
from pytest_llem.isolation.protocol import ExperimentRequest
from pytest_llem.isolation.signals import InterruptGuard, SessionInterrupts
from pytest_llem.isolation.workload import WorkloadSpec
from pytest_llem.processes import proc_entry
from pytest_llem.session import BenchmarkSession
from pytest_llem.settings import LlemSettings


@pytest.fixture
def started_here() -> Callable[..., list[int]]:
    """This process's preloaded interpreters that were not running when the test began.

    Under pytest-xdist a worker runs other files' tests first; one that never closed its
    session leaves its interpreter until the session is garbage-collected, which is not
    this test's to check.
    """
    before = preloaded_interpreters(os.getpid())

    def started(wait_for: int = 0) -> list[int]:
        # `wait_for`: as many to show first, as one just started may not show at once.
        return new_preloaded_interpreters(before, os.getpid(), wait_for)

    return started


def run(bench: BenchmarkSession, workload, **fields):
    return bench.run_experiment("tests/test_preload.py::case", workload, [fields])


def test_auto_preloads_the_backends_libraries_and_safe_workload_modules():
    modules = auto_modules({"pytorch", None}, ["workloads", "test_preload", "no_such_module"])
    assert modules == [
        *BASE_MODULES,
        "torch",
        *TRANSFORMERS_MODULES,
        "pytest_llem.backends.pytorch",
        "workloads",
    ]
    assert auto_modules({None}) == list(BASE_MODULES)
    assert "pytest_llem.isolation.worker" in BASE_MODULES
    assert "vllm" in auto_modules({"vllm"})


def test_only_imported_non_test_modules_count_as_safe_to_preload():
    assert is_library_module("workloads")
    assert not is_library_module(__name__)  # a test module
    assert not is_library_module("conftest")
    assert not is_library_module("never_imported_anywhere")


def test_env_difference_ignores_what_is_set_per_experiment():
    base = {"PATH": "/bin", "HF_HUB_OFFLINE": "0"}
    same = {**base, "PYTEST_LLEM_EXPERIMENT_ID": "x", "CUDA_VISIBLE_DEVICES": "1", "PYTEST_CURRENT_TEST": "t"}
    assert env_difference(base, same) == []
    # What differs between the xdist workers that share one preloaded interpreter.
    worker = {
        **base,
        "PYTEST_XDIST_WORKER": "gw1",
        "PYTEST_XDIST_WORKER_COUNT": "2",
        "COLUMNS": "80",
        "LINES": "24",
    }
    assert env_difference(base, worker) == []
    assert env_difference(base, {**base, "HF_HUB_OFFLINE": "1", "EXTRA": ""}) == ["EXTRA", "HF_HUB_OFFLINE"]


@pytest.mark.parametrize("preload", START_METHODS)
def test_the_result_records_how_its_group_started(
    started_here: Callable[..., list[int]], bench: BenchmarkSession, preload: str
):
    first = run(bench, workloads.report_start)
    second = run(bench, workloads.report_start)
    expected = "cold" if preload == "none" else "preloaded"
    assert first.start_method == second.start_method == expected
    assert first.start_note is None
    starter = first.extra
    if preload == "none":
        assert starter["starter_pid"] == os.getpid()
        assert started_here() == []
        assert starter["gc_frozen_objects"] == 0
    else:
        # Both forked from one preloaded interpreter, a child of this process in its own session.
        assert starter["starter_pid"] == second.extra["starter_pid"] != os.getpid()
        assert starter["starter_parent_pid"] == os.getpid()
        assert "pytest_llem.isolation.forkserver" in starter["starter_cmdline"]
        assert starter["preloaded_modules"] == ["workloads"]
        # What was imported is out of the collector's reach, so the child's collections do not
        # copy the pages it shares with the preloaded interpreter; the collector still runs.
        assert starter["gc_frozen_objects"] > 10_000
    assert starter["gc_enabled"] is True
    # What a fresh interpreter would have: its own session, this cwd, the worker's argv,
    # and a random state of its own (two forks of one image must not draw the same number).
    assert starter["supervisor_sid"] != os.getsid(0)
    assert starter["cwd"] == os.getcwd()
    assert starter["argv"][0].endswith("worker.py")
    assert starter["random_draw"] != second.extra["random_draw"]


def test_a_module_that_starts_a_thread_at_import_forces_a_cold_start_with_the_reason(
    state_dir: Path, started_here: Callable[..., list[int]]
):
    bench = BenchmarkSession(
        LlemSettings(
            enabled=True,
            state_dir=state_dir,
            energy="none",
            preload="pytest_llem.isolation.worker,thread_at_import",
        )
    )
    bench.start()
    try:
        result = run(bench, "thread_at_import:count")
        again = run(bench, "thread_at_import:count")
    finally:
        bench.close_preloaded()
    assert result.output_tokens == 2
    assert result.start_method == again.start_method == "cold"
    assert "thread(s) running in the preloaded interpreter" in result.start_note
    assert "ticker-started-at-import" in result.start_note
    # One line for the session, however many experiments fell back.
    assert [p for p in bench.problems if "cold start instead of a preloaded one" in p] == [
        f"cold start instead of a preloaded one: {result.start_note}"
    ]
    assert started_here() == []


def test_a_module_that_fails_to_import_forces_a_cold_start_with_the_reason(state_dir: Path):
    bench = BenchmarkSession(
        LlemSettings(enabled=True, state_dir=state_dir, energy="none", preload="no_such_module_x")
    )
    bench.start()
    result = run(bench, workloads.count_tokens)
    assert result.start_method == "cold" and result.output_tokens == 8
    assert result.start_note.startswith("importing no_such_module_x failed (ModuleNotFoundError")


# Its environment against the one its own interpreter started with.
@pytest.mark.own_preloaded_interpreter
def test_an_experiment_whose_environment_differs_starts_cold(bench: BenchmarkSession):
    assert run(bench, workloads.count_tokens).start_method == "preloaded"
    result = run(bench, workloads.report_identity, env={"HF_HUB_OFFLINE": "1"})
    assert result.start_method == "cold"
    assert "HF_HUB_OFFLINE" in result.start_note
    assert result.extra["env"]["HF_HUB_OFFLINE"] == "1"
    assert run(bench, workloads.count_tokens).start_method == "preloaded"  # the next one forks again


def test_repeats_record_one_start_method(bench: BenchmarkSession):
    result = run(bench, workloads.count_tokens, repeats=2)
    assert result.start_method == "preloaded" and len(result.rounds) == 2


SUITE = """
from workloads import hang_with_stubborn_children

def test_hangs(llem):
    llem.run(hang_with_stubborn_children, params={"pid_file": %r})
"""


def test_sigkill_of_pytest_leaves_neither_the_preloaded_interpreter_nor_its_groups(tmp_path: Path):
    pid_file = tmp_path / "pids.json"
    (tmp_path / "test_suite.py").write_text(SUITE % str(pid_file))
    proc = start_llem_pytest(tmp_path, tmp_path / "state", "test_suite.py", "--llem-energy=none")
    wait_for_file(pid_file, timeout_s=120)
    (server,) = preloaded_interpreters(proc.pid)
    group = read_pids(pid_file)
    assert len(group) == 4  # supervisor, worker, two grandchildren that ignore SIGTERM
    os.kill(proc.pid, signal.SIGKILL)
    assert wait_until_all_gone([server, *group], 3.0) == []
    proc.communicate(timeout=30)


XDIST_SUITE = """
import os
import pytest
from workloads import report_env

@pytest.mark.parametrize('n', range(4))
def test_start(llem, n):
    result = llem.run(report_env, params={"names": ["PYTEST_XDIST_WORKER", "PYTEST_LLEM_EXPERIMENT_ID"]})
    assert result.start_method == 'preloaded', result.start_note
    assert result.extra["env"]["PYTEST_XDIST_WORKER"] == os.environ["PYTEST_XDIST_WORKER"]
    print('STARTER', result.extra['starter_pid'])
"""


def test_xdist_workers_fork_from_the_one_preloaded_interpreter_their_controller_started(tmp_path: Path):
    pytest.importorskip("xdist")
    (tmp_path / "test_x.py").write_text(XDIST_SUITE)
    proc = start_llem_pytest(tmp_path, tmp_path / "state", "test_x.py", "-n", "2", "-s", "--llem-energy=none")
    output, _ = proc.communicate(timeout=240)
    assert proc.returncode == 0, output
    (report,) = reports(tmp_path / "state")
    starters = {entry["result"]["extra"]["starter_pid"] for entry in report["experiments"]}
    workers = {entry["worker_id"] for entry in report["experiments"]}
    ids = {entry["result"]["extra"]["env"]["PYTEST_LLEM_EXPERIMENT_ID"] for entry in report["experiments"]}
    assert len(workers) == 2 and len(ids) == 4, report["experiments"]
    assert len(starters) == 1, starters  # one interpreter for both workers
    (starter,) = starters
    assert starter not in {proc.pid, os.getpid()}
    assert "the preloaded interpreter the xdist workers share" in output
    assert wait_until_all_gone([starter], 5.0) == []  # gone with the controller's session


KILLED_XDIST_WORKER_SUITE = """
import os
from pathlib import Path
from workloads import report_env

def test_sleeps(llem):
    Path({worker_file!r}).write_text(str(os.getpid()))
    llem.run(report_env, params={{"names": [], "pid_file": {pid_file!r}, "sleep_s": 120}})

def test_runs_on_beside(llem):
    llem.run(report_env, params={{"names": [], "sleep_s": 120}})
"""


def test_a_killed_xdist_worker_leaves_nothing_and_the_shared_interpreter_dies_with_the_controller(
    tmp_path: Path,
):
    pytest.importorskip("xdist")
    worker_file, pid_file = tmp_path / "worker.pid", tmp_path / "group.json"
    (tmp_path / "test_x.py").write_text(
        KILLED_XDIST_WORKER_SUITE.format(worker_file=str(worker_file), pid_file=str(pid_file))
    )
    proc = start_llem_pytest(tmp_path, tmp_path / "state", "test_x.py", "-n", "2", "--llem-energy=none")
    try:
        wait_for_file(pid_file, timeout_s=120)
        group = read_pids(pid_file)
        (server,) = preloaded_interpreters(proc.pid)  # the controller's child
        assert proc_entry(group[0]).parent_pid == server
        os.kill(int(worker_file.read_text()), signal.SIGKILL)  # mid-experiment
        # Gone at once, while the session goes on (the other worker's case still runs).
        assert wait_until_all_gone(group, 2.0) == []
        assert is_live(server)  # the other worker may still fork from it
        os.kill(proc.pid, signal.SIGKILL)
        assert wait_until_all_gone([server], 5.0) == []
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=60)


def _alive(pid: int) -> bool:
    from pytest_llem.processes import process_is_alive

    return process_is_alive(pid)


def shared_request(tmp_path: Path, name: str, **params) -> ExperimentRequest:
    """A request for `workloads.report_env` that reports `names` (and more, `params`)."""
    return ExperimentRequest(
        experiment_id=name,
        config=build_config({"energy": "none", "min_window_s": 0.0, "params": params}),
        config_hash="h" * 16,
        workload=WorkloadSpec(ref="workloads:report_env"),
        state_dir=str(tmp_path / "state"),
        sys_path=[str(SUPPORT_DIR)],
    )


def run_started_by(preloader: Preloader, request: ExperimentRequest, **env: str):
    guard = InterruptGuard(SessionInterrupts())
    return run_in_child(request, env=dict(os.environ, **env), guard=guard, start=preloader.start)


def test_workers_fork_from_the_shared_interpreter_each_fork_with_its_own_environment(
    tmp_path: Path, started_here: Callable[..., list[int]]
):
    owner = Preloader(lambda: list(BASE_MODULES))
    address = owner.share(dict(os.environ))
    assert address is not None
    folder = Path(address).parent
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700 and stat.S_ISSOCK(Path(address).stat().st_mode)
    (server,) = started_here(1)
    lines: list[str] = []
    workers = [Preloader(lambda: list(BASE_MODULES), notify=lines.append, shared=address) for _ in range(2)]
    names = ["CUDA_VISIBLE_DEVICES", "PYTEST_XDIST_WORKER", "PYTEST_LLEM_EXPERIMENT_ID"]
    try:
        results = [
            run_started_by(
                worker,
                shared_request(tmp_path, f"exp-{n}", names=names),
                CUDA_VISIBLE_DEVICES=str(n),
                PYTEST_XDIST_WORKER=f"gw{n}",
                PYTEST_LLEM_EXPERIMENT_ID=f"exp-{n}",
            )
            for n, worker in enumerate(workers)
        ]
        assert [r.start_method for r in results] == ["preloaded", "preloaded"], [
            r.start_note for r in results
        ]
        assert [r.extra["starter_pid"] for r in results] == [server, server]
        assert [r.extra["env"] for r in results] == [
            {
                "CUDA_VISIBLE_DEVICES": str(n),
                "PYTEST_XDIST_WORKER": f"gw{n}",
                "PYTEST_LLEM_EXPERIMENT_ID": f"exp-{n}",
            }
            for n in range(2)
        ]
        assert all(r.preloaded_modules == list(BASE_MODULES) for r in results)
        assert started_here() == [server]  # neither worker started its own
        assert not any("not using" in line for line in lines), lines
    finally:
        for worker in workers:
            worker.close()
        owner.close()
    assert wait_until_all_gone([server], 5.0) == []
    assert not folder.exists()


def test_a_worker_whose_environment_differs_starts_its_own_preloaded_interpreter(
    tmp_path: Path, started_here: Callable[..., list[int]]
):
    owner = Preloader(lambda: list(BASE_MODULES))
    address = owner.share(dict(os.environ))
    (server,) = started_here(1)
    lines: list[str] = []
    worker = Preloader(lambda: list(BASE_MODULES), notify=lines.append, shared=address)
    try:
        result = run_started_by(worker, shared_request(tmp_path, "exp", names=[]), HF_HUB_OFFLINE="1")
        assert result.start_method == "preloaded", result.start_note
        assert result.extra["starter_pid"] != server
        assert sorted(started_here()) == sorted([server, result.extra["starter_pid"]])
        said = "not using the preloaded interpreter the xdist workers share: its environment differs in"
        assert f"{said} HF_HUB_OFFLINE" in lines
    finally:
        worker.close()
        owner.close()


KILLED_WORKER = """
import os
from pytest_llem.config import build_config
from pytest_llem.isolation.launcher import run_in_child
from pytest_llem.isolation.preload import BASE_MODULES, Preloader
from pytest_llem.isolation.protocol import ExperimentRequest
from pytest_llem.isolation.signals import InterruptGuard, SessionInterrupts
from pytest_llem.isolation.workload import WorkloadSpec

params = {{"names": [], "pid_file": {pid_file!r}, "sleep_s": 120}}
request = ExperimentRequest(
    experiment_id="doomed",
    config=build_config({{"energy": "none", "min_window_s": 0.0, "params": params}}),
    config_hash="h" * 16,
    workload=WorkloadSpec(ref="workloads:report_env"),
    state_dir={state!r},
    sys_path=[{support!r}],
)
worker = Preloader(lambda: list(BASE_MODULES), notify=print, on_fallback=print, shared={address!r})
run_in_child(request, env=dict(os.environ), guard=InterruptGuard(SessionInterrupts()), start=worker.start)
"""


def test_a_killed_worker_leaves_nothing_of_its_experiment_and_the_others_fork_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, started_here: Callable[..., list[int]]
):
    # The worker process imports `workloads` as xdist workers find a suite's modules; the same
    # environment here, so that nobody's environment differs from the shared interpreter's.
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(SUPPORT_DIR), os.environ.get("PYTHONPATH", "")]))
    owner = Preloader(lambda: list(BASE_MODULES))
    address = owner.share(dict(os.environ))
    assert address is not None
    (server,) = started_here(1)
    pid_file = tmp_path / "group.json"
    script = KILLED_WORKER.format(
        support=str(SUPPORT_DIR), address=address, state=str(tmp_path / "state"), pid_file=str(pid_file)
    )
    said = tmp_path / "said.txt"
    with said.open("w") as out:
        doomed = subprocess.Popen([sys.executable, "-u", "-c", script], stdout=out, start_new_session=True)
    try:
        wait_for_file(pid_file, timeout_s=120)
        group = read_pids(pid_file)
        assert all(is_live(pid) for pid in group)
        # Forked by the shared interpreter (what it said, if not).
        assert proc_entry(group[0]).parent_pid == server, said.read_text()
        os.kill(doomed.pid, signal.SIGKILL)
        doomed.wait(timeout=30)
        assert wait_until_all_gone(group, 5.0) == []  # the supervisor and the worker that slept
        assert is_live(server)
        survivor = Preloader(lambda: list(BASE_MODULES), shared=address)
        try:
            result = run_started_by(survivor, shared_request(tmp_path, "after", names=[]))
        finally:
            survivor.close()
        assert (result.start_method, result.extra["starter_pid"]) == ("preloaded", server)
    finally:
        if doomed.poll() is None:
            doomed.kill()
        owner.close()
    assert wait_until_all_gone([server], 5.0) == []


def test_a_signal_while_the_preloaded_interpreter_imports_does_not_wait_for_the_imports(
    tmp_path: Path, started_here: Callable[..., list[int]]
):
    lines: list[str] = []
    preloader = Preloader(lambda: ["slow_import"], on_fallback=lines.append, interrupted=lambda: True)
    started = time.monotonic()
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        group = preloader.start(tmp_path, dict(os.environ), ChildOutput(devnull, devnull))
    finally:
        os.close(devnull)
    took_s = time.monotonic() - started
    terminate_group(group.group, grace_s=0.5)  # the cold group it fell back to
    assert took_s < 5.0  # not the module's 20 s
    assert (group.method, group.note) == (
        "cold",
        "interrupted while the preloaded interpreter was importing slow_import",
    )
    assert lines == [f"cold start instead of a preloaded one: {group.note}"]
    assert started_here() == []


def test_prestart_returns_at_once_and_close_stops_the_imports_at_once(
    tmp_path: Path, started_here: Callable[..., list[int]]
):
    preloader = Preloader(lambda: ["slow_import"])
    started = time.monotonic()
    preloader.prestart(dict(os.environ))
    (server,) = started_here(1)
    assert time.monotonic() - started < 5.0  # the module's import takes 20 s
    preloader.close()
    assert time.monotonic() - started < 5.0  # killed, not waited for
    assert wait_until_all_gone([server], 3.0) == []


def test_the_start_says_what_it_imports_and_reads():
    assert describe_start([*BASE_MODULES, *TRANSFORMERS_MODULES, "torch"]) == (
        "starting the preloaded interpreter (importing transformers, torch) ..."
    )
    assert describe_start(BASE_MODULES, ["/models/a", "/models/b"]) == (
        "starting the preloaded interpreter (then reading 2 model folder(s)) ..."
    )
    assert describe_start(BASE_MODULES) == "starting the preloaded interpreter ..."


def test_the_preloaded_interpreter_says_it_starts_and_when_it_is_ready_with_the_time_it_took():
    lines: list[str] = []
    preloader = Preloader(lambda: [*BASE_MODULES, "json"], notify=lines.append)
    try:
        preloader.prestart(dict(os.environ))
        assert lines == ["starting the preloaded interpreter (importing json) ..."]
        time.sleep(1.5)  # ready meanwhile: the time it took is its own, not this wait's
        preloader.wait_ready()
        preloader.wait_ready()  # said once
    finally:
        preloader.close()
    assert len(lines) == 2, lines
    took_s = float(re.fullmatch(r"preloaded interpreter ready after (\d+\.\d) s", lines[1]).group(1))
    assert took_s < 1.5


def test_a_wait_for_the_preloaded_interpreter_says_so_every_line_interval(monkeypatch):
    monkeypatch.setattr("pytest_llem.isolation.preload.LINE_INTERVAL_S", 0.3)
    lines: list[str] = []
    began = time.monotonic()
    preloader = Preloader(
        lambda: ["slow_import"], notify=lines.append, interrupted=lambda: time.monotonic() - began > 1.2
    )
    try:
        preloader.prestart(dict(os.environ))
        preloader.wait_ready()  # interrupted after 1.2 s of the module's 20
    finally:
        preloader.close()
    assert lines[0] == "starting the preloaded interpreter (importing slow_import) ..."
    waits = lines[1:]
    assert len(waits) >= 3, lines
    assert all(
        re.fullmatch(r"still starting the preloaded interpreter \(\d+ s waited\)", line) for line in waits
    )
    assert preloader.disabled == "interrupted while the preloaded interpreter was importing slow_import"


COLLECTION_CONFTEST = """
import json, os, pytest

def children():
    # Read from /proc: psutil's children() also compares start times against the clock.
    found = {}
    for name in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                ppid = int(f.read().rsplit(b")", 1)[1].split()[1])
            with open(f"/proc/{name}/cmdline", "rb") as f:
                cmdline = f.read().decode(errors="replace").split("\\0")
        except (OSError, IndexError, ValueError):
            continue
        if ppid == os.getpid():
            found[name] = cmdline
    return found

@pytest.hookimpl(trylast=True)
def pytest_collection_finish(session):
    # Right after pytest-llem's own hook: the processes pytest has started by then.
    with open(%r, "w") as f:
        json.dump(children(), f)
"""

COLLECTION_SUITE = """
import pytest
from workloads import report_start

@pytest.mark.llem(%s)
def test_start(llem):
    result = llem.run(report_start)
    assert result.start_method == "preloaded", result.start_note
"""


@pytest.mark.parametrize(
    ("marker", "options", "started_at_collection"),
    [
        ("", ["--llem-preload=json"], 1),  # modules named: known at collection
        ("backend='pytorch'", ["--collect-only"], 0),  # nothing will run
        ("", [], 0),  # auto without a backend: the first workload's own module is awaited
    ],
    ids=["named-modules", "collect-only", "auto-without-backend"],
)
def test_the_preloaded_interpreter_starts_at_collection_when_its_modules_are_known(
    tmp_path: Path, marker: str, options: list[str], started_at_collection: int
):
    out = tmp_path / "interpreters.json"
    (tmp_path / "conftest.py").write_text(COLLECTION_CONFTEST % str(out))
    (tmp_path / "test_suite.py").write_text(COLLECTION_SUITE % marker)
    proc = start_llem_pytest(tmp_path, tmp_path / "state", "test_suite.py", "--llem-energy=none", *options)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, output
    children = json.loads(out.read_text())
    interpreters = [c for c in children.values() if "pytest_llem.isolation.forkserver" in c]
    assert len(interpreters) == started_at_collection, (children, output)


def test_deselected_cases_do_not_choose_the_preloaded_modules(tmp_path: Path):
    # The vLLM case is deselected: auto must not try to import vLLM (not installed here),
    # which would make the remaining case start cold.
    (tmp_path / "test_suite.py").write_text(
        "import pytest\n"
        "from workloads import report_start\n"
        "@pytest.mark.llem(backend='vllm', model='m')\n"
        "def test_vllm(llem):\n"
        "    llem.run()\n"
        "def test_start(llem):\n"
        "    result = llem.run(report_start)\n"
        "    assert result.start_method == 'preloaded', result.start_note\n"
    )
    state_dir = tmp_path / "state"
    proc = start_llem_pytest(tmp_path, state_dir, "test_suite.py", "--llem-energy=none", "-k", "start")
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, output
    assert "1 passed, 1 deselected" in output


SLOW_FIXTURE_SUITE = """
import json, pathlib, time, psutil, pytest

@pytest.fixture(scope="session")
def slow_setup():
    # A session fixture (building a model, say) running while the preloaded interpreter imports.
    found = [p.pid for p in psutil.Process().children() if "pytest_llem.isolation.forkserver" in p.cmdline()]
    pathlib.Path(%r).write_text(json.dumps(found))
    time.sleep(60)

def test_case(llem, slow_setup):
    llem.run()
"""


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["ctrl-c", "sigkill"])
def test_a_signal_while_the_prestarted_interpreter_imports_leaves_nothing_behind(tmp_path: Path, sig):
    started = tmp_path / "started.json"
    (tmp_path / "test_suite.py").write_text(SLOW_FIXTURE_SUITE % str(started))
    proc = start_llem_pytest(
        tmp_path, tmp_path / "state", "test_suite.py", "--llem-energy=none", "--llem-preload=slow_import"
    )
    wait_for_file(started, timeout_s=60)
    (server,) = read_pids(started)  # importing slow_import (20 s) meanwhile
    signalled = time.monotonic()
    os.kill(proc.pid, sig)
    output, _ = proc.communicate(timeout=30)
    assert wait_until_all_gone([server], 3.0) == []
    if sig == signal.SIGINT:
        assert proc.returncode == 130, output
        assert time.monotonic() - signalled < 10.0  # the imports' 20 s are not waited for


MODEL_FILES_SUITE = """
import pytest
from workloads import report_start

@pytest.mark.llem(model=%r, preload_model_files=True)
def test_start(llem):
    result = llem.run(report_start)
    assert result.start_method == "preloaded", result.start_note
"""


def model_directory(path: Path) -> Path:
    path.mkdir()
    (path / "model.safetensors").write_bytes(b"w" * 3_000_000)
    (path / "config.json").write_text("{}")
    return path


def test_model_files_named_by_a_case_are_read_once_before_its_fork(bench: BenchmarkSession, tmp_path: Path):
    model = model_directory(tmp_path / "model")
    first = run(bench, workloads.report_start, model=str(model), preload_model_files=True)
    again = run(bench, workloads.report_start, model=str(model), preload_model_files=True, seed=1)
    read = first.extra["model_files_preloaded"]
    assert read["path"] == str(model.resolve()) and (read["files"], read["bytes"]) == (2, 3_000_002)
    assert read["read_at_start"] is False  # named by the test, not the marker: read at the fork
    assert again.extra["model_files_preloaded"] == read  # once per directory
    unasked = run(bench, workloads.report_start, model=str(model))
    assert "model_files_preloaded" not in unasked.extra
    assert first.config_hash == unasked.config_hash  # nothing measured differs


def test_a_cold_start_reads_no_model_files(state_dir: Path, tmp_path: Path):
    cold = BenchmarkSession(LlemSettings(enabled=True, state_dir=state_dir, energy="none", preload="none"))
    cold.start()
    model = model_directory(tmp_path / "model")
    result = run(cold, workloads.report_start, model=str(model), preload_model_files=True)
    assert result.start_method == "cold" and "model_files_preloaded" not in result.extra


def test_model_files_a_marker_names_are_read_while_the_session_sets_up(tmp_path: Path):
    model = model_directory(tmp_path / "model")
    (tmp_path / "test_suite.py").write_text(MODEL_FILES_SUITE % str(model))
    state_dir = tmp_path / "state"
    options = ("--llem-energy=none", "--llem-preload=json")
    proc = start_llem_pytest(tmp_path, state_dir, "test_suite.py", *options)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, output
    (report,) = reports(state_dir)
    read = report["experiments"][0]["result"]["extra"]["model_files_preloaded"]
    assert (read["files"], read["bytes"], read["read_at_start"]) == (2, 3_000_002, True)


FORK_AT_IMPORT_SUITE = """
import fork_at_import

def test_first(llem):
    result = llem.run(fork_at_import.count)
    assert result.start_method == "cold", result.start_note
    assert "started by the imports in the preloaded interpreter, killed" in result.start_note

def test_second(llem):
    assert llem.run(fork_at_import.count).start_method == "cold"
"""


def test_a_module_that_forks_at_import_forces_a_cold_start_and_its_process_dies_with_pytest(tmp_path: Path):
    forked = tmp_path / "forked"
    forked.mkdir()
    (tmp_path / "test_suite.py").write_text(FORK_AT_IMPORT_SUITE)
    proc = start_llem_pytest(
        tmp_path, tmp_path / "state", "test_suite.py", "--llem-energy=none", FORK_AT_IMPORT_DIR=str(forked)
    )
    output, _ = proc.communicate(timeout=120)
    records = (path.name.split("-") for path in forked.iterdir())
    importers = {int(importer): int(child) for importer, child in records}
    own = importers.pop(proc.pid, None)  # pytest's own import of the test module: the suite's business
    try:
        assert wait_until_all_gone(list(importers.values()), 1.0) == []
        # The preloaded interpreter's import, and each test's cold-started worker's.
        assert len(importers) == 3, output
        assert proc.returncode == 0, output
        fell_back = "pytest-llem: cold start instead of a preloaded one: 1 process(es) started by the imports"
        assert fell_back in output
    finally:
        if own is not None:
            os.kill(own, signal.SIGKILL)


REPLACED_KILL_SUITE = """
from replaces_kill_at_import import leave_a_daemon

def test_leaves_a_daemon(llem):
    result = llem.run(leave_a_daemon, params={"pid_file": %r})
    assert result.start_method == "preloaded", result.start_note
"""


def test_a_module_that_replaces_os_kill_cannot_keep_what_its_workload_left_alive(tmp_path: Path):
    pid_file = tmp_path / "pids.json"
    (tmp_path / "test_suite.py").write_text(REPLACED_KILL_SUITE % str(pid_file))
    proc = start_llem_pytest(tmp_path, tmp_path / "state", "test_suite.py", "--llem-energy=none")
    output, _ = proc.communicate(timeout=120)
    pids = read_pids(pid_file)  # supervisor, worker, a setpgid child, a setsid double-forked daemon
    assert len(pids) == 4
    assert wait_until_all_gone(pids, 1.0) == []
    assert proc.returncode == 0, output


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["ctrl-c", "sigkill"])
def test_a_signal_while_a_module_that_forked_is_still_importing_leaves_nothing_behind(tmp_path: Path, sig):
    forked = tmp_path / "forked"
    forked.mkdir()
    started = tmp_path / "started.json"
    (tmp_path / "test_suite.py").write_text(SLOW_FIXTURE_SUITE % str(started))
    proc = start_llem_pytest(
        tmp_path,
        tmp_path / "state",
        "test_suite.py",
        "--llem-energy=none",
        "--llem-preload=fork_at_import",
        FORK_AT_IMPORT_DIR=str(forked),
        FORK_AT_IMPORT_SLOW_S="20",
    )
    wait_for_file(started, timeout_s=60)
    (server,) = read_pids(started)
    deadline = time.monotonic() + 30
    while not list(forked.iterdir()):  # it forked, and goes on importing
        assert time.monotonic() < deadline, "the module never forked"
        time.sleep(0.02)
    ((importer, child),) = (path.name.split("-") for path in forked.iterdir())
    assert int(importer) == server
    os.kill(proc.pid, sig)
    output, _ = proc.communicate(timeout=30)
    assert wait_until_all_gone([server, int(child)], 3.0) == []
    if sig == signal.SIGINT:
        assert proc.returncode == 130, output


def install_modules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **sources: str) -> Path:
    """Modules written into a folder named as an installer's (`site-packages`), put on the
    import path that pytest and its children share, as an installed package would be."""
    site = tmp_path / "site-packages"
    site.mkdir(exist_ok=True)
    for name, source in sources.items():
        (site / f"{name}.py").write_text(source)
    monkeypatch.syspath_prepend(str(site))
    return site


def rootdir_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """A module of the user's own project: on the import path, but installed nowhere."""
    project = tmp_path / "project"
    project.mkdir(exist_ok=True)
    (project / f"{name}.py").write_text("VALUE = 1\n")
    monkeypatch.syspath_prepend(str(project))


# Learning from nothing: a shared interpreter may have learnt these modules already.
@pytest.mark.own_preloaded_interpreter
@pytest.mark.parametrize("preload", START_METHODS)
def test_the_second_case_finds_what_the_first_imported_inside_its_function_already_imported(
    bench: BenchmarkSession, preload: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    install_modules(tmp_path, monkeypatch, learnt_inside="VALUE = 1\n")
    rootdir_module(tmp_path, monkeypatch, "project_module")
    modules = ["learnt_inside", "this", "project_module"]  # installed, denied, the user's own
    first = run(bench, workloads.import_inside, params={"modules": modules})
    second = run(bench, workloads.import_inside, params={"modules": modules})
    assert first.output_tokens == second.output_tokens == 3
    assert first.extra["seen_before"] == []
    if preload == "none":
        assert first.preloaded_modules is None and second.preloaded_modules is None
        assert second.extra["seen_before"] == []
        return
    assert "learnt_inside" not in first.preloaded_modules
    assert "learnt_inside" in second.preloaded_modules
    assert second.extra["seen_before"] == ["learnt_inside"]
    # The deny-list's module and the project's own are never imported ahead.
    assert not {"this", "project_module"} & set(second.preloaded_modules)
    assert set(BASE_MODULES) <= set(first.preloaded_modules)


def test_a_named_module_list_learns_nothing(state_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    install_modules(tmp_path, monkeypatch, learnt_inside="VALUE = 1\n")
    bench = BenchmarkSession(
        LlemSettings(enabled=True, state_dir=state_dir, energy="none", preload="pytest_llem.isolation.worker")
    )
    bench.start()
    try:
        results = [
            run(bench, workloads.import_inside, params={"modules": ["learnt_inside"]}) for _ in range(2)
        ]
    finally:
        bench.close_preloaded()
    assert [r.preloaded_modules for r in results] == [["pytest_llem.isolation.worker"]] * 2
    assert results[1].extra["seen_before"] == []


THREAD_AT_IMPORT = """
import threading, time
threading.Thread(target=lambda: time.sleep(3600), name="learnt-ticker", daemon=True).start()
"""


# The refused import retires the interpreter it was learnt into: its own, not the shared one.
@pytest.mark.own_preloaded_interpreter
def test_a_learnt_module_that_starts_a_thread_makes_one_start_cold_and_is_never_imported_again(
    bench: BenchmarkSession, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    install_modules(tmp_path, monkeypatch, learnt_inside="VALUE = 1\n", ticks_inside=THREAD_AT_IMPORT)
    modules = ["learnt_inside", "ticks_inside"]
    first, second, third, fourth = (
        run(bench, workloads.import_inside, params={"modules": modules}) for _ in range(4)
    )
    assert [r.output_tokens for r in (first, second, third, fourth)] == [2] * 4
    assert first.start_method == "preloaded"
    # The preloaded interpreter imported it and then had a thread: that start falls back, as
    # any thread in the preloaded interpreter makes it, with the reason and the module named.
    assert second.start_method == "cold" and second.preloaded_modules is None
    assert "thread(s) running in the preloaded interpreter (learnt-ticker)" in second.start_note
    assert second.start_note.endswith("after importing ticks_inside (it will not be preloaded)")
    assert [p for p in bench.problems if "cold start instead" in p] == [
        f"cold start instead of a preloaded one: {second.start_note}"
    ]
    # A fresh preloaded interpreter, with what was learnt safely and never that module.
    for later in (third, fourth):
        assert later.start_method == "preloaded" and later.start_note is None
        assert "learnt_inside" in later.preloaded_modules
        assert "ticks_inside" not in later.preloaded_modules
        assert later.extra["seen_before"] == ["learnt_inside"]
