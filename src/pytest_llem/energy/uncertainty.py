"""The uncertainty of an energy figure, part by part (the model: docs/uncertainty.md).

Each part is a standard uncertainty (one standard deviation) relative to the figure; an error
known only by its bounds counts as spread evenly between them (width / sqrt(12)). Parts are
independent and combine as the root sum of their squares:

- `nvml_gain`: NVML's readings carry a per-board gain error within about ±5% (Yang, Adámek,
  Armour, SC'24): 5% / sqrt(3). Systematic per board: it cancels between two runs on the
  same GPUs (same UUIDs) and counts only when the boards differ; a GPU without a UUID (an
  adapter that could not tell) never counts as the same board.
- `rapl_accuracy`: RAPL's own error against an external meter. Studies find it well
  correlated with wall power but offset, by amounts that differ by CPU generation and domain
  (Khan et al. 2018; Fahad et al. 2019), with no bound that holds for every CPU: this model
  takes ±10% (twice NVML's published bound), 10% / sqrt(3). Systematic per package: it
  cancels between two runs on the same host's same zones.
- `counter_resolution`: a counter read at a window's edge is off by up to one update period
  (NVML's energy counter: about 100 ms; RAPL: about 1 ms); two edges per window:
  period / sqrt(6) x sqrt(windows) / duration.
- `power_sampling`: energy integrated from NVML's power field, a running average over about
  1 s (on A100/H100 fed by ~25 ms of every 100 ms), lags each window by up to one averaging
  period: 1 s / sqrt(12) x sqrt(windows) / duration.
- `round_spread`: with several rounds, the half-width of the 95% t-interval of the rounds'
  energy, relative to its mean. Shown in the figure's total; a comparison leaves it to the
  rank test over the rounds (`gating.stats`), which already weighs the spread.

Zeus reads GPUs through NVML and CPUs through RAPL: its devices take the model of their kind.
Sources without a model here (CodeCarbon) get no uncertainty, which the summary shows as no ±.
"""

from __future__ import annotations

import math

from pytest_llem.results import DeviceEnergy, EnergyUncertainty, ExperimentResult, WindowMeasurement

#: The published bound of NVML's per-board gain error (±5%).
NVML_GAIN_BOUND = 0.05
#: The bound this model takes for RAPL's error against an external meter (docs/uncertainty.md).
RAPL_ACCURACY_BOUND = 0.10
NVML_COUNTER_PERIOD_S = 0.1
RAPL_COUNTER_PERIOD_S = 0.001
NVML_POWER_AVERAGING_S = 1.0
#: Parts measured from the data, not the meter: a comparison's rank test covers them.
STATISTICAL_PARTS = ("round_spread",)
#: Energy sources (`DeviceEnergy.energy_source`) of each model; Zeus's by the device's kind.
NVML_COUNTERS = ("nvml-counter",)
RAPL_COUNTERS = ("rapl",)
#: Parts that are systematic per device: they cancel between runs on the same devices.
SYSTEMATIC_PARTS = ("nvml_gain", "rapl_accuracy")
#: Prefix of a device identity that cannot be matched across runs (a GPU without a UUID).
UNIDENTIFIED = "unidentified:"


def energy_uncertainty(result: ExperimentResult) -> EnergyUncertainty | None:
    """The parts for `result.energy_j`; None when it has no energy or a source has no model here."""
    host = result.placement.host if result.placement is not None else None
    uncertainty = _meter_uncertainty(
        result.energy_by_device, result.energy_j, result.window_count, result.duration_s, host
    )
    if uncertainty is None:
        return None
    spread = result.statistics.get("energy_j")
    if spread is not None and spread.ci95_high is not None and spread.ci95_low is not None and spread.mean:
        uncertainty.parts["round_spread"] = (spread.ci95_high - spread.ci95_low) / 2 / abs(spread.mean)
    return uncertainty


