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
- CodeCarbon falls back on a model (the CPU's TDP, scaled by load or constant) where it
  finds no power interface, and says so only in its log: the adapter reads how each
  tracker measured (`codecarbon_estimates`) and never reports an estimate as energy. Its
  log runs at level warning, each distinct message shown once per process.
- CodeCarbon 2.7-2.8 allow one tracker per machine at a time unless
  `allow_multiple_runs=True` (the default became True in 3.0); the adapter's windows overlap
  (the whole call and the workload's own), so it passes that where the tracker accepts it.
  A tracker that could not start still returns from `stop()` (behind its own
  `@suppress(Exception)`), without `final_emissions_data`: the adapter reads the figures
  defensively and says `energy_not_measured` with the reason instead of failing.
"""

from __future__ import annotations

import inspect
import logging
import numbers
from collections.abc import Mapping
from types import ModuleType
from typing import Any

from pytest_llem.energy import quality
from pytest_llem.energy.meter import EnergyMeter, MeterOptions
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
    """`energy="codecarbon"`: a fresh `EmissionsTracker` per window (a tracker cannot restart).

    Only what CodeCarbon measured is energy. Where it found no power interface for the CPU it
    estimates (its TDP and CPU-load model): that figure is never `energy_j`; it is the reason
    energy is missing, or, with `allow_estimated_energy`, `estimated_energy_j`, flagged.
    """

    NOTE = "codecarbon: RAM energy is its estimate from memory size and is left out"
    NO_FIGURES = (
        "codecarbon: its tracker stopped without figures (it did not start: another codecarbon "
        "tracker may hold its lock file; see codecarbon's log)"
    )
    NOTHING_MEASURED = "codecarbon: it reported no GPU or CPU energy for the window"

    def __init__(self, codecarbon: ModuleType | None = None, allow_estimated_energy: bool = False) -> None:
        super().__init__()
        self.codecarbon = codecarbon or import_extra(
            "codecarbon", "codecarbon", "energy='codecarbon'", MeterUnavailable
        )
        self.allow_estimated_energy = allow_estimated_energy
        self._trackers: dict[str, Any] = {}
        _show_codecarbon_warnings_once()

    def _tracker_options(self) -> dict[str, Any]:
        tracker_class = self.codecarbon.EmissionsTracker
        # "warning", not "error": its fallback to an estimate is a warning, and must be seen.
        options: dict[str, Any] = {"save_to_file": False, "log_level": "warning"}
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
        figures = {kind: _kwh(data, f"{kind}_energy") for kind in ("gpu", "cpu")}
        estimates = codecarbon_estimates(tracker)
        devices = [
            DeviceEnergy(
                device=kind,
                kind=kind,
                energy_j=kwh * JOULES_PER_KWH,
                energy_source="codecarbon",
                duration_s=duration_s,
            )
            for kind, kwh in figures.items()
            if kwh and kind not in estimates
        ]
        estimated = {kind: kwh * JOULES_PER_KWH for kind, kwh in figures.items() if kwh and kind in estimates}
        reasons = [f"codecarbon: {estimates[kind]}" for kind in estimated]
        if not devices:
            window = _not_measured(duration_s, "; ".join(reasons) or self.NOTHING_MEASURED)
        else:
            window = WindowMeasurement(
                duration_s=duration_s,
                devices=devices,
                warnings=_library_flags(duration_s, devices),
                notes=[self.NOTE, *(f"{reason}; left out" for reason in reasons)],
            )
        if estimated and self.allow_estimated_energy:
            # The same sentence for every window, so that a result lists it once (merge_flags).
            flag = quality.flag(
                quality.ESTIMATED_ENERGY,
                f"estimated_energy_j is codecarbon's estimate of the {' and '.join(estimated).upper()}, "
                "not a measurement: in no energy figure, never gated",
            )
            window = window.model_copy(
                update={"estimated_energy_j": sum(estimated.values()), "warnings": [*window.warnings, flag]}
            )
        return window


#: CodeCarbon's CPU modes that read a power interface; every other mode ("constant",
#: "cpu_load", and any later one) is its TDP model, an estimate.
CODECARBON_MEASURING_CPU_MODES = frozenset({"intel_rapl", "intel_power_gadget", "windows_emi"})
#: CodeCarbon's hardware classes that read a meter: NVIDIA/AMD GPUs through NVML/AMDSMI energy
#: counters, Apple's powermetrics, a Raspberry Pi's power chip. `CPU` depends on its mode;
#: `RAM` is always an estimate (left out).
CODECARBON_MEASURING_HARDWARE = {"GPU": ("gpu",), "AppleSiliconChip": None, "Raspberry": None}


def codecarbon_estimates(tracker: Any) -> dict[str, str]:
    """Which of a started tracker's figures ("gpu", "cpu") CodeCarbon estimated, and why.

    Read from the tracker's hardware list (`tracker._hardware`, CodeCarbon 2.x and 3.x): its
    `CPU` object's `_mode`, and which classes it holds. A figure whose source cannot be told
    counts as an estimate: a guess is never reported as energy.
    """
    hardware = getattr(tracker, "_hardware", None)
    if not isinstance(hardware, list):
        unknown = "could not tell whether it measured or estimated (no hardware list on its tracker)"
        return {"gpu": unknown, "cpu": unknown}
    measured: set[str] = set()
    estimates: dict[str, str] = {}
    for item in hardware:
        kind_name = type(item).__name__
        if kind_name == "CPU":
            mode = getattr(item, "_mode", None)
            if mode in CODECARBON_MEASURING_CPU_MODES:
                measured.add("cpu")
            else:
                tdp = getattr(item, "_tdp", None)
                model = f"{tdp:g} W TDP" if isinstance(tdp, numbers.Real) else "a TDP"
                how = {"constant": f"a fixed share of {model}", "cpu_load": f"{model} scaled by CPU load"}
                estimates["cpu"] = (
                    f"its CPU figure is an estimate, not a measurement ({mode!r} mode: "
                    f"{how.get(mode, f'a model from {model}')}), since it found no power interface it "
                    "can read (RAPL, Power Gadget)"
                )
        elif kind_name in CODECARBON_MEASURING_HARDWARE:
            part = getattr(item, "_chip_part", None) or getattr(item, "chip_part", None)
            kinds = CODECARBON_MEASURING_HARDWARE[kind_name] or (
                (str(part).lower(),) if part else ("gpu", "cpu")
            )
            measured.update(kinds)
    for kind in ("gpu", "cpu"):
        if kind not in measured:
            estimates.setdefault(kind, f"could not tell how it measured the {kind.upper()}")
    return {kind: why for kind, why in estimates.items() if kind not in measured}


class _FirstTimeOnly(logging.Filter):
    """Lets each distinct message through once: a tracker per window repeats the same warnings."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[tuple[int, str]] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.levelno, record.getMessage())
        if key in self.seen:
            return False
        self.seen.add(key)
        return True


def _show_codecarbon_warnings_once() -> None:
    logger = logging.getLogger("codecarbon")
    if not any(isinstance(f, _FirstTimeOnly) for f in logger.filters):
        logger.addFilter(_FirstTimeOnly())


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


def create_adapter(name: str, options: MeterOptions | None = None) -> EnergyMeter:
    if name == "zeus":
        return ZeusMeter()
    return CodeCarbonMeter(allow_estimated_energy=bool(options and options.allow_estimated_energy))
