"""Which machine produced a run's figures: an id that changes only when they would, and the
fingerprint of everything else that makes two runs' figures comparable.

The id hashes GPU models, their count, the driver and power limits, or the CPU model when
there is no GPU; not the Python version or the hostname, so two CI runners of the same
kind share it. The fingerprint adds what may differ between two runs on such machines: GPU
UUIDs, CUDA version, application clocks, persistence, ECC and MIG modes, the CPU model and
its frequency governor, and the versions of the libraries that run the model. GPUs are read
through NVML, which never initialises CUDA; library versions from their installed metadata,
never by importing them.
"""

from __future__ import annotations

import hashlib
import json
import platform
from importlib import metadata
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

#: Libraries whose version changes the figures; read from their metadata, never imported.
SOFTWARE_PACKAGES = ("torch", "transformers", "accelerate", "vllm")
CPU_GOVERNOR_FILE = Path("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor")


class GpuInfo(BaseModel):
    """One GPU of the host as NVML names it: its NVML index (PCI bus order) and UUID, which
    GPU leases hand out (`isolation.leases`), and its model and the settings that change its
    figures, which the machine fingerprint keeps."""

    model_config = ConfigDict(frozen=True)

    name: str
    power_limit_w: float | None = None
    uuid: str | None = None
    sm_clock_mhz: int | None = Field(default=None, description="application clock")
    memory_clock_mhz: int | None = Field(default=None, description="application clock")
    persistence_mode: bool | None = None
    ecc_mode: bool | None = None
    mig_mode: bool | None = None
    index: int | None = None


class MachineInfo(BaseModel):
    id: str
    gpus: list[GpuInfo] = Field(default_factory=list)
    driver: str | None = None
    cpu_model: str | None = None
    cuda_driver_version: str | None = None
    cpu_governor: str | None = None
    #: Versions of python, pytest-llem and `SOFTWARE_PACKAGES` (None: not installed).
    software: dict[str, str | None] = Field(default_factory=dict)

    @classmethod
    def current(cls) -> MachineInfo:
        gpus, driver, cuda = _nvml_gpus()
        cpu = _cpu_model()
        # The id keeps its original parts, so runs saved before the fingerprint keep their id.
        identity = {
            "gpus": [{"name": g.name, "power_limit_w": g.power_limit_w} for g in gpus],
            "driver": driver,
            "cpu": None if gpus else cpu,
        }
        digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:12]
        return cls(
            id=digest,
            gpus=gpus,
            driver=driver,
            cpu_model=cpu,
            cuda_driver_version=cuda,
            cpu_governor=_cpu_governor(),
            software=software_versions(),
        )

    def describe(self) -> str:
        if self.gpus:
            names = sorted({g.name for g in self.gpus})
            return f"{len(self.gpus)} x {', '.join(names)} (driver {self.driver})"
        return self.cpu_model or "unknown CPU"


def software_versions() -> dict[str, str | None]:
    from pytest_llem import __version__

    versions: dict[str, str | None] = {"python": platform.python_version(), "pytest-llem": __version__}
    for name in SOFTWARE_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def _nvml_gpus() -> tuple[list[GpuInfo], str | None, str | None]:
    from pytest_llem.energy.nvml import NvmlSession
    from pytest_llem.errors import MeterUnavailable

    try:
        session = NvmlSession.open()
    except MeterUnavailable:
        return [], None, None
    try:
        gpus = [
            GpuInfo(name=gpu.name, uuid=gpu.uuid, index=gpu.index, **gpu.settings())
            for gpu in session.all_gpus()
        ]
        return gpus, session.driver_version(), session.cuda_driver_version()
    finally:
        session.close()


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cpu_governor() -> str | None:
    try:
        return CPU_GOVERNOR_FILE.read_text().strip() or None
    except OSError:
        return None
