"""Steps in a case's history: the runs after which a figure moved and stayed moved.

The input is one figure per run, in run order (each run's gated figure, `stats.gated_figure`:
the median of its samples). Two stages:

1. **Candidates**: the segmentation that PELT (Killick, Fearnhead and Eckley, "Optimal
   detection of changepoints with a linear computational cost", JASA 2012) finds: the split of
   the series into segments of constant mean that minimises the segments' squared deviations
   from their means plus a penalty per step. The penalty is 3 σ² ln n, the leading term of
   the modified BIC (Zhang and Siegmund 2007) that R's changepoint package uses by default
   (BIC's 2 σ² ln n found a step in 15 to 19% of series of pure noise of 20 to 50 runs, with
   the confirmation below; this one in 6 to 8%), with the noise σ estimated from successive
   differences by their median absolute deviation, so one step (or a few) does not inflate it
   (Fryzlewicz's estimate for wild binary segmentation).
   Segments hold at least `MIN_SEGMENT_RUNS` runs, the fewest a rank test can judge. The
   optimum is computed exactly by optimal partitioning (PELT's pruning only speeds up the
   same answer; a history of a few thousand runs takes milliseconds without it).
2. **Confirmation**: each candidate is kept only if a two-sided Mann-Whitney U test between
   the runs of the segment before it and those of the segment after it gives p at most
   `alpha` (the gate's `SIGNIFICANCE_LEVEL` unless told). While one is not confirmed, the
   least significant is dropped and its two segments merged, and the rest are tested again.

Figures that are flagged (a quality flag doubts them) or not finite (NaN, infinity, missing)
take no part: they are shown by the caller, never in a segment. Steps name positions of the
input, so a skipped run never shifts where a step is marked.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from pytest_llem.gating.stats import MIN_ROUNDS_FOR_SIGNIFICANCE, SIGNIFICANCE_LEVEL, p_worse

#: The fewest runs on each side of a step: the fewest a rank test can decide on.
MIN_SEGMENT_RUNS = MIN_ROUNDS_FOR_SIGNIFICANCE
#: The penalty per step, in σ² ln n (see the module docstring).
PENALTY_SIGMA2_LOG_N = 3.0
#: Scale of the median absolute deviation to a normal distribution's σ.
_MAD_TO_SIGMA = 1.4826


@dataclass(frozen=True)
class Step:
    """A confirmed step: the figure moved from `before` to `after` (each its segment's median)
    at the run at position `index` of the input (the first run after the step)."""

    index: int
    before: float
    after: float
    p_value: float
    #: Runs of the segments on each side (figures that took part only).
    runs_before: int
    runs_after: int

    @property
    def change_pct(self) -> float | None:
        if self.before == 0:
            return None
        return (self.after - self.before) / abs(self.before) * 100


def find_steps(
    figures: Sequence[float | None],
    flagged: Sequence[bool] | None = None,
    alpha: float = SIGNIFICANCE_LEVEL,
    min_size: int = MIN_SEGMENT_RUNS,
) -> list[Step]:
    """The confirmed steps of `figures` (one per run, in order), oldest first; runs that are
    `flagged`, or whose figure is missing or not finite, are left out of the search."""
    flags = list(flagged) if flagged is not None else [False] * len(figures)
    if len(flags) != len(figures):
        raise ValueError(f"{len(figures)} figures but {len(flags)} flags")
    kept = [
        (position, float(value))
        for position, (value, flag) in enumerate(zip(figures, flags, strict=True))
        if not flag and value is not None and math.isfinite(value)
    ]
    values = [value for _, value in kept]
    cuts = _confirmed(values, _segmentation(values, min_size), alpha)
    bounds = [0, *cuts, len(values)]
    steps = []
    for i, cut in enumerate(cuts):
        before, after = values[bounds[i] : cut], values[cut : bounds[i + 2]]
        steps.append(
            Step(
                index=kept[cut][0],
                before=statistics.median(before),
                after=statistics.median(after),
                p_value=_p_two_sided(before, after),
                runs_before=len(before),
                runs_after=len(after),
            )
        )
    return steps


def noise_sigma(values: Sequence[float]) -> float:
    """σ of the noise around a piecewise-constant series: the median absolute deviation of its
    successive differences, scaled to a normal σ and divided by √2 (a difference holds two
    noises). A step moves one difference, so it hardly moves the estimate. Where more than
    half the differences are equal, their standard deviation instead."""
    if len(values) < 3:
        return 0.0
    diffs = [b - a for a, b in zip(values, values[1:], strict=False)]
    centre = statistics.median(diffs)
    robust = statistics.median(abs(d - centre) for d in diffs) * _MAD_TO_SIGMA
    # Figures on a few levels (a count, a memory peak) can leave most differences at zero, and
    # a zero penalty would cut everywhere: their standard deviation is the estimate then.
    return (robust or statistics.pstdev(diffs)) / math.sqrt(2)


def _segmentation(values: list[float], min_size: int) -> list[int]:
    """The cut positions of the penalised least-squares segmentation (see the module docstring)."""
    n = len(values)
    if n < 2 * min_size:
        return []
    import numpy as np

    x = np.asarray(values, dtype=float)
    # Centred and scaled first: squared sums of large figures (bytes, say) lose no precision.
    scale = float(np.max(np.abs(x - np.median(x)))) or 1.0
    x = (x - np.median(x)) / scale
    penalty = PENALTY_SIGMA2_LOG_N * noise_sigma(x.tolist()) ** 2 * math.log(n)
    sums = np.concatenate([[0.0], np.cumsum(x)])
    squares = np.concatenate([[0.0], np.cumsum(x * x)])
    best = np.full(n + 1, np.inf)
    best[0] = -penalty
    last_cut = np.zeros(n + 1, dtype=int)
    for end in range(min_size, n + 1):
        starts = np.arange(0, end - min_size + 1)
        starts = starts[np.isfinite(best[starts])]
        length = end - starts
        cost = (squares[end] - squares[starts]) - (sums[end] - sums[starts]) ** 2 / length
        total = best[starts] + np.maximum(cost, 0.0) + penalty
        choice = int(np.argmin(total))
        best[end], last_cut[end] = total[choice], starts[choice]
    cuts, end = [], n
    while end > 0:
        end = int(last_cut[end])
        if end > 0:
            cuts.append(end)
    return sorted(cuts)


def _confirmed(values: list[float], cuts: list[int], alpha: float) -> list[int]:
    """The cuts whose rank test holds, the least significant dropped one at a time. Dropping a
    cut changes only its neighbours' segments, so only they are tested again."""
    cuts = list(cuts)

    def p_of(i: int) -> float:
        low = cuts[i - 1] if i > 0 else 0
        high = cuts[i + 1] if i + 1 < len(cuts) else len(values)
        return _p_two_sided(values[low : cuts[i]], values[cuts[i] : high])

    p_values = [p_of(i) for i in range(len(cuts))]
    while cuts:
        weakest = max(range(len(cuts)), key=p_values.__getitem__)
        if p_values[weakest] <= alpha:
            break
        del cuts[weakest], p_values[weakest]
        for neighbour in (weakest - 1, weakest):
            if 0 <= neighbour < len(cuts):
                p_values[neighbour] = p_of(neighbour)
    return cuts


def _p_two_sided(before: list[float], after: list[float]) -> float:
    """Two-sided Mann-Whitney U p-value: twice the smaller one-sided p (`stats.p_worse`, which
    picks the exact, permutation or normal method from the data alone), at most 1."""
    if len(set(before) | set(after)) == 1:
        return 1.0
    up = p_worse(before, after, higher_is_better=False)
    down = p_worse(before, after, higher_is_better=True)
    return min(1.0, 2 * min(up, down))
