"""The Slurm job's side, as the real process `srun` would start on the node
(`python -m pytest_llem.isolation.slurm_job WORK_DIR`), without a scheduler around it: it
names its job and host, runs the experiment's group and writes the outcome with its
placement, turns the scheduler's SIGTERM into a plain failure after tearing the group down,
and says in one line why it cannot use a work folder. (Jobs under a real Slurm cluster:
tests/e2e/test_slurm_jobs.py.)"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

from helpers import SUPPORT_DIR, read_pids, wait_for_file, wait_until_all_gone

from pytest_llem.config import build_config
from pytest_llem.isolation.files import OUTCOME_FILE, REQUEST_FILE
from pytest_llem.isolation.leases import LeaseTable
from pytest_llem.isolation.protocol import (
    ChildOutcome,
    ExperimentRequest,
    ProgressReader,
    read_model,
    write_model,
)
from pytest_llem.isolation.slurm import JOB_INFO_FILE, NODE_SETTINGS_FILE, JobInfo, NodeSettings
from pytest_llem.isolation.slurm_job import UNREADABLE_WORK_DIR_EXIT
from pytest_llem.isolation.workload import WorkloadSpec
from pytest_llem.progress import IMPORTING

JOB_ID = "4242"


def prepare(work_dir: Path, state_dir: Path, ref: str, **fields) -> None:
    work_dir.mkdir(parents=True, exist_ok=True)
    request = ExperimentRequest(
        experiment_id="exp-1",
        config=build_config({"energy": "none", **fields}),
        config_hash="h" * 16,
        workload=WorkloadSpec(ref=ref),
        state_dir=str(state_dir),
        sys_path=[str(SUPPORT_DIR)],
    )
    write_model(work_dir, REQUEST_FILE, request)
    write_model(work_dir, NODE_SETTINGS_FILE, NodeSettings(baseline_s=0, cooldown_s=0))


def start_job(work_dir: Path) -> subprocess.Popen[str]:
    # What srun runs: no GPU given (SLURM_GPUS_ON_NODE unset), the job's id in its environment.
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env["SLURM_JOB_ID"] = JOB_ID
    return subprocess.Popen(
        [sys.executable, "-m", "pytest_llem.isolation.slurm_job", str(work_dir)],
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,  # the group's output, relayed: not under test here
        stderr=subprocess.PIPE,
        text=True,
    )


def outcome(work_dir: Path) -> ChildOutcome:
    read = read_model(work_dir, OUTCOME_FILE, ChildOutcome)
    assert read is not None
    return read


def test_the_job_runs_the_experiment_and_writes_its_result_with_where_it_ran(tmp_path: Path):
    work, state = tmp_path / "work", tmp_path / "state"
    prepare(work, state, "workloads:count_tokens", batch_size=2)
    job = start_job(work)
    assert job.wait(timeout=60) == 0, job.stderr.read()

    assert read_model(work, JOB_INFO_FILE, JobInfo) == JobInfo(job_id=JOB_ID, host=socket.gethostname())
    result = outcome(work).result
    assert result.output_tokens == 16 and result.experiment_id == "exp-1"
    placement = result.placement
    assert (placement.host, placement.job_id, placement.gpu_uuids, placement.overlapped_with) == (
        socket.gethostname(),
        JOB_ID,
        [],
        [],
    )
    assert [e.phase for e in ProgressReader(work).read_new()][0] == IMPORTING  # relayed to the work folder
    assert LeaseTable(state).rows() == []  # its row on the node's table is gone


def test_a_workloads_failure_is_written_as_the_experiments_outcome(tmp_path: Path):
    work = tmp_path / "work"
    prepare(work, tmp_path / "state", "workloads:raise_error")
    job = start_job(work)
    assert job.wait(timeout=60) == 0  # the job did its part: the failure is the experiment's
    failure = outcome(work).failure
    assert failure.plain and failure.exception_type == "ExperimentFailed"
    assert failure.message.startswith("workload raised ValueError: the workload broke on purpose")


def test_the_schedulers_sigterm_tears_the_group_down_and_is_the_failure(tmp_path: Path):
    work, pid_file = tmp_path / "work", tmp_path / "pids.json"
    prepare(
        work, tmp_path / "state", "workloads:hang_with_stubborn_children", params={"pid_file": str(pid_file)}
    )
    job = start_job(work)
    wait_for_file(pid_file, timeout_s=60)
    group = read_pids(pid_file)  # supervisor, worker and the worker's SIGTERM-proof children

    job.send_signal(signal.SIGTERM)  # scancel, a time limit or preemption
    assert job.wait(timeout=30) == 1
    failure = outcome(work).failure
    assert failure.plain and failure.exception_type == "ExperimentInterrupted"
    assert failure.message == f"the Slurm job {JOB_ID} on {socket.gethostname()} received SIGTERM"
    assert wait_until_all_gone(group, timeout_s=5) == []


def test_a_work_folder_the_node_cannot_read_is_one_line_naming_the_file_and_the_fix(tmp_path: Path):
    work = tmp_path / "work"
    prepare(work, tmp_path / "state", "workloads:count_tokens")
    (work / NODE_SETTINGS_FILE).unlink()  # as on a node that does not share the state dir
    job = start_job(work)
    assert job.wait(timeout=60) == UNREADABLE_WORK_DIR_EXIT
    (line,) = job.stderr.read().splitlines()
    assert line == (
        f"pytest-llem: the job on {socket.gethostname()} cannot read {work / NODE_SETTINGS_FILE} "
        "(no such file); "
        "the state dir must be on a filesystem the compute nodes share at the same path (--llem-state-dir)"
    )
    assert not (work / OUTCOME_FILE).exists()


def test_a_damaged_request_is_named_as_unreadable_without_a_traceback(tmp_path: Path):
    work = tmp_path / "work"
    prepare(work, tmp_path / "state", "workloads:count_tokens")
    (work / REQUEST_FILE).write_text('{"experiment_id": ')
    job = start_job(work)
    assert job.wait(timeout=60) == UNREADABLE_WORK_DIR_EXIT
    stderr = job.stderr.read()
    assert f"cannot read {work / REQUEST_FILE} (unreadable: " in stderr
    assert "Traceback" not in stderr and len(stderr.splitlines()) == 1
