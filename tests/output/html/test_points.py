"""What the charts plot (`output.html.points`): a point per experiment with a result, its
short label, its group and colour, the reasons energy is missing, and which experiments get a
power-over-time chart. No matplotlib needed: nothing here draws."""

from __future__ import annotations

import pytest
from sample_reports import CONFIG, GPT2, NOT_MEASURED, OPT, SHORT_WINDOW, make_entry, make_report, make_result

from pytest_llem.gating.compare import Comparison, MetricChange
from pytest_llem.output import DEFAULT_POWER_CHARTS
from pytest_llem.output.html.points import (
    PALETTE,
    Point,
    chart_points,
    group_colours,
    power_chart_points,
    power_series,
    short_names,
    shorten,
    unmeasured_reasons,
)
from pytest_llem.results import DeviceEnergy, PowerSample


def with_config(nodeid: str, **config):
    result = make_result([10.0])
    result.config = {**CONFIG, **config}
    return make_entry(nodeid, result)


def timed(nodeid: str, samples: int = 3, **config):
    """An entry whose GPU recorded `samples` power samples."""
    entry = with_config(nodeid, **config)
    timeline = [PowerSample(t_s=float(i), power_w=100.0 + i) for i in range(samples)]
    entry.result.energy_by_device = [DeviceEnergy(device="gpu0", energy_j=10.0, timeline=timeline)]
    return entry


def test_names_lose_their_file_where_they_stay_unique():
    ids = ["a/test_x.py::test_one", "b/test_y.py::test_one", "a/test_x.py::test_two[bs4]", "standalone"]
    assert shorten(ids) == {
        "a/test_x.py::test_one": "a/test_x.py::test_one",  # two files hold a test_one
        "b/test_y.py::test_one": "b/test_y.py::test_one",
        "a/test_x.py::test_two[bs4]": "test_two[bs4]",
        "standalone": "standalone",
    }


def test_short_names_cover_the_baselines_tests_too():
    report = make_report("r", [with_config("t.py::test_now")])
    change = MetricChange(nodeid="old.py::test_now", metric="tokens_per_s", unit="tokens/s", current=1.0)
    names = short_names(report, Comparison(baseline_run="b", changes=[change]))
    # Both tests are called test_now: each keeps its file.
    assert names == {"t.py::test_now": "t.py::test_now", "old.py::test_now": "old.py::test_now"}


def test_experiments_without_a_result_have_no_point_and_the_rest_keep_their_order():
    entries = [with_config(OPT), make_entry("t.py::test_failed", None), with_config(GPT2)]
    assert [p.nodeid for p in chart_points(entries)] == [OPT, GPT2]


def test_a_lone_points_line_is_its_model_and_its_label_the_short_name():
    (point,) = chart_points([with_config(GPT2, model="org/tiny-gpt2", precision="bf16")])
    assert point.group == "org/tiny-gpt2"  # nothing to tell it apart from"
    assert point.label == GPT2.split("::", 1)[1]
    assert point.batch_size == CONFIG["batch_size"]


def test_a_config_label_names_the_point_and_never_splits_a_line():
    points = chart_points([with_config(GPT2, label="long prompts"), with_config(OPT, label="short prompts")])
    assert [p.label for p in points] == ["long prompts", "short prompts"]
    assert len({p.group for p in points}) == 1


def test_without_a_model_the_group_is_the_workload_or_a_custom_workload():
    named = with_config("t.py::test_named", model=None)
    named.result.workload = "bench.workloads:generate"
    anonymous = with_config("t.py::test_anonymous", model=None)
    groups = [p.group for p in chart_points([named, anonymous])]
    assert groups == ["bench.workloads:generate, workload=generate", "custom workload, workload=none"]


def test_a_local_models_fingerprint_tells_two_folders_of_one_name_apart():
    entry = with_config(GPT2, model="/models/tiny-gpt2")
    entry.model_fingerprint = "0123456789abcdef"
    (point,) = chart_points([entry])
    assert point.group == "tiny-gpt2 [01234567]"


