"""Statistics over rounds, and the significance test behind regression gating.

Uses SciPy (the t distribution for confidence intervals, the Mann-Whitney U rank test for
comparisons), imported only when there are rounds to summarise or compare.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from pytest_llem.gating.metrics import METRICS, Metric, round_values
from pytest_llem.results import ExperimentResult, MetricStats, RoundResult

CONFIDENCE = 0.95
#: Both sides need this many rounds before a regression must also be significant.
MIN_ROUNDS_FOR_SIGNIFICANCE = 3
#: A change counts as real when the one-sided rank test gives p at most this (3 rounds a
#: side can reach exactly 0.05 and no lower).
SIGNIFICANCE_LEVEL = 0.05


def summarise(values: list[float]) -> MetricStats:
    """Mean, median, spread and the 95% t-interval of the mean (None below two values)."""
    mean = statistics.fmean(values)
    stdev = statistics.stdev(values) if len(values) >= 2 else None
    low = high = None
    if stdev is not None:
        from scipy.stats import t

        half_width = float(t.ppf((1 + CONFIDENCE) / 2, len(values) - 1)) * stdev / len(values) ** 0.5
        low, high = mean - half_width, mean + half_width
    return MetricStats(
        n=len(values),
        mean=mean,
        median=statistics.median(values),
        stdev=stdev,
        min=min(values),
        max=max(values),
        ci95_low=low,
        ci95_high=high,
    )


#: Beyond this many ways of splitting the pooled samples into the two sides, a tied sample
#: is tested with the normal approximation (tie-corrected) instead of enumerating them all.
MAX_EXACT_ARRANGEMENTS = 20_000  # 8 samples a side (12,870 splits) take about 0.1 s


def p_worse(baseline: list[float], current: list[float], higher_is_better: bool) -> float:
    """One-sided Mann-Whitney U p-value that `current` is worse than `baseline`.

    A rank test: it assumes no distribution, and one outlying round cannot decide it alone.
    The method is chosen from the data alone, never from timing, so the same samples always
    give the same p:

    - no tied values: the exact distribution of U (the normal approximation once both sides
      have more than 8 samples, as SciPy's ``auto`` does);
    - tied values: the exact permutation distribution of U, enumerating every split of the
      pooled samples (valid with ties, where the exact table is not), up to
      `MAX_EXACT_ARRANGEMENTS` splits; beyond that the tie-corrected normal approximation.
    """
    from math import comb

    from scipy.stats import PermutationMethod, mannwhitneyu

    alternative = "less" if higher_is_better else "greater"
    pooled = [*baseline, *current]
    if len(set(pooled)) == len(pooled):
        method: str | PermutationMethod = "auto"
    elif comb(len(pooled), len(current)) <= MAX_EXACT_ARRANGEMENTS:
        method = PermutationMethod(n_resamples=float("inf"))  # every split: exact, no randomness
    else:
        method = "asymptotic"
    return float(mannwhitneyu(current, baseline, alternative=alternative, method=method).pvalue)


def round_statistics(rounds: list[RoundResult]) -> dict[str, MetricStats]:
    """Per metric, the statistics over the rounds; empty with fewer than two rounds."""
    if len(rounds) < 2:
        return {}
    summaries = {}
    for name, metric in METRICS.items():
        values = round_values(rounds, metric)
        if values:
            summaries[name] = summarise(values)
    return summaries


def sample_values(rounds: list[RoundResult], metric: Metric) -> list[float]:
    """The independent samples of a metric: per-process medians when the experiment ran in
    several processes (rounds inside one process share its state and are not independent
    of each other), else the rounds themselves."""
    values = round_values(rounds, metric)
    processes = sorted({r.process for r in rounds})
    if len(processes) < 2 or not values:
        return values
    by_process: dict[int, list[float]] = {}
    for round_result, value in zip(rounds, values, strict=True):
        by_process.setdefault(round_result.process, []).append(value)
    return [statistics.median(by_process[p]) for p in processes]


@dataclass(frozen=True)
class SampleSummary:
    """A metric of one experiment as tables show it: over its samples (see `sample_values`),
    the median and the interquartile range; with one sample, that sample's value (the whole
    experiment's figure) and n = 1."""

    n: int
    median: float
    q1: float
    q3: float


def sample_summary(result: ExperimentResult, metric: Metric) -> SampleSummary | None:
    """The one figure of `metric` for `result` that summaries and comparisons show."""
    samples = sample_values(result.rounds, metric)
    if len(samples) >= 2:
        q1, _, q3 = statistics.quantiles(samples, n=4, method="inclusive")
        return SampleSummary(len(samples), statistics.median(samples), q1, q3)
    value = metric.of_result(result)
    return None if value is None else SampleSummary(1, value, value, value)


def gated_figure(result: ExperimentResult, metric: Metric) -> float | None:
    """The one figure of `metric` for `result`: the median of its samples (its own figure with
    one sample). Comparisons and budgets gate on it, and every output shows it."""
    summary = sample_summary(result, metric)
    return None if summary is None else summary.median


def sample_count(result: ExperimentResult) -> int:
    """How many independent samples an experiment has: its processes, else its rounds."""
    processes = {r.process for r in result.rounds}
    return len(processes) if len(processes) > 1 else max(1, len(result.rounds))
