"""Running one experiment as a Slurm job: `--llem-launcher slurm`, the pytest process's side.

Each experiment is one `srun` (which asks Slurm for an allocation and runs one task in it):
`python -m pytest_llem.isolation.slurm_job WORK_DIR` on a compute node, which does there what
the pytest process does locally (cool-down, idle baseline, the supervisor and worker in
their own group, the meters) and writes the outcome back. `srun` rather than `sbatch` plus
polling: it blocks until the job ends and returns its exit status, and the job is tied to
it, so nothing polls the queue.

Files go through a work folder under the state dir, so the state dir must be on a
filesystem the compute nodes share at the same path (`describe_shared_filesystem` says at
session start which filesystem that is); the job says so in one line when it cannot read it.

How a job ends, whatever happens to pytest:
- Ctrl-C or SIGTERM to pytest: the wait loop cancels the job (`scancel` by its unique name,
  which also covers a job still queued), waits for `srun` to return, and the experiment fails
  with the signal.
- pytest's own timeout (`timeout=`/`--llem-timeout`): the same cancellation, then a failure.
- pytest SIGKILLed: the kernel SIGKILLs `srun` (parent-death signal) and Slurm ends a job whose
  `srun` is gone within seconds; the job's time limit (`--llem-slurm-time`) bounds it anyway.
  The next session marks the experiment's state stale, as for a local child.
- The scheduler ends the job (cancelled by someone else, time limit, preemption, node failure):
  the test fails with the job's state and reason as `scontrol` reports them.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel

from pytest_llem.config import ExperimentConfig
from pytest_llem.errors import ConfigError, ExperimentFailed, ExperimentInterrupted
from pytest_llem.isolation.files import REQUEST_FILE
from pytest_llem.isolation.launcher import POLL_INTERVAL_S, timed_out
from pytest_llem.isolation.leases import gpu_request
from pytest_llem.isolation.outcome import ProgressCallback, ProgressRelay, read_outcome
from pytest_llem.isolation.protocol import ExperimentRequest, read_model, write_model
from pytest_llem.isolation.signals import InterruptGuard
from pytest_llem.processes import set_parent_death_signal, signal_name
from pytest_llem.results import ExperimentResult
from pytest_llem.settings import LlemSettings

if TYPE_CHECKING:
    from pytest_llem.energy.meter import MeterOptions

#: Work folders of Slurm jobs, under the state dir (which the compute nodes must share).
JOBS_DIR = "slurm-jobs"
#: What the job writes first on its node: its id and host (`JobInfo`).
JOB_INFO_FILE = "job.json"
#: What the node does before the experiment (`NodeSettings`).
NODE_SETTINGS_FILE = "node.json"
#: srun's own output and the job's, kept with the work folder until the experiment ends.
SRUN_LOG_FILE = "srun.log"
#: How an experiment that must end early (a signal, its timeout) is ended, as its failure says.
JOB_CANCELLED = "Slurm job was cancelled"
#: After scancel, how long srun gets to return before it is killed.
CANCEL_WAIT_S = 30.0
#: Job states after which a job runs no more (`scontrol show job`).
FINAL_STATES = frozenset(
    {
        "BOOT_FAIL",
        "CANCELLED",
        "COMPLETED",
        "DEADLINE",
        "FAILED",
        "NODE_FAIL",
        "OUT_OF_MEMORY",
        "PREEMPTED",
        "TIMEOUT",
    }
)
#: Filesystems local to one machine: fine only when the jobs run on the same host.
LOCAL_FILESYSTEMS = frozenset({"ext2", "ext3", "ext4", "xfs", "btrfs", "tmpfs", "overlay", "zfs", "f2fs"})


class NodeSettings(BaseModel):
    """The session's settings the job applies on its node before the experiment."""

    baseline_s: float
    cooldown_s: float
    cooldown_temp_c: float | None = None


class JobInfo(BaseModel):
    job_id: str
    host: str


@dataclass(frozen=True)
class SlurmOptions:
    """How each experiment's job is asked for (the `--llem-slurm-*` settings)."""

    partition: str | None = None
    account: str | None = None
    time_limit: str | None = None
    gpus_per_node: int | None = None
    extra_args: tuple[str, ...] = ()

    @classmethod
    def from_settings(cls, settings: LlemSettings) -> SlurmOptions:
        return cls(
            partition=settings.slurm_partition,
            account=settings.slurm_account,
            time_limit=settings.slurm_time,
            gpus_per_node=settings.slurm_gpus_per_node,
            extra_args=settings.slurm_args,
        )

    def srun_command(self, job_name: str, gpus: int, work_dir: Path) -> list[str]:
        if self.gpus_per_node is not None and gpus > self.gpus_per_node:
            raise ConfigError(
                f"gpus: {gpus} GPU(s) asked for, but --llem-slurm-gpus-per-node is {self.gpus_per_node}; "
                "one experiment runs on one node: lower gpus= or raise the setting"
            )
        command = ["srun", f"--job-name={job_name}", "--nodes=1", "--ntasks=1", "--kill-on-bad-exit=1"]
        command += [f"--partition={self.partition}"] if self.partition else []
        command += [f"--account={self.account}"] if self.account else []
        command += [f"--time={self.time_limit}"] if self.time_limit else []
        command += [f"--gres=gpu:{gpus}"] if gpus else []
        command += [arg for extra in self.extra_args for arg in shlex.split(extra)]
        return [*command, sys.executable, "-m", "pytest_llem.isolation.slurm_job", str(work_dir)]


