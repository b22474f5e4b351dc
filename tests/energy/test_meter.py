"""NVML meters, quality flags, baselines and cool-down, against a simulated NVML.

The simulated GPUs integrate their power profile exactly, so every figure below has a known
right answer; timing slack comes only from reading the clock at slightly different moments.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from pytest_llem.energy import quality
from pytest_llem.energy.devices import DeviceTally, MeasuredDevice, take_reading
from pytest_llem.energy.factory import create_meter
from pytest_llem.energy.idle import IdleBaselines
from pytest_llem.energy.meter import MeterOptions, NoEnergyMeter, SampledMeter
from pytest_llem.energy.nvml import NvmlSession
from pytest_llem.errors import MeasurementRefused, MeterUnavailable
from pytest_llem.results import DeviceEnergy, EnergyTotals
from pytest_llem.settings import SETTINGS

FAST = MeterOptions(sample_interval_s=0.02)


def gpus(fake_nvml, *specs):
    fake_nvml.configure([fake_nvml.FakeGpu(uuid=f"GPU-{i:04d}-sim", **spec) for i, spec in enumerate(specs)])
    return NvmlSession.open()


def measure(meter, seconds: float):
    meter.begin_window("w")
    time.sleep(seconds)
    try:
        return meter.end_window("w")
    finally:
        meter.close()


def codes(window) -> set[str]:
    return {w.code for w in window.warnings}


# --- which GPUs: CUDA_VISIBLE_DEVICES, by index or UUID -------------------------------------------


def test_all_gpus_are_visible_without_cuda_visible_devices(fake_nvml):
    session = gpus(fake_nvml, {}, {}, {})
    assert [g.label for g in session.visible_gpus(None)] == ["gpu0", "gpu1", "gpu2"]


def test_cuda_visible_devices_picks_and_orders_gpus_by_index_and_uuid(fake_nvml):
    session = gpus(fake_nvml, {}, {}, {})
    assert [g.uuid for g in session.visible_gpus("2,0")] == ["GPU-0002-sim", "GPU-0000-sim"]
    # CUDA accepts a unique UUID prefix, and mixing with indices.
    assert [g.label for g in session.visible_gpus("GPU-0001, 2")] == ["gpu1", "gpu2"]


def test_cuda_visible_devices_stops_at_the_first_unknown_entry_as_cuda_does(fake_nvml):
    session = gpus(fake_nvml, {}, {})
    assert [g.label for g in session.visible_gpus("1,7,0")] == ["gpu1"]
    with pytest.raises(
        MeterUnavailable, match=r"no GPU is visible to the experiment \(CUDA_VISIBLE_DEVICES=''\)"
    ):
        session.visible_gpus("")


def test_mig_is_refused_by_uuid_and_by_mode(fake_nvml):
    session = gpus(fake_nvml, {}, {"mig_mode": 1})
    with pytest.raises(MeasurementRefused, match="MIG slice"):
        session.visible_gpus("MIG-4f1c")
    with pytest.raises(MeasurementRefused, match="gpu1 .* is in MIG mode"):
        session.visible_gpus("1")
    assert [g.label for g in session.visible_gpus("0")] == ["gpu0"]


def test_nvml_meter_without_a_driver_is_unavailable_with_the_reason(fake_nvml):
    fake_nvml.configure([], driver_loaded=False)
    with pytest.raises(MeterUnavailable, match="NVML could not start: Driver Not Loaded"):
        create_meter("nvml")


def test_auto_meter_with_nothing_readable_measures_nothing_and_says_why(fake_nvml, monkeypatch, tmp_path):
    fake_nvml.configure([], driver_loaded=False)
    monkeypatch.setattr("pytest_llem.energy.rapl.POWERCAP_ROOT", tmp_path / "absent")
    window = measure(create_meter("auto"), 0.01)
    assert window.energy_j is None and window.devices == []
    assert [w.code for w in window.warnings] == [quality.ENERGY_NOT_MEASURED]
    assert "gpu: not measured (NVML could not start" in window.warnings[0].message
    assert "cpu: not measured (RAPL is not available" in window.warnings[0].message


def test_a_case_that_owns_no_gpu_opens_none_and_says_why(fake_nvml, monkeypatch, tmp_path):
    gpus(fake_nvml, {}, {})
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)  # unset: CUDA would show both
    monkeypatch.setattr("pytest_llem.energy.rapl.POWERCAP_ROOT", tmp_path / "absent")
    cpu_only = MeterOptions(gpu_uuids=[], no_gpu_reason="device='cpu'")
    for name in ("auto", "nvml"):
        fake_nvml.calls_by_function.clear()
        meter = create_meter(name, cpu_only)
        assert not meter.measures_gpus  # so min_window_s keeps the CPU's default
        window = measure(meter, 0.01)
        assert window.devices == [] and window.energy_j is None  # no figure, not 0 J
        assert "gpu: not measured (the case owns no GPU: device='cpu')" in window.warnings[0].message
        assert not fake_nvml.calls_by_function  # no GPU was opened


def test_a_leased_case_reads_exactly_its_uuids_whatever_cuda_visible_devices_says(fake_nvml, monkeypatch):
    gpus(fake_nvml, {}, {}, {})
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    meter = create_meter("nvml", MeterOptions(gpu_uuids=["GPU-0002-sim", "GPU-0000-sim"]))
    assert [d.uuid for d in meter.devices] == ["GPU-0002-sim", "GPU-0000-sim"]
    meter.close()
    # A leased GPU NVML no longer lists is an error, never a smaller sum.
    with pytest.raises(MeterUnavailable, match="NVML does not list the leased GPU"):
        create_meter("nvml", MeterOptions(gpu_uuids=["GPU-0001-sim", "GPU-0009-sim"]))


def test_auto_meter_refuses_mig_instead_of_skipping_the_gpu(fake_nvml, monkeypatch):
    gpus(fake_nvml, {"mig_mode": 1})
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    with pytest.raises(MeasurementRefused):
        create_meter("auto")


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


# --- the simulated GPU is as coarse as a real one ----------------------------------------------------


def test_the_simulated_counter_steps_every_100_ms_and_power_usage_is_a_1_s_average(fake_nvml, monkeypatch):
    now_s = [2.05]
    monkeypatch.setattr(fake_nvml, "_now_s", lambda: now_s[0])
    monkeypatch.delenv(fake_nvml.IDEAL_ENV, raising=False)
    gpu = fake_nvml.FakeGpu(uuid="GPU-0000-sim", power_profile=[[0, 100.0], [2.0, 300.0]])

    def read(at_s: float) -> tuple[float, float, dict[int, float]]:
        now_s[0] = at_s
        energy_j = (fake_nvml.nvmlDeviceGetTotalEnergyConsumption(gpu) - gpu.initial_energy_mj) / 1000
        fields = fake_nvml.nvmlDeviceGetFieldValues(
            gpu, [fake_nvml.NVML_FI_DEV_POWER_AVERAGE, fake_nvml.NVML_FI_DEV_POWER_INSTANT]
        )
        by_id = {f.fieldId: f.value.uiVal / 1000 for f in fields}
        return energy_j, fake_nvml.nvmlDeviceGetPowerUsage(gpu) / 1000, by_id

    fake_nvml.configure([gpu])
    fake_nvml.nvmlInit()
    # 50 ms after the step to 300 W: the counter still holds its value at 2.0 s (200 J, not 215 J),
    # and the average is 0.95 s at 100 W and 0.05 s at 300 W; only the instant field is 300 W.
    energy_j, usage_w, fields = read(2.05)
    assert energy_j == pytest.approx(200.0) and read(2.0999)[0] == pytest.approx(200.0)
    average_w = fields[fake_nvml.NVML_FI_DEV_POWER_AVERAGE]
    assert usage_w == pytest.approx(110.0, abs=0.01) and average_w == pytest.approx(110.0, abs=0.01)
    assert fields[fake_nvml.NVML_FI_DEV_POWER_INSTANT] == 300.0
    assert read(2.1)[0] == pytest.approx(230.0)  # the next step: 100 ms at 300 W more
    assert read(3.5)[1] == pytest.approx(300.0)  # a second after the step, the average has caught up
    # The ideal mode, for a test that needs exact figures: asked for, or through the environment.
    for ideal in ({"ideal": True}, {}):
        if not ideal:
            monkeypatch.setenv(fake_nvml.IDEAL_ENV, "1")
        fake_nvml.configure([gpu], **ideal)
        fake_nvml.nvmlInit()
        energy_j, usage_w, fields = read(2.05)
        assert energy_j == pytest.approx(215.0) and usage_w == 300.0


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


def test_an_idle_baseline_shorter_than_the_counter_step_uses_the_power_readings(fake_nvml, monkeypatch):
    monkeypatch.delenv(fake_nvml.IDEAL_ENV, raising=False)
    gpus(fake_nvml, {"power_profile": [[0, 60.0]]})
    time.sleep(0.03)
    idle = IdleBaselines(duration_s=0.05, sample_interval_s=0.01).measure("nvml", FAST, {})
    # The counter would say 0 W or 120 W; at rest NVML's 1 s average is the idle power.
    assert idle["GPU-0000-sim"].power_w == pytest.approx(60.0, rel=0.01)


# --- quality flags -----------------------------------------------------------------------------


def test_a_clean_long_window_has_no_flags():
    device = DeviceEnergy(
        device="gpu0",
        energy_j=600.0,
        duration_s=6.0,
        power_samples=60,
        temperature_start_c=50,
        temperature_end_c=53,
        throttle_reasons=["gpu_idle"],
    )
    assert quality.assess_window(6.0, [device]) == []


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


def test_processes_of_the_experiments_own_group_are_not_flagged(fake_nvml):
    import os

    session = gpus(fake_nvml, {"other_pids": [os.getpid()]})
    window = measure(SampledMeter(session.visible_gpus(None), FAST), 0.1)
    assert quality.OTHER_GPU_PROCESS not in codes(window)


# --- baseline arithmetic and totals --------------------------------------------------------------


def test_adjusted_energy_subtracts_idle_power_and_never_goes_below_zero():
    busy = DeviceEnergy(device="gpu0", energy_j=100.0, duration_s=1.5, baseline_power_w=50.0)
    idle_ish = DeviceEnergy(device="gpu1", energy_j=10.0, duration_s=1.0, baseline_power_w=50.0)
    assert busy.energy_adjusted_j == pytest.approx(25.0)
    assert idle_ish.energy_adjusted_j == 0.0
    assert DeviceEnergy(device="gpu2", energy_j=10.0).energy_adjusted_j is None


def test_totals_keep_gpu_and_cpu_apart_and_refuse_partial_sums():
    gpu0 = DeviceEnergy(device="gpu0", kind="gpu", energy_j=30.0, duration_s=1, baseline_power_w=10.0)
    gpu1 = DeviceEnergy(device="gpu1", kind="gpu", energy_j=20.0, duration_s=1, baseline_power_w=10.0)
    cpu = DeviceEnergy(device="cpu-package-0", kind="cpu", energy_j=5.0, duration_s=1)
    totals = EnergyTotals.of([gpu0, gpu1, cpu])
    assert (totals.energy_j, totals.gpu_energy_j, totals.cpu_energy_j) == (55.0, 50.0, 5.0)
    assert totals.energy_scope == ["gpu", "cpu"]
    # The CPU has no baseline, so an "adjusted" total would silently mix adjusted and raw parts.
    assert totals.energy_adjusted_j is None
    assert EnergyTotals.of([gpu0, gpu1]).energy_adjusted_j == pytest.approx(30.0)
    lost = gpu1.model_copy(update={"energy_j": None})
    assert EnergyTotals.of([gpu0, lost, cpu]).energy_j is None
    assert EnergyTotals.of([gpu0, lost, cpu]).cpu_energy_j == 5.0


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


def test_readme_documents_every_setting_and_flag():
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    for setting in SETTINGS:
        assert f"`{setting.option}" in readme and f"`{setting.ini_name}" in readme, setting.name
    codes = [v for k, v in vars(quality).items() if k.isupper() and isinstance(v, str)]
    assert len(codes) >= 9
    for code in codes:
        assert f"`{code}`" in readme, code


# --- drivers that lack a call ----------------------------------------------------------------------


@pytest.mark.parametrize("driver", ["old", "new"])
def test_a_driver_without_one_clock_reasons_call_uses_the_other_and_keeps_the_gpu(fake_nvml, driver):
    # The binding has both names; the driver answers FunctionNotFound for the one it lacks.
    fake_nvml.configure([fake_nvml.FakeGpu(uuid="GPU-0000-sim", throttle_mask=0x4)], driver=driver)
    session = NvmlSession.open()
    window = measure(SampledMeter(session.visible_gpus(None), FAST), 0.1)
    (gpu,) = window.devices
    assert quality.DEVICE_LOST not in codes(window) and gpu.energy_source == "nvml-counter"
    assert gpu.throttle_reasons == ["sw_power_cap"] and quality.THROTTLED in codes(window)
    missing = {
        "old": "nvmlDeviceGetCurrentClocksEventReasons",
        "new": "nvmlDeviceGetCurrentClocksThrottleReasons",
    }[driver]
    # Once found missing, a call is not tried again.
    assert fake_nvml.calls_by_function[missing] <= 1


def test_the_simulated_driver_raises_function_not_found_as_nvidia_ml_py_does(fake_nvml):
    fake_nvml.configure([fake_nvml.FakeGpu(uuid="GPU-0000-sim")], driver="new")
    fake_nvml.nvmlInit()
    handle = fake_nvml.nvmlDeviceGetHandleByIndex(0)
    with pytest.raises(fake_nvml.NVMLError_FunctionNotFound) as info:
        fake_nvml.nvmlDeviceGetCurrentClocksThrottleReasons(handle)
    assert info.value.value == fake_nvml.NVML_ERROR_FUNCTION_NOT_FOUND
    assert fake_nvml.nvmlDeviceGetCurrentClocksEventReasons(handle) == 0


# --- what a sampling pass reads --------------------------------------------------------------------


def test_a_fast_pass_is_one_driver_call_and_a_slow_pass_adds_the_slow_fields(fake_nvml):
    session = gpus(fake_nvml, {"power_profile": [[0, 300.0]], "throttle_mask": 0x4})
    (gpu,) = session.visible_gpus(None)
    fake_nvml.calls_by_function.clear()
    fast = take_reading(gpu, slow=False)
    assert dict(fake_nvml.calls_by_function) == {"nvmlDeviceGetFieldValues": 1}
    assert fast.counter_j is not None and fast.power_w == 300.0 and fast.status is None
    fake_nvml.calls_by_function.clear()
    slow = take_reading(gpu, slow=True)
    assert dict(fake_nvml.calls_by_function) == {
        "nvmlDeviceGetFieldValues": 1,
        "nvmlDeviceGetTemperature": 1,
        "nvmlDeviceGetClockInfo": 1,
        "nvmlDeviceGetCurrentClocksEventReasons": 1,
    }
    assert slow.status.temperature_c == 40.0 and slow.status.throttle_reasons == {"sw_power_cap"}


def test_without_power_fields_a_pass_reads_power_with_its_own_call(fake_nvml):
    fake_nvml.configure([fake_nvml.FakeGpu(uuid="GPU-0000-sim", power_profile=[[0, 120.0]])], driver="old")
    (gpu,) = NvmlSession.open().visible_gpus(None)
    take_reading(gpu, slow=False)  # learns which fields the driver has
    fake_nvml.calls_by_function.clear()
    reading = take_reading(gpu, slow=False)
    assert dict(fake_nvml.calls_by_function) == {"nvmlDeviceGetFieldValues": 1, "nvmlDeviceGetPowerUsage": 1}
    assert reading.power_w == 120.0 and reading.counter_j is not None


def test_the_batched_counter_agrees_with_the_counter_call(fake_nvml):
    session = gpus(fake_nvml, {"power_profile": [[0, 0.0]]})  # no power: the counter stands still
    (gpu,) = session.visible_gpus(None)
    batched_j, _ = gpu.read_energy_and_power()
    assert batched_j == gpu.read_energy_j() == fake_nvml.FakeGpu(uuid="x").initial_energy_mj / 1000.0


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


def test_a_flag_raised_by_several_windows_or_devices_is_listed_once():
    from pytest_llem.context import combine_windows
    from pytest_llem.results import WindowMeasurement

    def short(duration_s: float) -> WindowMeasurement:
        device = DeviceEnergy(device="gpu0", energy_j=100.0, duration_s=duration_s, power_samples=20)
        return WindowMeasurement(
            duration_s=duration_s, devices=[device], warnings=quality.assess_window(duration_s, [device])
        )

    combined = combine_windows([short(1.0), short(2.0), short(1.0)])
    assert [w.code for w in combined.warnings] == [quality.SHORT_WINDOW]
    assert "1.00 s" in combined.warnings[0].message and "2.00 s" in combined.warnings[0].message
    both = [
        DeviceEnergy(
            device=f"gpu{i}",
            energy_j=600.0,
            duration_s=6.0,
            power_samples=60,
            throttle_reasons=["sw_power_cap"],
        )
        for i in range(2)
    ]
    (throttled,) = quality.assess_window(6.0, both)
    assert throttled.code == quality.THROTTLED and "gpu0" in throttled.message and "gpu1" in throttled.message


def test_merged_flags_quote_a_few_sentences_then_count_the_rest():
    many = [quality.flag(quality.SHORT_WINDOW, f"window {i}") for i in range(5)]
    (merged,) = quality.merge_flags(many)
    assert merged.message == "window 0; window 1; window 2; and 2 more like these"


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
