"""The arithmetic over one device's readings: energy, average and peak power, the timeline."""

from __future__ import annotations

import pytest

from pytest_llem.energy.devices import (
    DeviceTally,
    MeasuredDevice,
    consistent_peak,
    integrate_power_j,
    take_reading,
    thin_timeline,
)
from pytest_llem.results import DeviceEnergy, PowerSample

# --- figures that agree with each other -----------------------------------------------------------


class ScriptedDevice(MeasuredDevice):
    """Readings taken from a script, one per call: (counter J, power W)."""

    kind = "gpu"
    label = "gpu0"

    def __init__(self, readings: list[tuple[float, float]]) -> None:
        self.readings = list(readings)

    def read_energy_j(self) -> float:
        raise AssertionError("read through read_energy_and_power")

    def read_energy_and_power(self) -> tuple[float, float]:
        return self.readings.pop(0)


def test_average_power_is_never_reported_above_peak_power():
    # 150 J in 1 s from the counter, while the two (1 s-averaged) samples read 100 W.
    tally = DeviceTally(ScriptedDevice([(0.0, 100.0), (150.0, 100.0)]))
    for t_s in (0.0, 1.0):
        tally.add(t_s, take_reading(tally.device, slow=False))
    device, notes = tally.result(1.0)
    assert device.avg_power_w == 150.0 and device.peak_power_w == 150.0
    assert any("stayed below the counter's average of 150.0 W" in n for n in notes)
    # A sample above the average is the peak, and no note is needed.
    tally = DeviceTally(ScriptedDevice([(0.0, 100.0), (150.0, 180.0)]))
    for t_s in (0.0, 1.0):
        tally.add(t_s, take_reading(tally.device, slow=False))
    device, notes = tally.result(1.0)
    assert (device.avg_power_w, device.peak_power_w, notes) == (150.0, 180.0, [])


# --- the arithmetic on its own ------------------------------------------------------------------------


def test_power_samples_integrate_by_the_trapezoid_rule_skipping_missing_power():
    samples = [
        PowerSample(t_s=0.0, power_w=100.0),
        PowerSample(t_s=0.5, temperature_c=40.0),  # a slow-field-only point has no power
        PowerSample(t_s=1.0, power_w=200.0),
        PowerSample(t_s=3.0, power_w=200.0),
    ]
    assert integrate_power_j(samples) == 150.0 + 400.0
    assert integrate_power_j(samples[:2]) is None  # one usable point is no integral


def test_a_long_timeline_is_thinned_evenly_and_keeps_both_ends():
    samples = [PowerSample(t_s=float(i), power_w=1.0) for i in range(11)]
    assert thin_timeline(samples, limit=20) == samples
    assert [s.t_s for s in thin_timeline(samples, limit=3)] == [0.0, 5.0, 10.0]
    assert len(thin_timeline(samples * 200)) == 1000


def test_the_peak_is_raised_to_the_average_only_when_every_sample_stayed_below_it():
    assert consistent_peak(150.0, 100.0) == 150.0
    assert consistent_peak(150.0, 180.0) == 180.0
    assert consistent_peak(None, 180.0) == 180.0
    assert consistent_peak(150.0, None) is None


class WrappingCounter(ScriptedDevice):
    counter_range_j = 1000.0


def test_a_counter_that_wraps_adds_its_range_and_one_that_goes_back_without_a_range_is_an_error():
    tally = DeviceTally(WrappingCounter([(900.0, 10.0), (50.0, 10.0)]))
    for t_s in (0.0, 1.0):
        tally.add(t_s, take_reading(tally.device, slow=False))
    device, _ = tally.result(1.0)
    assert device.energy_j == 150.0 and device.energy_source == "counter"
    tally = DeviceTally(ScriptedDevice([(900.0, 10.0), (50.0, 10.0)]))
    for t_s in (0.0, 1.0):
        tally.add(t_s, take_reading(tally.device, slow=False))
    device, notes = tally.result(1.0)
    # Without a trustworthy counter the power samples are integrated instead: 1 s at 10 W.
    assert device.energy_j == 10.0 and device.energy_source == "counter-power"
    assert notes[0].startswith("gpu0: energy counter went backwards (driver reloaded?)")


def _timeline(*points: tuple[float, float | None]) -> list[PowerSample]:
    return [PowerSample(t_s=t, power_w=p) for t, p in points]


def test_power_between_two_moments_is_interpolated_at_its_edges_and_held_beyond_the_ends():
    from pytest_llem.energy.devices import power_between_j

    timeline = _timeline((0.0, 100.0), (1.0, 300.0), (2.0, 300.0), (2.5, None))
    assert power_between_j(timeline, 0.0, 2.0) == 200.0 + 300.0
    # 0.5 s at 200-300 W: (200 + 300) / 2 x 0.5, then 1 s at 300 W.
    assert power_between_j(timeline, 0.5, 2.0) == 125.0 + 300.0
    assert power_between_j(timeline, 1.9, 3.0) == pytest.approx(300.0 * 1.1)  # held past the end
    assert power_between_j(timeline, 1.5, 1.5) == 0.0
    assert power_between_j(_timeline((0.0, 100.0)), 0.0, 1.0) is None


def test_energy_within_spans_is_the_measured_energy_shared_out_by_power():
    from pytest_llem.energy.devices import energy_within_j, samples_within

    # 1 s at 100 W then 1 s at 300 W by the power readings; the counter measured 440 J in all.
    timeline = _timeline((0.0, 100.0), (0.5, 100.0), (1.0, 100.0), (1.001, 300.0), (1.5, 300.0), (2.0, 300.0))
    device = DeviceEnergy(device="gpu0", energy_j=440.0, duration_s=2.0, timeline=timeline)
    low, high = energy_within_j(device, [(0.0, 1.0)]), energy_within_j(device, [(1.001, 2.0)])
    # The total stays the counter's; the readings only divide it: 1 to 3.
    assert low == pytest.approx(110.0, rel=0.01) and high == pytest.approx(330.0, rel=0.01)
    assert energy_within_j(device, [(0.0, 0.5), (1.5, 2.0)]) == pytest.approx(220.0, rel=0.01)
    assert samples_within(timeline, [(0.0, 0.5), (1.5, 2.0)]) == 4
    assert energy_within_j(device.model_copy(update={"energy_j": None}), [(0.0, 1.0)]) is None
    assert energy_within_j(device.model_copy(update={"timeline": []}), [(0.0, 1.0)]) is None
