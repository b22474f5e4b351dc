"""`assemble_result`, the one place measured parts become a result: totals and sources from
the devices, latency summaries from the raw lists, rounds kept only when there are several,
and `without_host_energy` for a result that measured no GPU."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from pytest_llem.energy.quality import SHARED_HOST_ENERGY
from pytest_llem.isolation.assembly import assemble_result, without_host_energy
from pytest_llem.results import DeviceEnergy, LatencyStats, QualityWarning, RoundResult, WindowMeasurement

NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)
IDENTITY = {"experiment_id": "e1", "config_hash": "c" * 16, "config": {"model": "m"}, "workload": "w:f"}


def assemble(measured: WindowMeasurement, **overrides):
    fields = dict(
        identity=IDENTITY,
        measured=measured,
        window_count=1,
        input_tokens=None,
        output_tokens=None,
        batch_latencies_s=[],
        first_token_latencies_s=[],
        inter_token_latencies_s=[],
        peak_memory=None,
        flops_estimate=None,
        rounds=[],
        phase_durations_s={},
        extra={},
        started_at=NOW,
        finished_at=NOW,
    )
    return assemble_result(**(fields | overrides))


def device(name: str, kind: str, energy_j: float | None, source: str | None) -> DeviceEnergy:
    return DeviceEnergy(device=name, kind=kind, energy_j=energy_j, energy_source=source, duration_s=4.0)


def test_totals_and_sources_come_from_the_devices():
    devices = [
        device("gpu0", "gpu", 120.0, "nvml-counter"),
        device("gpu1", "gpu", 80.0, "nvml-counter"),
        device("cpu-package-0", "cpu", 30.0, "rapl"),
    ]
    result = assemble(WindowMeasurement(duration_s=4.0, devices=devices), output_tokens=50)
    assert (result.energy_j, result.gpu_energy_j, result.cpu_energy_j) == (230.0, 200.0, 30.0)
    assert result.energy_scope == ["gpu", "cpu"]
    assert result.energy_source == "nvml-counter+rapl"  # each source once, in a stable order
    assert result.energy_per_token_j == pytest.approx(230.0 / 50)
    assert result.energy_by_device == devices
    assert (result.experiment_id, result.config_hash, result.workload) == ("e1", "c" * 16, "w:f")


def test_a_device_without_a_figure_leaves_the_total_unknown_rather_than_partial():
    devices = [device("gpu0", "gpu", 120.0, "nvml-counter"), device("gpu1", "gpu", None, None)]
    result = assemble(WindowMeasurement(duration_s=4.0, devices=devices, notes=["gpu1 was lost"]))
    assert result.energy_j is None and result.gpu_energy_j is None
    assert result.energy_source == "nvml-counter"
    assert result.energy_notes == ["gpu1 was lost"]


def test_nothing_measured_gives_no_energy_and_no_source():
    result = assemble(WindowMeasurement(duration_s=2.5), output_tokens=10)
    assert result.energy_j is None and result.energy_source is None and result.energy_scope == []
    assert result.duration_s == 2.5 and result.tokens_per_s == pytest.approx(4.0)


def test_latency_summaries_are_made_from_the_raw_lists_which_are_kept():
    batch, first, inter = [0.4, 0.1, 0.3, 0.2], [0.05, 0.07], [0.01, 0.02, 0.03]
    result = assemble(
        WindowMeasurement(duration_s=1.0),
        batch_latencies_s=batch,
        first_token_latencies_s=first,
        inter_token_latencies_s=inter,
    )
    assert result.batch_latency == LatencyStats.of(batch) and result.batch_latency.count == len(batch)
    assert result.time_to_first_token == LatencyStats.of(first)
    assert result.inter_token_latency == LatencyStats.of(inter)
    assert result.batch_latencies_s == batch


def test_no_latencies_give_no_summary():
    result = assemble(WindowMeasurement(duration_s=1.0))
    assert result.batch_latency is None and result.time_to_first_token is None


def test_peak_memory_is_split_into_bytes_and_kind():
    result = assemble(WindowMeasurement(duration_s=1.0), peak_memory=(2**30, "cuda"))
    assert (result.peak_memory_bytes, result.peak_memory_kind) == (2**30, "cuda")
    assert assemble(WindowMeasurement(duration_s=1.0)).peak_memory_bytes is None


def test_one_round_is_the_whole_result_several_are_kept_with_their_statistics():
    one = [RoundResult(index=0, duration_s=1.0, output_tokens=10, energy_j=5.0)]
    single = assemble(WindowMeasurement(duration_s=1.0), rounds=one)
    assert single.rounds == [] and single.statistics == {}

    three = [
        RoundResult(index=i, duration_s=1.0, output_tokens=10, energy_j=e)
        for i, e in enumerate([4.0, 5.0, 6.0])
    ]
    several = assemble(WindowMeasurement(duration_s=3.0), rounds=three, window_count=3)
    assert several.rounds == three and several.window_count == 3
    assert several.statistics["energy_j"].mean == pytest.approx(5.0)


def test_the_windows_flags_are_the_results_once_each():
    flag = QualityWarning(code="short_window", message="measured window lasted 1.00 s, under 5 s")
    result = assemble(WindowMeasurement(duration_s=1.0, warnings=[flag, flag]))
    assert [w.code for w in result.warnings] == ["short_window"]
    assert result.flagged


def test_host_energy_of_a_cpu_only_result_shared_with_others_leaves_no_total():
    devices = [device("cpu-package-0", "cpu", 30.0, "rapl"), device("dram-0", "dram", 5.0, "rapl")]
    rounds = [
        RoundResult(index=i, duration_s=1.0, output_tokens=10, energy_j=17.5, cpu_energy_j=15.0)
        for i in range(2)
    ]
    result = assemble(WindowMeasurement(duration_s=2.0, devices=devices), rounds=rounds, output_tokens=20)
    assert result.energy_j == 35.0

    shared = without_host_energy(result, ["tests/t.py::test_beside"])
    assert shared.energy_j is None and shared.cpu_energy_j is None and shared.energy_scope == []
    assert [r.energy_j for r in shared.rounds] == [None, None]
    assert shared.energy_notes[-1] == (
        "energy_j covers the GPUs only: other experiments shared the host's CPU and memory"
    )
    (flag,) = [w for w in shared.warnings if w.code == SHARED_HOST_ENERGY]
    assert "tests/t.py::test_beside" in flag.message and "dram-0" in flag.message
    assert shared.energy_by_device == devices  # the measured figures stay listed
