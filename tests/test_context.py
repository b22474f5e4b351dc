"""The workload's context: passes inside a window and the minimum measured time per round."""

from __future__ import annotations

import math
import time

import pytest

from pytest_llem.config import build_config
from pytest_llem.context import ExperimentContext, passes_until
from pytest_llem.energy import quality
from pytest_llem.energy.meter import NoEnergyMeter
from pytest_llem.errors import ExperimentFailed, InvalidRecord
from pytest_llem.results import MAX_TOKEN_COUNT


class GpuMeter(NoEnergyMeter):
    """Times windows as `energy='none'` does, but says it reads a GPU."""

    measures_gpus = True


def test_the_minimum_defaults_to_five_seconds_with_a_gpu_and_to_the_cpus_minimum_without():
    cpu_default = ExperimentContext(build_config({}), NoEnergyMeter()).min_window_s
    assert cpu_default == quality.MIN_CPU_WINDOW_S > 0
    assert ExperimentContext(build_config({}), GpuMeter()).min_window_s == quality.MIN_WINDOW_S == 5.0
    asked = build_config({"min_window_s": 0.5})
    assert ExperimentContext(asked, GpuMeter()).min_window_s == 0.5
    assert ExperimentContext(asked, NoEnergyMeter()).min_window_s == 0.5
    assert ExperimentContext(build_config({"min_window_s": 0}), NoEnergyMeter()).min_window_s == 0.0
    assert ExperimentContext(build_config({"min_window_s": 0}), GpuMeter()).min_window_s == 0.0


def test_passes_until_runs_at_least_once_and_stops_at_the_minimum():
    clock = iter([0.4, 0.9, 1.2, 9.9])
    assert list(passes_until(1.0, lambda: next(clock))) == [0, 1, 2]
    assert list(passes_until(0.0, lambda: 0.0)) == [0]


def test_passes_fill_the_round_and_count_per_round():
    ctx = ExperimentContext(build_config({"rounds": 2, "min_window_s": 0.1}), NoEnergyMeter())
    with pytest.raises(RuntimeError, match="needs an open ctx.window"):
        next(ctx.passes())
    pass_ends = []  # per round: seconds since its window opened, as each pass ended
    for _ in ctx.rounds():
        with ctx.window():
            opened = time.perf_counter()
            pass_ends.append([])
            for _ in ctx.passes():
                time.sleep(0.03)
                pass_ends[-1].append(time.perf_counter() - opened)
    assert all(sum(w.duration_s for w in r.windows) >= 0.1 for r in ctx.round_records)
    # Passes ran until the round's window reached the minimum, and not one more (however long
    # a busy machine made each sleep): the pass before the last ended short of it.
    for ends, record in zip(pass_ends, ctx.round_records, strict=True):
        assert record.passes == len(ends) >= 1
        assert len(ends) == 1 or ends[-2] < 0.1
    assert ctx.extra["passes"] == ctx.passes_run == sum(r.passes for r in ctx.round_records)


def test_assess_length_flags_each_short_round():
    assert quality.assess_length([1.0, 2.0], 1.0) == []
    (flag,) = quality.assess_length([0.25, 2.0, 0.5], 1.0)
    assert flag.code == quality.SHORT_WINDOW
    assert flag.message.startswith("round 1 was measured for 0.25 s, under min_window_s=1 s")
    assert "round 3 was measured for 0.50 s" in flag.message and "round 2" not in flag.message


# --- figures the workload records: refused with one line naming the field --------------------------


@pytest.mark.parametrize("bad", [math.nan, -0.25, math.inf, "0.1", True])
def test_a_latency_that_is_not_finite_seconds_from_zero_is_refused_naming_its_field(bad):
    ctx = ExperimentContext(build_config({}), NoEnergyMeter())
    with pytest.raises(InvalidRecord) as info:
        ctx.record_latency(batch_s=0.5, first_token_s=bad)
    assert str(info.value) == (
        f"ctx.record_latency(first_token_s=...) takes a finite number of seconds >= 0, got {bad!r}"
    )
    assert ctx.batch_latencies_s == [] and ctx.first_token_latencies_s == []  # none of the call kept
    ctx.record_latency(batch_s=0, inter_token_s=0.01)
    assert (ctx.batch_latencies_s, ctx.inter_token_latencies_s) == ([0.0], [0.01])


