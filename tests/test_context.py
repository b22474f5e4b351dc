"""The workload's context: passes inside a window and the minimum measured time per round."""

from __future__ import annotations

import time

import pytest

from pytest_llem.config import build_config
from pytest_llem.context import ExperimentContext, passes_until
from pytest_llem.energy import quality
from pytest_llem.energy.meter import NoEnergyMeter


class GpuMeter(NoEnergyMeter):
    """Times windows as `energy='none'` does, but says it reads a GPU."""

    measures_gpus = True


def test_the_minimum_defaults_to_five_seconds_only_when_a_gpu_is_measured():
    assert ExperimentContext(build_config({}), NoEnergyMeter()).min_window_s == 0.0
    assert ExperimentContext(build_config({}), GpuMeter()).min_window_s == quality.MIN_WINDOW_S == 5.0
    asked = build_config({"min_window_s": 0.5})
    assert ExperimentContext(asked, GpuMeter()).min_window_s == 0.5
    assert ExperimentContext(build_config({"min_window_s": 0}), GpuMeter()).min_window_s == 0.0


def test_passes_until_runs_at_least_once_and_stops_at_the_minimum():
    clock = iter([0.4, 0.9, 1.2, 9.9])
    assert list(passes_until(1.0, lambda: next(clock))) == [0, 1, 2]
    assert list(passes_until(0.0, lambda: 0.0)) == [0]


def test_passes_fill_the_round_and_count_per_round():
    ctx = ExperimentContext(build_config({"rounds": 2, "min_window_s": 0.1}), NoEnergyMeter())
    with pytest.raises(RuntimeError, match="needs an open ctx.window"):
        next(ctx.passes())
    for _ in ctx.rounds():
        with ctx.window():
            for _ in ctx.passes():
                time.sleep(0.03)
    assert all(sum(w.duration_s for w in r.windows) >= 0.1 for r in ctx.round_records)
    assert all(r.passes >= 4 for r in ctx.round_records)
    assert ctx.extra["passes"] == ctx.passes_run == sum(r.passes for r in ctx.round_records)


def test_assess_length_flags_each_short_round():
    assert quality.assess_length([1.0, 2.0], 1.0) == []
    (flag,) = quality.assess_length([0.25, 2.0, 0.5], 1.0)
    assert flag.code == quality.SHORT_WINDOW
    assert flag.message.startswith("round 1 was measured for 0.25 s, under min_window_s=1 s")
    assert "round 3 was measured for 0.50 s" in flag.message and "round 2" not in flag.message
