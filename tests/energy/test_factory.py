"""Choosing and opening a meter by name: which devices it reads, and why it reads none."""

from __future__ import annotations

import pytest
from simulated_windows import gpus, measure

from pytest_llem.energy import quality
from pytest_llem.energy.factory import create_meter
from pytest_llem.energy.meter import MeterOptions
from pytest_llem.errors import MeasurementRefused, MeterUnavailable


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
