"""The small interface a measured device implements, and the arithmetic over its readings.

A `MeasuredDevice` is one thing whose energy is read: a GPU through NVML, a RAPL zone
through powercap. It exposes raw readings only; `DeviceTally` turns the readings taken over
one window into a `DeviceEnergy`: counter differences with wrap handling, or, when a device
has no counter, the trapezoid integral of its power samples. Simulated devices in the tests
implement the same interface, so this arithmetic is what CI exercises.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

from pytest_llem.results import DeviceEnergy, DeviceKind, PowerSample

# A stored timeline keeps at most this many points (evenly thinned); statistics use them all.
MAX_TIMELINE_POINTS = 1000


class DeviceReadError(Exception):
    """A reading failed. `lost` means the device is gone for good (fell off the bus, reset)."""

    def __init__(self, message: str, lost: bool = False) -> None:
        super().__init__(message)
        self.lost = lost


@dataclass(frozen=True)
class DeviceStatus:
    """An instantaneous reading; a field is None where the device does not report it."""

    power_w: float | None = None
    temperature_c: float | None = None
    sm_clock_mhz: float | None = None
    #: Names of active clock-limiting reasons (power cap, thermal slowdown, ...).
    throttle_reasons: frozenset[str] = frozenset()


class MeasuredDevice(ABC):
    kind: DeviceKind
    #: Label for people (gpu0, cpu-package-0); `key` identifies the device across processes.
    label: str
    name: str | None = None
    uuid: str | None = None
    #: Source name when the energy counter is used, e.g. "nvml-counter" or "rapl".
    counter_source: str = "counter"
    #: The counter restarts from zero after this many joules (RAPL); None if it never wraps.
    counter_range_j: float | None = None

    @property
    def key(self) -> str:
        return self.uuid or self.label

    @abstractmethod
    def read_energy_j(self) -> float | None:
        """Cumulative energy counter in joules, or None if the device has no counter."""

    def read_status(self) -> DeviceStatus:
        """Power, temperature, clock and throttle reasons; devices without them report nothing."""
        return DeviceStatus()

    def other_processes(self, process_group: int) -> set[int]:
        """PIDs using the device that are not in `process_group`; empty if unknown."""
        return set()

    def persistence_mode_off(self) -> bool:
        return False


def integrate_power_j(samples: list[PowerSample]) -> float | None:
    """Trapezoid rule over (t_s, power_w) points; None with fewer than two usable points."""
    points = [(s.t_s, s.power_w) for s in samples if s.power_w is not None]
    if len(points) < 2:
        return None
    return sum((t1 - t0) * (p0 + p1) / 2 for (t0, p0), (t1, p1) in zip(points, points[1:], strict=False))


def thin_timeline(samples: list[PowerSample], limit: int = MAX_TIMELINE_POINTS) -> list[PowerSample]:
    if len(samples) <= limit:
        return list(samples)
    step = (len(samples) - 1) / (limit - 1)
    return [samples[round(i * step)] for i in range(limit)]


@dataclass(frozen=True)
class Reading:
    """One device's readings at one instant; failures are data, so other devices go on."""

    counter_j: float | None = None
    has_counter: bool = True
    counter_error: str | None = None
    status: DeviceStatus | None = None
    lost: str | None = None


def take_reading(device: MeasuredDevice) -> Reading:
    try:
        try:
            counter_j = device.read_energy_j()
        except DeviceReadError as exc:
            if exc.lost:
                raise
            return Reading(counter_error=f"energy counter read failed: {exc}", status=device.read_status())
        return Reading(counter_j=counter_j, has_counter=counter_j is not None, status=device.read_status())
    except DeviceReadError as exc:
        return Reading(lost=str(exc))


@dataclass
class DeviceTally:
    """The readings of one device over one window, accumulated as they arrive."""

    device: MeasuredDevice
    baseline_power_w: float | None = None
    counter_j: float | None = None
    accumulated_j: float = 0.0
    has_counter: bool = True
    counter_error: str | None = None
    lost: str | None = None
    samples: list[PowerSample] = field(default_factory=list)
    throttle_reasons: set[str] = field(default_factory=set)
    other_pids: set[int] = field(default_factory=set)

    def add(self, t_s: float, reading: Reading) -> None:
        if self.lost is not None:
            return
        if reading.lost is not None:
            self.lost = reading.lost
            return
        if not reading.has_counter:
            self.has_counter = False
        elif reading.counter_error is not None:
            self.counter_error = self.counter_error or reading.counter_error
        elif reading.counter_j is not None and self.counter_error is None:
            self._add_counter(reading.counter_j)
        status = reading.status
        if status is None:
            return
        self.throttle_reasons |= status.throttle_reasons
        if status.power_w is not None or status.temperature_c is not None:
            self.samples.append(
                PowerSample(
                    t_s=t_s,
                    power_w=status.power_w,
                    temperature_c=status.temperature_c,
                    sm_clock_mhz=status.sm_clock_mhz,
                )
            )

    def _add_counter(self, counter_j: float) -> None:
        if self.counter_j is not None:
            delta = counter_j - self.counter_j
            if delta < 0:
                if self.device.counter_range_j is None:
                    self.counter_error = "energy counter went backwards (driver reloaded?)"
                    return
                # Wrapped once since the last read; reads come often enough that it cannot wrap twice.
                delta += self.device.counter_range_j
            self.accumulated_j += delta
        self.counter_j = counter_j

    def result(self, duration_s: float) -> tuple[DeviceEnergy, list[str]]:
        """The device's figures for the window, and notes on how they were obtained."""
        notes: list[str] = []
        energy_j: float | None = None
        source: str | None = None
        if self.lost is not None:
            notes.append(f"{self.device.label}: device lost during the window ({self.lost}); no energy")
        elif self.has_counter and self.counter_error is None and self.counter_j is not None:
            energy_j, source = self.accumulated_j, self.device.counter_source
        else:
            energy_j = integrate_power_j(self.samples)
            if energy_j is not None:
                source = f"{self.device.counter_source.split('-')[0]}-power"
            why = self.counter_error or "the device has no energy counter"
            if energy_j is not None:
                notes.append(f"{self.device.label}: {why}; energy integrated from power samples")
            else:
                notes.append(f"{self.device.label}: {why}, and too few power samples to integrate")
        powers = [s.power_w for s in self.samples if s.power_w is not None]
        temperatures = [s.temperature_c for s in self.samples if s.temperature_c is not None]
        average = energy_j / duration_s if energy_j is not None and duration_s > 0 else None
        return (
            DeviceEnergy(
                device=self.device.label,
                kind=self.device.kind,
                name=self.device.name,
                uuid=self.device.uuid,
                energy_j=energy_j,
                energy_source=source,
                duration_s=duration_s,
                baseline_power_w=self.baseline_power_w,
                avg_power_w=average,
                peak_power_w=max(powers) if powers else None,
                temperature_start_c=temperatures[0] if temperatures else None,
                temperature_end_c=temperatures[-1] if temperatures else None,
                throttle_reasons=sorted(self.throttle_reasons),
                power_samples=len(powers),
                timeline=thin_timeline(self.samples),
            ),
            notes,
        )
