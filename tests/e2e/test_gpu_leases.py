"""GPU leases through the whole plugin: xdist workers and concurrent sessions over four simulated GPUs.

The simulated `pynvml` comes first on PYTHONPATH, so the pytest processes list the GPUs
(the inventory) and the children measure them through the same code paths a real GPU takes.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import socket
import time
from datetime import datetime
from pathlib import Path

import pytest
from fake_nvml import FAKE_NVML_DIR, load_fake_nvml
from helpers import SUPPORT_DIR, reports, start_llem_pytest, wait_for_file

from pytest_llem.energy import quality
from pytest_llem.fingerprints.machine import GpuInfo
from pytest_llem.isolation.leases import LEASE_DIR, TABLE_FILE, GpuRequest, Lease, LeaseTable

SUITE = """
import os
import time
from pathlib import Path

import pytest

def hold(ctx):
    marker = ctx.config.params.get("marker")
    if marker:
        Path(marker).write_text(os.environ["CUDA_VISIBLE_DEVICES"])
    with ctx.window():
        time.sleep(ctx.config.params.get("hold_s", 0.8))
    ctx.record(output_tokens=10, visible=os.environ.get("CUDA_VISIBLE_DEVICES"))

@pytest.mark.parametrize("case", range(8))
def test_one_gpu(llem, case):
    llem.run(hold)

@pytest.mark.parametrize("case", range(2))
@pytest.mark.llem(gpus=2)
def test_two_gpus(llem, case):
    llem.run(hold)
"""

HOLD_ALL = """
import os
import pytest
from test_suite import hold

def test_all_four(llem):
    llem.run(hold, gpus=4, params={"marker": os.environ["MARKER"], "hold_s": float(os.environ["HOLD_S"])})
