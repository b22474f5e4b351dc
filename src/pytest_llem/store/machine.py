"""Which machine produced a run's figures, as an id that changes only when they would.

The id hashes GPU models, their count, the driver and power limits, or the CPU model when
there is no GPU; not the Python version or the hostname, so two CI runners of the same
kind share it. The GPUs are read through NVML, which never initialises CUDA.
"""

from __future__ import annotations

import hashlib
import json
import platform
from pathlib import Path

from pydantic import BaseModel, Field


class GpuInfo(BaseModel):
    name: str
    power_limit_w: float | None = None


class MachineInfo(BaseModel):
    id: str
    gpus: list[GpuInfo] = Field(default_factory=list)
    driver: str | None = None
    cpu_model: str | None = None

    @classmethod
    def current(cls) -> MachineInfo:
        gpus, driver = _nvml_gpus()
        cpu = None if gpus else _cpu_model()
        identity = {"gpus": [g.model_dump() for g in gpus], "driver": driver, "cpu": cpu}
        digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:12]
        return cls(id=digest, gpus=gpus, driver=driver, cpu_model=cpu)

    def describe(self) -> str:
        if self.gpus:
            names = sorted({g.name for g in self.gpus})
            return f"{len(self.gpus)} x {', '.join(names)} (driver {self.driver})"
        return self.cpu_model or "unknown CPU"


def _nvml_gpus() -> tuple[list[GpuInfo], str | None]:
    from pytest_llem.energy.nvml import NvmlSession
    from pytest_llem.errors import MeterUnavailable

    try:
        session = NvmlSession.open()
    except MeterUnavailable:
        return [], None
    try:
        gpus = []
        for gpu in session.all_gpus():
            try:
                limit_w = session.nvml.nvmlDeviceGetEnforcedPowerLimit(gpu.handle) / 1000.0
            except session.nvml.NVMLError:
                limit_w = None
            gpus.append(GpuInfo(name=gpu.name, power_limit_w=limit_w))
        return gpus, session.driver_version()
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
