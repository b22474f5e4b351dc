"""GPU leases: whole GPUs granted once, waited for, reclaimed from dead holders, host energy withheld."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest
from helpers import wait_for_file

from pytest_llem.config import build_config
from pytest_llem.energy.meter import MeterOptions
from pytest_llem.energy.quality import SHARED_HOST_ENERGY
from pytest_llem.errors import ConfigError
from pytest_llem.fingerprints.machine import GpuInfo
from pytest_llem.isolation.assembly import without_host_energy
from pytest_llem.isolation.leases import (
    LEASE_DIR,
    TABLE_FILE,
    GpuRequest,
    LeaseTable,
    gpu_request,
    owned_gpus,
    place_result,
)
from pytest_llem.results import DeviceEnergy, ExperimentResult, RoundResult

FOUR_GPUS = [GpuInfo(name="sim GPU", index=i, uuid=f"GPU-{i:04d}-sim") for i in range(4)]


def test_the_meter_reads_exactly_the_gpus_a_case_owns():
    options = MeterOptions()
    leased = owned_gpus(options, build_config({}), FOUR_GPUS[2:3])
    assert (leased.gpu_uuids, leased.no_gpu_reason) == (["GPU-0002-sim"], None)
    for fields, reason in (({"device": "cpu"}, "device='cpu'"), ({"gpus": 0}, "gpus=0")):
        cpu = owned_gpus(options, build_config(fields), [])
        assert (cpu.gpu_uuids, cpu.no_gpu_reason) == ([], reason)
    # A Slurm job given no GPU owns none, whatever the node has.
    job = owned_gpus(options, build_config({}), [], "its Slurm job was given no GPU")
    assert (job.gpu_uuids, job.no_gpu_reason) == ([], "its Slurm job was given no GPU")
    # Devices the case names itself, or a host without GPUs: the meter decides, as before.
    assert owned_gpus(options, build_config({"env": {"CUDA_VISIBLE_DEVICES": "1"}}), []) == options
    assert owned_gpus(options, build_config({}), []) == options


def test_what_a_config_asks_for():
    assert gpu_request(build_config({})) == GpuRequest(count=1)
    assert gpu_request(build_config({"gpus": 2})) == GpuRequest(count=2, explicit=True)
    assert gpu_request(build_config({"gpus": [3, 1, 3]})) == GpuRequest(indices=(3, 1))
    assert gpu_request(build_config({"tensor_parallel_size": 4})) == GpuRequest(count=4)
    assert gpu_request(build_config({"num_processes": 2})) == GpuRequest(count=2)
    assert gpu_request(build_config({"device": "cpu"})) is None
    assert gpu_request(build_config({"gpus": 0})) is None
    assert gpu_request(build_config({"env": {"CUDA_VISIBLE_DEVICES": "2"}})) is None
    with pytest.raises(ConfigError, match="gpus: a number of GPUs is 0"):
        build_config({"gpus": -1})


def test_leases_grant_whole_gpus_no_one_else_holds(tmp_path: Path):
    first, second = LeaseTable(tmp_path), LeaseTable(tmp_path)  # two processes' views of one table
    a = first.acquire("a", GpuRequest(count=2), FOUR_GPUS)
    b = second.acquire("b", GpuRequest(count=1), FOUR_GPUS)
    assert [g.index for g in a.gpus] == [0, 1] and [g.index for g in b.gpus] == [2]
    assert a.cuda_visible_devices == "GPU-0000-sim,GPU-0001-sim"
    # Two more are asked for, one is free: the rows holding GPUs come back, nothing is granted.
    waiting = second.try_acquire("c", GpuRequest(count=2), FOUR_GPUS)
    assert sorted(row["experiment_id"] for row in waiting) == ["a", "b"]
    # Explicit indices wait only for the holder of those.
    assert [row["experiment_id"] for row in first.try_acquire("d", GpuRequest(indices=(1,)), FOUR_GPUS)] == [
        "a"
    ]
    a.release()
    c = second.acquire("c", GpuRequest(count=2), FOUR_GPUS)
    assert [g.index for g in c.gpus] == [0, 1]
    # Each knows who ran beside it; a released row is gone from the table.
    assert b.release() == ["a", "c"] and c.release() == ["b"]
    assert json.loads((tmp_path / LEASE_DIR / TABLE_FILE).read_text()) == {"leases": {}, "waiting": {}}


def test_a_request_that_could_never_be_granted_is_one_line(tmp_path: Path):
    table = LeaseTable(tmp_path)
    with pytest.raises(ConfigError, match=r"gpus: 5 GPU\(s\) asked for, but NVML sees 4 on this host"):
        table.acquire("x", GpuRequest(count=5, explicit=True), FOUR_GPUS)
    with pytest.raises(ConfigError, match="gpus: GPU index 7 is not one of this host's GPUs"):
        table.acquire("x", GpuRequest(indices=(7,)), FOUR_GPUS)
    # Implied by num_processes on a smaller host: every GPU, shared by its ranks.
    assert len(table.acquire("y", GpuRequest(count=8), FOUR_GPUS).gpus) == 4
    # No GPU at all (a CPU-only host): a row for the overlap bookkeeping, no GPU.
    assert table.acquire("z", GpuRequest(count=1), []).gpus == []


def test_the_waiting_experiment_says_what_it_waits_for_and_gets_it_when_freed(tmp_path: Path):
    holder = LeaseTable(tmp_path).acquire("holder", GpuRequest(count=4), FOUR_GPUS)
    lines: list[str] = []
    releaser = threading.Timer(0.5, holder.release)
    releaser.start()
    started = time.monotonic()
    lease = LeaseTable(tmp_path).acquire("waiter", GpuRequest(count=1), FOUR_GPUS, notify=lines.append)
    assert time.monotonic() - started >= 0.4
    assert [g.index for g in lease.gpus] == [0]
    assert lines == [f"waiting for 1 GPU(s) for waiter; held by holder (pid {os.getpid()}, 4 GPU(s))"]


def test_waiting_is_first_come_first_served(tmp_path: Path):
    holder = LeaseTable(tmp_path).acquire("holder", GpuRequest(count=3), FOUR_GPUS)
    pair, single = LeaseTable(tmp_path), LeaseTable(tmp_path)
    # The pair waits (one GPU is free): it takes its place in line.
    assert [
        row["experiment_id"] for row in pair.try_acquire("pair", GpuRequest(count=2), FOUR_GPUS, "t1")
    ] == ["holder"]
    # One GPU is free, but the pair came first: the single waits behind it.
    waited = single.try_acquire("single", GpuRequest(count=1), FOUR_GPUS, "t2")
    assert [(row["experiment_id"], row.get("waiting", False)) for row in waited] == [
        ("holder", False),
        ("pair", True),
    ]
    holder.release()
    assert isinstance(single.try_acquire("single", GpuRequest(count=1), FOUR_GPUS, "t2"), list)
    granted = pair.try_acquire("pair", GpuRequest(count=2), FOUR_GPUS, "t1")
    assert not isinstance(granted, list) and [g.index for g in granted.gpus] == [0, 1]
    lease = single.try_acquire("single", GpuRequest(count=1), FOUR_GPUS, "t2")
    assert not isinstance(lease, list) and [g.index for g in lease.gpus] == [2]
    assert json.loads((tmp_path / LEASE_DIR / TABLE_FILE).read_text())["waiting"] == {}


def test_a_signal_stops_the_wait(tmp_path: Path):
    LeaseTable(tmp_path).acquire("holder", GpuRequest(count=4), FOUR_GPUS)

    class Interrupted(Exception):
        pass

    def sleep(seconds: float) -> None:
        raise Interrupted

    with pytest.raises(Interrupted):
        LeaseTable(tmp_path).acquire("waiter", GpuRequest(count=1), FOUR_GPUS, sleep=sleep)
    # It gave up its place in line: nobody waits behind a waiter that is gone.
    assert json.loads((tmp_path / LEASE_DIR / TABLE_FILE).read_text())["waiting"] == {}


HOLDER = """
import sys, time
from pathlib import Path
from pytest_llem.fingerprints.machine import GpuInfo
from pytest_llem.isolation.leases import GpuRequest, LeaseTable
gpus = [GpuInfo(name="sim GPU", index=i, uuid=f"GPU-{i:04d}-sim") for i in range(4)]
LeaseTable(Path(sys.argv[1])).acquire("killed", GpuRequest(count=4), gpus)
Path(sys.argv[2]).write_text("held")
time.sleep(600)
"""


def test_the_lease_of_a_sigkilled_holder_is_reclaimed(tmp_path: Path):
    held = tmp_path / "held"
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path), str(held)])
    try:
        wait_for_file(held)
        table = LeaseTable(tmp_path)
        assert [
            row["experiment_id"] for row in table.try_acquire("next", GpuRequest(count=1), FOUR_GPUS)
        ] == ["killed"]
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        lease = table.acquire("next", GpuRequest(count=4), FOUR_GPUS)
    finally:
        proc.kill()
        proc.wait()
    assert len(lease.gpus) == 4
    assert [(row["experiment_id"], row["pid"]) for row in table.reclaimed] == [("killed", proc.pid)]


def test_a_row_whose_pid_was_reused_is_reclaimed(tmp_path: Path):
    table = LeaseTable(tmp_path)
    table.acquire("old", GpuRequest(count=4), FOUR_GPUS)
    path = tmp_path / LEASE_DIR / TABLE_FILE
    rows = json.loads(path.read_text())
    for row in rows["leases"].values():
        row["pid_start_time"] -= 3600  # same PID, another process: the holder it names is gone
    path.write_text(json.dumps(rows))
    assert len(table.acquire("new", GpuRequest(count=4), FOUR_GPUS).gpus) == 4
    assert [row["experiment_id"] for row in table.reclaimed] == ["old"]


def test_rows_of_another_host_neither_block_nor_get_reclaimed(tmp_path: Path):
    LeaseTable(tmp_path, host="node-a").acquire("there", GpuRequest(count=4), FOUR_GPUS)
    here = LeaseTable(tmp_path, host="node-b")
    lease = here.acquire("here", GpuRequest(count=4), FOUR_GPUS)
    assert len(lease.gpus) == 4 and lease.release() == [] and here.reclaimed == []
    assert [row["host"] for row in here.rows()] == ["node-a"]


def _result(devices: list[DeviceEnergy], rounds: list[RoundResult] = ()) -> ExperimentResult:
    now = datetime.now(timezone.utc)
    gpu = sum(d.energy_j for d in devices if d.kind == "gpu")
    cpu = sum(d.energy_j for d in devices if d.kind == "cpu")
    return ExperimentResult(
        experiment_id="e",
        config_hash="h",
        config={},
        duration_s=10.0,
        window_count=1,
        output_tokens=100,
        energy_j=gpu + cpu,
        gpu_energy_j=gpu,
        cpu_energy_j=cpu,
        energy_scope=["gpu", "cpu"],
        energy_by_device=devices,
        rounds=list(rounds),
        started_at=now,
        finished_at=now,
    )


def test_host_energy_of_overlapping_experiments_is_flagged_and_left_out():
    devices = [
        DeviceEnergy(device="gpu0", kind="gpu", energy_j=300.0, duration_s=10.0),
        DeviceEnergy(device="cpu-package-0", kind="cpu", energy_j=200.0, duration_s=10.0),
    ]
    rounds = [
        RoundResult(index=i, duration_s=5.0, energy_j=250.0, gpu_energy_j=150.0, cpu_energy_j=100.0)
        for i in range(2)
    ]
    result = _result(devices, rounds)
    assert without_host_energy(result, []) is result  # alone on the host: nothing to withhold
    shared = without_host_energy(result, ["other"])
    assert (shared.energy_j, shared.gpu_energy_j, shared.cpu_energy_j) == (300.0, 300.0, None)
    assert shared.energy_scope == ["gpu"] and shared.energy_per_token_j == 3.0
    assert [r.energy_j for r in shared.rounds] == [150.0, 150.0]
    assert shared.statistics["energy_j"].mean == 150.0
    (flag,) = shared.warnings
    assert flag.code == SHARED_HOST_ENERGY and "cpu-package-0" in flag.message and "other" in flag.message
    assert shared.flagged and shared.energy_by_device == devices  # the raw figures stay
    # Only GPUs measured: a lease gave them to this experiment alone, nothing to withhold.
    gpu_only = _result(devices[:1])
    assert without_host_energy(gpu_only, ["other"]) is gpu_only


def test_the_result_records_where_it_ran(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    table = LeaseTable(tmp_path, host="node-a")
    lease = table.acquire("e", GpuRequest(count=2), FOUR_GPUS)
    table.acquire("beside", GpuRequest(count=1), FOUR_GPUS)
    devices = [
        DeviceEnergy(device="gpu0", kind="gpu", energy_j=1.0),
        DeviceEnergy(device="cpu-package-0", kind="cpu", energy_j=2.0),
    ]
    placed = place_result(_result(devices), lease)
    # "beside" ran meanwhile: the CPU's energy is withheld, the flag says why.
    assert (placed.energy_j, placed.cpu_energy_j) == (1.0, None)
    assert [w.code for w in placed.warnings] == [SHARED_HOST_ENERGY]
    assert placed.placement is not None
    assert placed.placement.model_dump() == {
        "host": "node-a",
        "gpu_uuids": ["GPU-0000-sim", "GPU-0001-sim"],
        "gpu_indices": [0, 1],
        "job_id": "4242",
        "overlapped_with": ["beside"],
    }
    assert lease.released and placed.placement.describe() == "node-a, GPU 0,1, job 4242"


@pytest.mark.parametrize(
    ("fields", "slurm_env", "visible", "owned", "reason"),
    [
        # What build_experiment_env gives a CPU-only case; Slurm gave the job no GPU.
        ({"device": "cpu"}, {"CUDA_VISIBLE_DEVICES": ""}, "", [], "device='cpu'"),
        # Slurm gave the job the node's second GPU: exactly that one, by UUID.
        (
            {},
            {"SLURM_GPUS_ON_NODE": "1", "CUDA_VISIBLE_DEVICES": "1"},
            "GPU-0001-sim",
            ["GPU-0001-sim"],
            None,
        ),
        # A job given no GPU on a node that has two reads neither (other jobs may use them).
        ({}, {}, None, [], "its Slurm job was given no GPU"),
    ],
    ids=["cpu-only", "gpu-given", "no-gpu-given"],
)
def test_a_slurm_job_reads_only_the_gpus_it_owns_as_a_local_experiment_does(
    fake_nvml, monkeypatch, tmp_path: Path, fields, slurm_env, visible, owned, reason
):
    from pytest_llem.errors import ExperimentFailed
    from pytest_llem.isolation import slurm_job
    from pytest_llem.isolation.protocol import ExperimentRequest
    from pytest_llem.isolation.signals import InterruptGuard, SessionInterrupts
    from pytest_llem.isolation.slurm import NodeSettings
    from pytest_llem.isolation.workload import WorkloadSpec

    fake_nvml.configure([fake_nvml.FakeGpu(uuid=f"GPU-{i:04d}-sim") for i in range(2)])
    handed: dict = {}

    def run_in_child(request, env, guard, on_progress):
        handed.update(meter=request.meter, visible=env.get("CUDA_VISIBLE_DEVICES"))
        raise ExperimentFailed("stopped before a child is started")

    monkeypatch.setattr(slurm_job, "run_in_child", run_in_child)
    request = ExperimentRequest(
        experiment_id="exp",
        config=build_config(fields),
        config_hash="hash",
        workload=WorkloadSpec(ref="workloads:count_tokens"),
        state_dir=str(tmp_path / "state"),
    )
    node = NodeSettings(baseline_s=0, cooldown_s=0)
    guard = InterruptGuard(SessionInterrupts())
    outcome = slurm_job._run(request, node, dict(slurm_env), guard, tmp_path, "42")
    assert outcome.failure is not None and outcome.failure.message == "stopped before a child is started"
    assert handed["visible"] == visible
    assert (handed["meter"].gpu_uuids, handed["meter"].no_gpu_reason) == (owned, reason)
