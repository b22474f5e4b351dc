"""Which GPUs NVML opens and which driver calls a sampling pass makes, against the simulated NVML.

The simulated GPU's own coarseness (counter steps, averaged power, missing calls) is checked here
too, since every NVML figure in the other tests rests on it.
"""

from __future__ import annotations

import pytest
from simulated_windows import FAST, codes, gpus, measure

from pytest_llem.energy import quality
from pytest_llem.energy.devices import take_reading
from pytest_llem.energy.meter import SampledMeter
from pytest_llem.energy.nvml import NvmlSession
from pytest_llem.errors import MeasurementRefused, MeterUnavailable

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


def test_processes_of_the_experiments_own_group_are_not_flagged(fake_nvml):
    import os

    session = gpus(fake_nvml, {"other_pids": [os.getpid()]})
    window = measure(SampledMeter(session.visible_gpus(None), FAST), 0.1)
    assert quality.OTHER_GPU_PROCESS not in codes(window)


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
