"""The result records' own arithmetic: baseline-adjusted energy and totals by device kind."""

from __future__ import annotations

import pytest
from sample_reports import make_result

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


def test_the_prefill_and_decode_figures_are_derived_and_read_back_from_a_dump():
    split = {
        "calls": 2,
        "prefill_duration_s": 0.5,
        "decode_duration_s": 1.5,
        "prefill_energy_j": 30.0,
        "decode_energy_j": 90.0,
        "input_tokens": 60,
        "output_tokens": 45,
    }
    result = make_result([120.0], extra={"prefill_decode": split})
    assert (result.prefill_energy_per_input_token_j, result.decode_energy_per_output_token_j) == (0.5, 2.0)
    dumped = result.model_dump(mode="json")
    assert dumped["prefill_duration_s"] == 0.5 and dumped["decode_energy_per_output_token_j"] == 2.0
    again = type(result).model_validate(dumped)  # the derived figures are recomputed, never trusted
    assert again.prefill_decode == result.prefill_decode and again.decode_energy_j == 90.0
    # Without a split (any backend but pytorch), every figure is missing, never 0.
    plain = make_result([120.0])
    assert plain.prefill_decode is None and plain.prefill_energy_j is None and plain.decode_duration_s is None
    # A workload's own figure under the same key is not taken for a split, nor fails the report.
    own = make_result([120.0], extra={"prefill_decode": {"prefill_s": 1}})
    assert own.prefill_decode is None and own.model_dump(mode="json")["prefill_energy_j"] is None
