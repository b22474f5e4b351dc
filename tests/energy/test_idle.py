"""Idle baselines and cool-down, measured by the pytest process against a simulated NVML."""

from __future__ import annotations

import time

import pytest
from simulated_windows import FAST, gpus, measure

from pytest_llem.energy.factory import create_meter
from pytest_llem.energy.idle import IdleBaselines
from pytest_llem.energy.meter import MeterOptions


def test_an_idle_baseline_shorter_than_the_counter_step_uses_the_power_readings(fake_nvml, monkeypatch):
    monkeypatch.delenv(fake_nvml.IDEAL_ENV, raising=False)
    gpus(fake_nvml, {"power_profile": [[0, 60.0]]})
    time.sleep(0.03)
    idle = IdleBaselines(duration_s=0.05, sample_interval_s=0.01).measure("nvml", FAST, {})
    # The counter would say 0 W or 120 W; at rest NVML's 1 s average is the idle power.
    assert idle["GPU-0000-sim"].power_w == pytest.approx(60.0, rel=0.01)


@pytest.mark.parametrize("duration_s", [0.3, 0.45])
def test_an_idle_baseline_of_a_few_counter_steps_uses_the_power_readings(fake_nvml, monkeypatch, duration_s):
    # 0.3 s of a counter stepping every 100 ms holds 2 to 4 steps: 70 W read as up to 91 W.
    monkeypatch.delenv(fake_nvml.IDEAL_ENV, raising=False)
    gpus(fake_nvml, {"power_profile": [[0, 70.0]]})
    time.sleep(0.03)
    idle = IdleBaselines(duration_s=duration_s, sample_interval_s=0.02).measure("nvml", FAST, {})
    assert idle["GPU-0000-sim"].power_w == pytest.approx(70.0, rel=0.01)


def test_baseline_is_measured_once_per_device_and_reaches_the_window(fake_nvml):
    gpus(fake_nvml, {"power_profile": [[0, 60.0]]}, {"power_profile": [[0, 80.0]]})
    slept = []

    def sleep(seconds):
        slept.append(seconds)
        time.sleep(seconds)

    idle = IdleBaselines(duration_s=0.3, sample_interval_s=0.02, sleep=sleep)
    first = idle.measure("nvml", FAST, {"CUDA_VISIBLE_DEVICES": "0"})
    both = idle.measure("nvml", FAST, {})
    again = idle.measure("nvml", FAST, {})
    assert slept == [0.3, 0.3]  # gpu0 first, then only gpu1: each device once per session
    assert list(first) == ["GPU-0000-sim"]
    assert both["GPU-0000-sim"].power_w == pytest.approx(60.0, rel=0.03)
    assert both["GPU-0001-sim"].power_w == pytest.approx(80.0, rel=0.03)
    assert again == both
    options = MeterOptions(sample_interval_s=0.02, baseline_power_w={k: r.power_w for k, r in both.items()})
    window = measure(create_meter("nvml", options), 0.3)
    assert [d.baseline_power_w for d in window.devices] == [
        both["GPU-0000-sim"].power_w,
        both["GPU-0001-sim"].power_w,
    ]
    assert window.devices[0].energy_adjusted_j == pytest.approx(0.0, abs=0.6)


def test_no_baseline_when_skipped_or_for_meters_the_parent_cannot_read(fake_nvml):
    gpus(fake_nvml, {})
    assert IdleBaselines(duration_s=0).measure("nvml", FAST, {}) == {}
    assert IdleBaselines(duration_s=0.1).measure("zeus", FAST, {}) == {}
    assert IdleBaselines(duration_s=0.1).measure("none", FAST, {}) == {}


def test_cool_down_waits_until_the_gpu_is_back_near_idle_temperature(fake_nvml):
    gpus(fake_nvml, {"temperature_c": 40.0})
    gpu = fake_nvml._state["gpus"][0]
    idle = IdleBaselines(duration_s=0.05, sample_interval_s=0.01, sleep=lambda s: None)
    idle.measure("nvml", FAST, {})
    gpu.temperature_c = 55.0

    def cooling(seconds):
        gpu.temperature_c -= 4.0

    idle.sleep = cooling
    assert idle.cool_down("nvml", FAST, {}, max_s=60, within_c=3.0) is None
    assert gpu.temperature_c <= 43.0
    gpu.temperature_c = 90.0
    problem = idle.cool_down("nvml", FAST, {}, max_s=2, within_c=3.0)
    assert problem is not None and problem.startswith("cool-down gave up after 2 s: gpu0 8")


def test_a_fixed_cool_down_just_waits():
    slept = []
    idle = IdleBaselines(sleep=slept.append)
    assert idle.cool_down("none", FAST, {}, max_s=1.5, within_c=None) is None
    assert slept == [1.5]


def test_idle_readings_carry_their_time_to_the_child(fake_nvml):
    from pytest_llem.energy.idle import with_baselines

    gpus(fake_nvml, {"power_profile": [[0, 60.0]]})
    before = time.time()
    idle = IdleBaselines(duration_s=0.05, sample_interval_s=0.01).measure("nvml", FAST, {}, "after X")
    options = with_baselines(FAST, idle)
    assert options.baseline_power_w == {"GPU-0000-sim": pytest.approx(60.0, rel=0.05)}
    assert before <= options.baseline_measured_at["GPU-0000-sim"] <= time.time()
    # The window's figures say when the baseline was taken, and after what.
    (gpu,) = measure(create_meter("nvml", options), 0.05).devices
    assert gpu.baseline_measured_at.timestamp() == pytest.approx(options.baseline_measured_at["GPU-0000-sim"])
    assert gpu.baseline_conditions == "after X"
