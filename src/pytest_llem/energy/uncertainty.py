"""The uncertainty of an energy figure, part by part (the model: docs/uncertainty.md).

Each part is a standard uncertainty (one standard deviation) relative to the figure; an error
known only by its bounds counts as spread evenly between them (width / sqrt(12)). Parts are
independent and combine as the root sum of their squares:

- `nvml_gain`: NVML's readings carry a per-board gain error within about ±5% (Yang, Adámek,
  Armour, SC'24): 5% / sqrt(3). Systematic per board: it cancels between two runs on the
  same GPUs (same UUIDs) and counts only when the boards differ.
- `counter_resolution`: a counter read at a window's edge is off by up to one update period
  (NVML's energy counter: about 100 ms; RAPL: about 1 ms); two edges per window:
  period / sqrt(6) x sqrt(windows) / duration.
- `power_sampling`: energy integrated from NVML's power field, a running average over about
  1 s (on A100/H100 fed by ~25 ms of every 100 ms), lags each window by up to one averaging
  period: 1 s / sqrt(12) x sqrt(windows) / duration.
- `round_spread`: with several rounds, the half-width of the 95% t-interval of the rounds'
  energy, relative to its mean. Shown in the figure's total; a comparison leaves it to the
  rank test over the rounds (`gating.stats`), which already weighs the spread.

RAPL's own error (a model on older Intel CPUs, measured on newer ones) is not quantified;
sources without a model here (CodeCarbon) get no uncertainty, which the summary shows as no ±.
"""

from __future__ import annotations

import math

from pytest_llem.results import DeviceEnergy, EnergyUncertainty, ExperimentResult, WindowMeasurement

#: The published bound of NVML's per-board gain error (±5%).
NVML_GAIN_BOUND = 0.05
NVML_COUNTER_PERIOD_S = 0.1
RAPL_COUNTER_PERIOD_S = 0.001
NVML_POWER_AVERAGING_S = 1.0
#: Parts measured from the data, not the meter: a comparison's rank test covers them.
STATISTICAL_PARTS = ("round_spread",)
#: Energy sources (`DeviceEnergy.energy_source`) read from NVML's energy counter.
NVML_COUNTERS = ("nvml-counter", "zeus")


def energy_uncertainty(result: ExperimentResult) -> EnergyUncertainty | None:
    """The parts for `result.energy_j`; None when it has no energy or a source has no model here."""
    uncertainty = _meter_uncertainty(
        result.energy_by_device, result.energy_j, result.window_count, result.duration_s
    )
    if uncertainty is None:
        return None
    spread = result.statistics.get("energy_j")
    if spread is not None and spread.ci95_high is not None and spread.ci95_low is not None and spread.mean:
        uncertainty.parts["round_spread"] = (spread.ci95_high - spread.ci95_low) / 2 / abs(spread.mean)
    return uncertainty


def window_uncertainty(measured: WindowMeasurement) -> EnergyUncertainty | None:
    """The parts for one window's energy (a serving load's steady state, say), on its own."""
    return _meter_uncertainty(measured.devices, measured.energy_j, 1, measured.duration_s)


def _meter_uncertainty(
    devices: list[DeviceEnergy], total: float | None, window_count: int, duration_s: float
) -> EnergyUncertainty | None:
    if not total or not devices or any(d.energy_j is None for d in devices):
        return None
    gain, resolution, sampling = [], [], []
    for device in devices:
        energy = device.energy_j or 0.0
        # Per window, an error of standard deviation s; over n windows sqrt(n) s, of duration T.
        per_window = math.sqrt(window_count) / (device.duration_s or duration_s or math.inf)
        source = device.energy_source or ""
        if source in NVML_COUNTERS or source == "nvml-power":
            gain.append(NVML_GAIN_BOUND / math.sqrt(3) * energy)
        if source in NVML_COUNTERS:
            resolution.append(NVML_COUNTER_PERIOD_S / math.sqrt(6) * per_window * energy)
        elif source == "nvml-power":
            sampling.append(NVML_POWER_AVERAGING_S / math.sqrt(12) * per_window * energy)
        elif source == "rapl":
            resolution.append(RAPL_COUNTER_PERIOD_S / math.sqrt(6) * per_window * energy)
        else:
            return None
    parts = {
        name: _root_sum_square(values) / total
        for name, values in (
            ("nvml_gain", gain),
            ("counter_resolution", resolution),
            ("power_sampling", sampling),
        )
        if values
    }
    return EnergyUncertainty(
        parts=parts,
        systematic=["nvml_gain"] if gain else [],
        devices=[_identity(d) for d in devices],
    )


def change_uncertainty(before: EnergyUncertainty | None, after: EnergyUncertainty | None) -> float | None:
    """The relative uncertainty the meters give a change between two figures: systematic parts
    cancel on the same devices; the statistical ones are the rank test's. None when either
    side has none."""
    if before is None or after is None:
        return None
    same_devices = sorted(before.devices) == sorted(after.devices)
    return math.hypot(_meter_part(before, same_devices), _meter_part(after, same_devices))


def _meter_part(uncertainty: EnergyUncertainty, same_devices: bool) -> float:
    left_out = set(STATISTICAL_PARTS) | (set(uncertainty.systematic) if same_devices else set())
    return math.sqrt(sum(v * v for k, v in uncertainty.parts.items() if k not in left_out))


def _root_sum_square(values: list[float]) -> float:
    return math.sqrt(sum(v * v for v in values))


def _identity(device: DeviceEnergy) -> str:
    return device.uuid or device.device