"""


@pytest.fixture
def four_gpus(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, str]:
    """Four simulated GPUs for every process started from here; returns the environment."""
    fake = load_fake_nvml()
    scenario = tmp_path / "scenario.json"
    fake.write_scenario(str(scenario), [fake.FakeGpu(uuid=f"GPU-{i:04d}-sim") for i in range(4)])
    env = {
        "FAKE_NVML_SCENARIO": str(scenario),
        "PYTHONPATH": os.pathsep.join(
            [str(FAKE_NVML_DIR), str(SUPPORT_DIR), os.environ.get("PYTHONPATH", "")]
        ),
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    return env


LEASE_ARGS = ("--llem-energy=nvml", "--llem-baseline=0", "--llem-sample-interval=0.05")


def _windows(report: dict) -> list[tuple[str, datetime, datetime, set[str]]]:
    return [
        (
            entry["nodeid"],
            datetime.fromisoformat(entry["result"]["started_at"]),
            datetime.fromisoformat(entry["result"]["finished_at"]),
            set(entry["result"]["placement"]["gpu_uuids"]),
        )
        for entry in report["experiments"]
    ]


def test_four_xdist_workers_never_share_a_gpu(pytester: pytest.Pytester, four_gpus, tmp_path: Path):
    pytest.importorskip("xdist")
    pytester.makepyfile(test_suite=SUITE)
    state_dir = tmp_path / "state"
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "--llem", f"--llem-state-dir={state_dir}", *LEASE_ARGS, "-n", "4"
    )
    result.assert_outcomes(passed=10)
    result.stdout.fnmatch_lines(["where each case ran:", "test * host * gpus * job * beside"])
    (report,) = reports(state_dir)
    entries = report["experiments"]
    assert len({e["worker_id"] for e in entries}) == 4
    for entry in entries:
        measured = entry["result"]
        held = measured["placement"]["gpu_uuids"]
        assert len(held) == (2 if "two_gpus" in entry["nodeid"] else 1)
        # The child saw exactly the leased GPUs, and measured those.
        assert measured["extra"]["visible"] == ",".join(held)
        assert [d["uuid"] for d in measured["energy_by_device"]] == held
        assert measured["placement"]["host"] == socket.gethostname()
    windows = _windows(report)
    overlapping = [(a, b) for a, b in itertools.combinations(windows, 2) if a[1] < b[2] and b[1] < a[2]]
    assert overlapping, "the workers never ran two experiments at once: nothing was checked"
    for a, b in overlapping:
        assert not a[3] & b[3], f"{a[0]} and {b[0]} held {a[3] & b[3]} at the same time"
    # Each result names the experiments that ran beside it on the host.
    assert any(e["result"]["placement"]["overlapped_with"] for e in entries)
    assert json.loads((state_dir / LEASE_DIR / TABLE_FILE).read_text()) == {"leases": {}, "waiting": {}}


def test_a_second_session_waits_for_the_gpus_with_a_line_saying_so(
    pytester: pytest.Pytester, four_gpus, tmp_path: Path
):
    pytester.makepyfile(test_suite=SUITE, test_hold_all=HOLD_ALL)
    state_dir = tmp_path / "state"
    first_marker, second_marker = tmp_path / "first", tmp_path / "second"
    first = start_llem_pytest(
        pytester.path, state_dir, *LEASE_ARGS, "test_hold_all.py", MARKER=str(first_marker), HOLD_S="10"
    )
    try:
        wait_for_file(first_marker, 60)
        second = start_llem_pytest(
            pytester.path, state_dir, *LEASE_ARGS, "test_hold_all.py", MARKER=str(second_marker), HOLD_S="0.1"
        )
        second_output, _ = second.communicate(timeout=120)
        first_output, _ = first.communicate(timeout=60)
    finally:
        for proc in (first, second):
            if proc.poll() is None:
                proc.kill()
    assert first.returncode == 0 and second.returncode == 0, first_output + second_output
    assert "pytest-llem: waiting for 4 GPU(s) for test_all_four-" in second_output
    assert "; held by test_all_four-" in second_output
    first_report, second_report = sorted(
        reports(state_dir), key=lambda r: r["experiments"][0]["result"]["started_at"]
    )
    (first_window,), (second_window,) = _windows(first_report), _windows(second_report)
    assert second_window[1] >= first_window[2]  # it started once the first had released the GPUs
    assert first_window[3] == second_window[3] and len(first_window[3]) == 4


def test_a_sigkilled_holders_lease_is_reclaimed_by_the_next_session(
    pytester: pytest.Pytester, four_gpus, tmp_path: Path
):
    pytester.makepyfile(test_suite=SUITE, test_hold_all=HOLD_ALL)
    state_dir = tmp_path / "state"
    marker = tmp_path / "held"
    killed = start_llem_pytest(
        pytester.path, state_dir, *LEASE_ARGS, "test_hold_all.py", MARKER=str(marker), HOLD_S="600"
    )
    try:
        wait_for_file(marker, 60)
        rows = json.loads((state_dir / LEASE_DIR / TABLE_FILE).read_text())["leases"]
        assert [(row["pid"], len(row["gpus"])) for row in rows.values()] == [(killed.pid, 4)]
        os.kill(killed.pid, signal.SIGKILL)
        killed.wait(timeout=30)
    finally:
        if killed.poll() is None:
            killed.kill()
    started = time.monotonic()
    nxt = start_llem_pytest(
        pytester.path, state_dir, *LEASE_ARGS, "test_hold_all.py", MARKER=str(tmp_path / "next"), HOLD_S="0.1"
    )
    output, _ = nxt.communicate(timeout=120)
    assert nxt.returncode == 0, output
    assert time.monotonic() - started < 60
    assert "reclaimed the lease of test_all_four-" in output and f"(pid {killed.pid}) is gone" in output
    assert "waiting for" not in output
    assert "marked 1 stale experiment(s)" in output


OWNED_SUITE = """
import os
import time

import pytest

def loop(ctx):
    with ctx.window():
        for _ in ctx.passes():  # as long as min_window_s asks: 5 s if the meter reads a GPU
            time.sleep(0.2)
    ctx.record(output_tokens=10, visible=os.environ.get("CUDA_VISIBLE_DEVICES"))