def slurm_gpu_count(config: ExperimentConfig, gpus_per_node: int | None) -> int:
    """GPUs the experiment's job asks Slurm for: what `config` names (a count, indices, or
    tensor_parallel_size/num_processes above 1); where the nodes have GPUs
    (`--llem-slurm-gpus-per-node`), also the one GPU every experiment implies."""
    request = gpu_request(config)
    if request is None:
        return 0
    count = len(request.indices) if request.indices else request.count
    named = bool(request.indices) or request.explicit or count > 1
    return count if named or gpus_per_node else 0


def check_slurm(state_dir: Path) -> str:
    """One line for the session's start: Slurm answers, and which filesystem carries the results.

    Raises `ConfigError` when Slurm's commands are missing or the controller does not answer.
    """
    missing = [tool for tool in ("srun", "scancel", "scontrol") if shutil.which(tool) is None]
    if missing:
        raise ConfigError(
            f"--llem-launcher slurm: {', '.join(missing)} not found on PATH; run pytest on a Slurm "
            "login node, or use --llem-launcher local"
        )
    probe = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=30)
    if probe.returncode != 0 or "UP" not in probe.stdout:
        answer = (probe.stdout + probe.stderr).strip().splitlines()
        raise ConfigError(
            "--llem-launcher slurm: the Slurm controller does not answer "
            f"({answer[-1] if answer else 'no output'}); check SLURM_CONF and `scontrol ping`"
        )
    return describe_shared_filesystem(state_dir)


def describe_shared_filesystem(state_dir: Path) -> str:
    fstype = filesystem_type(state_dir)
    line = (
        f"Slurm jobs exchange requests and results through the state dir {Path(state_dir).resolve()} "
        f"({fstype}); "
        "compute nodes must see it at the same path"
    )
    if fstype in LOCAL_FILESYSTEMS:
        line += f"; {fstype} is local to this machine, so that holds only for jobs that run here"
    return line


def filesystem_type(path: Path) -> str:
    """The type of the filesystem `path` is on, from /proc/mounts (longest mount point wins)."""
    resolved = str(Path(path).resolve())
    best, fstype = "", "unknown"
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return fstype
    for line in mounts:
        parts = line.split()
        if len(parts) < 3:
            continue
        mount_point = parts[1].replace("\\040", " ")
        inside = resolved == mount_point or resolved.startswith(mount_point.rstrip("/") + "/")
        if inside and len(mount_point) >= len(best):
            best, fstype = mount_point, parts[2]
    return fstype


def run_in_slurm_job(
    request: ExperimentRequest,
    *,
    env: Mapping[str, str],
    guard: InterruptGuard,
    options: SlurmOptions,
    node: NodeSettings,
    gpus: int,
    timeout_s: float | None = None,
    on_progress: ProgressCallback | None = None,
) -> ExperimentResult:
    """Run `request` as one Slurm job and return its validated result (see the module's text)."""
    jobs_dir = Path(request.state_dir) / JOBS_DIR
    jobs_dir.mkdir(parents=True, exist_ok=True)
    work_dir = Path(tempfile.mkdtemp(prefix=f"{request.experiment_id[:60]}-", dir=jobs_dir))
    job_name = f"llem-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        write_model(work_dir, REQUEST_FILE, request)
        write_model(work_dir, NODE_SETTINGS_FILE, node)
        command = options.srun_command(job_name, gpus, work_dir)
        with (work_dir / SRUN_LOG_FILE).open("wb") as log:
            proc = subprocess.Popen(
                command,
                env=dict(env),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                # Its own session: Ctrl-C in the terminal reaches pytest, which cancels the job
                # itself. If pytest dies, srun dies with it, and Slurm ends the job it held.
                preexec_fn=lambda: set_parent_death_signal(signal.SIGKILL),
                start_new_session=True,
            )
        progress = ProgressRelay(work_dir, on_progress)
        try:
            _wait_for_srun(proc, guard, timeout_s, progress, job_name, request.config)
        except BaseException:
            if proc.poll() is None:
                cancel_job(proc, job_name)
            raise
        progress.poll()
        try:
            return read_outcome(work_dir, proc.returncode, progress.last_phase)
        except ExperimentFailed:
            if guard.received is not None:
                raise ExperimentInterrupted(signal_name(guard.received)) from None
            # A job that ended badly (cancelled, timed out, preempted): the scheduler says why.
            scheduler_says = _why_job_ended(work_dir, proc.returncode) if proc.returncode else None
            if scheduler_says is None:
                raise
            raise ExperimentFailed(scheduler_says) from None
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)


