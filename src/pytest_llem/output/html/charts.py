"""The charts, drawn by matplotlib as SVG and inlined with ids unique to each chart."""

from __future__ import annotations

import io
import re
import statistics
from collections import defaultdict
from html import escape
from typing import TYPE_CHECKING

from pytest_llem.energy.quality import KV_CACHE_FULL
from pytest_llem.errors import ConfigError
from pytest_llem.formatting import figure_or_missing
from pytest_llem.gating.budgets import check_budgets, unmeasured_budgets
from pytest_llem.gating.compare import Comparison, MetricChange
from pytest_llem.gating.limits import parse_limit_value
from pytest_llem.gating.metrics import METRICS
from pytest_llem.output.html.points import COLOUR_NAMES, PALETTE, Point, power_series
from pytest_llem.results import ExperimentResult, ServerMetrics
from pytest_llem.store.report import SessionReport

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

#: The comparison metrics charted as bars; the table below the chart lists every metric.
CHARTED_CHANGES = ("energy_per_token_j", "tokens_per_s")
# Beyond this many points the scatter's labels overlap into a blur; the table names them all.
MAX_LABELLED_POINTS = 40
LIMIT_LEGEND = "limit (worse beyond it)"
BUDGET_LEGEND = "budget (worse beyond it)"
#: A y axis turns logarithmic when its largest value is this many times its smallest.
LOG_SCALE_RATIO = 20.0

CHART_STYLE = {
    # Glyphs as outlines: the chart looks the same wherever it is opened, with no font installed.
    "svg.fonttype": "path",
    # A fixed salt makes the SVG ids, and so the whole page, the same for the same report.
    "svg.hashsalt": "pytest-llem",
    "font.size": 9,
    "axes.titlesize": 9.5,
    "axes.labelsize": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.35,
    "grid.linewidth": 0.6,
    "legend.fontsize": 8,
    "legend.frameon": False,
}
# No creator or date in the SVG: they would make two renderings of one report differ.
_SVG_METADATA = {"Creator": None, "Date": None, "Format": None, "Type": None}
WORSE_COLOUR, BETTER_COLOUR = "#e8a5a5", "#9fd3a8"
REGRESSION_COLOUR, FLAGGED_COLOUR = "#c62828", "#ef8f00"
#: Shading of spans on the power timeline: colour, opacity, legend entry (named in captions).
_SPAN_STYLE = {"round": ("#000000", 0.08, "every other round"), "steady": ("#f2c14e", 0.35, "steady state")}
_SVG_ID = re.compile(r'\bid="([^"]+)"')
_SVG_ID_USE = re.compile(r'(\bid="|href="#|url\(#)([^")]+)')


def batch_size_chart(
    figure_class: type[Figure], points: list[Point], colours: dict[str, str], with_energy: bool
) -> Figure | None:
    sized = [p for p in points if p.batch_size is not None]
    panels = [
        ("energy_per_token_j", "energy per output token (J)", "energy per token (lower is better)"),
        ("tokens_per_s", "throughput (tokens/s)", "throughput (higher is better)"),
    ]
    panels = [
        panel
        for panel in panels
        if (with_energy or panel[0] != "energy_per_token_j") and any(getattr(p, panel[0]) for p in sized)
    ]
    if not panels:
        return None
    figure = figure_class(figsize=(5.5 * len(panels), 3.3), layout="constrained")
    axes = figure.subplots(1, len(panels), squeeze=False)[0]
    sizes = sorted({p.batch_size for p in sized if p.batch_size is not None})
    for ax, (attr, ylabel, title) in zip(axes, panels, strict=True):
        for group, colour in colours.items():
            by_size: dict[int, list[float]] = defaultdict(list)
            for p in sized:
                value = getattr(p, attr)
                if p.group == group and value is not None and p.batch_size is not None:
                    by_size[p.batch_size].append(value)
            if by_size:
                xs = sorted(by_size)
                # Several tests of one group and size (other prompts, lengths) share a point: their mean.
                ys = [statistics.fmean(by_size[x]) for x in xs]
                ax.plot(xs, ys, marker="o", markersize=4.5, linewidth=1.6, color=colour, label=group)
                _error_bars(ax, [p for p in sized if p.group == group], attr, colour)
        values = [v for p in sized if (v := getattr(p, attr))]
        if len(values) > 1 and min(values) > 0 and max(values) / min(values) >= LOG_SCALE_RATIO:
            # Scales this far apart would flatten the smaller lines onto zero on a linear axis.
            ax.set_yscale("log")
            title += ", log scale"
        else:
            ax.set_ylim(bottom=0)
        ax.set_title(title)
        ax.set_xlabel("batch size")
        ax.set_ylabel(ylabel)
        _batch_axis(ax, sizes)
    axes[0].legend(loc="best")
    return figure


