"""What the history site plots: cases across runs, each run's figure with its spread and flag,
steps searched per machine, machine changes, and the regressions (latest step, worse)."""

from __future__ import annotations

import random

import pytest
from sample_reports import EPYC, GPT2, H100, OPT, make_entry, make_result, sample_commit_label, sample_history

from pytest_llem.fingerprints.machine import GpuInfo, MachineInfo
from pytest_llem.output.history_site.series import case_histories

H200 = MachineInfo(id="h200x1", gpus=[GpuInfo(name="NVIDIA H200", power_limit_w=700.0)], driver="580.1")


def levels(*spans: tuple[float, int], seed: int = 1) -> list[list[float]]:
    """Five noisy rounds per run: `count` runs around each `level` in turn."""
    rng = random.Random(seed)
    return [
        [rng.gauss(level, level * 0.01) for _ in range(5)] for level, count in spans for _ in range(count)
    ]


def metric(case, name: str):
    return next(h for h in case.metrics if h.metric.name == name)


def test_each_run_gives_its_median_its_quartiles_and_its_commit():
    (case,) = case_histories(sample_history([[1.0, 2.0, 3.0, 4.0, 5.0], [2.0, 2.0, 2.0, 2.0, 2.0]]))

    energy = metric(case, "energy_j")

    assert [run.label for run in case.runs] == [sample_commit_label(0), sample_commit_label(1)]
    assert energy.figures[0].value == 3.0 and (energy.figures[0].q1, energy.figures[0].q3) == (2.0, 4.0)
    assert energy.figures[0].n == 5 and not energy.figures[0].flagged
    assert case.key == GPT2 and case.project == "bench" and case.nodeid == GPT2


def test_a_run_without_a_commit_is_labelled_by_its_start_time():
    reports = sample_history([[1.0, 1.1]])
    reports[0].source = None
    (case,) = case_histories(reports)
    assert case.runs[0].label == "2026-01-01 00:00" and case.runs[0].commit is None


def test_a_planted_step_is_found_at_its_run_and_is_a_regression_when_worse():
    (case,) = case_histories(sample_history(levels((5.0, 8), (6.0, 8))))

    energy = metric(case, "energy_per_token_j")

    (marked,) = energy.steps
    assert marked.step.index == 8 and marked.worse and marked.machine_id == "h100x1"
    assert energy.regressions == [marked]
    # Tokens per second did not move: no step there.
    assert metric(case, "tokens_per_s").steps == []


def test_a_later_step_back_leaves_no_regression():
    (case,) = case_histories(sample_history(levels((5.0, 8), (6.0, 8), (5.0, 8))))
    energy = metric(case, "energy_j")
    assert [(m.step.index, m.worse) for m in energy.steps] == [(8, True), (16, False)]
    assert energy.regressions == []


def test_flagged_runs_are_kept_marked_and_left_out_of_step_detection():
    (case,) = case_histories(sample_history(levels((5.0, 8), (7.0, 6)), flagged=frozenset(range(8, 14))))
    energy = metric(case, "energy_j")
    assert [f.flagged for f in energy.figures] == [False] * 8 + [True] * 6
    assert energy.steps == []


def test_steps_are_searched_per_machine_and_a_new_machine_is_marked_not_stepped():
    # Alternating machines at different levels: no step within either; the H200 steps at run 12.
    runs = levels((5.0, 24), seed=3)
    machines = [H100 if i % 2 == 0 else H200 for i in range(24)]
    for i in range(1, 24, 2):
        runs[i] = [e * (2.0 if i < 12 else 2.4) for e in runs[i]]

    (case,) = case_histories(sample_history(runs, machines))
    energy = metric(case, "energy_j")

    assert [(m.machine_id, m.step.index) for m in energy.steps] == [("h200x1", 13)]
    (change,) = case.machine_changes
    assert change.index == 1 and change.new_machine and change.machine_id == "h200x1"
    assert any("GPU models" in line for line in change.differences)


def test_a_software_change_on_the_same_machine_is_marked_with_what_changed():
    before = H100.model_copy(update={"software": {"torch": "2.5.0"}})
    after = H100.model_copy(update={"software": {"torch": "2.6.0"}})
    (case,) = case_histories(sample_history(levels((5.0, 6)), [before] * 3 + [after] * 3))
    (change,) = case.machine_changes
    assert (change.index, change.new_machine) == (3, False)
    assert change.differences == ["software and settings: torch 2.5.0 -> 2.6.0"]


def test_cases_are_told_apart_by_project_and_key_and_resumed_results_are_not_counted_twice():
    reports = sample_history([[1.0, 1.1]] * 3)
    reports[1].experiments.append(make_entry(OPT, make_result([2.0, 2.1])))
    reports[2].experiments[0].resumed = True
    other = sample_history([[3.0, 3.1]], project="other")

    cases = case_histories([*reports, *other])

    assert [(c.project, c.key, len(c.runs)) for c in cases] == [
        ("bench", GPT2, 2),
        ("bench", OPT, 1),
        ("other", GPT2, 1),
    ]
    assert len({c.slug for c in cases}) == 3
    assert all(c.slug.replace("-", "").replace("_", "").replace(".", "").isalnum() for c in cases)


def test_only_the_metrics_asked_for_and_only_those_with_figures():
    history = sample_history([[1.0, 1.1]] * 2, machines=[EPYC, EPYC])
    (every,) = case_histories(history)
    (asked,) = case_histories(history, ["tokens_per_s", "ttft_p50_s"])
    assert "energy_j" in [h.metric.name for h in every.metrics]
    assert "requests_per_s" not in [h.metric.name for h in every.metrics]  # no serving figure
    assert [h.metric.name for h in asked.metrics] == ["tokens_per_s"]


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_figures_are_shown_as_missing_steps_and_never_crash(bad):
    runs = levels((5.0, 6), (6.0, 6))
    runs[4] = [bad]  # one round: the whole experiment's figure
    (case,) = case_histories(sample_history(runs))
    energy = metric(case, "energy_j")
    assert energy.figures[4].value is None
    assert [m.step.index for m in energy.steps] == [6]
