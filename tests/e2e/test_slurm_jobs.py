"""`--llem-launcher slurm` on a real single-node Slurm cluster (tests/support/slurm_cluster.py).

Slurm assigns the simulated GPUs (generic resources) through CUDA_VISIBLE_DEVICES; the
simulated `pynvml` first on PYTHONPATH lets the jobs resolve and measure them.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
from fake_nvml import FAKE_NVML_DIR, load_fake_nvml
from helpers import SUPPORT_DIR, is_live, reports, start_llem_pytest, wait_until_all_gone

SUITE = """
import json
import os
import time
from pathlib import Path

import pytest

def job(ctx):
    markers = os.environ.get("MARKER_DIR")
    if markers:
        Path(markers, os.environ["PYTEST_LLEM_EXPERIMENT_ID"]).write_text(
            json.dumps({"job": os.environ["SLURM_JOB_ID"], "pid": os.getpid()})
        )
    with ctx.window():
        time.sleep(float(os.environ.get("HOLD_S", "0.5")))
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    ctx.record(output_tokens=10, visible=visible, job=os.environ["SLURM_JOB_ID"])

@pytest.mark.parametrize("case", range(3))
def test_one_gpu(llem, case):
    llem.run(job)

@pytest.mark.llem(gpus=2)
def test_two_gpus(llem):
    llem.run(job)
