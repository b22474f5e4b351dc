"""What differs between the machines and software of two runs, and which differences refuse a gate.

Hardware differences (GPU models, their count, power limits; the CPU model of runs without
GPUs) make figures incomparable: a gate refuses them unless asked to compare across
machines. Everything else (driver, CUDA, GPU boards, clocks, modes, CPU governor, library
versions) is shown and gated normally: a library upgrade is exactly what a gate is for.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pytest_llem.fingerprints.machine import MachineInfo

_GPU_SETTINGS = (
    ("sm_clock_mhz", "application SM clock"),
    ("memory_clock_mhz", "application memory clock"),
    ("persistence_mode", "persistence mode"),
    ("ecc_mode", "ECC mode"),
    ("mig_mode", "MIG mode"),
)


@dataclass
class FingerprintDifferences:
    hardware: list[str] = field(default_factory=list)
    other: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        return [f"hardware: {d}" for d in self.hardware] + [f"software and settings: {d}" for d in self.other]


def fingerprint_differences(before: MachineInfo | None, after: MachineInfo | None) -> FingerprintDifferences:
    """Every known difference, baseline first (`old -> new`); parts unknown on either side are skipped."""
    found = FingerprintDifferences()
    if before is None or after is None:
        return found

    def note(target: list[str], what: str, old: Any, new: Any) -> None:
        if old is not None and new is not None and old != new:
            target.append(f"{what} {_show(old)} -> {_show(new)}")

    note(found.hardware, "GPU count", len(before.gpus), len(after.gpus))
    note(
        found.hardware, "GPU models", sorted(g.name for g in before.gpus), sorted(g.name for g in after.gpus)
    )
    if len(before.gpus) == len(after.gpus):
        note(
            found.hardware,
            "GPU power limits (W)",
            _each(before, "power_limit_w"),
            _each(after, "power_limit_w"),
        )
        note(found.other, "GPU boards (UUID)", _each(before, "uuid"), _each(after, "uuid"))
        for name, what in _GPU_SETTINGS:
            note(found.other, what, _each(before, name), _each(after, name))
    cpu_target = found.hardware if not (before.gpus or after.gpus) else found.other
    note(cpu_target, "CPU model", before.cpu_model, after.cpu_model)
    note(found.other, "CPU frequency governor", before.cpu_governor, after.cpu_governor)
    note(found.other, "NVIDIA driver", before.driver, after.driver)
    note(found.other, "CUDA (driver)", before.cuda_driver_version, after.cuda_driver_version)
    for package in dict.fromkeys([*before.software, *after.software]):
        old, new = before.software.get(package), after.software.get(package)
        if package in before.software and package in after.software and old != new:
            found.other.append(f"{package} {old or 'not installed'} -> {new or 'not installed'}")
    return found


def _each(machine: MachineInfo, name: str) -> list[Any] | None:
    values = [getattr(g, name) for g in machine.gpus]
    return None if any(v is None for v in values) else values


def _show(value: Any) -> str:
    if isinstance(value, list):
        return ", ".join(_show(v) for v in value) if value else "none"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value)
