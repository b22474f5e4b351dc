"""A metric's history as a chart: each run's figure in run order, labelled by commit, with its
spread, flagged figures hollow, the fitted level between steps, each confirmed step and each
machine change marked. Drawn by matplotlib in the HTML report's style and colours
(`output.html.charts`, `output.html.points`)."""

from __future__ import annotations

import statistics
from typing import TYPE_CHECKING

from pytest_llem.formatting import change_or_missing, figure_or_missing
from pytest_llem.output.history_site.series import CaseHistory, MetricHistory
from pytest_llem.output.html.charts import REGRESSION_COLOUR
from pytest_llem.output.html.points import COLOUR_NAMES, PALETTE

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

#: Beyond this many runs, only every k-th run's label is written under the axis.
MAX_AXIS_LABELS = 30
#: A step where the metric got better: a green dark enough for a thin line.
IMPROVEMENT_COLOUR = "#2e7d32"
MACHINE_CHANGE_COLOUR = "#6d4c41"
LEVEL_COLOUR = "#444444"


def machine_colours(case: CaseHistory) -> dict[str, str]:
    """A colour per machine id, in the order the machines first ran the case."""
    ids = list(dict.fromkeys(run.machine_id for run in case.runs))
    return {machine_id: PALETTE[i % len(PALETTE)] for i, machine_id in enumerate(ids)}


def history_chart(
    figure_class: type[Figure], case: CaseHistory, history: MetricHistory
) -> tuple[Figure, str]:
    """The chart of one metric's history and a caption naming what each colour and mark is."""
    metric = history.metric
    colours = machine_colours(case)
    figure = figure_class(figsize=(10.0, 3.6), layout="constrained")
    ax = figure.subplots()
    said = []
    for machine_id, colour in colours.items():
        positions = [i for i, run in enumerate(case.runs) if run.machine_id == machine_id]
        measured = [i for i in positions if history.figures[i].value is not None]
        plain = [i for i in measured if not history.figures[i].flagged]
        flagged = [i for i in measured if history.figures[i].flagged]
        label = f"machine {machine_id}"
        if plain:
            ys = [history.figures[i].value for i in plain]
            ax.plot(plain, ys, color=colour, linewidth=1.0, alpha=0.6, zorder=2)
            ax.scatter(plain, ys, s=22, color=colour, zorder=4, label=label)
            _spread(ax, history, plain, colour)
        if flagged:
            # Hollow, in the machine's colour: which machine it ran on stays readable.
            ax.scatter(
                flagged,
                [history.figures[i].value for i in flagged],
                s=34,
                facecolors="white",
                edgecolors=colour,
                linewidths=1.4,
                zorder=5,
            )
            said.append("flagged")
        if measured:
            said.append(f"{label} in {COLOUR_NAMES[colour]}")
        _levels(ax, history, machine_id, plain)
    for change in case.machine_changes:
        ax.axvline(change.index - 0.5, color=MACHINE_CHANGE_COLOUR, linestyle=":", linewidth=1.2, zorder=1)
        ax.annotate(
            "new machine" if change.new_machine else "machine changed",
            (change.index - 0.5, 0.02),
            xycoords=("data", "axes fraction"),
            rotation=90,
            fontsize=7,
            color=MACHINE_CHANGE_COLOUR,
            ha="right",
            va="bottom",
        )
    for marked in history.steps:
        step = marked.step
        colour = REGRESSION_COLOUR if marked.worse else IMPROVEMENT_COLOUR
        x = step.index - 0.5
        ax.axvline(x, color=colour, linewidth=1.8, zorder=3)
        verdict = "worse" if marked.worse else "better"
        text = f"{verdict} {change_or_missing(step.change_pct)}" if step.change_pct is not None else "step"
        ax.annotate(
            f"{text} at {case.runs[step.index].label}",
            (x, 0.98),
            xycoords=("data", "axes fraction"),
            xytext=(3, 0),
            textcoords="offset points",
            fontsize=7.5,
            color=colour,
            va="top",
            fontweight="bold",
        )
    _run_axis(ax, case)
    direction = "higher" if metric.higher_is_better else "lower"
    ax.set_title(f"{metric.name} ({metric.unit}), {direction} is better")
    ax.set_ylabel(f"{metric.name} ({metric.unit})")
    ax.margins(x=0.02, y=0.15)
    _legend(figure, ax, "flagged" in said)
    return figure, _caption(case, history, said)


