"""Measuring windows on the simulated NVML: shared by the energy tests of several modules."""

from __future__ import annotations

import time

from pytest_llem.energy.meter import MeterOptions
from pytest_llem.energy.nvml import NvmlSession

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
