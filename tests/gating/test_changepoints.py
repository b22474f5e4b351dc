"""Steps in a history of per-run figures: planted steps found where they are, noise left alone,
flagged and non-finite figures out of the search, and every step confirmed by the rank test."""

from __future__ import annotations

import math
import random
import time

import pytest

from pytest_llem.gating.changepoints import MIN_SEGMENT_RUNS, find_steps, noise_sigma
from pytest_llem.gating.stats import SIGNIFICANCE_LEVEL


def noisy(level: float, count: int, rng: random.Random, sigma: float = 1.0) -> list[float]:
    return [rng.gauss(level, sigma) for _ in range(count)]


def test_a_planted_step_is_found_at_the_first_run_after_it():
    rng = random.Random(7)
    figures = noisy(100.0, 12, rng) + noisy(110.0, 12, rng)

    (step,) = find_steps(figures)

    assert step.index == 12
    assert step.before == pytest.approx(100.0, abs=1.0) and step.after == pytest.approx(110.0, abs=1.0)
    assert step.change_pct == pytest.approx(10.0, abs=1.5)
    assert step.p_value <= SIGNIFICANCE_LEVEL
    assert (step.runs_before, step.runs_after) == (12, 12)


def test_a_step_down_is_found_as_well():
    rng = random.Random(3)
    (step,) = find_steps(noisy(5.0, 8, rng, 0.05) + noisy(4.0, 9, rng, 0.05))
    assert step.index == 8 and step.after < step.before


def test_pure_noise_gives_no_step():
    assert find_steps(noisy(100.0, 30, random.Random(0), sigma=3.0)) == []


def test_pure_noise_rarely_gives_a_step():
    # Measured: about 6 to 8% of noise series of 20 to 50 runs show a (false) step (seed 3 of
    # the test above is one), the price of finding a 2 sigma step in 20 runs nine times in ten.
    rng = random.Random(2026)
    false_steps = sum(1 for _ in range(200) if find_steps(noisy(50.0, 30, rng, sigma=2.0)))
    assert false_steps <= 20, false_steps


def test_two_steps_up_then_down_are_both_found():
    rng = random.Random(11)
    figures = noisy(100.0, 10, rng) + noisy(112.0, 10, rng) + noisy(95.0, 10, rng)

    steps = find_steps(figures)

    assert [s.index for s in steps] == [10, 20]
    assert steps[0].after > steps[0].before and steps[1].after < steps[1].before
    # Each step's sides are the segments between its neighbours, not the whole history.
    assert [(s.runs_before, s.runs_after) for s in steps] == [(10, 10), (10, 10)]


def test_a_step_made_only_of_flagged_runs_is_ignored():
    rng = random.Random(5)
    figures = noisy(100.0, 12, rng) + noisy(140.0, 8, rng)
    flagged = [False] * 12 + [True] * 8

    assert find_steps(figures, flagged) == []
    assert [s.index for s in find_steps(figures)] == [12]  # the same figures unflagged: a step


def test_flagged_and_missing_runs_do_not_shift_where_a_step_is_marked():
    rng = random.Random(9)
    figures: list[float | None] = noisy(100.0, 10, rng) + noisy(120.0, 10, rng)
    flagged = [False] * 20
    flagged[3] = flagged[11] = True
    figures[5] = None
    figures[12] = float("nan")

    (step,) = find_steps(figures, flagged)

    assert step.index == 10
    assert (step.runs_before, step.runs_after) == (8, 8)


@pytest.mark.parametrize(
    "figures",
    [
        [],
        [1.0],
        [float("nan")] * 10,
        [math.inf, -math.inf, None, float("nan")] * 5,
        [3.0] * 12,
        [1.0, float("inf"), 1.0, 1.0, float("nan"), 2.0, 2.0, -float("inf"), 2.0, None],
        [1e300, -1e300] * 6,
        [0.0] * 6 + [1e-300] * 6,
    ],
    ids=["empty", "one", "all-nan", "non-finite", "constant", "mixed", "huge", "tiny"],
)
def test_non_finite_missing_or_degenerate_figures_never_crash(figures):
    steps = find_steps(figures)
    assert all(math.isfinite(s.before) and math.isfinite(s.after) for s in steps)


def test_non_finite_figures_are_left_out_and_the_rest_still_found():
    figures = [1.0, 1.0, float("nan"), 1.0, 1.0, math.inf, 2.0, 2.0, 2.0, None, 2.0]
    (step,) = find_steps(figures)
    assert step.index == 6 and (step.before, step.after) == (1.0, 2.0)


def test_a_candidate_the_rank_test_does_not_confirm_is_not_marked():
    # Three runs a side: the two-sided test's smallest p is 0.1, so even a doubling is unconfirmed.
    figures = [100.0, 101.0, 99.0, 200.0, 201.0, 199.0]
    assert len(figures) == 2 * MIN_SEGMENT_RUNS
    assert find_steps(figures) == []
    (step,) = find_steps(figures, alpha=0.1)
    assert step.index == 3 and step.p_value == pytest.approx(0.1)


def test_flags_must_match_the_figures():
    with pytest.raises(ValueError, match="3 figures but 2 flags"):
        find_steps([1.0, 2.0, 3.0], [False, True])


def test_the_noise_estimate_hardly_moves_with_a_step():
    rng = random.Random(1)
    flat = noisy(0.0, 40, rng)
    stepped = flat[:20] + [v + 50.0 for v in flat[20:]]
    assert noise_sigma(stepped) == pytest.approx(noise_sigma(flat), rel=0.1)
    assert 0.6 < noise_sigma(flat) < 1.4


def test_figures_on_a_few_levels_are_judged_quickly_and_give_no_false_step():
    # A memory peak that flips between two values: most differences are zero, and the noise
    # estimate must not be, or every run would be a candidate (each tested with ties).
    rng = random.Random(8)
    figures = [float(rng.choice([1000, 1000, 1000, 1024])) for _ in range(300)]
    started = time.perf_counter()
    steps = find_steps(figures)
    assert time.perf_counter() - started < 20.0
    assert steps == []
    assert noise_sigma(figures) > 0


def test_a_step_between_two_levels_is_still_found_when_most_differences_are_zero():
    figures = [1000.0] * 10 + [1024.0] * 10
    (step,) = find_steps(figures)
    assert (step.index, step.before, step.after) == (10, 1000.0, 1024.0)
