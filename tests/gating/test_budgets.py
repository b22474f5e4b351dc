"""Budgets: a test's absolute ceilings per metric, checked on the run with no baseline."""

from __future__ import annotations

from sample_reports import GPT2, NOT_MEASURED, SHORT_WINDOW, make_entry, make_report, make_result

from pytest_llem.gating.budgets import check_budgets, unmeasured_budgets


def test_budgets_need_no_baseline():
    within = make_result([1.0], config={"budget": {"energy_per_token_j": 0.2}})
    over = make_result([3.0], config={"budget": {"energy_per_token_j": 0.2}})
    report = make_report("now", [make_entry(GPT2, within), make_entry("t::over", over)])
    checks = {c.nodeid: c for c in check_budgets(report)}
    assert checks[GPT2].status == "ok"
    assert checks["t::over"].status == "over_budget"
    assert (
        checks["t::over"].line()
        == "pytest-llem: OVER BUDGET t::over energy_per_token_j 0.300 J (budget 0.200 J)"
    )


def test_a_flagged_result_over_budget_is_flagged_unless_flagged_results_are_gated():
    over = make_result([3.0], config={"budget": {"energy_per_token_j": 0.2}}, warnings=[SHORT_WINDOW])
    report = make_report("now", [make_entry(GPT2, over)])
    assert [c.status for c in check_budgets(report)] == ["flagged"]
    assert [c.status for c in check_budgets(report, gate_flagged=True)] == ["over_budget"]


def test_a_budget_on_a_metric_the_run_has_no_figure_for_is_named_with_the_reason():
    unmeasured = make_result(
        [1.0], config={"budget": {"energy_per_token_j": 0.2}}, energy_j=None, warnings=[NOT_MEASURED]
    )
    report = make_report("now", [make_entry(GPT2, unmeasured)])
    assert check_budgets(report) == []  # nothing was checked, so nothing passed
    (missing,) = unmeasured_budgets(report)
    assert (missing.nodeid, missing.metric, missing.limit) == (GPT2, "energy_per_token_j", "budget 0.200 J")
    assert missing.missing_in == ["this run"] and missing.reason == NOT_MEASURED.message


def test_a_budget_checks_the_figure_the_results_table_shows_the_samples_median():
    # Five rounds of 2 s: the table shows 2.00 s, the median; the pooled windows last 10 s.
    result = make_result([1.0, 1.1, 1.2, 1.3, 1.4], config={"budget": {"duration_s": 3.0, "energy_j": 1.25}})
    report = make_report("now", [make_entry(GPT2, result)])
    checks = {c.metric: c for c in check_budgets(report)}
    assert result.duration_s == 10.0 and checks["duration_s"].current == 2.0
    assert checks["duration_s"].status == "ok"
    assert (
        checks["energy_j"].status == "ok" and checks["energy_j"].current == 1.2
    )  # median, not the 6.0 J sum
