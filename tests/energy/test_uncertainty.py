"""Energy uncertainty: each part against a hand-computed case, and how the gate uses it."""

from __future__ import annotations

import math

import pytest
from sample_reports import GPT2, make_entry, make_report, make_result

from pytest_llem.energy.uncertainty import change_uncertainty, energy_uncertainty
from pytest_llem.gating.compare import compare_reports
from pytest_llem.gating.limits import parse_limit
from pytest_llem.output.terminal import format_summary
from pytest_llem.results import DeviceEnergy, MetricStats, Placement


def gpu(energy_j, source="nvml-counter", uuid="GPU-0", duration_s=10.0):
    return DeviceEnergy(
        device="gpu0", uuid=uuid, energy_j=energy_j, energy_source=source, duration_s=duration_s
    )


def measured(devices, windows=1, duration_s=10.0, **fields):
    total = sum(d.energy_j for d in devices)
    return make_result(
        [total],
        energy_j=total,
        energy_by_device=devices,
        window_count=windows,
        duration_s=duration_s,
        **fields,
    )


def test_one_gpu_read_by_its_counter_has_board_gain_and_counter_resolution():
    # 1000 J over one 10 s window: gain 5% / sqrt(3) = 2.887%; 100 ms / sqrt(6) / 10 s = 0.408%.
    u = energy_uncertainty(measured([gpu(1000.0)]))
    assert u.parts == pytest.approx({"nvml_gain": 0.028868, "counter_resolution": 0.0040825}, abs=1e-6)
    assert u.systematic == ["nvml_gain"] and u.devices == ["GPU-0"]
    assert u.relative == pytest.approx(0.029155, abs=1e-6)


def test_integrated_power_pays_for_the_averaging_lag_per_window():
    # Two windows in 5 s, each lagging up to 1 s: sqrt(2) x 1 s / sqrt(12) / 5 s = 8.165%.
    power = gpu(500.0, source="nvml-power", duration_s=5.0)
    u = energy_uncertainty(measured([power], windows=2, duration_s=5.0))
    assert u.parts == pytest.approx({"nvml_gain": 0.028868, "power_sampling": 0.081650}, abs=1e-6)


def test_parts_of_several_devices_add_as_absolute_errors_over_the_total():
    cpu = DeviceEnergy(
        device="cpu-package-0", kind="cpu", energy_j=200.0, energy_source="rapl", duration_s=10.0
    )
    u = energy_uncertainty(measured([gpu(1000.0), cpu]))
    # gain: 28.868 J of 1200 J; resolution: GPU 4.0825 J and RAPL (1 ms counter) 0.0081650 J.
    assert u.parts["nvml_gain"] == pytest.approx(28.868 / 1200, abs=1e-6)
    assert u.parts["counter_resolution"] == pytest.approx(math.hypot(4.0825, 0.0081650) / 1200, abs=1e-6)


def test_round_spread_is_the_relative_half_width_of_the_rounds_interval():
    stats = MetricStats(
        n=5, mean=100.0, median=100.0, stdev=4.0, min=95.0, max=105.0, ci95_low=95.0, ci95_high=105.0
    )
    u = energy_uncertainty(measured([gpu(1000.0)], statistics={"energy_j": stats}))
    assert u.parts["round_spread"] == pytest.approx(0.05)


def test_no_uncertainty_without_a_model_for_the_source_or_without_energy():
    assert energy_uncertainty(measured([gpu(10.0, source="codecarbon")])) is None
    assert energy_uncertainty(make_result([1.0], energy_by_device=[])) is None


def test_the_board_gain_cancels_on_the_same_gpus_only_and_round_spread_is_the_rank_tests():
    same = energy_uncertainty(measured([gpu(1000.0)]))
    other_board = energy_uncertainty(measured([gpu(1000.0, uuid="GPU-9")]))
    assert change_uncertainty(same, same) == pytest.approx(0.0057735, abs=1e-7)  # sqrt(2) x 0.408%
    assert change_uncertainty(same, other_board) == pytest.approx(0.041231, abs=1e-6)  # sqrt(2) x 2.916%
    assert change_uncertainty(same, None) is None
    spread = same.model_copy(update={"parts": {**same.parts, "round_spread": 0.5}})
    assert change_uncertainty(spread, spread) == change_uncertainty(same, same)


