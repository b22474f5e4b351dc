"""The sampled meter's windows: energy per device, failures, the flags it raises, against a simulated NVML.

The simulated GPUs integrate their power profile exactly, so every figure below has a known
right answer; timing slack comes only from reading the clock at slightly different moments.
"""

from __future__ import annotations

import sys
import time
from types import SimpleNamespace

import pytest
from simulated_windows import FAST, codes, gpus, measure

from pytest_llem.energy import quality
from pytest_llem.energy.devices import MeasuredDevice
from pytest_llem.energy.meter import MeterOptions, NoEnergyMeter, SampledMeter

# --- energy: counter, integrated power, failures ---------------------------------------------------


def test_counter_energy_per_device_and_total(fake_nvml):
    session = gpus(fake_nvml, {"power_profile": [[0, 100.0]]}, {"power_profile": [[0, 250.0]]})
    window = measure(SampledMeter(session.visible_gpus(None), FAST), 0.5)
    gpu0, gpu1 = window.devices
    assert (gpu0.energy_source, gpu1.energy_source) == ("nvml-counter", "nvml-counter")
    assert gpu0.energy_j == pytest.approx(100.0 * window.duration_s, rel=0.03)
    assert gpu1.energy_j == pytest.approx(250.0 * window.duration_s, rel=0.03)
    assert window.energy_j == pytest.approx(gpu0.energy_j + gpu1.energy_j)
    assert gpu0.avg_power_w == pytest.approx(100.0, rel=0.03)
    assert gpu1.peak_power_w == pytest.approx(250.0, rel=0.03) and gpu1.power_samples >= 10
    assert all(d.peak_power_w >= d.avg_power_w for d in window.devices)
    assert gpu0.name == "Simulated GPU" and gpu0.uuid == "GPU-0000-sim"


def test_a_power_step_inside_the_window_is_counted(fake_nvml):
    session = gpus(fake_nvml, {"power_profile": [[0, 50.0], [0.3, 350.0]]})
    window = measure(SampledMeter(session.visible_gpus(None), FAST), 0.6)
    (gpu,) = window.devices
    # ~0.3 s at 50 W, then the rest at 350 W; the profile's clock started just before the window.
    assert 0.3 * 50 + 0.2 * 350 < gpu.energy_j < 0.3 * 50 + 0.35 * 350
    # Sampled power is NVML's 1 s average: 0.3 s after the step it has not caught up, so the
    # peak reported is the counter's average over the window (the peak is never below it).
    assert max(s.power_w for s in gpu.timeline) < 350.0 * 0.7
    assert gpu.peak_power_w == pytest.approx(gpu.avg_power_w)


def test_without_an_energy_counter_power_samples_are_integrated(fake_nvml):
    session = gpus(fake_nvml, {"has_energy_counter": False, "power_profile": [[0, 200.0]]})
    window = measure(SampledMeter(session.visible_gpus(None), FAST), 0.5)
    (gpu,) = window.devices
    assert gpu.energy_source == "nvml-power"
    # The trapezoid covers first to last sample, which is the window give or take a read.
    assert gpu.energy_j == pytest.approx(200.0 * window.duration_s, rel=0.05)
    assert any("has no energy counter; energy integrated from power samples" in n for n in window.notes)


def test_a_counter_that_fails_mid_window_falls_back_to_power_samples(fake_nvml):
    session = gpus(fake_nvml, {"counter_fails_after_s": 0.2, "power_profile": [[0, 120.0]]})
    window = measure(SampledMeter(session.visible_gpus(None), FAST), 0.5)
    (gpu,) = window.devices
    assert gpu.energy_source == "nvml-power"
    assert gpu.energy_j == pytest.approx(120.0 * window.duration_s, rel=0.05)
    assert any(
        "energy counter read failed: nvmlDeviceGetTotalEnergyConsumption: Unknown Error" in n
        for n in window.notes
    )


def test_a_gpu_lost_mid_window_has_no_energy_and_the_total_is_not_a_partial_sum(fake_nvml):
    session = gpus(fake_nvml, {}, {"lost_after_s": 0.2})
    window = measure(SampledMeter(session.visible_gpus(None), FAST), 0.4)
    gpu0, gpu1 = window.devices
    assert gpu0.energy_j is not None and gpu1.energy_j is None
    assert window.energy_j is None
    assert quality.DEVICE_LOST in codes(window)
    # The call that found it lost is named: on every pass, the batched counter-and-power read.
    assert any(
        "gpu1: device lost during the window (nvmlDeviceGetFieldValues: GPU is lost)" in n
        for n in window.notes
    )


