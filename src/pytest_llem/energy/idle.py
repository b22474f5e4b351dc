"""The idle baseline and the cool-down between experiments, both run by the pytest process.

Before an experiment's child starts (so before its model loads), the devices it will use
are measured at rest for `duration_s`; the result is cached per device for the session.
The session first waits for anything of its own that is still starting (the preloaded
interpreter's imports and model reads), and each reading keeps when it was taken and after
what, for the result.
Only NVML and powercap are read here: the pytest process never touches CUDA.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from pytest_llem.energy import DEFAULT_BASELINE_S
from pytest_llem.energy.devices import DeviceReadError, MeasuredDevice
from pytest_llem.energy.factory import open_devices
from pytest_llem.energy.meter import MeterOptions, SampledMeter
from pytest_llem.errors import MeterUnavailable
from pytest_llem.results import DeviceEnergy

# A temperature-based cool-down gives up after this long and says so.
MAX_COOLDOWN_S = 300.0
COOLDOWN_POLL_S = 1.0
# After waiting for something busy (the preloaded interpreter's imports), the baseline waits
# this long more: NVML's counter updates every ~100 ms and its power is a 1 s average, so
# either would still hold some of the busy power.
SETTLE_S = 1.0
# Meters whose devices the parent can read itself; adapters measure in their own way.
BASELINE_METERS = ("auto", "nvml", "rapl")


@dataclass(frozen=True)
class IdleReading:
    power_w: float
    temperature_c: float | None
    #: When it was measured (Unix time), so a result can say how old its baseline is.
    measured_at: float | None = None
    #: What the session had waited for before measuring (e.g. the preloaded interpreter's imports).
    conditions: str | None = None


# A counter read over a span is off by up to one update's worth of energy: over this many
# updates that is at most 5%; over fewer (a short `--llem-baseline`) the power readings are
# the better figure.
MIN_COUNTER_UPDATES = 20


def _idle_power_w(device: MeasuredDevice, figures: DeviceEnergy, duration_s: float) -> float | None:
    """The device's power at rest: its energy over the span, unless the span held fewer than
    `MIN_COUNTER_UPDATES` of its counter's updates (0.3 s of a counter that steps every 100 ms
    reads 2 to 4 steps: 70 W idle read as 91 W): then the mean of its power readings, which at
    rest is the idle power."""
    if device.counter_update_s is None or duration_s >= MIN_COUNTER_UPDATES * device.counter_update_s:
        return figures.avg_power_w
    powers = [s.power_w for s in figures.timeline if s.power_w is not None]
    return sum(powers) / len(powers) if powers else None


def with_baselines(options: MeterOptions, readings: Mapping[str, IdleReading]) -> MeterOptions:
    """`options` carrying these idle readings' power and age to the child."""
    return options.model_copy(
        update={
            "baseline_power_w": {key: r.power_w for key, r in readings.items()},
            "baseline_measured_at": {
                key: r.measured_at for key, r in readings.items() if r.measured_at is not None
            },
            "baseline_conditions": {
                key: r.conditions for key, r in readings.items() if r.conditions is not None
            },
        }
    )


@dataclass
class IdleBaselines:
    """Idle power (and temperature, for the cool-down) per device key, measured once per session."""

    duration_s: float = DEFAULT_BASELINE_S
    sample_interval_s: float = 0.1
    readings: dict[str, IdleReading] = field(default_factory=dict)
    sleep: Callable[[float], None] = time.sleep

    def measures(self, meter: str) -> bool:
        """Whether `measure` reads anything for `meter` (not for an adapter, nor "none")."""
        return self.duration_s > 0 and meter in BASELINE_METERS

    def measure(
        self,
        meter: str,
        options: MeterOptions,
        environ: Mapping[str, str],
        conditions: str | None = None,
        settle_s: float = 0.0,
    ) -> dict[str, IdleReading]:
        """Idle readings for the devices `meter` would read under `environ`; {} if none apply.
        `conditions`: what the caller waited for first, recorded with each new reading;
        `settle_s`: how long to wait after it before measuring (only when something is measured)."""
        if not self.measures(meter):
            return {}
        try:
            devices, _, closers = open_devices(meter, options, environ)
        except MeterUnavailable:
            return {}  # the child will fail this experiment with the reason
        try:
            unmeasured = [d for d in devices if d.key not in self.readings]
            if unmeasured:
                if settle_s > 0:
                    self.sleep(settle_s)
                idle_meter = SampledMeter(unmeasured, MeterOptions(sample_interval_s=self.sample_interval_s))
                measured_at = time.time()
                try:
                    idle_meter.begin_window("idle")
                    self.sleep(self.duration_s)
                    window = idle_meter.end_window("idle")
                finally:
                    idle_meter.close()
                for device, figures in zip(unmeasured, window.devices, strict=True):
                    power_w = _idle_power_w(device, figures, window.duration_s)
                    if power_w is not None:
                        self.readings[device.key] = IdleReading(
                            power_w, figures.temperature_start_c, measured_at, conditions
                        )
            return {d.key: self.readings[d.key] for d in devices if d.key in self.readings}
        finally:
            for close in closers:
                close()

    def cool_down(
        self,
        meter: str,
        options: MeterOptions,
        environ: Mapping[str, str],
        max_s: float,
        within_c: float | None,
    ) -> str | None:
        """Wait `max_s`, or until each GPU is within `within_c` of its idle temperature.

        Returns a sentence when the temperature target was not reached in time.
        """
        if within_c is None:
            if max_s > 0:
                self.sleep(max_s)
            return None
        limit_s = max_s if max_s > 0 else MAX_COOLDOWN_S
        try:
            devices, _, closers = open_devices(meter, options, environ)
        except MeterUnavailable:
            return None
        try:
            waited_s = 0.0
            while True:
                too_warm = []
                for device in devices:
                    idle = self.readings.get(device.key)
                    try:
                        current = device.read_status().temperature_c
                    except DeviceReadError:
                        current = None
                    if idle and idle.temperature_c is not None and current is not None:
                        if current > idle.temperature_c + within_c:
                            too_warm.append(
                                f"{device.label} {current:.0f} C (idle {idle.temperature_c:.0f} C)"
                            )
                if not too_warm:
                    return None
                if waited_s >= limit_s:
                    return f"cool-down gave up after {waited_s:.0f} s: {', '.join(too_warm)}"
                self.sleep(COOLDOWN_POLL_S)
                waited_s += COOLDOWN_POLL_S
        finally:
            for close in closers:
                close()
