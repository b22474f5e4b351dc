"""One experiment inside its Slurm job, on the compute node.

`python -m pytest_llem.isolation.slurm_job WORK_DIR`, started by `srun`.

For `isolation.slurm`, it does on the node what the pytest process does
for a local experiment: registers on the host's lease table (so experiments that share the
node are seen, and their host energy withheld), cools down and measures the idle baseline
of the GPUs Slurm assigned (`CUDA_VISIBLE_DEVICES`, set by Slurm), then runs the same
supervisor and worker through `launcher.run_in_child`, relaying their phases to WORK_DIR.
The outcome (a result with its placement, or the failure) goes to WORK_DIR for pytest.

Slurm's SIGTERM (scancel, time limit, preemption) is caught like Ctrl-C in pytest: the
experiment's group is torn down and the job ends; pytest asks the scheduler why.
"""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

from pytest_llem.energy.idle import IdleBaselines, with_baselines
from pytest_llem.errors import ExperimentInterrupted, LlemError
from pytest_llem.isolation.files import OUTCOME_FILE, REQUEST_FILE
from pytest_llem.isolation.launcher import run_in_child
from pytest_llem.isolation.leases import (
    SLURM_JOB_ID_ENV,
    GpuRequest,
    LeaseTable,
    host_gpus,
    owned_gpus,
    place_result,
)
from pytest_llem.isolation.protocol import (
    ChildOutcome,
    ExperimentRequest,
    ModelT,
    WorkloadFailure,
    append_progress,
    read_model,
    write_model,
)
from pytest_llem.isolation.signals import InterruptGuard, SessionInterrupts, sleep_unless_interrupted
from pytest_llem.isolation.slurm import JOB_INFO_FILE, NODE_SETTINGS_FILE, JobInfo, NodeSettings

#: How many GPUs Slurm gave the job on this node (its CUDA_VISIBLE_DEVICES names them).
SLURM_GPUS_ENV = "SLURM_GPUS_ON_NODE"
#: The job's own exit status when it cannot read its work folder (srun reports it).
UNREADABLE_WORK_DIR_EXIT = 3


def main(work_dir: Path) -> int:
    host = socket.gethostname()
    request = _read(work_dir, REQUEST_FILE, ExperimentRequest, host)
    node = _read(work_dir, NODE_SETTINGS_FILE, NodeSettings, host)
    if request is None or node is None:
        return UNREADABLE_WORK_DIR_EXIT
    job_id = os.environ.get(SLURM_JOB_ID_ENV, "unknown")
    write_model(work_dir, JOB_INFO_FILE, JobInfo(job_id=job_id, host=host))
    interrupts = SessionInterrupts()
    interrupts.stop_raising()  # only recorded: the guard below acts on them at safe points
    interrupts.install()
    guard = InterruptGuard(interrupts)
    env = dict(os.environ)
    try:
        with guard.installed():
            outcome = _run(request, node, env, guard, work_dir, job_id)
    except ExperimentInterrupted as exc:
        outcome = ChildOutcome(
            failure=WorkloadFailure(
                exception_type="ExperimentInterrupted",
                message=f"the Slurm job {job_id} on {host} received {exc.signal_name}",
                traceback="",
                plain=True,
            )
        )
        write_model(work_dir, OUTCOME_FILE, outcome)
        return 1
    write_model(work_dir, OUTCOME_FILE, outcome)
    return 0


def _run(
    request: ExperimentRequest,
    node: NodeSettings,
    env: dict[str, str],
    guard: InterruptGuard,
    work_dir: Path,
    job_id: str,
) -> ChildOutcome:
    # Slurm assigned the GPUs (none unless the job asked); the lease row only says who else
    # runs on this node, so host energy is withheld when jobs share it.
    assigned = host_gpus(env) if int(env.get(SLURM_GPUS_ENV) or 0) else []
    table = LeaseTable(Path(request.state_dir))
    lease = table.acquire(
        request.experiment_id,
        GpuRequest(indices=tuple(g.index for g in assigned)) if assigned else None,
        assigned,
    )
    try:
        if assigned:  # by UUID, as a local lease names them
            env["CUDA_VISIBLE_DEVICES"] = lease.cuda_visible_devices
        # As on a local host, the meter reads exactly the GPUs the job owns: a job Slurm gave no
        # GPU reads none, even on a node whose GPUs other jobs use.
        options = owned_gpus(request.meter, request.config, lease.gpus, "its Slurm job was given no GPU")
        idle = IdleBaselines(node.baseline_s, options.sample_interval_s)
        idle.sleep = lambda seconds: sleep_unless_interrupted(seconds, guard)
        meter = request.config.energy
        if node.cooldown_s > 0 or node.cooldown_temp_c is not None:
            idle.cool_down(meter, options, env, node.cooldown_s, node.cooldown_temp_c)
        request = request.model_copy(
            update={"meter": with_baselines(options, idle.measure(meter, options, env))}
        )
        try:
            result = run_in_child(
                request,
                env=env,
                guard=guard,
                on_progress=lambda events: [append_progress(work_dir, e) for e in events],
            )
        except ExperimentInterrupted:
            raise
        except LlemError as exc:
            return ChildOutcome(
                failure=WorkloadFailure(
                    exception_type=type(exc).__name__, message=str(exc), traceback="", plain=True
                )
            )
        return ChildOutcome(result=place_result(result, lease, job_id))
    finally:
        lease.release()


def _read(work_dir: Path, name: str, model: type[ModelT], host: str) -> ModelT | None:
    """A file pytest wrote, or None after one line saying why the job cannot use it."""
    try:
        found = read_model(work_dir, name, model)
    except OSError as exc:
        why = exc.strerror or str(exc)
    except ValueError as exc:
        why = f"unreadable: {str(exc).splitlines()[0]}"
    else:
        if found is not None:
            return found
        why = "no such file"
    print(
        f"pytest-llem: the job on {host} cannot read {work_dir / name} ({why}); the state dir must be on "
        "a filesystem the compute nodes share at the same path (--llem-state-dir)",
        file=sys.stderr,
    )
    return None


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