class StallingCounter(MeasuredDevice):
    """A 100 W device whose counter is exact at the moment it is read. Each read first sleeps for
    the next of `stalls_s`, if any: a thread preempted between an edge's timestamp and the
    driver call, as a busy host does for a time slice at a time."""

    kind = "gpu"
    label = "gpu0"
    power_w = 100.0

    def __init__(self) -> None:
        self.stalls_s: list[float] = []
        self.every_read_s = 0.0  # a driver whose every read takes this long
        self.reads = 0

    def read_energy_j(self) -> float:
        self.reads += 1
        if self.stalls_s:
            time.sleep(self.stalls_s.pop(0))
        elif self.every_read_s:
            time.sleep(self.every_read_s)
        return self.power_w * time.perf_counter()


def stalling_meter() -> tuple[StallingCounter, SampledMeter]:
    """A meter over one stalling counter that has measured one window (its first edge learns how
    long a read takes), its sampling thread too slow to read inside the windows that follow."""
    device = StallingCounter()
    meter = SampledMeter([device], MeterOptions(sample_interval_s=600))
    meter.begin_window("learning")
    meter.end_window("learning")
    return device, meter


@pytest.mark.parametrize("edge", ["begin", "end"])
def test_an_edge_whose_counter_read_stalled_is_read_again(edge):
    device, meter = stalling_meter()
    stall = [0.05]  # 5 J at 100 W: a tenth of the window, were the stalled read kept
    device.stalls_s = stall if edge == "begin" else []
    meter.begin_window("w")
    time.sleep(0.05)
    device.stalls_s = stall if edge == "end" else []
    reads_before_end = device.reads
    window = meter.end_window("w")
    meter.close()
    assert window.energy_j == pytest.approx(device.power_w * window.duration_s, abs=0.2)  # 2 ms at 100 W
    assert not any("stalled" in note for note in window.notes)
    if edge == "end":
        assert device.reads - reads_before_end == 2  # the stalled read and the one kept


def test_an_edge_that_stalls_in_every_attempt_says_so_in_the_window_notes():
    device, meter = stalling_meter()
    meter.begin_window("w")
    device.stalls_s = [0.02, 0.03, 0.02]
    window = meter.end_window("w")
    meter.close()
    # The learning window (its first edge reads twice), this window's begin, three attempts.
    assert device.reads >= 3 + 1 + 3 and not device.stalls_s
    (note,) = [note for note in window.notes if "stalled" in note]
    assert "stalled for up to 20." in note and "energy and duration may span times that differ" in note


def test_reads_that_slow_down_for_good_are_soon_no_longer_read_again():
    device, meter = stalling_meter()
    device.every_read_s = 0.02  # from now on: not a stall, the driver's reads take this long
    reads, notes = [], []
    for _ in range(10):
        before = device.reads
        meter.begin_window("w")
        window = meter.end_window("w")
        reads.append(device.reads - before)
        notes.append([note for note in window.notes if "stalled" in note])
    meter.close()
    assert reads[0] == 6 and notes[0]  # at first, both edges read three times and say so
    assert sum(reads[-3:]) <= 7  # then each reads once (a stall on a busy host may add one)


# Its two windows' figures come from reads a sampling thread makes as the sleeps end: another
# test's load beside it delays them past the 5% this allows.
@pytest.mark.alone
def test_overlapping_windows_each_get_their_own_figures(fake_nvml):
    session = gpus(fake_nvml, {"power_profile": [[0, 100.0]]})
    meter = SampledMeter(session.visible_gpus(None), FAST)
    meter.begin_window("outer")
    time.sleep(0.2)
    meter.begin_window("inner")
    time.sleep(0.2)
    inner = meter.end_window("inner")
    outer = meter.end_window("outer")
    meter.close()
    assert inner.energy_j == pytest.approx(100.0 * inner.duration_s, rel=0.05)
    assert outer.energy_j == pytest.approx(100.0 * outer.duration_s, rel=0.05)
    assert outer.energy_j > 1.7 * inner.energy_j


def test_a_window_shorter_than_the_counter_step_is_flagged_not_silently_0_j(fake_nvml, monkeypatch):
    monkeypatch.delenv(fake_nvml.IDEAL_ENV, raising=False)
    session = gpus(fake_nvml, {"power_profile": [[0, 200.0]]})
    time.sleep(0.03)  # the window starts at some phase of the counter's 100 ms steps
    window = measure(SampledMeter(session.visible_gpus(None), FAST), 0.05)
    (gpu,) = window.devices
    # The counter read 0 J or one whole step (0.1 s at 200 W), never the window's 10 J.
    assert gpu.energy_j == pytest.approx(0.0, abs=1e-6) or gpu.energy_j == pytest.approx(20.0)
    resolution = next(w for w in window.warnings if w.code == quality.COUNTER_RESOLUTION)
    assert resolution.message.startswith("gpu0: the window lasted ")
    assert "less than the energy counter's update period (~100 ms)" in resolution.message
    assert resolution.doubts_a_figure
    # A window of several steps is not.
    window = measure(SampledMeter(session.visible_gpus(None), FAST), 0.3)
    assert quality.COUNTER_RESOLUTION not in codes(window)