def _error_bars(ax: Axes, points: list[Point], attr: str, colour: str) -> None:
    """The interquartile range of a point that is the median of several samples."""
    for p in points:
        value, spread = getattr(p, attr), p.spread.get(attr)
        if value is None or spread is None or p.batch_size is None:
            continue
        low, high = spread
        ax.errorbar(
            [p.batch_size],
            [value],
            yerr=[[max(0.0, value - low)], [max(0.0, high - value)]],
            fmt="none",
            ecolor=colour,
            elinewidth=1.0,
            capsize=3,
            zorder=4,
        )


def _batch_axis(ax: Axes, sizes: list[int]) -> None:
    # Batch sizes usually double; on a linear axis 1, 2 and 4 would crowd into one corner.
    if len(sizes) > 1 and sizes[-1] / sizes[0] >= 4:
        ax.set_xscale("log", base=2)
    ax.set_xticks(sizes, [str(s) for s in sizes])
    ax.minorticks_off()


def tradeoff_chart(figure_class: type[Figure], points: list[Point], colours: dict[str, str]) -> Figure | None:
    both = [p for p in points if p.energy_per_token_j is not None and p.tokens_per_s is not None]
    if not both:
        return None
    figure = figure_class(figsize=(10.0, 4.2), layout="constrained")
    ax = figure.subplots()
    for group, colour in colours.items():
        mine = [p for p in both if p.group == group]
        if mine:
            ax.scatter(
                [p.energy_per_token_j for p in mine],
                [p.tokens_per_s for p in mine],
                s=30,
                color=colour,
                label=group,
                zorder=3,
            )
    if len(both) <= MAX_LABELLED_POINTS:
        for p in both:
            ax.annotate(
                p.label,
                (p.energy_per_token_j, p.tokens_per_s),
                xytext=(5, 3),
                textcoords="offset points",
                fontsize=7,
                color="#333333",
            )
    ax.set_xlabel("energy per output token (J)")
    ax.set_ylabel("throughput (tokens/s)")
    # From zero, so distances read as ratios; room on the right for the costliest points' labels.
    ax.set_xlim(0, max(p.energy_per_token_j or 0 for p in both) * 1.3 or 1)
    ax.set_ylim(0, max(p.tokens_per_s or 0 for p in both) * 1.12 or 1)
    ax.legend(loc="upper right")
    return figure


def power_spans(result: ExperimentResult) -> list[tuple[str, float, float]]:
    """The spans to shade on the power timeline, in its time (windows end to end): every
    other round when there are several, or a serving load's steady-state part."""
    if len(result.rounds) > 1:
        spans, start_s = [], 0.0
        for position, measured in enumerate(result.rounds):
            if position % 2 == 0:
                spans.append(("round", start_s, start_s + measured.duration_s))
            start_s += measured.duration_s
        return spans
    steady = result.serving.steady if result.serving else None
    if steady is not None and result.window_count == 1:
        return [("steady", steady.start_s, steady.end_s)]
    return []


