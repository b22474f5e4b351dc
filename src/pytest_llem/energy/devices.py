"""The small interface a measured device implements, and the arithmetic over its readings.

A `MeasuredDevice` is one thing whose energy is read: a GPU through NVML, a RAPL zone
through powercap. It exposes raw readings only, in two speeds: what changes fast (the
energy counter and power, read on every sampling pass) and what changes slowly
(temperature, clocks, clock-limiting reasons, read on some passes and at window edges).
`DeviceTally` turns the readings taken over one window into a `DeviceEnergy`: counter
differences with wrap handling, or, when a device has no counter, the trapezoid integral of
its power samples. Simulated devices in the tests implement the same interface, so this
arithmetic is what CI exercises.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import TypeVar

from pytest_llem.results import DeviceEnergy, DeviceKind, PowerSample

Sample = TypeVar("Sample")

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
    #: The counter advances about this often (NVML: ~100 ms); None where it is finer than a window
    #: can be. A shorter window reads 0 J or a whole update's worth, so it is flagged.
    counter_update_s: float | None = None

    @property
    def key(self) -> str:
        return self.uuid or self.label

    @abstractmethod
    def read_energy_j(self) -> float | None:
        """Cumulative energy counter in joules, or None if the device has no counter."""

    def read_power_w(self) -> float | None:
        """Power now, in watts; None where the device does not report it."""
        return None

    def read_energy_and_power(self) -> tuple[float | None, float | None]:
        """The fast-changing readings, read on every pass: counter (J) and power (W).

        A device that can read both in one call (NVML's field values) overrides this.
        """
        return self.read_energy_j(), self.read_power_w()

    def read_slow_status(self) -> DeviceStatus:
        """Temperature, clock and throttle reasons (no power); devices without them report nothing."""
        return DeviceStatus()

    def read_status(self) -> DeviceStatus:
        """Everything at once: power and the slow-changing fields."""
        slow = self.read_slow_status()
        return DeviceStatus(
            power_w=self.read_power_w(),
            temperature_c=slow.temperature_c,
            sm_clock_mhz=slow.sm_clock_mhz,
            throttle_reasons=slow.throttle_reasons,
        )

    def other_processes(self, process_group: int) -> set[int]:
        """PIDs using the device that are not in `process_group`; empty if unknown."""
        return set()

    def persistence_mode_off(self) -> bool:
        return False


def _trapezoid_j(points: list[tuple[float, float]]) -> float:
    """Trapezoid rule over (t_s, power_w) points, in order."""
    return sum((t1 - t0) * (p0 + p1) / 2 for (t0, p0), (t1, p1) in zip(points, points[1:], strict=False))


def integrate_power_j(samples: list[PowerSample]) -> float | None:
    """Trapezoid rule over (t_s, power_w) points; None with fewer than two usable points."""
    points = [(s.t_s, s.power_w) for s in samples if s.power_w is not None]
    if len(points) < 2:
        return None
    return _trapezoid_j(points)


def power_between_j(samples: list[PowerSample], start_s: float, end_s: float) -> float | None:
    """Trapezoid integral of the timeline's power over [start_s, end_s] (seconds on it), with
    power interpolated linearly at the edges and held at the first or last reading beyond
    them; None with fewer than two usable points."""
    points = sorted((s.t_s, s.power_w) for s in samples if s.power_w is not None)
    if len(points) < 2 or end_s <= start_s:
        return None if len(points) < 2 else 0.0

    def power_at(t_s: float) -> float:
        if t_s <= points[0][0]:
            return points[0][1]
        for (t0, p0), (t1, p1) in zip(points, points[1:], strict=False):
            if t_s <= t1:
                return p0 + (p1 - p0) * (t_s - t0) / (t1 - t0) if t1 > t0 else p1
        return points[-1][1]

    inside = [(start_s, power_at(start_s)), *((t, p) for t, p in points if start_s < t < end_s)]
    inside.append((end_s, power_at(end_s)))
    return _trapezoid_j(inside)


def energy_within_j(device: DeviceEnergy, spans: list[tuple[float, float]]) -> float | None:
    """A device's energy over `spans` of its window (seconds on its timeline), when the spans
    are known only after the fact: its measured energy shared out by the power integrated
    over the spans against that over the whole timeline. The total stays the measured one
    (its counter's, where it has one); the power readings only say how it divides, so the
    split is as sharp as they are. None without energy or a usable timeline."""
    whole = integrate_power_j(device.timeline)
    if device.energy_j is None or not whole:
        return None
    parts = [power_between_j(device.timeline, start_s, end_s) for start_s, end_s in spans]
    if any(part is None for part in parts):
        return None
    return device.energy_j * sum(p for p in parts if p is not None) / whole


def samples_within(samples: list[PowerSample], spans: list[tuple[float, float]]) -> int:
    """How many power readings of the timeline lie inside `spans`."""
    return sum(
        1 for s in samples if s.power_w is not None and any(start <= s.t_s <= end for start, end in spans)
    )


def thin_timeline(samples: list[Sample], limit: int = MAX_TIMELINE_POINTS) -> list[Sample]:
    """At most `limit` of `samples` (a power timeline, a server's metrics), evenly spaced."""
    if len(samples) <= limit:
        return list(samples)
    step = (len(samples) - 1) / (limit - 1)
    return [samples[round(i * step)] for i in range(limit)]


# Samples that peak this far below the counter's average get a note (below it: edge jitter).
PEAK_BELOW_AVERAGE_NOTE = 0.01


def consistent_peak(average_w: float | None, peak_w: float | None) -> float | None:
    """The peak power to report: the highest sample, or the window's average when that is higher.

    Sampled power is a driver reading (a 1 s average on recent NVIDIA GPUs) taken a few times,
    while the average comes from the energy counter; a device's peak is never below its
    average, so when every sample is, the average is the best lower bound on the peak.
    """
    if average_w is not None and peak_w is not None and average_w > peak_w:
        return average_w
    return peak_w


@dataclass(frozen=True)
class Reading:
    """One device's readings at one instant; failures are data, so other devices go on."""

    counter_j: float | None = None
    has_counter: bool = True
    counter_error: str | None = None
    power_w: float | None = None
    #: The slow-changing fields, on the passes that read them; None on the others.
    status: DeviceStatus | None = None
    status_error: str | None = None
    lost: str | None = None


def take_reading(device: MeasuredDevice, slow: bool = True) -> Reading:
    """Read the fast fields, and the slow ones too when `slow`; only a lost device stops a read."""
    reading = _read_fast_fields(device)
    return with_slow_fields(device, reading) if slow else reading


def _read_fast_fields(device: MeasuredDevice) -> Reading:
    try:
        try:
            counter_j, power_w = device.read_energy_and_power()
        except DeviceReadError as exc:
            if exc.lost:
                raise
            power_w = _unless_failed(device.read_power_w)
            return Reading(counter_error=f"energy counter read failed: {exc}", power_w=power_w)
        return Reading(counter_j=counter_j, has_counter=counter_j is not None, power_w=power_w)
    except DeviceReadError as exc:
        return Reading(lost=str(exc))


def with_slow_fields(device: MeasuredDevice, reading: Reading) -> Reading:
    """`reading` with the device's slow fields (temperature, clocks, clock-limiting reasons) read
    now; a device lost on this read is lost, whatever the fast read found."""
    if reading.lost is not None:
        return reading
    try:
        return replace(reading, status=device.read_slow_status())
    except DeviceReadError as exc:
        if exc.lost:
            return Reading(lost=str(exc))
        return replace(reading, status_error=str(exc))


def _unless_failed(read: Callable[[], float | None]) -> float | None:
    try:
        return read()
    except DeviceReadError as exc:
        if exc.lost:
            raise
        return None


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
    status_error: str | None = None
    #: Seconds between the idle baseline's measurement and the window's start.
    baseline_age_s: float | None = None
    #: When the idle baseline was measured, and what the session had waited for first.
    baseline_measured_at: datetime | None = None
    baseline_conditions: str | None = None

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
        self.status_error = self.status_error or reading.status_error
        status = reading.status or DeviceStatus()
        self.throttle_reasons |= status.throttle_reasons
        if reading.power_w is not None or status.temperature_c is not None:
            self.samples.append(
                PowerSample(
                    t_s=t_s,
                    power_w=reading.power_w,
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
        if self.status_error is not None:
            notes.append(
                f"{self.device.label}: temperature, clock or throttle reasons unreadable "
                f"({self.status_error}); energy is unaffected"
            )
        powers = [s.power_w for s in self.samples if s.power_w is not None]
        temperatures = [s.temperature_c for s in self.samples if s.temperature_c is not None]
        average = energy_j / duration_s if energy_j is not None and duration_s > 0 else None
        peak = consistent_peak(average, max(powers) if powers else None)
        if powers and average is not None and average > max(powers) * (1 + PEAK_BELOW_AVERAGE_NOTE):
            notes.append(
                f"{self.device.label}: the {len(powers)} power samples (at most {max(powers):.1f} W) "
                f"stayed below the counter's average of {average:.1f} W, so they missed the peak; "
                "peak power is reported as that average"
            )
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
                baseline_age_s=self.baseline_age_s,
                baseline_measured_at=self.baseline_measured_at,
                baseline_conditions=self.baseline_conditions,
                avg_power_w=average,
                peak_power_w=peak,
                temperature_start_c=temperatures[0] if temperatures else None,
                temperature_end_c=temperatures[-1] if temperatures else None,
                throttle_reasons=sorted(self.throttle_reasons),
                power_samples=len(powers),
                timeline=thin_timeline(self.samples),
            ),
            notes,
        )