@pytest.mark.parametrize("bad", [2**63, -1, 1.5, True])
def test_a_token_count_that_no_result_can_hold_is_refused_naming_its_field(bad):
    ctx = ExperimentContext(build_config({}), NoEnergyMeter())
    with pytest.raises(InvalidRecord, match=r"^ctx\.record\(output_tokens=\.\.\.\) takes a whole number"):
        ctx.record(output_tokens=bad)
    ctx.record(input_tokens=MAX_TOKEN_COUNT)
    added_up = r"^ctx\.record\(input_tokens=\.\.\.\): the counts recorded add up"
    with pytest.raises(InvalidRecord, match=added_up):
        ctx.record(input_tokens=1)
    assert (ctx.output_tokens, ctx.input_tokens) == (None, MAX_TOKEN_COUNT)


def nan_latency(ctx) -> None:
    with ctx.window():
        ctx.record_latency(batch_s=float("nan"))


def negative_latency(ctx) -> None:
    with ctx.window():
        ctx.record_latency(inter_token_s=-0.003)


def huge_token_count(ctx) -> None:
    with ctx.window():
        pass
    ctx.record(output_tokens=2**63)


SECONDS = "a finite number of seconds >= 0"
TOKENS = f"a whole number of tokens >= 0 (at most {MAX_TOKEN_COUNT})"


@pytest.mark.parametrize(
    ("workload", "line"),
    [
        (nan_latency, f"ctx.record_latency(batch_s=...) takes {SECONDS}, got nan"),
        (negative_latency, f"ctx.record_latency(inter_token_s=...) takes {SECONDS}, got -0.003"),
        (huge_token_count, f"ctx.record(output_tokens=...) takes {TOKENS}, got {2**63}"),
    ],
)
def test_a_refused_figure_fails_its_experiment_with_that_one_line(bench, workload, line):
    with pytest.raises(ExperimentFailed) as info:
        bench.run_experiment(f"tests/test_context.py::{workload.__name__}", workload, [{}])
    assert str(info.value) == line  # one line, no traceback
    (entry,) = bench.record.entries
    assert entry.status == "failed" and entry.result is None


def test_a_part_lies_inside_an_open_window_and_leaves_the_windows_figures_alone():
    from pytest_llem.context import ExperimentContext
    from pytest_llem.energy.meter import NoEnergyMeter

    ctx = ExperimentContext(build_config({}), NoEnergyMeter())
    with pytest.raises(RuntimeError, match="needs an open ctx.window"):
        ctx.begin_part("steady")
    with ctx.window():
        ctx.begin_part("steady")
        with pytest.raises(RuntimeError, match="already open"):
            ctx.begin_part("steady")
        time.sleep(0.01)
        part = ctx.end_part("steady")
    with pytest.raises(RuntimeError, match="never begun"):
        ctx.end_part("steady")
    (whole,) = ctx.windows
    assert 0 < part.duration_s <= whole.duration_s


def test_negative_or_nan_latencies_are_refused_in_one_line():
    from pytest_llem.context import ExperimentContext
    from pytest_llem.energy.meter import NoEnergyMeter

    ctx = ExperimentContext(build_config({}), NoEnergyMeter())
    for bad in (-0.5, math.nan, math.inf):
        with pytest.raises(ValueError) as caught:
            ctx.record_latency(first_token_s=bad)
        assert (
            str(caught.value)
            == f"ctx.record_latency(first_token_s=...) takes a finite number of seconds >= 0, got {bad!r}"
        )
    assert ctx.first_token_latencies_s == []


def test_on_timeline_puts_a_moment_on_the_power_timeline_with_earlier_windows_end_to_end():
    ctx = ExperimentContext(build_config({}), NoEnergyMeter())
    with pytest.raises(RuntimeError, match="needs an open ctx.window"):
        ctx.on_timeline()
    with ctx.window():
        first = ctx.on_timeline()
        start = time.perf_counter()
        time.sleep(0.02)
    with ctx.window():
        second = ctx.on_timeline()
        moment = time.perf_counter()
    one, _ = ctx.windows
    assert 0 <= first(start) < 0.01
    # The second window's moments come after the whole first window, as its timeline does.
    assert one.duration_s <= second(moment) < one.duration_s + 0.01
