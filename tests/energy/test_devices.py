"""The arithmetic over one device's readings: energy, average and peak power, the timeline."""

from __future__ import annotations

from pytest_llem.energy.devices import (
    DeviceTally,
    MeasuredDevice,
    consistent_peak,
    integrate_power_j,
    take_reading,
    thin_timeline,
)
from pytest_llem.results import PowerSample

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
