"""A serving load's summary: rates, percentiles, goodput, energy per request and per token."""

from __future__ import annotations

import math
from datetime import datetime, timezone

import pytest
from sample_reports import make_entry
from serving_loads import (
    chunked,
    record,
    summarise_records,
    window,
)

from pytest_llem.backends.serving.summary import summarise
from pytest_llem.energy.uncertainty import energy_uncertainty
from pytest_llem.isolation.assembly import assemble_result
from pytest_llem.output.summary import SummaryView
from pytest_llem.output.terminal import format_summary
from pytest_llem.results import DeviceEnergy, WindowMeasurement


def test_summary_rates_percentiles_goodput_and_energy():
    records = [
        record(0, 0.0, [0.1, 0.2, 0.3, 0.4], 4),  # ttft 0.1, tpot 0.1033
        record(1, 0.5, [1.5, 1.6, 1.7, 1.8], 4),  # ttft 1.0: misses the ttft objective
        record(2, 1.0, [1.2, 1.3, 1.4], 4),  # usage says 4 in 3 chunks: the first held 2
        record(3, 1.5, [], None, error="HTTP 500: boom"),
    ]
    summary = summarise(
        records,
        server="stub",
        server_log=None,
        request_rate=2.0,
        concurrency=None,
        slo={"ttft_s": 0.5},
        whole=window(2.0, 100.0),
        steady_span=(0.3, 1.5),
        steady_measured=window(1.0, 60.0),
        steady_note=None,
    )
    assert (summary.n_requests, summary.completed, summary.errors) == (4, 3, 1)
    assert summary.error_samples == ["request 3: HTTP 500: boom"] and summary.token_mismatches == 0
    assert summary.output_tokens == 12 and summary.input_tokens == 12
    assert summary.requests_per_s == 1.5 and summary.output_tokens_per_s == 6.0
    assert summary.good_requests == 2 and summary.goodput == 0.5
    assert summary.ttft.count == 3 and summary.ttft.p50_s <= summary.ttft.p90_s <= summary.ttft.p99_s
    assert summary.itl.count == 8
    assert summary.energy_per_request_whole_j == pytest.approx(100 / 3)
    assert summary.energy_per_output_token_whole_j == pytest.approx(100 / 12)
    assert summary.energy_per_good_request_j == pytest.approx(50.0)
    # Steady state: 7 tokens arrived in [0.3, 1.5] (2 + 1 + request 2's 2 + 1 + 1) -> 60/7 J/token,
    # x 4 tokens a request.
    assert summary.steady.output_tokens == 7 and summary.energy_per_output_token_j == pytest.approx(60 / 7)
    assert summary.energy_per_request_j == pytest.approx(60 / 7 * 4)

    unmeasured = summary.model_copy(update={"energy_j": None, "steady": None})
    assert unmeasured.energy_per_request_j is None and unmeasured.energy_per_good_request_j is None


def test_the_steady_windows_flags_and_uncertainty_travel_with_its_figures():
    from pytest_llem.energy.quality import assess_window

    def measured(duration_s: float, samples: int) -> WindowMeasurement:
        device = DeviceEnergy(
            device="gpu0",
            energy_j=300 * duration_s,
            duration_s=duration_s,
            energy_source="nvml-counter",
            power_samples=samples,
        )
        return WindowMeasurement(
            duration_s=duration_s, devices=[device], warnings=assess_window(duration_s, [device])
        )

    records = [chunked(0, 0.0, [1.0, 2.0], [" t0", " t1"], 2)]
    steady = measured(0.31, 3)
    summary = summarise_records(records, steady_span=(1.0, 1.31), steady=steady)
    codes = [w.code for w in summary.warnings]
    assert codes == ["short_window", "few_power_samples"]
    assert all(w.message.startswith("steady-state window: ") for w in summary.warnings)
    # Its own uncertainty: a 0.31 s window's counter resolution, not the whole load's.
    assert summary.steady.energy_uncertainty.parts["counter_resolution"] == pytest.approx(
        0.1 / math.sqrt(6) / 0.31
    )
    whole = measured(20.0, 400)
    result = assemble_result(
        identity={"experiment_id": "e", "config_hash": "c", "config": {}, "workload": None},
        measured=whole,
        window_count=1,
        input_tokens=None,
        output_tokens=2,
        batch_latencies_s=[],
        first_token_latencies_s=[],
        inter_token_latencies_s=[],
        peak_memory=None,
        flops_estimate=None,
        rounds=[],
        phase_durations_s={},
        extra={},
        serving=summary,
        started_at=datetime.now(timezone.utc),
        finished_at=datetime.now(timezone.utc),
    )
    assert result.flagged and [w.code for w in result.warnings] == codes
    result.energy_uncertainty = energy_uncertainty(result)
    assert result.uncertainty_of("energy_per_output_token_j") == summary.steady.energy_uncertainty
    assert result.uncertainty_of("energy_per_request_whole_j") == result.energy_uncertainty
    cells = [
        line
        for line in format_summary(
            [make_entry("t::serve", result)], SummaryView(("test", "energy_per_output_token_j", "status"))
        )
    ]
    steady_pct = 100 * summary.steady.energy_uncertainty.relative
    assert any(f"±{steady_pct:.1f}%" in line and "passed !" in line for line in cells)
