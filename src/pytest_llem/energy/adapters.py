"""Meters over Zeus and CodeCarbon, for teams that already trust those libraries.

Each adapter maps the library's window onto pytest-llem's: per-device energy in joules,
labelled with the library as its source. Both libraries are extras, imported only here
and only in the child; a missing one is a one-line error naming the extra to install.
The adapters use only the libraries' documented public API (Zeus's `ZeusMonitor`
windows, CodeCarbon's `EmissionsTracker` with its `final_emissions_data`).
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

from pytest_llem.energy import quality
from pytest_llem.energy.meter import EnergyMeter
from pytest_llem.errors import MeterUnavailable
from pytest_llem.extras import import_extra
from pytest_llem.results import DeviceEnergy, QualityWarning, WindowMeasurement

JOULES_PER_KWH = 3.6e6


class ZeusMeter(EnergyMeter):
    """`energy="zeus"`: one `ZeusMonitor` for all visible GPUs (and CPUs where Zeus reads them)."""

    def __init__(self, monitor: Any | None = None) -> None:
        super().__init__()
        if monitor is None:
            zeus_monitor = import_extra("zeus.monitor", "zeus", "energy='zeus'", MeterUnavailable)
            monitor = zeus_monitor.ZeusMonitor()
        self.monitor = monitor

    def _begin_readings(self, name: str) -> None:
        self.monitor.begin_window(name)

    def _end_readings(self, name: str, duration_s: float) -> WindowMeasurement:
        measurement = self.monitor.end_window(name)
        duration_s = float(measurement.time)
        parts = (
            ("gpu", "gpu", measurement.gpu_energy),
            ("cpu", "cpu-package-", getattr(measurement, "cpu_energy", None) or {}),
        )
        devices = [
            DeviceEnergy(
                device=f"{prefix}{index}",
                kind=kind,
                energy_j=float(joules),
                energy_source="zeus",
                duration_s=duration_s,
            )
            for kind, prefix, energies in parts
            for index, joules in sorted(energies.items())
        ]
        return WindowMeasurement(
            duration_s=duration_s,
            devices=devices,
            warnings=_library_flags(duration_s, devices),
        )


class CodeCarbonMeter(EnergyMeter):
    """`energy="codecarbon"`: a fresh `EmissionsTracker` per window (a tracker cannot restart)."""

    NOTE = (
        "codecarbon: RAM energy is its estimate from memory size and is left out; its CPU figure "
        "is a TDP-based estimate when RAPL is unreadable (see codecarbon's log)"
    )

    def __init__(self, codecarbon: ModuleType | None = None) -> None:
        super().__init__()
        self.codecarbon = codecarbon or import_extra(
            "codecarbon", "codecarbon", "energy='codecarbon'", MeterUnavailable
        )
        self._trackers: dict[str, Any] = {}

    def _begin_readings(self, name: str) -> None:
        tracker = self.codecarbon.EmissionsTracker(save_to_file=False, log_level="error")
        tracker.start()
        self._trackers[name] = tracker

    def _end_readings(self, name: str, duration_s: float) -> WindowMeasurement:
        tracker = self._trackers.pop(name)
        tracker.stop()
        data = tracker.final_emissions_data
        devices = [
            DeviceEnergy(
                device=kind,
                kind=kind,
                energy_j=float(kwh) * JOULES_PER_KWH,
                energy_source="codecarbon",
                duration_s=duration_s,
            )
            for kind, kwh in (("gpu", data.gpu_energy), ("cpu", data.cpu_energy))
            if kwh
        ]
        return WindowMeasurement(
            duration_s=duration_s,
            devices=devices,
            warnings=_library_flags(duration_s, devices),
            notes=[self.NOTE],
        )


def _library_flags(duration_s: float, devices: list[DeviceEnergy]) -> list[QualityWarning]:
    # The libraries report no power samples, temperatures or clocks: only these flags apply.
    applicable = {quality.SHORT_WINDOW, quality.ZERO_ENERGY}
    return [w for w in quality.assess_window(duration_s, devices) if w.code in applicable]


def create_adapter(name: str) -> EnergyMeter:
    return ZeusMeter() if name == "zeus" else CodeCarbonMeter()