def _legend(figure: Figure, ax: Axes, flagged: bool) -> None:
    """Below the chart, off its points: each machine's colour, and the hollow mark of a
    flagged figure (grey: it takes its machine's colour)."""
    from matplotlib.lines import Line2D

    handles, _ = ax.get_legend_handles_labels()
    if flagged:
        handles.append(
            Line2D(
                [],
                [],
                linestyle="none",
                marker="o",
                markerfacecolor="white",
                markeredgecolor=LEVEL_COLOUR,
                markeredgewidth=1.4,
                label="flagged (left out of step detection)",
            )
        )
    if len(handles) > 1 or flagged:
        figure.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 4), fontsize=7.5)


def _spread(ax: Axes, history: MetricHistory, positions: list[int], colour: str) -> None:
    """The interquartile range of a run's samples, where it has several."""
    for i in positions:
        shown = history.figures[i]
        if shown.value is None or shown.q1 is None or shown.q3 is None:
            continue
        ax.errorbar(
            [i],
            [shown.value],
            yerr=[[max(0.0, shown.value - shown.q1)], [max(0.0, shown.q3 - shown.value)]],
            fmt="none",
            ecolor=colour,
            elinewidth=1.0,
            capsize=2.5,
            zorder=3,
        )


def _levels(ax: Axes, history: MetricHistory, machine_id: str, plain: list[int]) -> None:
    """The level between steps (the median of each segment's unflagged figures), dashed."""
    cuts = [m.step.index for m in history.steps if m.machine_id == machine_id]
    bounds = [-1, *cuts, 1 << 30]
    for low, high in zip(bounds, bounds[1:], strict=False):
        inside = [i for i in plain if low <= i < high]
        if len(inside) < 2:
            continue
        level = statistics.median(history.figures[i].value or 0.0 for i in inside)
        ax.plot(
            [inside[0] - 0.3, inside[-1] + 0.3],
            [level, level],
            color=LEVEL_COLOUR,
            linestyle="--",
            linewidth=0.9,
            zorder=1,
        )


def _run_axis(ax: Axes, case: CaseHistory) -> None:
    count = len(case.runs)
    every = max(1, -(-count // MAX_AXIS_LABELS))
    ticks = list(range(0, count, every))
    ax.set_xticks(ticks, [case.runs[i].label for i in ticks], rotation=45, ha="right", fontsize=7.5)
    ax.set_xlim(-0.7, count - 0.3)
    ax.set_xlabel("runs, oldest first, by commit (or start time where none was recorded)")


def _caption(case: CaseHistory, history: MetricHistory, said: list[str]) -> str:
    sentences = [
        f"{history.metric.name} of each of the {len(case.runs)} runs: "
        + ", ".join(s for s in said if s != "flagged")
    ]
    if any(f.q1 is not None for f in history.figures):
        sentences.append("bars: the interquartile range of a run's samples (rounds or processes)")
    if "flagged" in said:
        sentences.append(
            "hollow circles, in their machine's colour: flagged figures, shown but left out of step detection"
        )
    sentences.append("dashed: the level between steps")
    for marked in history.steps:
        step = marked.step
        run = case.runs[step.index]
        sentences.append(
            f"{'red' if marked.worse else 'green'} line: a step at {run.label} "
            f"({figure_or_missing(step.before)} -> {figure_or_missing(step.after)}, "
            f"p = {step.p_value:.2g}, Mann-Whitney U over {step.runs_before} and {step.runs_after} runs)"
        )
    if case.machine_changes:
        sentences.append("dotted brown lines: where the machine changed (listed below)")
    return "; ".join(sentences) + "."
