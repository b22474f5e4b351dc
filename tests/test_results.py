"""The result records' own arithmetic: baseline-adjusted energy and totals by device kind."""

from __future__ import annotations

import pytest

from pytest_llem.results import DeviceEnergy, EnergyTotals

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