def window_uncertainty(measured: WindowMeasurement, host: str | None = None) -> EnergyUncertainty | None:
    """The parts for one window's energy (a serving load's steady state, say), on its own."""
    return _meter_uncertainty(measured.devices, measured.energy_j, 1, measured.duration_s, host)


def _meter_uncertainty(
    devices: list[DeviceEnergy],
    total: float | None,
    window_count: int,
    duration_s: float,
    host: str | None,
) -> EnergyUncertainty | None:
    if not total or not devices or any(d.energy_j is None for d in devices):
        return None
    parts: dict[str, list[float]] = {
        "nvml_gain": [],
        "rapl_accuracy": [],
        "counter_resolution": [],
        "power_sampling": [],
    }
    for device in devices:
        energy = device.energy_j or 0.0
        # Per window, an error of standard deviation s; over n windows sqrt(n) s, of duration T.
        per_window = math.sqrt(window_count) / (device.duration_s or duration_s or math.inf)
        model = _model(device)
        if model == "nvml-counter":
            parts["nvml_gain"].append(NVML_GAIN_BOUND / math.sqrt(3) * energy)
            parts["counter_resolution"].append(NVML_COUNTER_PERIOD_S / math.sqrt(6) * per_window * energy)
        elif model == "nvml-power":
            parts["nvml_gain"].append(NVML_GAIN_BOUND / math.sqrt(3) * energy)
            parts["power_sampling"].append(NVML_POWER_AVERAGING_S / math.sqrt(12) * per_window * energy)
        elif model == "rapl":
            parts["rapl_accuracy"].append(RAPL_ACCURACY_BOUND / math.sqrt(3) * energy)
            parts["counter_resolution"].append(RAPL_COUNTER_PERIOD_S / math.sqrt(6) * per_window * energy)
        else:
            return None
    relative = {name: _root_sum_square(values) / total for name, values in parts.items() if values}
    return EnergyUncertainty(
        parts=relative,
        systematic=[name for name in SYSTEMATIC_PARTS if name in relative],
        devices=[_identity(d, host) for d in devices],
    )


def _model(device: DeviceEnergy) -> str | None:
    """Which meter model a device's figure follows: its source's, Zeus's by the device's kind."""
    source = device.energy_source or ""
    if source == "zeus":
        return "nvml-counter" if device.kind == "gpu" else "rapl"
    if source in NVML_COUNTERS or source == "nvml-power":
        return "nvml-counter" if source in NVML_COUNTERS else "nvml-power"
    return "rapl" if source in RAPL_COUNTERS else None


def change_uncertainty(before: EnergyUncertainty | None, after: EnergyUncertainty | None) -> float | None:
    """The relative uncertainty the meters give a change between two figures: systematic parts
    cancel on the same devices; the statistical ones are the rank test's. None when either
    side has none."""
    if before is None or after is None:
        return None
    same_devices = sorted(before.devices) == sorted(after.devices) and not any(
        d.startswith(UNIDENTIFIED) for d in before.devices
    )
    return math.hypot(_meter_part(before, same_devices), _meter_part(after, same_devices))


def _meter_part(uncertainty: EnergyUncertainty, same_devices: bool) -> float:
    left_out = set(STATISTICAL_PARTS) | (set(uncertainty.systematic) if same_devices else set())
    return math.sqrt(sum(v * v for k, v in uncertainty.parts.items() if k not in left_out))


def _root_sum_square(values: list[float]) -> float:
    return math.sqrt(sum(v * v for v in values))


def _identity(device: DeviceEnergy, host: str | None) -> str:
    """What makes a device the same one in another run: a GPU's UUID; a CPU zone's label on its
    host. A GPU without a UUID, or a zone on an unknown host, can never be matched."""
    if device.uuid:
        return device.uuid
    if device.kind == "gpu" or host is None:
        return f"{UNIDENTIFIED}{device.device}"
    return f"{device.device}@{host}"
