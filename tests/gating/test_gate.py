"""The gate refuses to pass a run it could not compare, and keys cases by their case key."""

from __future__ import annotations

from sample_reports import GPT2, NOT_MEASURED, OPT, make_entry, make_report, make_result

from pytest_llem.gating.gate import run_gate
from pytest_llem.gating.limits import parse_limit

LIMIT = [parse_limit("energy_per_token_j:5%")]


def report(run_id, *entries):
    return make_report(run_id, list(entries))


def test_limits_without_a_baseline_fail_with_one_line_saying_what_to_do():
    outcome = run_gate(report("now", make_entry(GPT2, make_result([1.0]))), None, LIMIT)
    assert outcome.failed and not outcome.failures
    assert outcome.failure_lines() == [
        "pytest-llem: GATE FAILED: limits were set but there is no baseline to compare with (no earlier "
        "run of this project on this machine finished uninterrupted with a measured experiment); record one "
        "with a run without --llem-compare-fail, or name one with --llem-compare=RUN"
    ]


def test_a_comparison_without_limits_passes_without_a_baseline():
    assert not run_gate(report("now", make_entry(GPT2, make_result([1.0]))), None).failed
    # per-test limits count only when a comparison was asked for
    limited = make_result([1.0], config={"compare_fail": {"energy_per_token_j": "5%"}})
    assert not run_gate(report("now", make_entry(GPT2, limited)), None, compare_requested=False).failed
    assert run_gate(report("now", make_entry(GPT2, limited)), None, compare_requested=True).failed


def test_no_measured_case_matching_the_baseline_fails_the_gate():
    baseline = report("base", make_entry(GPT2, make_result([1.0])))
    disjoint = run_gate(report("now", make_entry(OPT, make_result([1.0]))), baseline, LIMIT)
    assert disjoint.failure_lines() == [
        "pytest-llem: GATE FAILED: none of this run's 1 measured case(s) is in baseline base (1 case(s)), "
        "so nothing was compared; run the same tests as the baseline, or compare with a run of these tests"
    ]
    nothing = run_gate(report("now", make_entry(GPT2, None)), baseline, LIMIT)
    assert nothing.refusal.endswith("this run measured no case, so nothing was compared with the baseline")


def test_cases_match_on_their_key_and_a_missing_baseline_case_is_noted():
    baseline = report(
        "base",
        make_entry("test_x.py::t", make_result([1.0]), case_key="suite/test_x.py::t"),
        make_entry("test_x.py::u", make_result([1.0]), case_key="suite/test_x.py::u"),
    )
    current = report(
        "now", make_entry("x/suite/test_x.py::t", make_result([2.0]), case_key="suite/test_x.py::t")
    )
    outcome = run_gate(current, baseline, LIMIT)
    assert outcome.refusal is None
    assert [c.nodeid for c in outcome.failures] == ["x/suite/test_x.py::t"]
    assert outcome.comparison.only_in_baseline == ["test_x.py::u"] and not outcome.comparison.only_in_current
    assert outcome.notes == [
        "1 baseline case(s) were not measured in this run and were not gated: test_x.py::u"
    ]


def test_an_energy_limit_where_no_meter_measured_fails_with_one_line_naming_the_metric_and_why():
    unmeasured = make_result([1.0], energy_j=None, energy_source=None, warnings=[NOT_MEASURED])
    baseline = report("base", make_entry(GPT2, unmeasured))
    outcome = run_gate(report("now", make_entry(GPT2, unmeasured)), baseline, LIMIT)
    assert outcome.failed and not outcome.failures
    assert outcome.failure_lines() == [
        "pytest-llem: GATE FAILED: energy_per_token_j was not measured in this run or the baseline "
        f"({NOT_MEASURED.message}), so its limits gated nothing: {GPT2} (5%); measure it (for energy: a "
        "meter that reads this machine) or drop the limit"
    ]
    # Measured on one side only: still nothing to compare, and the line says which side lacks it.
    measured_before = report("base", make_entry(GPT2, make_result([1.0])))
    (line,) = run_gate(report("now", make_entry(GPT2, unmeasured)), measured_before, LIMIT).failure_lines()
    assert line.startswith("pytest-llem: GATE FAILED: energy_per_token_j was not measured in this run (")
    # A limit on a measured metric beside it still gates as before.
    both = [*LIMIT, parse_limit("tokens_per_s:30%")]
    (line,) = run_gate(report("now", make_entry(GPT2, unmeasured)), baseline, both).failure_lines()
    assert "energy_per_token_j was not measured" in line and "tokens_per_s" not in line


def test_a_budget_on_an_unmeasured_metric_fails_the_gate():
    config = {"budget": {"energy_per_token_j": 0.5, "tokens_per_s": 1.0}}
    unmeasured = make_result([1.0], energy_j=None, warnings=[NOT_MEASURED], config=config)
    outcome = run_gate(report("now", make_entry(GPT2, unmeasured)), None, compare_requested=False)
    assert outcome.failed
    assert outcome.failure_lines() == [
        "pytest-llem: GATE FAILED: energy_per_token_j was not measured in this run "
        f"({NOT_MEASURED.message}), so its limits gated nothing: {GPT2} (budget 0.500 J); measure it "
        "(for energy: a meter that reads this machine) or drop the limit"
    ]
    measured = make_result([1.0], config=config)
    assert not run_gate(report("now", make_entry(GPT2, measured)), None, compare_requested=False).failed


def test_the_verdict_counts_each_kind_of_failure_and_a_passed_gate_has_none():
    baseline = report("base", make_entry(GPT2, make_result([1.0])), make_entry(OPT, make_result([1.0])))
    over = make_result([2.0], config={"budget": {"energy_per_token_j": 0.1}})
    current = report("now", make_entry(GPT2, over), make_entry(OPT, make_result([2.0])))
    outcome = run_gate(current, baseline, LIMIT)
    assert [c.status for c in outcome.failures] == ["regression", "regression", "over_budget"]
    assert outcome.verdict() == "gate failed: 2 regressions, 1 budget exceeded (each named above)"

    nothing_to_compare = run_gate(report("now", make_entry(GPT2, make_result([1.0]))), None, LIMIT)
    assert nothing_to_compare.verdict() == "gate failed: 1 check it could not make (each named above)"
    assert run_gate(report("now", make_entry(GPT2, make_result([1.0]))), baseline, LIMIT).verdict() is None
