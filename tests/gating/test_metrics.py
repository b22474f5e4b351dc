"""The metrics table: each metric's direction, unit, and how it is read from results and rounds."""

from __future__ import annotations

import pytest
from sample_reports import NOT_MEASURED, make_result

from pytest_llem.gating.metrics import METRICS, SERVING_METRICS, round_values, why_missing
from pytest_llem.results import RoundResult


def test_worse_is_more_for_costs_and_less_for_rates():
    energy, throughput = METRICS["energy_per_token_j"], METRICS["tokens_per_s"]
    assert (energy.unit, energy.higher_is_better) == ("J", False)
    assert energy.worse_by(1.0, 1.25) == pytest.approx(0.25)
    assert (throughput.unit, throughput.higher_is_better) == ("tokens/s", True)
    assert throughput.worse_by(100.0, 90.0) == pytest.approx(10.0)
    assert throughput.worse_by(100.0, 120.0) == pytest.approx(-20.0)


def test_every_serving_metric_is_in_the_table_with_its_unit_and_direction():
    for name, unit, higher_is_better in SERVING_METRICS:
        assert (METRICS[name].unit, METRICS[name].higher_is_better) == (unit, higher_is_better)


def test_round_values_are_all_the_rounds_or_none():
    rounds = [
        RoundResult(index=i, duration_s=2.0, output_tokens=10, energy_j=e) for i, e in enumerate([1.0, 3.0])
    ]
    assert round_values(rounds, METRICS["energy_j"]) == [1.0, 3.0]
    assert round_values(rounds, METRICS["energy_per_token_j"]) == pytest.approx([0.1, 0.3])
    # One round without the figure: a shorter list would silently compare other rounds.
    partial = [*rounds, RoundResult(index=2, duration_s=2.0, output_tokens=10)]
    assert round_values(partial, METRICS["energy_j"]) == []
    assert round_values(rounds, METRICS["peak_memory_bytes"]) == []  # a whole-experiment figure only
    assert round_values([], METRICS["energy_j"]) == []


def test_a_metric_is_read_from_the_whole_result():
    result = make_result([1.0, 2.0], tokens_per_round=10, round_s=2.0)
    assert METRICS["energy_j"].of_result(result) == 3.0
    assert METRICS["tokens_per_s"].of_result(result) == pytest.approx(5.0)
    assert METRICS["batch_latency_p50_s"].of_result(result) == pytest.approx(0.5)
    assert METRICS["requests_per_s"].of_result(result) is None  # not a serving result


def test_why_a_figure_is_missing_uses_the_meters_reason_for_energy():
    unmeasured = make_result([1.0], energy_j=None, warnings=[NOT_MEASURED])
    assert why_missing(METRICS["energy_per_token_j"], unmeasured) == NOT_MEASURED.message
    assert (
        why_missing(METRICS["energy_j"], make_result([1.0], energy_j=None)) == "no meter measured its energy"
    )
    no_tokens = make_result([1.0], output_tokens=0)
    assert why_missing(METRICS["energy_per_token_j"], no_tokens) == "it recorded no output tokens"
    assert why_missing(METRICS["ttft_p50_s"], no_tokens) == "its result has no ttft_p50_s"


def test_serving_metrics_are_gateable_from_results_and_rounds():
    assert METRICS["goodput"].higher_is_better and METRICS["requests_per_s"].higher_is_better
    assert not METRICS["energy_per_request_j"].higher_is_better and not METRICS["tpot_p99_s"].higher_is_better
    round_ = RoundResult(index=0, duration_s=1.0, serving={"energy_per_request_j": 2.5})
    assert METRICS["energy_per_request_j"].of_round(round_) == 2.5
    assert METRICS["goodput"].of_round(RoundResult(index=0, duration_s=1.0)) is None
