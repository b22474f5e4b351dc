"""GPU leases: whole GPUs granted to one experiment at a time, seen by every pytest process on the host.

The lease table is one JSON file in the state dir (`gpu-leases/table.json`), read and
rewritten only under an exclusive `flock` on `gpu-leases/lock`, so every xdist worker and
every concurrent session that shares the state dir sees the same table. Each running
experiment has a row (GPUs or not): its holder is the pytest process that started it,
named by PID *and* start time (`processes.process_is_alive`), so a row whose holder is
gone, even SIGKILLed, and a row whose PID was reused, are both reclaimed by the next
process that takes the lock. The experiment's own child group dies with its pytest process
(the supervisor's parent-death signal), so a reclaimed GPU is really free.

A row also says whether another experiment ran on the same host while it was held
(`overlapped_with`): CPU, DRAM and host power then mix cases and cannot be attributed
(`energy.quality.SHARED_HOST_ENERGY`).

The inventory of GPUs comes from NVML in the pytest process (`energy.nvml`), never CUDA;
the child gets the leased GPUs' UUIDs in `CUDA_VISIBLE_DEVICES`, and its meter the same
UUIDs (`owned_gpus`): an experiment reads only the GPUs it owns. A CPU-only case (device='cpu',
gpus=0) owns none: its meter opens no GPU and says so, and its children see none through
CUDA (an empty `CUDA_VISIBLE_DEVICES`).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_llem.base.atomic import DiskFull, atomic_write_text
from pytest_llem.config import ExperimentConfig
from pytest_llem.energy.meter import MeterOptions
from pytest_llem.errors import ConfigError, MeterUnavailable, StorageError
from pytest_llem.fingerprints.machine import GpuInfo
from pytest_llem.isolation.assembly import without_host_energy
from pytest_llem.processes import process_is_alive, process_start_time
from pytest_llem.results import ExperimentResult, Placement

LEASE_DIR = "gpu-leases"
TABLE_FILE = "table.json"
LOCK_FILE = "lock"
POLL_INTERVAL_S = 0.2
#: While waiting, the "waiting for" line is repeated this often (and when the holders change).
WAIT_NOTICE_INTERVAL_S = 30.0


@dataclass(frozen=True)
class GpuRequest:
    """What an experiment asks for: a number of GPUs, or these NVML indices."""

    count: int = 0
    indices: tuple[int, ...] = ()
    #: The count was written as `gpus=N` (not implied): not having that many is an error.
    explicit: bool = False

    def describe(self) -> str:
        if self.indices:
            return f"GPU(s) {', '.join(map(str, self.indices))}"
        return f"{self.count} GPU(s)"


def cpu_only_reason(config: ExperimentConfig) -> str | None:
    """Why `config` owns no GPU by its own choice (device='cpu', gpus=0), or None: it may use
    GPUs, or it names its own devices (CUDA_VISIBLE_DEVICES in its env, which then wins)."""
    if "CUDA_VISIBLE_DEVICES" in config.env:
        return None
    if config.device == "cpu":
        return "device='cpu'"
    if config.gpus == 0:
        return "gpus=0"
    return None


def gpu_request(config: ExperimentConfig) -> GpuRequest | None:
    """The GPUs `config` needs; None when it needs none or chose its own (device='cpu', or
    CUDA_VISIBLE_DEVICES in its env, gpus=0)."""
    if cpu_only_reason(config) is not None or "CUDA_VISIBLE_DEVICES" in config.env:
        return None
    if isinstance(config.gpus, list):
        return GpuRequest(indices=tuple(dict.fromkeys(config.gpus)))
    if config.gpus is not None:
        return GpuRequest(count=config.gpus, explicit=True)
    return GpuRequest(count=max(config.tensor_parallel_size, config.num_processes))


def host_gpus(environ: Mapping[str, str] | None = None) -> list[GpuInfo]:
    """The host's GPUs that this process may use (its own CUDA_VISIBLE_DEVICES), through NVML;
    [] when NVML is missing or sees none (a CPU-only machine)."""
    from pytest_llem.energy.nvml import NvmlSession, select_visible

    environ = os.environ if environ is None else environ
    try:
        session = NvmlSession.open()
    except MeterUnavailable:
        return []
    try:
        gpus = select_visible(session.all_gpus(), environ.get("CUDA_VISIBLE_DEVICES"))
        return [GpuInfo(name=gpu.name, index=gpu.index, uuid=gpu.uuid) for gpu in gpus]
    except Exception:  # noqa: BLE001 - any NVML failure: no GPU to lease, the experiment runs as before
        return []
    finally:
        session.close()


def owned_gpus(
    options: MeterOptions,
    config: ExperimentConfig,
    leased: list[GpuInfo],
    unleased_reason: str | None = None,
) -> MeterOptions:
    """`options` with the GPUs the experiment owns, so that its meter reads exactly those (and
    the idle baseline measures exactly those): the leased ones; none for a CPU-only case (whose
    children see none through CUDA either: `launcher.build_experiment_env`); none, for
    `unleased_reason`, when the launcher gave it none (a Slurm job without GPUs). A case that
    names its own `CUDA_VISIBLE_DEVICES`, or a host whose NVML lists no GPU, leaves the
    choice to the meter (that variable, or NVML's own reason for seeing nothing)."""
    if leased:
        return options.model_copy(update={"gpu_uuids": [gpu.uuid for gpu in leased]})
    if "CUDA_VISIBLE_DEVICES" in config.env:
        return options
    reason = cpu_only_reason(config) or unleased_reason
    if reason is None:
        return options
    return options.model_copy(update={"gpu_uuids": [], "no_gpu_reason": reason})


@dataclass
class Lease:
    """A held row of the table: the GPUs granted (maybe none) and who else ran meanwhile."""

    lease_id: str
    experiment_id: str
    host: str
    gpus: list[GpuInfo]
    table: LeaseTable
    released: bool = False
    #: Filled in by `release`: experiments that ran on this host while this one held its row.
    overlapped_with: list[str] = field(default_factory=list)

    @property
    def cuda_visible_devices(self) -> str:
        return ",".join(gpu.uuid for gpu in self.gpus)

    def release(self) -> list[str]:
        """Drop the row (idempotent); return the experiments it overlapped with."""
        if not self.released:
            self.overlapped_with = self.table.release(self.lease_id)
            self.released = True
        return self.overlapped_with


@dataclass
class _Rows:
    """The table as read under the lock: granted leases, and experiments waiting in turn."""

    leases: dict[str, dict[str, Any]]
    waiting: dict[str, dict[str, Any]]

    def dump(self) -> str:
        return json.dumps({"leases": self.leases, "waiting": self.waiting}, indent=1, sort_keys=True)


class LeaseTable:
    """The host's lease table under `state_dir`; every operation holds its lock briefly.

    Waiting is first come, first served on each host: an experiment that waits takes a place
    in `waiting`, and a later one is granted nothing until every earlier one has been, so a
    two-GPU experiment is never starved by a stream of one-GPU ones.
    """

    def __init__(self, state_dir: Path, host: str | None = None) -> None:
        self.dir = Path(state_dir) / LEASE_DIR
        self.host = host or socket.gethostname()
        #: Rows dropped because their holder was gone, for the session's notes.
        self.reclaimed: list[dict[str, Any]] = []
        #: Releases that could not be written (a full disk), for the session's notes.
        self.write_problems: list[str] = []

    @contextlib.contextmanager
    def _locked(self, must_write: bool = True) -> Iterator[_Rows]:
        """The table under the lock, written back if changed. With `must_write` False a failed
        write (a full disk) is only noted: a row left behind is reclaimed once its process ends."""
        self.dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            rows = self._read()
            before = rows.dump()
            for table in (rows.leases, rows.waiting):
                for key, row in list(table.items()):
                    if row["host"] == self.host and not process_is_alive(row["pid"], row["pid_start_time"]):
                        dropped = table.pop(key)
                        if table is rows.leases:
                            self.reclaimed.append(dropped)
            yield rows
            if rows.dump() != before:
                try:
                    # Not fsynced: after a crash of the machine every holder is gone, and a
                    # row whose process is gone is dropped at the next look (above).
                    atomic_write_text(self.dir / TABLE_FILE, rows.dump(), use_reserve=False, durable=False)
                except OSError as exc:
                    if must_write:
                        raise StorageError(
                            f"cannot write the GPU lease table {self.dir / TABLE_FILE}: {exc}"
                        ) from None
                    if not isinstance(exc, DiskFull):  # a full disk is the session's own one line
                        self.write_problems.append(str(exc))
        finally:
            os.close(fd)  # closing the descriptor drops the lock

    def _read(self) -> _Rows:
        try:
            payload = json.loads((self.dir / TABLE_FILE).read_text())
            return _Rows(dict(payload["leases"]), dict(payload.get("waiting", {})))
        except FileNotFoundError:
            return _Rows({}, {})
        except (ValueError, KeyError, TypeError, AttributeError):
            return _Rows({}, {})  # a torn or foreign file: every live holder rewrites its row at release

    def rows(self) -> list[dict[str, Any]]:
        with self._locked() as rows:
            return list(rows.leases.values())

    def _holder(self, experiment_id: str) -> dict[str, Any]:
        me = os.getpid()
        return {
            "experiment_id": experiment_id,
            "host": self.host,
            "pid": me,
            "pid_start_time": process_start_time(me),
            "since": time.time(),
        }

    def try_acquire(
        self,
        experiment_id: str,
        request: GpuRequest | None,
        inventory: list[GpuInfo],
        ticket: str | None = None,
    ) -> Lease | list[dict[str, Any]]:
        """The lease, or the rows it waits on: holders of what is missing, and experiments that
        have waited longer (marked "waiting"). With a `ticket`, a refusal keeps its place in line."""
        with self._locked() as rows:
            here = [row for row in rows.leases.values() if row["host"] == self.host]
            held = {uuid_ for row in here for uuid_ in row["gpus"]}
            mine = rows.waiting.get(ticket) if ticket else None
            my_turn = (mine["since"], ticket) if mine else (time.time(), ticket or "")
            ahead = [
                {**row, "waiting": True}
                for key, row in sorted(rows.waiting.items(), key=lambda item: (item[1]["since"], item[0]))
                if row["host"] == self.host and key != ticket and (row["since"], key) < my_turn
            ]
            needs_gpus = request is not None and bool(inventory)
            granted = None if needs_gpus and ahead else _choose(request, inventory, held)
            if granted is None:
                if ticket and mine is None:
                    rows.waiting[ticket] = {**self._holder(experiment_id), "wants": request.describe()}
                wanted = _wanted(request, inventory)
                return [row for row in here if wanted is None or wanted & set(row["gpus"])] + ahead
            if ticket:
                rows.waiting.pop(ticket, None)
            lease_id = uuid.uuid4().hex
            for row in here:
                row["overlapped_with"] = sorted({*row["overlapped_with"], experiment_id})
            rows.leases[lease_id] = {
                **self._holder(experiment_id),
                "gpus": [gpu.uuid for gpu in granted],
                "overlapped_with": sorted({row["experiment_id"] for row in here}),
            }
            return Lease(lease_id, experiment_id, self.host, granted, self)

    def release(self, lease_id: str) -> list[str]:
        # Never fails an experiment's bookkeeping: a full disk must not keep its result from its state.
        with self._locked(must_write=False) as rows:
            row = rows.leases.pop(lease_id, None)
        return list(row["overlapped_with"]) if row else []

    def _leave_line(self, ticket: str) -> None:
        with self._locked(must_write=False) as rows:
            rows.waiting.pop(ticket, None)

    def acquire(
        self,
        experiment_id: str,
        request: GpuRequest | None,
        inventory: list[GpuInfo],
        *,
        sleep: Callable[[float], None] = time.sleep,
        notify: Callable[[str], None] = lambda line: None,
    ) -> Lease:
        """Wait until `request` can be granted; `sleep` may raise to stop waiting (a signal)."""
        check_request(request, inventory)
        last_notice: tuple[float, str] | None = None
        ticket = uuid.uuid4().hex
        try:
            while True:
                outcome = self.try_acquire(experiment_id, request, inventory, ticket)
                if isinstance(outcome, Lease):
                    return outcome
                assert request is not None  # without GPUs nothing is ever waited for
                line = f"waiting for {request.describe()} for {experiment_id}; " + _waiting_on(outcome)
                now = time.monotonic()
                if (
                    last_notice is None
                    or last_notice[1] != line
                    or now - last_notice[0] > WAIT_NOTICE_INTERVAL_S
                ):
                    notify(line)
                    last_notice = (now, line)
                sleep(POLL_INTERVAL_S)
        except BaseException:
            self._leave_line(ticket)
            raise


def _waiting_on(rows: list[dict[str, Any]]) -> str:
    holders = [r for r in rows if not r.get("waiting")]
    ahead = [r for r in rows if r.get("waiting")]
    text = "held by " + (
        ", ".join(f"{r['experiment_id']} (pid {r['pid']}, {len(r['gpus'])} GPU(s))" for r in holders)
        or "nobody"
    )
    if ahead:
        text += "; after " + ", ".join(f"{r['experiment_id']} (waiting for {r['wants']})" for r in ahead)
    return text


def check_request(request: GpuRequest | None, inventory: list[GpuInfo]) -> None:
    """A request that could never be granted is a config error, not an endless wait."""
    if request is None:
        return
    known = {gpu.index for gpu in inventory}
    if request.indices and inventory:
        unknown = [i for i in request.indices if i not in known]
        if unknown:
            raise ConfigError(
                f"gpus: GPU index {', '.join(map(str, unknown))} is not one of this host's GPUs "
                f"({', '.join(map(str, sorted(known))) or 'none'}); choose among them"
            )
    if request.explicit and request.count > len(inventory):
        raise ConfigError(
            f"gpus: {request.count} GPU(s) asked for, but NVML sees {len(inventory)} on this host; "
            "lower gpus= or run on a machine with more"
        )


def _wanted(request: GpuRequest | None, inventory: list[GpuInfo]) -> set[str] | None:
    """The UUIDs a request waits on (None: any GPU would do)."""
    if request is None or not request.indices:
        return None
    return {gpu.uuid for gpu in inventory if gpu.index in request.indices}


def _choose(request: GpuRequest | None, inventory: list[GpuInfo], held: set[str]) -> list[GpuInfo] | None:
    """The GPUs to grant, [] for none needed, None when they are not free yet."""
    if request is None or not inventory:
        return []
    if request.indices:
        chosen = [gpu for gpu in inventory if gpu.index in request.indices]
        return None if any(gpu.uuid in held for gpu in chosen) else chosen
    # An implied count larger than the host (num_processes ranks sharing GPUs) takes them all.
    count = min(request.count, len(inventory))
    free = [gpu for gpu in inventory if gpu.uuid not in held]
    return free[:count] if len(free) >= count else None


#: Set by Slurm in a job's environment: the job a result was measured in.
SLURM_JOB_ID_ENV = "SLURM_JOB_ID"


def place_result(result: ExperimentResult, lease: Lease, job_id: str | None = None) -> ExperimentResult:
    """Release `lease` and return `result` with its placement; host energy withheld if others
    ran on the host meanwhile (`assembly.without_host_energy`)."""
    others = lease.release()
    placement = Placement(
        host=lease.host,
        gpu_uuids=[gpu.uuid for gpu in lease.gpus],
        gpu_indices=[gpu.index for gpu in lease.gpus],
        job_id=job_id or os.environ.get(SLURM_JOB_ID_ENV),
        overlapped_with=others,
    )
    return without_host_energy(result, others).model_copy(update={"placement": placement})
