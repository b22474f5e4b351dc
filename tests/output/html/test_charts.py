"""The charts (`output.html.charts`): when each is drawn at all, what its axes and labels
say, where a limit lies in % of its baseline, and SVG inlined with ids unique to each chart
and the same for the same figure. Needs the html extra (matplotlib); skipped without it."""

from __future__ import annotations

import importlib.util
import re

import pytest
from sample_reports import CONFIG, make_entry, make_result

from pytest_llem.gating.compare import Comparison, MetricChange
from pytest_llem.output.html.points import chart_points, group_colours
from pytest_llem.results import DeviceEnergy, PowerSample

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("matplotlib") is None, reason="the html extra (matplotlib) is not installed"
)


def sized(nodeid: str, batch_size: int | None, energies: list[float], tokens: int = 10):
    result = make_result(energies, tokens_per_round=tokens)
    result.config = {**CONFIG, "batch_size": batch_size}
    return make_entry(nodeid, result)


def points_of(*entries):
    points = chart_points(list(entries))
    return points, group_colours(points)


def change(metric: str, baseline: float | None, limit: str | None, **fields) -> MetricChange:
    fields = {"nodeid": "t.py::test_a", "current": 1.0, **fields}
    return MetricChange(metric=metric, unit="", baseline=baseline, limit=limit, **fields)


@pytest.mark.parametrize(
    ("metric", "baseline", "limit", "percent"),
    [
        ("energy_per_token_j", 2.0, "10%", 10.0),
        ("energy_per_token_j", 2.0, "0.5J", 25.0),  # an absolute limit, in % of the baseline
        ("tokens_per_s", 1000.0, "50tokens/s", -5.0),  # higher is better: the worse side is below zero
        ("tokens_per_s", -1000.0, "50tokens/s", -5.0),
        ("energy_per_token_j", 2.0, None, None),
        ("energy_per_token_j", 0.0, "10%", None),  # no baseline to take a percentage of
        ("energy_per_token_j", None, "10%", None),
        ("energy_per_token_j", 2.0, "ten percent", None),  # unreadable: no mark rather than a crash
    ],
)
def test_a_limit_lies_on_the_worse_side_in_percent_of_its_baseline(metric, baseline, limit, percent):
    from pytest_llem.output.html.charts import limit_percent

    found = limit_percent(change(metric, baseline, limit))
    assert found == (pytest.approx(percent) if percent is not None else None)


def test_no_point_with_a_batch_size_draws_no_batch_size_chart(figure_class):
    from pytest_llem.output.html.charts import batch_size_chart

    points, colours = points_of(sized("t.py::test_a", None, [1.0]))
    assert batch_size_chart(figure_class, points, colours, with_energy=True) is None


def test_without_energy_the_batch_size_chart_has_only_throughput(figure_class):
    from pytest_llem.output.html.charts import batch_size_chart

    points, colours = points_of(sized("t.py::test_a", 1, [1.0]), sized("t.py::test_b", 2, [1.0]))
    both = batch_size_chart(figure_class, points, colours, with_energy=True)
    alone = batch_size_chart(figure_class, points, colours, with_energy=False)
    assert [ax.get_title() for ax in both.axes] == [
        "energy per token (lower is better)",
        "throughput (higher is better)",
    ]
    assert [ax.get_title() for ax in alone.axes] == ["throughput (higher is better)"]


def test_batch_sizes_that_span_a_factor_of_four_get_a_base_two_axis_with_their_own_ticks(figure_class):
    from pytest_llem.output.html.charts import batch_size_chart

    spread, spread_colours = points_of(*(sized(f"t.py::test_{s}", s, [1.0]) for s in (1, 2, 4, 8)))
    close, close_colours = points_of(*(sized(f"t.py::test_{s}", s, [1.0]) for s in (2, 3)))
    wide = batch_size_chart(figure_class, spread, spread_colours, with_energy=False).axes[0]
    narrow = batch_size_chart(figure_class, close, close_colours, with_energy=False).axes[0]
    assert wide.get_xscale() == "log" and narrow.get_xscale() == "linear"
    assert [t.get_text() for t in wide.get_xticklabels()] == ["1", "2", "4", "8"]


def test_the_tradeoff_chart_needs_both_figures_and_labels_points_only_while_they_stay_legible(figure_class):
    from pytest_llem.output.html.charts import MAX_LABELLED_POINTS, tradeoff_chart

    unmeasured = make_entry("t.py::test_none", make_result([1.0], energy_j=None))
    points, colours = points_of(unmeasured)
    assert tradeoff_chart(figure_class, points, colours) is None

    few, few_colours = points_of(*(sized(f"t.py::test_{i}", 1, [1.0 + i]) for i in range(3)))
    labels = [t.get_text() for t in tradeoff_chart(figure_class, few, few_colours).axes[0].texts]
    assert labels == ["test_0", "test_1", "test_2"]

    crowd = [sized(f"t.py::test_{i}", 1, [1.0 + i]) for i in range(MAX_LABELLED_POINTS + 1)]
    many, many_colours = points_of(*crowd)
    assert len(tradeoff_chart(figure_class, many, many_colours).axes[0].texts) == 0


def test_no_power_timeline_draws_no_power_chart_and_several_windows_are_said_to_be_end_to_end(figure_class):
    from pytest_llem.output.html.charts import power_chart

    result = make_result([1.0])
    assert power_chart(figure_class, result, "t") is None
    timeline = [PowerSample(t_s=float(i), power_w=100.0) for i in range(4)]
    result.energy_by_device = [DeviceEnergy(device="gpu0", energy_j=1.0, timeline=timeline)]
    result.window_count = 3
    figure, caption = power_chart(figure_class, result, "t")
    assert caption == "t: power of gpu0 in blue; its 3 measured windows are drawn end to end."
    assert figure.axes[0].get_xlabel() == "time in the measured windows (s)"


