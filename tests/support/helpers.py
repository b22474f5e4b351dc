"""Shared by the tests that run pytest as a real process: starting it, reading its reports, PIDs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

SUPPORT_DIR = Path(__file__).parent
#: `--llem-preload` values for the two start methods: cold (fresh interpreters) and preloaded forks.
START_METHODS = ("none", "auto")
#: Options for a run whose workload sets its own throughput in a short window: no minimum
#: window and no host_busy limit, so neither the window's length nor this machine's other jobs
#: flag its figures and keep them out of the gate.
SIMULATED_RUN = ("--llem-min-window-s=0", "--llem-host-busy-share=1")
#: How the preloaded interpreter shows in a process listing.
PRELOADED_INTERPRETER_MODULE = "pytest_llem.isolation.forkserver"


def preloaded_interpreters(pytest_pid: int | None = None) -> list[int]:
    """PIDs of live preloaded interpreters (of `pytest_pid`'s children only, when given)."""
    import psutil

    found = []
    for proc in psutil.process_iter(["cmdline", "ppid", "status"]):
        try:
            cmdline = proc.info["cmdline"] or []
            if PRELOADED_INTERPRETER_MODULE not in cmdline or proc.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            if pytest_pid is None or proc.info["ppid"] == pytest_pid:
                found.append(proc.pid)
        except psutil.Error:
            continue
    return found


def new_preloaded_interpreters(
    before: list[int], pytest_pid: int, count: int, timeout_s: float = 10.0
) -> list[int]:
    """The `count` preloaded interpreters of `pytest_pid` not among `before`, waited for: just
    after one is started, its /proc entry may not show its command line yet (the exec has not
    happened, or /proc reads it empty on a busy machine). Fewer if they never show."""
    deadline = time.monotonic() + timeout_s
    while True:
        found = [pid for pid in preloaded_interpreters(pytest_pid) if pid not in before]
        if len(found) >= count or time.monotonic() >= deadline:
            return found
        time.sleep(0.05)


def start_llem_pytest(
    cwd: Path, state_dir: Path | None, *args: str, merge_stderr: bool = True, **env: str
) -> subprocess.Popen[str]:
    """`pytest --llem` in its own session (so a signal reaches it alone, as `kill PID` would).

    The one place the tests build a `pytest --llem` command. `state_dir` None leaves the
    state dir to `args` or the environment (a test of how it is given). tests/support is on
    PYTHONPATH (after any PYTHONPATH in `env`) so suites can import `workloads`; output is
    merged unless `merge_stderr` is false.
    """
    environ = dict(os.environ, **env)
    environ["PYTHONPATH"] = os.pathsep.join([str(SUPPORT_DIR), environ.get("PYTHONPATH", "")])
    state = [] if state_dir is None else [f"--llem-state-dir={state_dir}"]
    return subprocess.Popen(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--llem", *state, *args],
        cwd=cwd,
        env=environ,
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT if merge_stderr else subprocess.PIPE,
        text=True,
    )


def run_llem_pytest(
    cwd: Path,
    state_dir: Path | None,
    *args: str,
    timeout_s: float = 300,
    merge_stderr: bool = True,
    **env: str,
) -> subprocess.CompletedProcess[str]:
    """`start_llem_pytest`, waited for; past `timeout_s` its whole session is killed."""
    proc = start_llem_pytest(cwd, state_dir, *args, merge_stderr=merge_stderr, **env)
    try:
        stdout, stderr = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


def run_on_one_simulated_gpu(
    pytester,
    tmp_path: Path,
    monkeypatch,
    power_w: float,
    *args: str,
    ideal: bool = False,
    paths: tuple[str, ...] = (),
):
    """The pytester suite under `pytest --llem` on one simulated GPU (`fake_nvml`) drawing
    `power_w` throughout, read every 20 ms with no idle baseline, so every window's energy is
    `power_w` times its duration; `ideal`: the counter exact at every instant instead of in its
    100 ms steps. `paths` go first on the children's PYTHONPATH after the fake NVML (another
    stand-in). Returns the run and the state dir."""
    from fake_nvml import FAKE_NVML_DIR, load_fake_nvml

    fake = load_fake_nvml()
    scenario = tmp_path / "scenario.json"
    fake.write_scenario(
        str(scenario), [fake.FakeGpu(uuid="GPU-0000-sim", power_profile=[[0.0, power_w]])], ideal=ideal
    )
    monkeypatch.setenv("FAKE_NVML_SCENARIO", str(scenario))
    path = [str(FAKE_NVML_DIR), *paths, os.environ.get("PYTHONPATH", "")]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(path))
    state_dir = tmp_path / "state"
    run = pytester.runpytest_subprocess(
        "-p",
        "no:cacheprovider",
        "--llem",
        f"--llem-state-dir={state_dir}",
        "--llem-energy=nvml",
        "--llem-baseline=0",
        "--llem-sample-interval=0.02",
        *args,
    )
    return run, state_dir


def reports(state_dir: Path) -> list[dict]:
    """Every session report in the state dir, oldest run first."""
    return [json.loads(p.read_text()) for p in sorted(state_dir.glob("runs/*/report.json"))]


def is_live(pid: int) -> bool:
    """A zombie counts as gone: it holds nothing and never runs again."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def wait_for_file(path: Path, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        if time.monotonic() > deadline:
            raise AssertionError(f"{path.name} did not appear within {timeout_s} s")
        time.sleep(0.02)


def read_pids(path: Path, timeout_s: float = 30.0) -> list[int]:
    """The pids listed in the JSON file `path` once it is written whole: a writer's `write_text`
    creates the file before it writes, so one that `wait_for_file` found may still be empty."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return json.loads(path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            if time.monotonic() > deadline:
                raise AssertionError(f"{path.name} held no whole JSON within {timeout_s} s") from None
            time.sleep(0.02)


def wait_until_all_gone(pids: list[int], timeout_s: float) -> list[int]:
    """Wait up to timeout_s for every PID to be gone; return the ones still live."""
    deadline = time.monotonic() + timeout_s
    while True:
        live = [p for p in pids if is_live(p)]
        if not live or time.monotonic() > deadline:
            return live
        time.sleep(0.02)
