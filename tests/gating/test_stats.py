"""Statistics over rounds: t intervals and the exact one-sided rank test the gate decides with."""

from __future__ import annotations

import itertools

import pytest
from sample_reports import make_result

from pytest_llem.gating.metrics import METRICS
from pytest_llem.gating.stats import (
    SampleSummary,
    p_worse,
    round_statistics,
    sample_count,
    sample_summary,
    summarise,
)
from pytest_llem.results import RoundResult


def test_round_statistics_have_a_t_interval():
    stats = summarise([1.0, 2.0, 3.0, 4.0])
    assert (stats.mean, stats.median, stats.min, stats.max) == (2.5, 2.5, 1.0, 4.0)
    # t(0.975, 3) = 3.182; stdev 1.291; half-width 3.182 * 1.291 / 2 = 2.054
    assert stats.ci95_low == pytest.approx(0.446, abs=0.001) and stats.ci95_high == pytest.approx(
        4.554, abs=0.001
    )
    assert summarise([5.0]).ci95_low is None


def exact_p_by_enumeration(baseline, current):
    """P(U >= observed) over every split of the pooled values, by brute force: an independent
    check of the rank test, valid with ties (mid-ranks)."""
    pooled = baseline + current

    def u_statistic(x, y):
        return sum((a > b) + 0.5 * (a == b) for a in x for b in y)

    observed = u_statistic(current, baseline)
    indices = range(len(pooled))
    splits = list(itertools.combinations(indices, len(current)))
    at_least = 0
    for chosen in splits:
        x = [pooled[i] for i in chosen]
        y = [pooled[i] for i in indices if i not in chosen]
        at_least += u_statistic(x, y) >= observed - 1e-9
    return at_least / len(splits)


@pytest.mark.parametrize(
    ("baseline", "current"),
    [
        ([1.50, 1.50, 1.51, 1.50, 1.52], [1.80, 1.80, 1.81, 1.80, 1.79]),  # tied, fully apart
        ([1.0, 2.0, 2.0, 3.0, 4.0], [2.0, 3.0, 3.0, 4.0, 5.0]),  # ties across the two sides
        ([1.0, 1.0, 1.0], [1.0, 1.0, 2.0]),
    ],
)
def test_tied_samples_get_the_exact_permutation_p_every_time(baseline, current):
    # With ties SciPy's default switches to the normal approximation (0.00596 instead of
    # 0.00397 for the first case); whether rounds tie depends on timing, so the gate's p must
    # not. Ties are tested by enumerating every split, which is exact and deterministic.
    expected = exact_p_by_enumeration(baseline, current)
    assert p_worse(baseline, current, higher_is_better=False) == pytest.approx(expected)
    assert p_worse(baseline, current, higher_is_better=False) == p_worse(baseline, current, False)
    # Higher-is-better metrics test the other tail: the same data read as tokens/s improved.
    assert p_worse(baseline, current, higher_is_better=True) > 0.5


def test_untied_samples_get_the_exact_table_p():
    assert p_worse([1, 2, 3, 4, 5], [6, 7, 8, 9, 10], higher_is_better=False) == pytest.approx(1 / 252)
    assert p_worse([1.0, 1.1, 1.2], [1.3, 1.4, 1.5], higher_is_better=False) == pytest.approx(1 / 20)


def test_a_summary_is_the_median_and_quartiles_of_the_samples_or_the_one_figure():
    rounds = [
        RoundResult(index=i, process=p, duration_s=1.0, output_tokens=10, energy_j=energy)
        for p, energies in enumerate([[1.0, 1.2], [2.0, 2.2], [3.0, 3.2], [4.0, 4.2], [5.0, 5.2]])
        for i, energy in enumerate(energies)
    ]
    result = make_result([1.0], rounds=rounds)
    assert sample_count(result) == 5  # processes, not rounds
    summary = sample_summary(result, METRICS["energy_j"])
    assert (summary.n, summary.median, summary.q1, summary.q3) == pytest.approx((5, 3.1, 2.1, 4.1))
    single = make_result([7.0])
    assert sample_count(single) == 1
    assert sample_summary(single, METRICS["energy_j"]) == SampleSummary(1, 7.0, 7.0, 7.0)
    assert sample_summary(make_result([7.0], energy_j=None), METRICS["energy_j"]) is None


def test_round_statistics_need_two_rounds_and_cover_every_metric_the_rounds_have():
    one = make_result([1.0])
    assert round_statistics(one.rounds) == {}
    two = make_result([1.0, 3.0])
    stats = round_statistics(two.rounds)
    assert stats["energy_j"].mean == 2.0 and stats["energy_j"].n == 2
    assert "peak_memory_bytes" not in stats  # not a per-round metric