def power_chart(
    figure_class: type[Figure], result: ExperimentResult, title: str
) -> tuple[Figure, str] | None:
    """Device power over the measured windows, one line per device, with the spans of
    `power_spans` shaded; under it, for a serving load whose server has metrics, a panel of
    what the server said about itself on the same time axis (`server_panel`); and a caption
    that names each colour as drawn."""
    series = power_series(result.energy_by_device)
    if not series:
        return None
    server = result.serving.server_metrics if result.serving is not None else None
    samples = server.timeline if server is not None else []
    if samples:
        figure = figure_class(figsize=(5.2, 4.3), layout="constrained")
        ax, below = figure.subplots(2, 1, sharex=True, height_ratios=[2, 1])
    else:
        figure = figure_class(figsize=(5.2, 2.9), layout="constrained")
        ax, below = figure.subplots(), None
    said = []
    for index, (device, samples) in enumerate(series):
        colour = PALETTE[index % len(PALETTE)]
        label = device.device + (f" ({device.name})" if device.name else "")
        ax.plot([t for t, _ in samples], [w for _, w in samples], color=colour, linewidth=1.2, label=label)
        said.append(f"{label} in {COLOUR_NAMES[colour]}")
        if device.baseline_power_w is not None:
            ax.axhline(device.baseline_power_w, color=colour, linestyle="--", linewidth=0.8)
    sentences = [f"{title}: power of {', '.join(said)}"]
    if any(device.baseline_power_w is not None for device, _ in series):
        sentences.append("dashed, in the device's colour: its idle power, measured before the model loaded")
    spans = power_spans(result)
    kinds: set[str] = set()
    for kind, start_s, end_s in spans:
        colour, alpha, legend = _SPAN_STYLE[kind]
        # One legend entry per kind of span: matplotlib leaves out labels that start with "_".
        label = legend if kind not in kinds else "_" + legend
        ax.axvspan(start_s, end_s, color=colour, alpha=alpha, linewidth=0, label=label, zorder=0)
        kinds.add(kind)
    if "round" in kinds:
        sentences.append(f"grey bands: every other round of the {len(result.rounds)}, drawn end to end")
    elif result.window_count > 1:
        sentences.append(f"its {result.window_count} measured windows are drawn end to end")
    if "steady" in kinds:
        sentences.append(
            "yellow band: the load's steady state, which its energy per request is measured over"
        )
    ax.set_title(title)
    ax.set_ylabel("power (W)")
    ax.set_xlim(left=0)
    ax.set_ylim(bottom=0)
    ax.legend(loc="lower right")
    if below is not None and server is not None:
        sentences.append(server_panel(below, server))
        below.set_xlabel("time in the measured windows (s)")
    else:
        ax.set_xlabel("time in the measured windows (s)")
        if server is not None and server.note:
            sentences.append(server.note)
    return figure, "; ".join(sentences) + "."


def server_panel(ax: Axes, server: ServerMetrics) -> str:
    """What the server said about itself during the load, on the power chart's time axis:
    requests running and waiting (left axis), the KV cache's share in use (right axis, %).
    The sentence of the caption that names each line."""
    samples = server.timeline
    times = [s.t_s for s in samples]
    said = []
    for attr, name, colour, style in (
        ("requests_running", "running requests", PALETTE[2], "-"),
        ("requests_waiting", "waiting requests", PALETTE[4], "--"),
    ):
        values = [getattr(s, attr) for s in samples]
        if any(v is not None for v in values):
            ys = [float("nan") if v is None else v for v in values]
            ax.step(times, ys, where="mid", color=colour, linestyle=style, linewidth=1.1, label=name)
            said.append(f"{name} in {COLOUR_NAMES[colour]}{' (dashed)' if style == '--' else ''}")
    ax.set_ylabel("requests")
    ax.set_ylim(bottom=0)
    kv = [s.kv_cache_usage for s in samples]
    if any(v is not None for v in kv):
        right = ax.twinx()
        right.plot(
            times,
            [float("nan") if v is None else v * 100 for v in kv],
            color=PALETTE[6],
            linewidth=1.1,
            label="KV cache in use",
        )
        right.axhline(KV_CACHE_FULL * 100, color=PALETTE[6], linestyle=":", linewidth=0.8)
        right.set_ylim(0, 105)
        right.set_ylabel("KV cache (%)")
        right.grid(visible=False)
        said.append(
            f"the KV cache's share in use in {COLOUR_NAMES[PALETTE[6]]} (right axis, dotted at "
            f"{KV_CACHE_FULL:.0%}, where the load counts as saturated)"
        )
    interval = f" every {server.interval_s:g} s" if server.interval_s else ""
    preempted = f", {server.preemptions:g} preemptions during the load" if server.preemptions else ""
    return f"below, the server's own metrics (its /metrics, scraped{interval}): {', '.join(said)}{preempted}"