def test_the_gate_never_calls_a_change_within_the_uncertainty_a_regression():
    def compare(after_j):
        baseline, current = measured([gpu(1000.0)]), measured([gpu(after_j)])
        for result in (baseline, current):
            result.energy_uncertainty = energy_uncertainty(result)
        return compare_reports(
            make_report("base", [make_entry(GPT2, baseline)]),
            make_report("now", [make_entry(GPT2, current)]),
            [parse_limit("energy_j:0.3%")],
        )

    within = next(c for c in compare(1005.0).changes if c.metric == "energy_j")  # +0.5% < ±0.577%
    assert within.status == "ok" and within.note == "beyond the limit but within the ±0.6% uncertainty"
    assert within.cells()[4] == "+0.5% ±0.6%"
    beyond = next(c for c in compare(1007.0).changes if c.metric == "energy_j")  # +0.7% > ±0.577%
    assert beyond.status == "regression"
    tokens = next(c for c in compare(1007.0).changes if c.metric == "tokens_per_s")
    assert tokens.uncertainty_pct is None


def test_the_summary_shows_the_uncertainty_next_to_energy_and_names_its_parts():
    result = measured([gpu(1000.0)])
    result.energy_uncertainty = energy_uncertainty(result)
    lines = format_summary([make_entry(GPT2, result)])
    assert "1,000 ±2.9%" in lines[1]  # the energy_j column, with its meter uncertainty
    assert (
        "energy ± = relative uncertainty, root sum of squares of: counter_resolution, nvml_gain "
        "(each in the report's energy_uncertainty)" in lines
    )


def cpu(energy_j, source="rapl", device="cpu-package-0"):
    return DeviceEnergy(device=device, kind="cpu", energy_j=energy_j, energy_source=source, duration_s=10.0)


ON_HOST = {"placement": Placement(host="node1")}


def test_rapl_alone_carries_its_own_accuracy_not_only_its_counter_resolution():
    # 200 J over one 10 s window: accuracy 10% / sqrt(3) = 5.774%; 1 ms / sqrt(6) / 10 s = 0.0041%.
    result = measured([cpu(200.0)], **ON_HOST)
    u = energy_uncertainty(result)
    assert u.parts == pytest.approx({"rapl_accuracy": 0.057735, "counter_resolution": 0.0000408}, abs=1e-6)
    assert u.systematic == ["rapl_accuracy"] and u.devices == ["cpu-package-0@node1"]
    result.energy_uncertainty = u
    assert "200 ±5.8%" in format_summary([make_entry(GPT2, result)])[1]
    # The same package in both runs: the accuracy cancels; another host's package: it does not.
    other_host = energy_uncertainty(measured([cpu(200.0)], placement=Placement(host="node2")))
    assert change_uncertainty(u, u) == pytest.approx(math.sqrt(2) * 0.0000408, abs=1e-7)
    assert change_uncertainty(u, other_host) == pytest.approx(math.sqrt(2) * 0.057735, abs=1e-5)


def zeus_gpu(energy_j, uuid=None, device="gpu0"):
    return DeviceEnergy(device=device, uuid=uuid, energy_j=energy_j, energy_source="zeus", duration_s=10.0)


def test_zeus_devices_follow_the_model_of_their_kind():
    u = energy_uncertainty(measured([zeus_gpu(1000.0, uuid="GPU-a"), cpu(200.0, source="zeus")], **ON_HOST))
    # The GPU is read through NVML's counter, the CPU through RAPL: not NVML's board error for both.
    assert u.parts["nvml_gain"] == pytest.approx(28.868 / 1200, abs=1e-6)
    assert u.parts["rapl_accuracy"] == pytest.approx(11.547 / 1200, abs=1e-6)
    assert u.systematic == ["nvml_gain", "rapl_accuracy"]
    assert sorted(u.devices) == ["GPU-a", "cpu-package-0@node1"]


def test_zeus_gpus_are_matched_by_uuid_so_the_board_error_cancels_only_on_the_same_board():
    board_a = energy_uncertainty(measured([zeus_gpu(1000.0, uuid="GPU-a")]))
    board_b = energy_uncertainty(measured([zeus_gpu(1000.0, uuid="GPU-b")]))
    assert change_uncertainty(board_a, board_a) == pytest.approx(0.0057735, abs=1e-7)
    assert change_uncertainty(board_a, board_b) == pytest.approx(0.041231, abs=1e-6)
    # Without a UUID a "gpu0" in two runs may be two boards: never taken for the same one.
    unknown = energy_uncertainty(measured([zeus_gpu(1000.0)]))
    assert change_uncertainty(unknown, unknown) == pytest.approx(0.041231, abs=1e-6)