def test_a_servers_own_metrics_get_a_panel_under_the_power_chart_on_its_time_axis(figure_class):
    from serving_loads import serving_result

    from pytest_llem.output.html.charts import power_chart
    from pytest_llem.results import ServerMetrics, ServerMetricsSample

    result = serving_result(8)
    timeline = [PowerSample(t_s=float(i), power_w=100.0) for i in range(6)]
    result.energy_by_device = [DeviceEnergy(device="gpu0", energy_j=1.0, timeline=timeline)]
    samples = [
        ServerMetricsSample(t_s=0.5 * i, kv_cache_usage=0.2 * i, requests_running=2, requests_waiting=i % 3)
        for i in range(1, 6)
    ]
    result.serving.server_metrics = ServerMetrics(
        exposed=True, interval_s=0.5, scrapes=5, timeline=samples, preemptions=2.0
    )
    figure, caption = power_chart(figure_class, result, "t")
    power, below, kv = figure.axes
    assert power.get_xlabel() == "" and below.get_xlabel() == "time in the measured windows (s)"
    assert power.get_shared_x_axes().joined(power, below)  # one time axis for both panels
    assert (below.get_ylabel(), kv.get_ylabel()) == ("requests", "KV cache (%)")
    running, waiting = below.get_lines()
    assert list(running.get_xdata()) == [0.5, 1.0, 1.5, 2.0, 2.5]
    assert list(waiting.get_ydata()) == [1, 2, 0, 1, 2]
    assert [round(y) for y in kv.get_lines()[0].get_ydata()] == [20, 40, 60, 80, 100]
    assert caption == (
        "t: power of gpu0 in blue; below, the server's own metrics (its /metrics, scraped every 0.5 s): "
        "running requests in green, waiting requests in red (dashed), the KV cache's share in use in ochre "
        "(right axis, dotted at 95%, where the load counts as saturated), 2 preemptions during the load."
    )


def test_a_server_without_metrics_draws_no_panel_and_the_caption_says_why(figure_class):
    from serving_loads import serving_result

    from pytest_llem.output.html.charts import power_chart
    from pytest_llem.results import ServerMetrics

    result = serving_result(8)
    timeline = [PowerSample(t_s=float(i), power_w=100.0) for i in range(4)]
    result.energy_by_device = [DeviceEnergy(device="gpu0", energy_j=1.0, timeline=timeline)]
    note = "server exposes no metrics: /metrics answered HTTP 404"
    result.serving.server_metrics = ServerMetrics(exposed=False, note=note)
    figure, caption = power_chart(figure_class, result, "t")
    assert len(figure.axes) == 1
    assert caption == f"t: power of gpu0 in blue; {note}."


def test_changes_without_a_percentage_draw_no_change_chart(figure_class):
    from pytest_llem.output.html.charts import change_chart

    comparison = Comparison(baseline_run="b", changes=[change("energy_per_token_j", None, None)])
    assert change_chart(figure_class, comparison, {}) is None


def test_each_bar_of_the_change_chart_says_what_its_colour_means(figure_class):
    from pytest_llem.output.html.charts import change_chart

    changes = [
        change("energy_per_token_j", 1.0, "5%", current=1.12, change_pct=12.0, status="regression"),
        change("tokens_per_s", 100.0, None, current=103.0, change_pct=3.0, nodeid="t.py::test_b"),
        change("tokens_per_s", 100.0, None, current=96.0, change_pct=-4.0),
    ]
    figure = change_chart(figure_class, Comparison(baseline_run="b", changes=changes), {"t.py::test_a": "a"})
    legend = [t.get_text() for legend in figure.legends for t in legend.get_texts()]
    assert legend == ["regression", "worse", "better", "limit (worse beyond it)"]
    assert [t.get_text() for t in figure.axes[0].get_yticklabels()] == ["a", "t.py::test_b"]


def _ids(svg: str) -> set[str]:
    return set(re.findall(r'\bid="([^"]+)"', svg))


def test_inlined_charts_share_no_id_and_refer_only_to_their_own(figure_class):
    from pytest_llem.output.html.charts import figure_element, tradeoff_chart

    points, colours = points_of(*(sized(f"t.py::test_{i}", 1, [1.0 + i]) for i in range(2)))
    first = figure_element("chart-a", tradeoff_chart(figure_class, points, colours), "first")
    second = figure_element("chart-b", tradeoff_chart(figure_class, points, colours), "second")
    assert _ids(first) and not (_ids(first) & _ids(second))
    for element, prefix in ((first, "chart-a"), (second, "chart-b")):
        assert "<?xml" not in element and "<!DOCTYPE" not in element
        assert all(i == prefix or i.startswith(f"{prefix}-") for i in _ids(element))
        referred = set(re.findall(r'(?:href="#|url\(#)([^")]+)', element))
        assert referred and referred <= _ids(element)


def test_the_same_figure_gives_the_same_svg_and_its_caption_is_escaped(figure_class):
    from pytest_llem.output.html.charts import figure_element, tradeoff_chart

    points, colours = points_of(sized("t.py::test_a", 1, [1.0]))
    caption = 'energy <per> "token" & more'
    one = figure_element("c", tradeoff_chart(figure_class, points, colours), caption)
    two = figure_element("c", tradeoff_chart(figure_class, points, colours), caption)
    assert one == two  # a report renders to the same page twice: no date, no random ids
    assert 'aria-label="energy &lt;per&gt; &quot;token&quot; &amp; more"' in one
    assert "<figcaption>energy &lt;per&gt; &quot;token&quot; &amp; more</figcaption>" in one