@pytest.mark.parametrize("batch_size", [True, "4", 2.0, None])
def test_a_batch_size_that_is_not_an_integer_places_no_point_on_the_batch_axis(batch_size):
    (point,) = chart_points([with_config(GPT2, batch_size=batch_size)])
    assert point.batch_size is None


def test_a_point_plots_the_samples_median_and_carries_their_spread():
    rounds = make_entry(GPT2, make_result([4.0, 5.0, 6.0], tokens_per_round=10))
    (point,) = chart_points([rounds])
    assert point.energy_per_token_j == pytest.approx(0.5)
    low, high = point.spread["energy_per_token_j"]
    assert low < point.energy_per_token_j < high
    (single,) = chart_points([with_config(OPT)])
    assert single.spread == {}  # one sample: nothing to span


def test_each_group_gets_a_colour_in_sorted_order_and_the_palette_repeats():
    groups = [f"model-{i:02d} (fp16)" for i in range(len(PALETTE) + 2)]
    points = [Point(f"t::{g}", g, g, None, None, None, make_result([1.0])) for g in reversed(groups)]
    colours = group_colours(points)
    assert list(colours) == groups
    assert list(colours.values()) == [*PALETTE, *PALETTE[:2]]


def test_the_reasons_energy_is_missing_are_listed_once_each_and_other_flags_are_not():
    missing = make_result([1.0], warnings=[NOT_MEASURED])
    also_missing = make_result([1.0], warnings=[NOT_MEASURED, SHORT_WINDOW])
    assert unmeasured_reasons([missing, also_missing, make_result([1.0])]) == [NOT_MEASURED.message]


def test_a_power_series_needs_two_samples_with_power():
    one = DeviceEnergy(device="gpu0", timeline=[PowerSample(t_s=0.0, power_w=90.0)])
    gaps = DeviceEnergy(
        device="gpu1", timeline=[PowerSample(t_s=0.0, power_w=None), PowerSample(t_s=1.0, power_w=95.0)]
    )
    two = DeviceEnergy(
        device="gpu2", timeline=[PowerSample(t_s=0.0, power_w=90.0), PowerSample(t_s=0.5, power_w=None)]
    )
    full = DeviceEnergy(
        device="gpu3", timeline=[PowerSample(t_s=0.0, power_w=90.0), PowerSample(t_s=1.0, power_w=150.0)]
    )
    assert power_series([one, gaps, two, full]) == [(full, [(0.0, 90.0), (1.0, 150.0)])]


def test_power_charts_go_to_the_first_few_timed_experiments_and_the_rest_are_counted():
    entries = [timed(f"t.py::test_{i}") for i in range(DEFAULT_POWER_CHARTS + 2)]
    entries.insert(1, with_config("t.py::test_untimed"))
    chosen, others = power_chart_points(chart_points(entries))
    assert [p.nodeid for p in chosen] == [f"t.py::test_{i}" for i in range(DEFAULT_POWER_CHARTS)]
    assert others == 2  # the untimed experiment is no candidate


def test_a_pattern_matches_a_part_of_an_id_or_label_or_a_glob():
    entries = [
        timed("t.py::test_gen[bs1]"),
        timed("t.py::test_gen[bs8]"),
        timed("t.py::test_chat", label="chat, long prompts"),
    ]
    points = chart_points(entries)
    assert [p.nodeid for p in power_chart_points(points, ("[bs8]",))[0]] == ["t.py::test_gen[bs8]"]
    assert [p.nodeid for p in power_chart_points(points, ("long prompts",))[0]] == ["t.py::test_chat"]
    chosen, others = power_chart_points(points, ("*gen*",))
    assert [p.nodeid for p in chosen] == ["t.py::test_gen[bs1]", "t.py::test_gen[bs8]"] and others == 1
    assert power_chart_points(points, ("nothing-matches",)) == ([], 3)