def change_chart(figure_class: type[Figure], comparison: Comparison, names: dict[str, str]) -> Figure | None:
    """A panel per metric: the two headline metrics where measured, and every metric a limit
    gates, measured or not (a panel without a figure says which side lacks it and why)."""
    gated = [c.metric for c in comparison.changes if c.limit is not None]
    gated += [u.metric for u in comparison.unmeasured]
    wanted = list(dict.fromkeys([*CHARTED_CHANGES, *gated]))
    charted = [c for c in comparison.changes if c.metric in wanted and c.change_pct is not None]
    metrics = [m for m in wanted if m in gated or any(c.metric == m for c in charted)]
    if not metrics:
        return None

    tests = list(dict.fromkeys(c.nodeid for c in charted))
    row = {nodeid: index for index, nodeid in enumerate(tests)}
    figure = figure_class(figsize=(4.6 * len(metrics) + 1.6, 1.6 + 0.3 * len(tests)), layout="constrained")
    axes = figure.subplots(1, len(metrics), sharey=True, squeeze=False)[0]
    used: dict[str, str] = {}
    for ax, name in zip(axes, metrics, strict=True):
        changes = [c for c in charted if c.metric == name]
        direction = "higher" if METRICS[name].higher_is_better else "lower"
        ax.set_title(f"{name}: change in % ({direction} is better)")
        if not changes:
            _no_figure(ax, _why_unmeasured(comparison, name))
            continue
        styles = [_change_style(c) for c in changes]
        bars = ax.barh(
            [row[c.nodeid] for c in changes],
            [c.change_pct for c in changes],
            height=0.62,
            color=[colour for colour, _, _ in styles],
            edgecolor=[edge for _, edge, _ in styles],
            linewidth=[1.6 if edge != "none" else 0 for _, edge, _ in styles],
            zorder=3,
        )
        for colour, _, legend in styles:
            used.setdefault(legend, colour)
        for change in changes:
            limit_pct = limit_percent(change)
            if limit_pct is not None:
                _threshold_mark(ax, limit_pct, row[change.nodeid])
                used.setdefault(LIMIT_LEGEND, THRESHOLD_COLOUR)
        ax.bar_label(bars, labels=[c.change_text() for c in changes], padding=3, fontsize=7)
        ax.axvline(0, color="#444444", linewidth=0.8, zorder=2)
        ax.grid(axis="y", visible=False)
        # The % labels sit past the bar ends; keep them inside the axes on both sides.
        ax.margins(x=0.3)
    axes[0].set_yticks(range(len(tests)), [names.get(t, t) for t in tests])
    axes[0].invert_yaxis()
    _legend(
        figure, used, ["regression", "flagged (not gated)", "incomparable (not gated)", "worse", "better"]
    )
    return figure


def _why_unmeasured(comparison: Comparison, metric: str) -> str:
    missing = [u for u in comparison.unmeasured if u.metric == metric]
    if not missing:
        return "no test has a figure on both sides"
    first = missing[0]
    return f"no figure in {' or '.join(first.missing_in)}: {first.reason}"


def _no_figure(ax: Axes, why: str) -> None:
    """A panel with nothing to draw still stands, saying why (wrapped to the panel's width)."""
    ax.text(0.5, 0.5, why, ha="center", va="center", wrap=True, fontsize=8, transform=ax.transAxes)
    ax.set_xticks([])
    ax.grid(visible=False)


def _legend(figure: Figure, used: dict[str, str], order: list[str]) -> None:
    """The colours drawn, in `order`, then the dashed tick (a limit's or a budget's)."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    handles: list[Patch | Line2D] = [Patch(color=used[k], label=k) for k in order if k in used]
    for tick in (LIMIT_LEGEND, BUDGET_LEGEND):
        if tick in used:
            handles.append(Line2D([], [], color="#222222", linestyle=(0, (2, 1.5)), label=tick))
    if handles:
        figure.legend(handles=handles, loc="outside lower center", ncols=len(handles))


def budget_chart(figure_class: type[Figure], report: SessionReport, names: dict[str, str]) -> Figure | None:
    """A panel per metric a budget is set on: each test's figure (the one the table shows and
    the budget is checked on) as a bar, its budget as a dashed tick; a test without the
    figure is named with why, in the panel. Checked as the gate checks them (`check_budgets`;
    flagged results as flagged, whether or not the session gated them)."""
    checks, unmeasured = check_budgets(report), unmeasured_budgets(report)
    budgets = {
        (e.nodeid, name): float(value)
        for e in report.measured
        if e.result is not None
        for name, value in e.result.config.get("budget", {}).items()
    }
    metrics = list(dict.fromkeys([*(c.metric for c in checks), *(u.metric for u in unmeasured)]))
    if not metrics:
        return None
    tests = list(dict.fromkeys([*(c.nodeid for c in checks), *(u.nodeid for u in unmeasured)]))
    row = {nodeid: index for index, nodeid in enumerate(tests)}
    figure = figure_class(figsize=(4.6 * len(metrics) + 1.6, 1.6 + 0.3 * len(tests)), layout="constrained")
    axes = figure.subplots(1, len(metrics), sharey=True, squeeze=False)[0]
    used: dict[str, str] = {}
    for ax, name in zip(axes, metrics, strict=True):
        metric = METRICS[name]
        direction = "higher" if metric.higher_is_better else "lower"
        ax.set_title(f"{name} ({metric.unit}) against its budget ({direction} is better)")
        mine = [c for c in checks if c.metric == name]
        for check in mine:
            colour, edge, legend = _budget_style(check)
            y = row[check.nodeid]
            ax.barh([y], [check.current], height=0.62, color=colour, edgecolor=edge, zorder=3)
            ax.annotate(
                figure_or_missing(check.current),
                (check.current, y),
                xytext=(3, 0),
                textcoords="offset points",
                va="center",
                fontsize=7,
            )
            used.setdefault(legend, colour)
            budget = budgets.get((check.nodeid, name))
            if budget is not None:
                _threshold_mark(ax, budget, y)
                used.setdefault(BUDGET_LEGEND, THRESHOLD_COLOUR)
        for missing in (u for u in unmeasured if u.metric == name):
            ax.annotate(
                f"not measured: {missing.reason}",
                (0, row[missing.nodeid]),
                xytext=(3, 0),
                textcoords="offset points",
                va="center",
                fontsize=7,
                color="#555555",
            )
        if not mine:
            ax.set_xticks([])
        ax.set_xlim(left=0)
        ax.grid(axis="y", visible=False)
        ax.margins(x=0.25)
    axes[0].set_yticks(range(len(tests)), [names.get(t, t) for t in tests])
    axes[0].invert_yaxis()
    _legend(figure, used, ["over budget", "over budget, flagged", "within budget"])
    return figure


def _budget_style(check: MetricChange) -> tuple[str, str, str]:
    if check.status == "over_budget":
        return REGRESSION_COLOUR, "#5c0000", "over budget"
    if check.status == "flagged":
        return FLAGGED_COLOUR, "none", "over budget, flagged"
    return BETTER_COLOUR, "none", "within budget"


#: The dashed tick that marks a limit or a budget across a bar.
THRESHOLD_COLOUR = "#222222"


def _threshold_mark(ax: Axes, x: float, y: float) -> None:
    """A limit's or a budget's place on a horizontal bar's row: a short dashed vertical tick."""
    ax.plot(
        [x, x], [y - 0.42, y + 0.42], color=THRESHOLD_COLOUR, linewidth=1.2, linestyle=(0, (2, 1.5)), zorder=4
    )