"""

SLURM_ARGS = (
    "--llem-launcher=slurm",
    "--llem-slurm-gpus-per-node=4",
    "--llem-slurm-time=10",
    "--llem-energy=nvml",
    "--llem-baseline=0.3",
    "--llem-sample-interval=0.05",
)


@pytest.fixture
def slurm_suite(slurm_cluster, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """The suite in tmp_path, every process started from here on the cluster with four GPUs."""
    fake = load_fake_nvml()
    scenario = tmp_path / "scenario.json"
    fake.write_scenario(str(scenario), [fake.FakeGpu(uuid=f"GPU-{i:04d}-sim") for i in range(4)])
    monkeypatch.setenv("FAKE_NVML_SCENARIO", str(scenario))
    monkeypatch.setenv(
        "PYTHONPATH",
        os.pathsep.join([str(FAKE_NVML_DIR), str(SUPPORT_DIR), os.environ.get("PYTHONPATH", "")]),
    )
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    for name, value in slurm_cluster.env.items():
        monkeypatch.setenv(name, value)
    (tmp_path / "test_cluster.py").write_text(SUITE)
    (tmp_path / "markers").mkdir()
    return tmp_path


def _markers(folder: Path, count: int, timeout_s: float = 120) -> list[dict]:
    deadline = time.monotonic() + timeout_s
    while len(list(folder.iterdir())) < count:
        assert time.monotonic() < deadline, f"only {len(list(folder.iterdir()))} of {count} jobs started"
        time.sleep(0.1)
    return [json.loads(p.read_text()) for p in folder.iterdir()]


def _wait_for_empty_queue(cluster, timeout_s: float) -> list[str]:
    deadline = time.monotonic() + timeout_s
    while (queue := cluster.queue()) and time.monotonic() < deadline:
        time.sleep(0.5)
    return queue


def test_a_suite_runs_as_slurm_jobs_into_one_report(slurm_suite: Path, slurm_cluster):
    pytest.importorskip("xdist")
    state_dir = slurm_suite / "state"
    proc = start_llem_pytest(slurm_suite, state_dir, *SLURM_ARGS, "-n", "2", "test_cluster.py")
    output, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, output
    assert (
        f"pytest-llem: Slurm jobs exchange requests and results through the state dir {state_dir}" in output
    )
    assert "where each case ran:" in output
    (report,) = reports(state_dir)
    entries = report["experiments"]
    assert len(entries) == 4 and {e["worker_id"] for e in entries} == {"gw0", "gw1"}
    jobs = set()
    for entry in entries:
        measured = entry["result"]
        where = measured["placement"]
        assert where["host"] == socket.gethostname() and where["job_id"] == measured["extra"]["job"]
        jobs.add(where["job_id"])
        # Slurm chose the GPUs; the child saw exactly those (by UUID) and measured them.
        assert len(where["gpu_uuids"]) == (2 if "two_gpus" in entry["nodeid"] else 1)
        assert measured["extra"]["visible"] == ",".join(where["gpu_uuids"])
        assert [d["uuid"] for d in measured["energy_by_device"]] == where["gpu_uuids"]
        # The idle baseline was measured on the node, in the job (pytest took none).
        assert all(
            d["baseline_power_w"] == pytest.approx(100.0, rel=0.05) for d in measured["energy_by_device"]
        )
    assert len(jobs) == 4  # one job per experiment
    assert _wait_for_empty_queue(slurm_cluster, 10) == []


def _start_holding(slurm_suite: Path, *args: str):
    state_dir = slurm_suite / "state"
    proc = start_llem_pytest(
        slurm_suite, state_dir, *SLURM_ARGS, *args, MARKER_DIR=str(slurm_suite / "markers"), HOLD_S="600"
    )
    return proc, state_dir


def test_ctrl_c_cancels_every_submitted_job(slurm_suite: Path, slurm_cluster):
    pytest.importorskip("xdist")
    proc, state_dir = _start_holding(slurm_suite, "-n", "2", "test_cluster.py")
    try:
        started = _markers(slurm_suite / "markers", 2)
        assert len(slurm_cluster.queue()) == 2
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C in a terminal: pytest and its xdist workers
        output, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, output
    assert _wait_for_empty_queue(slurm_cluster, 30) == []
    assert wait_until_all_gone([m["pid"] for m in started], 30) == []
    (report,) = reports(state_dir)
    assert report["outcome"] == "interrupted"
    interrupted = [e for e in report["experiments"] if e["interrupted"]]
    assert len(interrupted) == 2 and all("SIGINT" in e["error"] for e in interrupted), report["experiments"]


def test_jobs_of_a_sigkilled_pytest_end_and_the_next_session_marks_them_stale(
    slurm_suite: Path, slurm_cluster
):
    proc, state_dir = _start_holding(slurm_suite, "test_cluster.py::test_two_gpus")
    try:
        (started,) = _markers(slurm_suite / "markers", 1)
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    # srun dies with pytest (parent-death signal) and Slurm ends the job it held.
    assert _wait_for_empty_queue(slurm_cluster, 60) == []
    assert wait_until_all_gone([started["pid"]], 30) == []
    nxt = start_llem_pytest(slurm_suite, state_dir, *SLURM_ARGS, "test_cluster.py::test_one_gpu[0]")
    output, _ = nxt.communicate(timeout=180)
    assert nxt.returncode == 0, output
    assert "marked 1 stale experiment(s) from an earlier session as failed" in output


def test_a_job_the_scheduler_cancels_fails_with_its_reason(slurm_suite: Path, slurm_cluster):
    proc, state_dir = _start_holding(slurm_suite, "test_cluster.py::test_one_gpu[0]")
    try:
        (started,) = _markers(slurm_suite / "markers", 1)
        subprocess.run(["scancel", started["job"]], check=True, env={**os.environ, **slurm_cluster.env})
        output, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1, output
    assert f"Slurm job {started['job']} on {socket.gethostname()} ended CANCELLED" in output
    assert not is_live(started["pid"])
    (report,) = reports(state_dir)
    (entry,) = report["experiments"]
    assert entry["failed"] and "ended CANCELLED" in entry["error"]


def test_a_timeout_cancels_the_job(slurm_suite: Path, slurm_cluster):
    state_dir = slurm_suite / "state"
    proc = start_llem_pytest(
        slurm_suite,
        state_dir,
        *SLURM_ARGS,
        "--llem-timeout=5",
        "test_cluster.py::test_one_gpu[0]",
        MARKER_DIR=str(slurm_suite / "markers"),
        HOLD_S="600",
    )
    output, _ = proc.communicate(timeout=120)
    (started,) = _markers(slurm_suite / "markers", 1, timeout_s=1)
    assert proc.returncode == 1, output
    assert "timed out after 5 s; its Slurm job was cancelled" in output
    assert _wait_for_empty_queue(slurm_cluster, 30) == []
    assert wait_until_all_gone([started["pid"]], 30) == []
