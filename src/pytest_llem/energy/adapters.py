"""Meters over Zeus and CodeCarbon, for teams that already trust those libraries.

Each adapter maps the library's window onto pytest-llem's: per-device energy in joules,
labelled with the library as its source. Both libraries are extras, imported only here
and only in the child; a missing one is a one-line error naming the extra to install.
The adapters use only the libraries' documented public API (Zeus's `ZeusMonitor`
windows, CodeCarbon's `EmissionsTracker` with its `final_emissions_data`).

What the real libraries do that the adapters answer for:
- Zeus's `begin_window` / `end_window` synchronise CUDA through torch by default
  (`sync_execution=True`): without torch that is Zeus's own `RuntimeError`, with it CUDA is
  initialised before the workload runs. The meter already synchronises at window edges, so
  the adapter passes `sync_execution=False`. A `ZeusMonitor()` that finds no GPU and no
  readable RAPL zone monitors nothing, silently: the adapter says `energy_not_measured`.
- CodeCarbon 2.7-2.8 allow one tracker per machine at a time unless
  `allow_multiple_runs=True` (the default became True in 3.0); the adapter's windows overlap
  (the whole call and the workload's own), so it passes that where the tracker accepts it.
  A tracker that could not start still returns from `stop()` (behind its own
  `@suppress(Exception)`), without `final_emissions_data`: the adapter reads the figures
  defensively and says `energy_not_measured` with the reason instead of failing.
"""

from __future__ import annotations

import inspect
import numbers
from collections.abc import Mapping
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

    NOTHING_MONITORED = (
        "zeus: ZeusMonitor found no GPU and no readable RAPL CPU package here, so it measures "
        "nothing (no NVIDIA driver, and RAPL absent or readable by root only)"
    )

    def __init__(self, monitor: Any | None = None, gpu_uuids: Mapping[int, str] | None = None) -> None:
        """`gpu_uuids`: each of the monitor's GPU indices to its board's UUID; read from the
        monitor's own NVML handles when not given."""
        super().__init__()
        if monitor is None:
            zeus_monitor = import_extra("zeus.monitor", "zeus", "energy='zeus'", MeterUnavailable)
            monitor = zeus_monitor.ZeusMonitor()
        self.monitor = monitor
        self.gpu_uuids = dict(gpu_uuids) if gpu_uuids is not None else _zeus_gpu_uuids(monitor)

    @property
    def measures_gpus(self) -> bool:
        return bool(getattr(self.monitor, "gpu_indices", None))

    def _begin_readings(self, name: str) -> None:
        # The meter synchronises CUDA itself, and only where the workload initialised it.
        self.monitor.begin_window(name, sync_execution=False)

    def _monitors_nothing(self) -> bool:
        gpus = getattr(self.monitor, "gpu_indices", None)
        cpus = getattr(self.monitor, "cpu_indices", None)
        return gpus is not None and cpus is not None and not gpus and not cpus

    def _end_readings(self, name: str, duration_s: float) -> WindowMeasurement:
        measurement = self.monitor.end_window(name, sync_execution=False)
        duration_s = float(measurement.time)
        if self._monitors_nothing() or not (
            measurement.gpu_energy or getattr(measurement, "cpu_energy", None)
        ):
            return _not_measured(duration_s, self.NOTHING_MONITORED)
        parts = (
            ("gpu", "gpu", measurement.gpu_energy),
            ("cpu", "cpu-package-", getattr(measurement, "cpu_energy", None) or {}),
        )
        devices = [
            DeviceEnergy(
                device=f"{prefix}{index}",
                kind=kind,
                uuid=self.gpu_uuids.get(index) if kind == "gpu" else None,
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


def _zeus_gpu_uuids(monitor: Any) -> dict[int, str]:
    """Each GPU index of a `ZeusMonitor` to its UUID, through the NVML handle Zeus holds for it
    (`monitor.gpus.gpus[i].handle`, Zeus 0.10 to 0.16); empty where that cannot be read, and a
    GPU without a UUID is never taken for the same board in another run (`energy.uncertainty`)."""
    uuids: dict[int, str] = {}
    try:
        import pynvml

        boards = monitor.gpus.gpus
        for index in getattr(monitor, "gpu_indices", None) or []:
            uuid = pynvml.nvmlDeviceGetUUID(boards[index].handle)
            uuids[index] = uuid.decode() if isinstance(uuid, bytes) else str(uuid)
    except Exception:  # noqa: BLE001 - any Zeus or NVML version that differs: no UUIDs, said above
        return {}
    return uuids


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

    NO_FIGURES = (
        "codecarbon: its tracker stopped without figures (it did not start: another codecarbon "
        "tracker may hold its lock file; see codecarbon's log)"
    )
    NOTHING_MEASURED = "codecarbon: it reported no GPU or CPU energy for the window"

    def _tracker_options(self) -> dict[str, Any]:
        tracker_class = self.codecarbon.EmissionsTracker
        options: dict[str, Any] = {"save_to_file": False, "log_level": "error"}
        try:
            parameters = inspect.signature(tracker_class).parameters
        except (TypeError, ValueError):
            return options
        if "allow_multiple_runs" in parameters:
            # This meter's windows overlap; 2.7-2.8 would refuse the second tracker.
            options["allow_multiple_runs"] = True
        return options

    def _begin_readings(self, name: str) -> None:
        tracker = self.codecarbon.EmissionsTracker(**self._tracker_options())
        tracker.start()
        self._trackers[name] = tracker

    def _end_readings(self, name: str, duration_s: float) -> WindowMeasurement:
        tracker = self._trackers.pop(name)
        tracker.stop()
        data = getattr(tracker, "final_emissions_data", None)
        if data is None:
            return _not_measured(duration_s, self.NO_FIGURES)
        devices = [
            DeviceEnergy(
                device=kind,
                kind=kind,
                energy_j=float(kwh) * JOULES_PER_KWH,
                energy_source="codecarbon",
                duration_s=duration_s,
            )
            for kind, kwh in (("gpu", _kwh(data, "gpu_energy")), ("cpu", _kwh(data, "cpu_energy")))
            if kwh
        ]
        if not devices:
            return _not_measured(duration_s, self.NOTHING_MEASURED)
        return WindowMeasurement(
            duration_s=duration_s,
            devices=devices,
            warnings=_library_flags(duration_s, devices),
            notes=[self.NOTE],
        )


def _kwh(data: Any, field: str) -> float | None:
    """A figure of CodeCarbon's emissions data, when it is there and a number."""
    value = getattr(data, field, None)
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return float(value)
    return None


def _not_measured(duration_s: float, reason: str) -> WindowMeasurement:
    return WindowMeasurement(
        duration_s=duration_s,
        warnings=[QualityWarning(code=quality.ENERGY_NOT_MEASURED, message=f"energy not measured: {reason}")],
        notes=[reason],
    )


def _library_flags(duration_s: float, devices: list[DeviceEnergy]) -> list[QualityWarning]:
    # The libraries report no power samples, temperatures or clocks: only these flags apply.
    applicable = {quality.SHORT_WINDOW, quality.ZERO_ENERGY}
    return [w for w in quality.assess_window(duration_s, devices) if w.code in applicable]


def create_adapter(name: str) -> EnergyMeter:
    return ZeusMeter() if name == "zeus" else CodeCarbonMeter()
