"""A real single-node Slurm cluster for the tests: munged, slurmctld and slurmd from Debian's
`slurm-wlm` and `munge` packages, configured in a temp dir, on free local ports.

Four simulated GPUs are declared as generic resources (character devices made with mknod in
the temp dir), so Slurm itself assigns CUDA_VISIBLE_DEVICES to each job. Everything runs as
the current user (root on CI: slurmd must be able to start jobs). `SlurmCluster.start` raises
`ClusterUnavailable` with the reason when the daemons cannot start here; the fixture skips.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

SIMULATED_GPUS = 4
DAEMONS = ("munged", "slurmctld", "slurmd")
#: More job slots than this machine's cores: the experiments sleep, and two must run at once.
NODE_CPUS = 8


class ClusterUnavailable(Exception):
    pass


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class SlurmCluster:
    root: Path
    host: str = field(default_factory=socket.gethostname)
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def conf(self) -> Path:
        return self.root / "slurm.conf"

    @property
    def env(self) -> dict[str, str]:
        """What a process needs to talk to this cluster."""
        return {"SLURM_CONF": str(self.conf)}

    def start(self) -> SlurmCluster:
        missing = [tool for tool in (*DAEMONS, "mungekey", "srun", "sinfo") if shutil.which(tool) is None]
        if missing:
            raise ClusterUnavailable(f"{', '.join(missing)} not installed (Debian: slurm-wlm and munge)")
        if os.geteuid() != 0:
            raise ClusterUnavailable("slurmd must run as root to start jobs")
        for folder in ("munge", "spool", "state", "gpus", "logs"):
            (self.root / folder).mkdir(parents=True, exist_ok=True)
        (self.root / "munge").chmod(0o700)
        key = self.root / "munge" / "munge.key"
        self._check(["mungekey", "--create", f"--keyfile={key}"], "mungekey")
        for index in range(SIMULATED_GPUS):
            try:
                os.mknod(self.root / "gpus" / f"gpu{index}", 0o600 | 0o020000, os.makedev(1, 3))
            except OSError as exc:
                raise ClusterUnavailable(f"cannot make the simulated GPUs' device files: {exc}") from None
        socket_path = self.root / "munge" / "socket"
        self._spawn(
            [
                "munged",
                "--foreground",
                "--force",
                f"--key-file={key}",
                f"--socket={socket_path}",
                f"--log-file={self.root / 'logs' / 'munged.log'}",
                f"--pid-file={self.root / 'munge' / 'munged.pid'}",
                f"--seed-file={self.root / 'munge' / 'munged.seed'}",
            ],
            "munged",
        )
        self._wait(lambda: socket_path.exists(), "munged's socket", 20)
        self._write_config(socket_path)
        self._spawn(["slurmctld", "-D", "-f", str(self.conf)], "slurmctld")
        self._spawn(["slurmd", "-D", "-f", str(self.conf)], "slurmd")
        self._wait(self._node_idle, "the node to be idle in sinfo", 60)
        return self

    def _write_config(self, munge_socket: Path) -> None:
        root = self.root
        self.conf.write_text(
            "\n".join(
                [
                    "ClusterName=llemtest",
                    f"SlurmctldHost={self.host}",
                    f"SlurmctldPort={free_port()}",
                    f"SlurmdPort={free_port()}",
                    "SlurmUser=root",
                    "SlurmdUser=root",
                    "AuthType=auth/munge",
                    "CredType=cred/munge",
                    f"AuthInfo=socket={munge_socket}",
                    f"StateSaveLocation={root / 'state'}",
                    f"SlurmdSpoolDir={root / 'spool'}",
                    f"SlurmctldPidFile={root / 'slurmctld.pid'}",
                    f"SlurmdPidFile={root / 'slurmd.pid'}",
                    f"SlurmctldLogFile={root / 'logs' / 'slurmctld.log'}",
                    f"SlurmdLogFile={root / 'logs' / 'slurmd.log'}",
                    "ProctrackType=proctrack/linuxproc",
                    "TaskPlugin=task/none",
                    "SelectType=select/cons_tres",
                    "SelectTypeParameters=CR_Core_Memory",
                    "DefMemPerCPU=100",
                    "SlurmdParameters=config_overrides",
                    "AccountingStorageType=accounting_storage/none",
                    "JobCompType=jobcomp/none",
                    "MpiDefault=none",
                    "ReturnToService=2",
                    "KillWait=5",
                    "MinJobAge=600",
                    "GresTypes=gpu",
                    f"NodeName={self.host} CPUs={NODE_CPUS} RealMemory=4000 "
                    f"Gres=gpu:{SIMULATED_GPUS} State=UNKNOWN",
                    f"PartitionName=debug Nodes={self.host} Default=YES MaxTime=INFINITE State=UP",
                    "",
                ]
            )
        )
        (root / "gres.conf").write_text(
            f"AutoDetect=off\nName=gpu File={root / 'gpus'}/gpu[0-{SIMULATED_GPUS - 1}]\n"
        )

    def _check(self, command: list[str], what: str) -> None:
        done = subprocess.run(command, capture_output=True, text=True, env=self._daemon_env())
        if done.returncode != 0:
            raise ClusterUnavailable(f"{what} failed: {(done.stderr or done.stdout).strip()}")

    def _daemon_env(self) -> dict[str, str]:
        return {**os.environ, **self.env}

    def _spawn(self, command: list[str], name: str) -> None:
        log = (self.root / "logs" / f"{name}.out").open("wb")
        self.processes.append(
            subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, env=self._daemon_env(), start_new_session=True
            )
        )

    def _node_idle(self) -> bool:
        for proc in self.processes:
            if proc.poll() is not None:
                raise ClusterUnavailable(f"{proc.args[0]} exited with {proc.returncode}: {self.log_tail()}")
        shown = subprocess.run(
            ["sinfo", "--noheader", "--format=%T"], capture_output=True, text=True, env=self._daemon_env()
        )
        return shown.returncode == 0 and shown.stdout.strip() == "idle"

    def _wait(self, ready, what: str, timeout_s: float) -> None:  # noqa: ANN001 - a predicate
        deadline = time.monotonic() + timeout_s
        while not ready():
            if time.monotonic() > deadline:
                raise ClusterUnavailable(f"timed out waiting for {what}: {self.log_tail()}")
            time.sleep(0.2)

    def log_tail(self) -> str:
        lines = []
        for path in sorted((self.root / "logs").glob("*")):
            text = path.read_text(errors="replace").strip().splitlines()
            lines += [f"{path.name}: {line}" for line in text[-3:]]
        return " | ".join(lines)

    def queue(self) -> list[str]:
        """The jobs Slurm still has pending or running (squeue), one line each."""
        shown = subprocess.run(
            ["squeue", "--noheader", "--format=%i %j %T"],
            capture_output=True,
            text=True,
            env=self._daemon_env(),
        )
        return [line for line in shown.stdout.splitlines() if line.strip()]

    def stop(self) -> None:
        if self.conf.exists():
            subprocess.run(
                ["scancel", "--user", str(os.getuid())], capture_output=True, env=self._daemon_env()
            )
        for proc in reversed(self.processes):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in reversed(self.processes):
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlurmCluster]:
    """One Slurm cluster for the whole test session; skips with the reason where it cannot start."""
    cluster = SlurmCluster(tmp_path_factory.mktemp("slurm"))
    try:
        cluster.start()
    except ClusterUnavailable as exc:
        cluster.stop()
        pytest.skip(f"no local Slurm cluster: {exc}")
    try:
        yield cluster
    finally:
        cluster.stop()