@pytest.mark.parametrize("fields", [{"device": "cpu"}, {"gpus": 0}], ids=["device_cpu", "gpus_0"])
def test_cpu_only(llem, fields):
    llem.run(loop, **fields)

def test_leased(llem):
    llem.run(loop, gpus=1)
"""
#: The host: gpu0 idles, gpu1 is busy for a neighbour that holds its lease.
IDLE_W, NEIGHBOUR_W = 70.0, 500.0


def test_each_case_reads_only_the_gpus_it_owns_beside_a_leased_neighbour(
    pytester: pytest.Pytester, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    fake = load_fake_nvml()
    scenario = tmp_path / "scenario.json"
    fake.write_scenario(
        str(scenario),
        [
            fake.FakeGpu(uuid="GPU-0000-sim", power_profile=[[0.0, IDLE_W]]),
            fake.FakeGpu(uuid="GPU-0001-sim", power_profile=[[0.0, NEIGHBOUR_W]]),
        ],
    )
    monkeypatch.setenv("FAKE_NVML_SCENARIO", str(scenario))
    monkeypatch.setenv(
        "PYTHONPATH",
        os.pathsep.join([str(FAKE_NVML_DIR), str(SUPPORT_DIR), os.environ.get("PYTHONPATH", "")]),
    )
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    state_dir = tmp_path / "state"
    # The neighbour: an experiment of this (live) process holding gpu1 for the whole session.
    neighbour = LeaseTable(state_dir).try_acquire(
        "neighbour",
        GpuRequest(indices=(1,)),
        [
            GpuInfo(name="sim GPU", index=0, uuid="GPU-0000-sim"),
            GpuInfo(name="sim GPU", index=1, uuid="GPU-0001-sim"),
        ],
    )
    assert isinstance(neighbour, Lease)
    pytester.makepyfile(test_owned=OWNED_SUITE)
    try:
        result = pytester.runpytest_subprocess(
            "-p", "no:cacheprovider", "--llem", f"--llem-state-dir={state_dir}", "--llem-energy=auto",
            "--llem-baseline=0.3", "--llem-sample-interval=0.05",
        )  # fmt: skip
    finally:
        neighbour.release()
    result.assert_outcomes(passed=3)
    (report,) = reports(state_dir)
    by_test = {e["nodeid"].rpartition("::")[2]: e["result"] for e in report["experiments"]}
    for test in ("test_cpu_only[device_cpu]", "test_cpu_only[gpus_0]"):
        measured = by_test[test]
        # No GPU opened: no figure (not 0 J, not the host's GPUs, not the neighbour's), and why.
        assert measured["gpu_energy_j"] is None, (test, measured["gpu_energy_j"])
        assert [d for d in measured["energy_by_device"] if d["kind"] == "gpu"] == []
        reason = "device='cpu'" if "device_cpu" in test else "gpus=0"
        assert f"gpu: not measured (the case owns no GPU: {reason})" in measured["energy_notes"]
        # Its children see no GPU through CUDA either.
        assert measured["extra"]["visible"] == ""
        # A CPU-only case keeps the CPU's min_window_s, not the GPU's 5 s.
        assert measured["extra"]["min_window_s"] == quality.MIN_CPU_WINDOW_S < quality.MIN_WINDOW_S
        assert measured["duration_s"] >= quality.MIN_CPU_WINDOW_S
    leased = by_test["test_leased"]
    assert leased["placement"]["gpu_uuids"] == ["GPU-0000-sim"]
    (gpu,) = [d for d in leased["energy_by_device"] if d["kind"] == "gpu"]
    assert gpu["uuid"] == "GPU-0000-sim" and leased["extra"]["visible"] == "GPU-0000-sim"
    assert gpu["energy_j"] == pytest.approx(IDLE_W * gpu["duration_s"], rel=0.1)
    assert gpu["baseline_power_w"] == pytest.approx(IDLE_W, rel=0.1)