def limit_percent(change: MetricChange) -> float | None:
    """Where the change's limit lies, in % change from its baseline, on the worse side."""
    if change.limit is None or not change.baseline:
        return None
    metric = METRICS[change.metric]
    try:
        limit = parse_limit_value(metric, change.limit, change.metric)
    except ConfigError:
        return None
    if limit.relative is not None:
        percent = limit.relative * 100
    elif limit.absolute is not None:
        percent = limit.absolute / abs(change.baseline) * 100
    else:
        return None
    return -percent if metric.higher_is_better else percent


def _change_style(change: MetricChange) -> tuple[str, str, str]:
    """Fill, edge and legend entry of one bar: gated outcomes first, then plain direction."""
    if change.status in ("regression", "over_budget"):
        return REGRESSION_COLOUR, "#5c0000", "regression"
    if change.status == "flagged":
        return FLAGGED_COLOUR, "none", "flagged (not gated)"
    if change.status == "incomparable":
        return FLAGGED_COLOUR, "none", "incomparable (not gated)"
    assert change.baseline is not None
    worse = METRICS[change.metric].worse_by(change.baseline, change.current) > 0
    return (WORSE_COLOUR, "none", "worse") if worse else (BETTER_COLOUR, "none", "better")


def figure_element(element_id: str, figure: Figure, caption: str, css_class: str = "chart") -> str:
    svg = _inline_svg(figure, element_id, caption)
    return (
        f'<figure class="{css_class}" id="{escape(element_id)}">{svg}'
        f"<figcaption>{escape(caption)}</figcaption></figure>"
    )


def _inline_svg(figure: Figure, prefix: str, label: str) -> str:
    """The figure as an <svg> element to paste into HTML, its ids unique to this chart.

    matplotlib numbers its glyph and clip-path ids per figure, and every inline SVG shares
    the page's id space: without the prefix one chart's text would be drawn with another's
    glyphs. A figure made without pyplot is registered nowhere, so dropping it frees it.
    """
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", metadata=_SVG_METADATA)
    svg = buffer.getvalue()
    # The XML declaration and DOCTYPE belong to a standalone file, not to an element in HTML.
    svg = svg[svg.index("<svg") :]
    ids = set(_SVG_ID.findall(svg))

    def rename(match: re.Match[str]) -> str:
        name = match.group(2)
        return match.group(1) + (f"{prefix}-{name}" if name in ids else name)

    svg = _SVG_ID_USE.sub(rename, svg)
    return svg.replace("<svg ", f'<svg class="chart-svg" role="img" aria-label="{escape(label)}" ', 1)
