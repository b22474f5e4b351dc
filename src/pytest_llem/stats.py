"""Statistics over rounds, and the significance test behind regression gating.

Uses SciPy (the t distribution for confidence intervals, the Mann-Whitney U rank test for
comparisons), imported only when there are rounds to summarise or compare.
"""

from __future__ import annotations

import statistics

from pytest_llem.results import MetricStats

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


def p_worse(baseline: list[float], current: list[float], higher_is_better: bool) -> float:
    """One-sided Mann-Whitney U p-value that `current` is worse than `baseline`.

    A rank test: it assumes no distribution, and one outlying round cannot decide it alone.
    """
    from scipy.stats import mannwhitneyu

    alternative = "less" if higher_is_better else "greater"
    return float(mannwhitneyu(current, baseline, alternative=alternative).pvalue)