def test_short_windows_and_few_samples_are_flagged_with_their_thresholds(fake_nvml):
    session = gpus(fake_nvml, {})
    window = measure(SampledMeter(session.visible_gpus(None), MeterOptions(sample_interval_s=0.5)), 0.2)
    assert {quality.SHORT_WINDOW, quality.FEW_POWER_SAMPLES} <= codes(window)
    messages = " ".join(w.message for w in window.warnings)
    assert (
        f"under {quality.MIN_WINDOW_S:g} s" in messages
        and f"fewer than {quality.MIN_POWER_SAMPLES}" in messages
    )


def test_device_conditions_become_flags(fake_nvml):
    session = gpus(
        fake_nvml,
        {
            "power_profile": [[0, 0.0]],
            "temperature_rise_c_per_s": 40.0,
            "throttle_mask": 0x4 | 0x1,
            "persistence_mode": 0,
            "other_pids": [1],
        },
    )
    window = measure(SampledMeter(session.visible_gpus(None), FAST), 0.3)
    assert {
        quality.ZERO_ENERGY,
        quality.TEMPERATURE_DRIFT,
        quality.THROTTLED,
        quality.PERSISTENCE_MODE_OFF,
        quality.OTHER_GPU_PROCESS,
    } <= codes(window)
    throttled = next(w for w in window.warnings if w.code == quality.THROTTLED)
    assert "sw_power_cap" in throttled.message and "gpu_idle" not in throttled.message
    (gpu,) = window.devices
    assert gpu.throttle_reasons == ["gpu_idle", "sw_power_cap"]


def test_gpus_are_synchronised_at_window_edges_once_the_workload_initialised_cuda(monkeypatch):
    synced = []

    class Cuda:
        initialised = False

        def is_initialized(self):
            return self.initialised

        def device_count(self):
            return 2

        def synchronize(self, index):
            synced.append(index)

    cuda = Cuda()
    monkeypatch.setitem(sys.modules, "torch", SimpleNamespace(cuda=cuda))
    meter = NoEnergyMeter()
    meter.begin_window("w")
    meter.end_window("w")
    assert synced == []  # CUDA not initialised: nothing to wait for, and nothing initialised by us
    cuda.initialised = True
    meter.begin_window("w")
    meter.end_window("w")
    assert synced == [0, 1, 0, 1]


def test_a_baseline_much_older_than_the_window_is_flagged_with_its_age(fake_nvml):
    session = gpus(fake_nvml, {"power_profile": [[0, 100.0]]})
    key = "GPU-0000-sim"
    old = MeterOptions(
        sample_interval_s=0.02,
        baseline_power_w={key: 60.0},
        baseline_measured_at={key: time.time() - quality.MAX_BASELINE_AGE_S - 60},
    )
    window = measure(SampledMeter(session.visible_gpus(None), old), 0.05)
    stale = next(w for w in window.warnings if w.code == quality.STALE_BASELINE)
    assert stale.message.startswith("gpu0: the idle baseline was measured 11 min before the window")
    assert window.devices[0].baseline_age_s > quality.MAX_BASELINE_AGE_S
    fresh = old.model_copy(update={"baseline_measured_at": {key: time.time()}})
    window = measure(SampledMeter(session.visible_gpus(None), fresh), 0.05)
    assert quality.STALE_BASELINE not in codes(window)
    assert 0 <= window.devices[0].baseline_age_s < quality.MAX_BASELINE_AGE_S


def test_a_series_timed_from_the_window_origin_lines_up_with_its_power_timeline(fake_nvml):
    """The origin is where the timeline's t_s is zero: the moment before its first reading."""
    session = gpus(fake_nvml, {"power_profile": [[0, 100.0]]})
    meter = SampledMeter(session.visible_gpus(None), FAST)
    before = time.perf_counter()
    meter.begin_window("w")
    origin = meter.window_origin("w")
    time.sleep(0.2)
    inside = time.perf_counter()
    window = meter.end_window("w")
    meter.close()
    with pytest.raises(ValueError, match="is not open"):
        meter.window_origin("w")
    assert before <= origin <= inside
    (device,) = window.devices
    # The first sample is the reading at the origin; the last, the closing one at its end.
    assert device.timeline[0].t_s == 0.0
    assert device.timeline[-1].t_s == pytest.approx(window.duration_s)
    assert inside - origin < window.duration_s


def test_a_meter_without_samples_counts_its_window_from_its_own_start():
    meter = NoEnergyMeter()
    meter.begin_window("w")
    origin = meter.window_origin("w")
    time.sleep(0.05)
    window = meter.end_window("w")
    assert 0.05 <= window.duration_s and origin <= time.perf_counter() - window.duration_s