def _wait_for_srun(
    proc: subprocess.Popen[bytes],
    guard: InterruptGuard,
    timeout_s: float | None,
    progress: ProgressRelay,
    job_name: str,
    config: ExperimentConfig,
) -> None:
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while proc.poll() is None:
        progress.poll()
        if guard.received is not None:
            cancel_job(proc, job_name)
            raise ExperimentInterrupted(signal_name(guard.received))
        if deadline is not None and time.monotonic() > deadline:
            cancel_job(proc, job_name)
            raise timed_out(timeout_s, config, JOB_CANCELLED, progress)
        time.sleep(POLL_INTERVAL_S)


def cancel_job(proc: subprocess.Popen[bytes], job_name: str) -> None:
    """scancel the job (queued or running) by its name, wait for srun, kill srun if it lingers."""
    subprocess.run(
        ["scancel", f"--name={job_name}", f"--user={os.getuid()}"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=60,
    )
    try:
        proc.wait(timeout=CANCEL_WAIT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def job_state(job_id: str) -> tuple[str, str] | None:
    """The job's state and reason as the controller reports them (None if it forgot the job)."""
    try:
        shown = subprocess.run(
            ["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    fields = dict(item.split("=", 1) for item in shown.stdout.split() if "=" in item)
    if "JobState" not in fields:
        return None
    return fields["JobState"], fields.get("Reason", "None")


def _why_job_ended(work_dir: Path, srun_returncode: int) -> str | None:
    """The scheduler's account of a job that ended without a result, or srun's last words."""
    info = read_model(work_dir, JOB_INFO_FILE, JobInfo)
    if info is not None:
        state = job_state(info.job_id)
        for _ in range(50):  # a job is COMPLETING for a moment before its final state
            if state is None or state[0] in FINAL_STATES:
                break
            time.sleep(0.1)
            state = job_state(info.job_id)
        if state is not None and state[0] != "COMPLETED":
            reason = f" (reason: {state[1]})" if state[1] != "None" else ""
            return (
                f"Slurm job {info.job_id} on {info.host} ended {state[0]}{reason} before reporting a result"
            )
    try:
        log = (work_dir / SRUN_LOG_FILE).read_text(errors="replace").strip().splitlines()
    except OSError:
        log = []
    last = next((line for line in reversed(log) if line.strip()), None)
    if last is None and info is None:
        return None
    return f"srun exited with code {srun_returncode} before the job reported a result" + (
        f": {last}" if last else ""
    )


class SlurmLauncher:
    """`launchers.Launcher` for `--llem-launcher slurm`: each experiment is one job
    (`run_in_slurm_job`). Slurm chooses its GPUs, and the job takes its lease, cools down and
    measures the idle baseline on its node, so the pytest process holds no lease and measures
    nothing; jobs start cold, whatever `--llem-preload` says."""

    how_stopped = JOB_CANCELLED
    #: Jobs run on compute nodes: experiments run at once share no host of this session's.
    shares_host = False

    def __init__(self, settings: LlemSettings) -> None:
        self.settings = settings
        self.collected_backends: set[str | None] = set()

    def check(self) -> str | None:
        return check_slurm(self.settings.state_dir)

    def cases_collected(self, cases: list[ExperimentConfig], will_run: bool) -> None:
        self.collected_backends = {case.backend for case in cases}

    def workload_named(self, module: str) -> None:
        pass

    def share_preloaded(self) -> str | None:
        return None  # jobs start cold

    def attach_preloaded(self, address: str | None) -> None:
        pass

    def prepare(
        self, config: ExperimentConfig, experiment_id: str, env: dict[str, str], guard: InterruptGuard
    ) -> MeterOptions:
        return self.settings.meter_options()  # the job measures idle on its node

    def launch(
        self,
        request: ExperimentRequest,
        env: dict[str, str],
        guard: InterruptGuard,
        timeout_s: float | None,
        on_progress: ProgressCallback | None = None,
        on_start: Callable[[int], None] | None = None,
    ) -> ExperimentResult:
        """One process of the experiment as a job; its processes live on the node, so `on_start`
        is never called (the job itself is cancelled by name)."""
        settings = self.settings
        return run_in_slurm_job(
            request,
            env=env,
            guard=guard,
            options=SlurmOptions.from_settings(settings),
            node=NodeSettings(
                baseline_s=settings.baseline_s,
                cooldown_s=settings.cooldown_s,
                cooldown_temp_c=settings.cooldown_temp_c,
            ),
            gpus=slurm_gpu_count(request.config, settings.slurm_gpus_per_node),
            timeout_s=timeout_s,
            on_progress=on_progress,
        )

    def placed(self, result: ExperimentResult) -> ExperimentResult:
        return result  # the job placed it on its node

    def release(self) -> None:
        pass

    def close(self) -> None:
        pass
