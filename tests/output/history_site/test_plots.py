"""A metric's history as a chart: its points, spread, flagged figures, steps and machine changes
drawn, and a caption that names each of them. Needs the html extra (matplotlib)."""

from __future__ import annotations

import importlib.util
import random

import pytest
from sample_reports import H100, sample_commit_label, sample_history

from pytest_llem.output.history_site.plots import MAX_AXIS_LABELS, history_chart, machine_colours
from pytest_llem.output.history_site.series import case_histories
from pytest_llem.output.html.charts import REGRESSION_COLOUR, figure_element

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("matplotlib") is None, reason="the html extra (matplotlib) is not installed"
)


def rgb(colour: str) -> tuple[float, float, float]:
    return tuple(int(colour[i : i + 2], 16) / 255 for i in (1, 3, 5))


def stepped_case(runs: int = 16, step_at: int = 8, flagged: frozenset[int] = frozenset(), machines=None):
    rng = random.Random(2)
    energies = [[rng.gauss(5.0 if i < step_at else 6.0, 0.05) for _ in range(5)] for i in range(runs)]
    (case,) = case_histories(sample_history(energies, machines, flagged))
    return case


def test_the_chart_draws_each_run_its_spread_and_the_step_at_its_commit(figure_class):
    case = stepped_case()
    energy = next(h for h in case.metrics if h.metric.name == "energy_j")

    figure, caption = history_chart(figure_class, case, energy)
    ax = figure.axes[0]

    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert labels == [run.label for run in case.runs]
    step_lines = [line for line in ax.get_lines() if line.get_color() == REGRESSION_COLOUR]
    assert [list(line.get_xdata()) for line in step_lines] == [[7.5, 7.5]]
    assert [text.get_text() for text in ax.texts] == [f"worse +20.0% at {sample_commit_label(8)}"]
    assert len(ax.containers) == 16  # an error bar (quartiles of five rounds) per run
    assert f"a step at {sample_commit_label(8)}" in caption and "Mann-Whitney U over 8 and 8 runs" in caption
    assert ax.get_title() == "energy_j (J), lower is better"
    svg = figure_element("chart-0", figure, caption)
    assert svg.count("<svg") == 1 and f"a step at {sample_commit_label(8)}" in svg


def test_flagged_figures_are_hollow_and_the_caption_says_they_are_left_out(figure_class):
    case = stepped_case(flagged=frozenset({3, 4}))
    energy = next(h for h in case.metrics if h.metric.name == "energy_j")

    figure, caption = history_chart(figure_class, case, energy)

    hollow = [c for c in figure.axes[0].collections if list(c.get_offsets()[:, 0]) == [3.0, 4.0]]
    assert len(hollow) == 1
    machine = machine_colours(case)["h100x1"]
    assert tuple(hollow[0].get_edgecolor()[0][:3]) == pytest.approx(rgb(machine))  # its machine's colour
    assert tuple(hollow[0].get_facecolor()[0][:3]) == (1.0, 1.0, 1.0)
    (legend,) = figure.legends
    assert [t.get_text() for t in legend.get_texts()] == [
        "machine h100x1",
        "flagged (left out of step detection)",
    ]
    assert "hollow circles, in their machine's colour: flagged figures, shown but left out of step" in caption


def test_a_machine_change_is_a_dotted_line_and_each_machine_its_own_colour(figure_class):
    after = H100.model_copy(update={"software": {"torch": "2.6.0"}})
    before = H100.model_copy(update={"software": {"torch": "2.5.0"}})
    case = stepped_case(machines=[before] * 10 + [after] * 6)
    energy = next(h for h in case.metrics if h.metric.name == "energy_j")

    figure, caption = history_chart(figure_class, case, energy)

    assert machine_colours(case) == {"h100x1": "#1f5fa8"}
    assert any(t.get_text() == "machine changed" for t in figure.axes[0].texts)
    assert "dotted brown lines: where the machine changed" in caption


def test_a_long_history_labels_only_some_runs(figure_class):
    case = stepped_case(runs=100, step_at=50)
    history = case.metrics[0]
    figure, _ = history_chart(figure_class, case, history)
    labels = [t.get_text() for t in figure.axes[0].get_xticklabels()]
    assert 10 < len(labels) <= MAX_AXIS_LABELS and labels[0] == sample_commit_label(0)
