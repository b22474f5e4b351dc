"""The HTML report: a session report as one self-contained page that opens offline.

Owns turning a `SessionReport`, and optionally its `Comparison` with a baseline run, into a
single HTML document: the run's header, the results table with what energy_j covers, and
the charts a benchmark run is read for (energy per token and throughput against batch
size, throughput against energy per token, device power over each measured window, and
the change against the baseline). Charts are drawn by matplotlib as SVG and inlined; the
page loads no stylesheet, script or font from anywhere, so a CI artifact or an attachment
reads the same with no network. matplotlib is the optional 'html' extra, imported only
when a page is rendered.
"""

from __future__ import annotations

import io
import re
import statistics
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import datetime
from html import escape
from typing import TYPE_CHECKING

from pytest_llem.energy.quality import UNMEASURED_CODES
from pytest_llem.extras import import_extra
from pytest_llem.formatting import figure_or_missing, number
from pytest_llem.gating.compare import Comparison, MetricChange
from pytest_llem.gating.metrics import METRICS
from pytest_llem.output.terminal import energy_footnotes
from pytest_llem.results import DeviceEnergy, ExperimentResult
from pytest_llem.store.report import ReportEntry, SessionReport

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

#: The comparison metrics charted as bars; the table below the chart lists every metric.
CHARTED_CHANGES = ("energy_per_token_j", "tokens_per_s")
# Beyond this many points the scatter's labels overlap into a blur; the table names them all.
MAX_LABELLED_POINTS = 40

_CHART_STYLE = {
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
_PALETTE = ("#1f5fa8", "#d95f02", "#2e8b57", "#8e44ad", "#c0392b", "#7f8c8d", "#b8860b", "#17a2b8")
_WORSE, _BETTER = "#e8a5a5", "#9fd3a8"
_REGRESSION, _FLAGGED = "#c62828", "#ef8f00"
_SVG_ID = re.compile(r'\bid="([^"]+)"')
_SVG_ID_USE = re.compile(r'(\bid="|href="#|url\(#)([^")]+)')


def render_html(report: SessionReport, comparison: Comparison | None = None) -> str:
    """The whole page for `report`, with the comparison section when `comparison` is given."""
    figure_class = import_extra("matplotlib.figure", "html", "the HTML report").Figure
    import matplotlib

    points = _points(report.experiments)
    with matplotlib.rc_context(_CHART_STYLE):
        sections = [
            _header(report),
            _results_section(report),
            _charts_section(figure_class, points),
        ]
        if comparison is not None:
            sections.append(_comparison_section(figure_class, comparison, _short_names(report, comparison)))
    title = f"pytest-llem report: {report.name or report.run_id}"
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{escape(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n<main>\n"
        + "\n".join(sections)
        + "\n</main>\n</body>\n</html>\n"
    )


# --- what the charts plot -------------------------------------------------------------------------


@dataclass(frozen=True)
class _Point:
    """One experiment's result as the charts see it."""

    nodeid: str
    label: str
    group: str
    batch_size: int | None
    tokens_per_s: float | None
    energy_per_token_j: float | None
    result: ExperimentResult


def _points(entries: list[ReportEntry]) -> list[_Point]:
    names = _shorten([e.nodeid for e in entries])
    points = []
    for entry in entries:
        result = entry.result
        if result is None:
            continue
        config = result.config or entry.config or {}
        batch_size = config.get("batch_size")
        # bool is an int; a flag that slipped into batch_size is not a size.
        if not isinstance(batch_size, int) or isinstance(batch_size, bool):
            batch_size = None
        model = config.get("model") or result.workload or entry.workload or "custom workload"
        points.append(
            _Point(
                nodeid=entry.nodeid,
                label=names[entry.nodeid],
                group=f"{model} ({config.get('precision') or 'auto'})",
                batch_size=batch_size,
                tokens_per_s=result.tokens_per_s,
                energy_per_token_j=result.energy_per_token_j,
                result=result,
            )
        )
    return points


def _shorten(nodeids: list[str]) -> dict[str, str]:
    """Test names without their file, where that leaves them unique; charts have little room."""
    short = {n: n.split("::", 1)[1] if "::" in n else n for n in nodeids}
    clashes = {s for s, count in Counter(short.values()).items() if count > 1}
    return {n: n if s in clashes else s for n, s in short.items()}


def _short_names(report: SessionReport, comparison: Comparison) -> dict[str, str]:
    nodeids = [e.nodeid for e in report.experiments] + [c.nodeid for c in comparison.changes]
    return _shorten(list(dict.fromkeys(nodeids)))


def _group_colours(points: list[_Point]) -> dict[str, str]:
    groups = sorted({p.group for p in points})
    return {g: _PALETTE[i % len(_PALETTE)] for i, g in enumerate(groups)}


def _unmeasured_reasons(results: list[ExperimentResult]) -> list[str]:
    return sorted({w.message for r in results for w in r.warnings if w.code in UNMEASURED_CODES})


# --- page sections -------------------------------------------------------------------------------


def _header(report: SessionReport) -> str:
    entries = report.experiments
    statuses = Counter(e.status for e in entries)
    counted = ", ".join(f"{n} {status}" for status, n in sorted(statuses.items()))
    machine = (
        f"{report.machine.describe()} (machine id {report.machine.id})" if report.machine else "not recorded"
    )
    finished = "still running" if report.finished_at is None else _when(report.finished_at)
    if report.finished_at is not None:
        finished += f" ({(report.finished_at - report.started_at).total_seconds():.0f} s)"
    rows = [
        ("run", report.run_id),
        ("started", _when(report.started_at)),
        ("finished", finished),
        ("machine", machine),
        ("plugin", f"pytest-llem {report.plugin_version}, Python {report.python_version}"),
        ("experiments", f"{len(entries)}" + (f" ({counted})" if counted else "")),
    ]
    meta = "".join(f"<dt>{escape(k)}</dt><dd>{escape(v)}</dd>" for k, v in rows)
    outcome = f'<span class="badge outcome-{escape(report.outcome)}">{escape(report.outcome)}</span>'
    stale = ""
    if report.stale_experiments:
        stale = (
            '<p class="warning">Found orphaned at the start of this run and marked failed: '
            + ", ".join(f"<code>{escape(s)}</code>" for s in report.stale_experiments)
            + "</p>"
        )
    return (
        f"<header>\n<h1>{escape(report.name or report.run_id)} {outcome}</h1>\n"
        f'<p class="subtitle">pytest-llem energy benchmark report</p>\n'
        f'<dl class="meta">{meta}</dl>\n{stale}</header>'
    )


def _when(moment: datetime) -> str:
    zone = moment.tzname()
    return moment.strftime("%Y-%m-%d %H:%M:%S") + (f" {zone}" if zone else "")


def _results_section(report: SessionReport) -> str:
    head = (
        "<tr><th>test</th><th class='num'>batch size</th><th>precision</th><th class='num'>tokens/s</th>"
        "<th class='num'>energy J</th><th class='num'>J/token</th><th>status</th><th>quality flags</th></tr>"
    )
    rows = [_result_row(entry) for entry in report.experiments]
    results = [e.result for e in report.experiments if e.result is not None]
    notes = "".join(f'<p class="note">{escape(line)}</p>' for line in _energy_lines(results))
    errors = [e for e in report.experiments if e.error]
    error_list = ""
    if errors:
        error_list = (
            "<h3>Errors</h3>\n<ul class='errors'>"
            + "".join(f"<li><code>{escape(e.nodeid)}</code>: {escape(e.error or '')}</li>" for e in errors)
            + "</ul>"
        )
    return (
        '<section id="results-section">\n<h2>Results</h2>\n'
        f'<div class="scroll"><table id="results">\n<thead>{head}</thead>\n<tbody>\n'
        + ("\n".join(rows) or "<tr><td colspan='8'>no experiments ran</td></tr>")
        + "\n</tbody></table></div>\n"
        + notes
        + _flag_details(report.experiments)
        + error_list
        + "\n</section>"
    )


def _result_row(entry: ReportEntry) -> str:
    result = entry.result
    config = (result.config if result else None) or entry.config or {}
    flags = {w.code: w.message for w in (result.warnings if result else []) if w.code not in UNMEASURED_CODES}
    flag_cells = " ".join(
        f'<span class="flag" title="{escape(message)}">{escape(code)}</span>'
        for code, message in sorted(flags.items())
    )
    cells = [
        f'<td class="test">{escape(entry.nodeid)}</td>',
        f'<td class="num">{escape(str(config.get("batch_size", "-")))}</td>',
        f"<td>{escape(str(config.get('precision', '-')))}</td>",
        f'<td class="num">{number(result.tokens_per_s if result else None, ".1f")}</td>',
        f'<td class="num">{number(result.energy_j if result else None, ".2f")}</td>',
        f'<td class="num">{number(result.energy_per_token_j if result else None, ".4f")}</td>',
        f'<td><span class="badge status-{escape(entry.status)}">{escape(entry.status)}</span></td>',
        f"<td>{flag_cells}</td>",
    ]
    return "<tr>" + "".join(cells) + "</tr>"


def _figure_text(value: float | None) -> str:
    return escape(figure_or_missing(value))


def _energy_lines(results: list[ExperimentResult]) -> list[str]:
    """The terminal summary's footnotes (what energy_j covers, why it is missing, the flags),
    plus the meters' notes that they do not already say."""
    lines = energy_footnotes(results, flag_mark="⚠")
    said = " ".join(lines)
    notes = sorted({n for r in results for n in r.energy_notes if n not in said})
    return lines + [f"Note: {n}" for n in notes]


def _flag_details(entries: list[ReportEntry]) -> str:
    items = [
        f"<li><code>{escape(e.nodeid)}</code> <span class='flag'>{escape(w.code)}</span> "
        f"{escape(w.message)}</li>"
        for e in entries
        if e.result is not None
        for w in e.result.warnings
        if w.code not in UNMEASURED_CODES
    ]
    if not items:
        return ""
    return (
        f"<details><summary>Measurement-quality flags ({len(items)}): figures to read with care</summary>"
        f"<ul class='flags'>{''.join(items)}</ul></details>"
    )


def _charts_section(figure_class: type[Figure], points: list[_Point]) -> str:
    if not points:
        return (
            '<section id="charts">\n<h2>Charts</h2>\n'
            "<p>No experiment produced a result to chart.</p>\n</section>"
        )
    colours = _group_colours(points)
    with_energy = any(p.energy_per_token_j is not None for p in points)
    parts = ['<section id="charts">\n<h2>Charts</h2>']
    if not with_energy:
        reasons = _unmeasured_reasons([p.result for p in points])
        # The meters' messages open with "energy not measured: ", which the sentence already says.
        why = "; ".join(r.removeprefix("energy not measured: ") for r in reasons)
        why = why or "no experiment reported an energy figure"
        parts.append(
            '<p class="warning" id="no-energy">Energy was not measured in this run, so there are no energy '
            f"charts: {escape(why)}.</p>"
        )
    figure = _batch_size_chart(figure_class, points, colours, with_energy)
    if figure is not None:
        caption = (
            "Energy per output token and throughput against batch size, one line per model and precision."
            if with_energy
            else "Throughput against batch size, one line per model and precision."
        )
        parts.append(_figure("chart-batch-size", figure, caption))
    figure = _tradeoff_chart(figure_class, points, colours) if with_energy else None
    if figure is not None:
        parts.append(
            _figure(
                "chart-tradeoff",
                figure,
                "Throughput against energy per output token, one point per experiment: "
                "the best configurations sit top left (fast and frugal).",
            )
        )
    power = [(p, _power_chart(figure_class, p.result.energy_by_device)) for p in points]
    power = [(p, f) for p, f in power if f is not None]
    if power:
        parts.append(
            "<h3>Device power during the measured windows</h3>\n"
            "<p class='note'>Dashed: the device's idle power, measured before the model loaded. "
            "Several windows or rounds are drawn end to end.</p>\n<div class='grid' id='power-charts'>"
        )
        for index, (point, figure) in enumerate(power):
            parts.append(_figure(f"chart-power-{index}", figure, point.nodeid, css_class="power"))
        parts.append("</div>")
    parts.append("</section>")
    return "\n".join(parts)


def _comparison_section(figure_class: type[Figure], comparison: Comparison, names: dict[str, str]) -> str:
    baseline = comparison.baseline_name or comparison.baseline_run
    parts = [f'<section id="comparison-section">\n<h2>Compared with baseline {escape(baseline)}</h2>']
    if comparison.baseline_name:
        parts.append(f"<p class='note'>baseline run id {escape(comparison.baseline_run)}</p>")
    if comparison.machine_warning:
        parts.append(f"<p class='warning'>{escape(comparison.machine_warning)}</p>")
    failures = comparison.failures
    if failures:
        lines = "\n".join(escape(change.line()) for change in failures)
        parts.append(f"<pre class='failures' id='regressions'>{lines}</pre>")
    else:
        parts.append("<p class='ok' id='regressions'>No regression beyond a limit.</p>")
    figure = _change_chart(figure_class, comparison, names)
    if figure is not None:
        parts.append(
            _figure(
                "chart-changes",
                figure,
                "Change against the baseline per test. Red with a dark edge: a regression beyond its limit; "
                "orange: beyond its limit but carrying a measurement-quality flag, so not gated; "
                "pale red or green: worse or better, within the limits.",
            )
        )
    if comparison.changes:
        parts.append(_comparison_table(comparison.changes))
    for label, nodeids in (
        ("Only in the baseline", comparison.only_in_baseline),
        ("Only in this run", comparison.only_in_current),
    ):
        if nodeids:
            listed = ", ".join(f"<code>{escape(n)}</code>" for n in nodeids)
            parts.append(f"<p class='note'>{label}: {listed}</p>")
    parts.append("</section>")
    return "\n".join(parts)


def _comparison_table(changes: list[MetricChange]) -> str:
    head = (
        "<tr><th>test</th><th>metric</th><th class='num'>baseline</th><th class='num'>current</th>"
        "<th>unit</th><th class='num'>change</th><th class='num'>p</th><th>limit</th><th>status</th></tr>"
    )
    rows = []
    for change in changes:
        pct = change.change_text()
        status = f'<span class="badge status-{escape(change.status)}">{escape(change.status)}</span>'
        note = f"<div class='note'>{escape(change.note)}</div>" if change.note else ""
        cells = [
            f'<td class="test">{escape(change.nodeid)}</td>',
            f"<td>{escape(change.metric)}</td>",
            f'<td class="num">{_figure_text(change.baseline)}</td>',
            f'<td class="num">{_figure_text(change.current)}</td>',
            f"<td>{escape(change.unit)}</td>",
            f'<td class="num">{pct}</td>',
            f'<td class="num">{number(change.p_value, ".3g")}</td>',
            f"<td>{escape(change.limit or '-')}</td>",
            f"<td>{status}{note}</td>",
        ]
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return (
        f'<div class="scroll"><table id="comparison">\n<thead>{head}</thead>\n<tbody>\n'
        + "\n".join(rows)
        + "\n</tbody></table></div>"
    )


# --- charts --------------------------------------------------------------------------------------


def _batch_size_chart(
    figure_class: type[Figure], points: list[_Point], colours: dict[str, str], with_energy: bool
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
        ax.set_title(title)
        ax.set_xlabel("batch size")
        ax.set_ylabel(ylabel)
        ax.set_ylim(bottom=0)
        _batch_axis(ax, sizes)
    axes[0].legend(loc="best")
    return figure


def _batch_axis(ax: Axes, sizes: list[int]) -> None:
    # Batch sizes usually double; on a linear axis 1, 2 and 4 would crowd into one corner.
    if len(sizes) > 1 and sizes[-1] / sizes[0] >= 4:
        ax.set_xscale("log", base=2)
    ax.set_xticks(sizes, [str(s) for s in sizes])
    ax.minorticks_off()


def _tradeoff_chart(
    figure_class: type[Figure], points: list[_Point], colours: dict[str, str]
) -> Figure | None:
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


def _power_chart(figure_class: type[Figure], devices: list[DeviceEnergy]) -> Figure | None:
    series = []
    for device in devices:
        samples = [(s.t_s, s.power_w) for s in device.timeline if s.power_w is not None]
        if len(samples) >= 2:
            series.append((device, samples))
    if not series:
        return None
    figure = figure_class(figsize=(4.4, 2.5), layout="constrained")
    ax = figure.subplots()
    for index, (device, samples) in enumerate(series):
        colour = _PALETTE[index % len(_PALETTE)]
        label = device.device + (f" ({device.name})" if device.name else "")
        ax.plot([t for t, _ in samples], [w for _, w in samples], color=colour, linewidth=1.2, label=label)
        if device.baseline_power_w is not None:
            ax.axhline(device.baseline_power_w, color=colour, linestyle="--", linewidth=0.8)
    ax.set_xlabel("time in the measured windows (s)")
    ax.set_ylabel("power (W)")
    ax.set_xlim(left=0)
    ax.set_ylim(bottom=0)
    ax.legend(loc="lower right")
    return figure


def _change_chart(figure_class: type[Figure], comparison: Comparison, names: dict[str, str]) -> Figure | None:
    charted = [c for c in comparison.changes if c.metric in CHARTED_CHANGES and c.change_pct is not None]
    metrics = [m for m in CHARTED_CHANGES if any(c.metric == m for c in charted)]
    if not metrics:
        return None
    from matplotlib.patches import Patch

    tests = list(dict.fromkeys(c.nodeid for c in charted))
    row = {nodeid: index for index, nodeid in enumerate(tests)}
    figure = figure_class(figsize=(4.6 * len(metrics) + 1.6, 1.3 + 0.3 * len(tests)), layout="constrained")
    axes = figure.subplots(1, len(metrics), sharey=True, squeeze=False)[0]
    used: dict[str, str] = {}
    for ax, name in zip(axes, metrics, strict=True):
        changes = [c for c in charted if c.metric == name]
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
        ax.bar_label(bars, labels=[c.change_text() for c in changes], padding=3, fontsize=7)
        ax.axvline(0, color="#444444", linewidth=0.8, zorder=2)
        direction = "higher" if METRICS[name].higher_is_better else "lower"
        ax.set_title(f"{name}: change in % ({direction} is better)")
        ax.grid(axis="y", visible=False)
        # The % labels sit past the bar ends; keep them inside the axes on both sides.
        ax.margins(x=0.3)
    axes[0].set_yticks(range(len(tests)), [names.get(t, t) for t in tests])
    axes[0].invert_yaxis()
    order = ["regression", "flagged (not gated)", "worse", "better"]
    handles = [Patch(color=used[k], label=k) for k in order if k in used]
    figure.legend(handles=handles, loc="outside lower center", ncols=len(handles))
    return figure


def _change_style(change: MetricChange) -> tuple[str, str, str]:
    """Fill, edge and legend entry of one bar: gated outcomes first, then plain direction."""
    if change.status in ("regression", "over_budget"):
        return _REGRESSION, "#5c0000", "regression"
    if change.status == "flagged":
        return _FLAGGED, "none", "flagged (not gated)"
    assert change.baseline is not None
    worse = METRICS[change.metric].worse_by(change.baseline, change.current) > 0
    return (_WORSE, "none", "worse") if worse else (_BETTER, "none", "better")


def _figure(element_id: str, figure: Figure, caption: str, css_class: str = "chart") -> str:
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


_CSS = """
:root { --fg: #1d2330; --muted: #5f6b7a; --line: #dde3ea; --head: #f0f3f7; }
* { box-sizing: border-box; }
body { margin: 0; background: #f3f5f8; color: var(--fg);
  font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
main { max-width: 1180px; margin: 0 auto; padding: 22px 24px 40px; }
header, section { background: #fff; border: 1px solid var(--line); border-radius: 8px;
  padding: 16px 22px 18px; margin-bottom: 16px; }
h1 { font-size: 22px; margin: 0; display: flex; align-items: center; gap: 12px; flex-wrap: wrap; }
h2 { font-size: 17px; margin: 0 0 12px; }
h3 { font-size: 14px; margin: 20px 0 6px; }
.subtitle { margin: 2px 0 12px; color: var(--muted); }
dl.meta { display: grid; grid-template-columns: max-content 1fr; gap: 3px 18px; margin: 0; }
dl.meta dt { color: var(--muted); }
dl.meta dd { margin: 0; overflow-wrap: anywhere; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; width: 100%; font-size: 13px; }
th, td { padding: 5px 8px; border-bottom: 1px solid var(--line); text-align: left; vertical-align: top; }
th { background: var(--head); font-weight: 600; white-space: nowrap; }
th.num, td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
code, td.test { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, "DejaVu Sans Mono", monospace;
  font-size: 12px; overflow-wrap: anywhere; }
/* A test name broken at its hyphens reads as two tests; a long one scrolls the table instead. */
td.test { white-space: nowrap; }
tbody tr:nth-child(even) { background: #fafbfc; }
.badge { display: inline-block; padding: 1px 9px; border-radius: 10px; font-size: 12px; font-weight: 600;
  background: #eceff1; color: #37474f; white-space: nowrap; }
h1 .badge { font-size: 13px; }
.outcome-passed, .status-passed, .status-improved { background: #e3f4e6; color: #1b5e20; }
.outcome-failed, .status-failed, .status-regression, .status-over_budget {
  background: #fdecea; color: #a31515; }
.outcome-interrupted, .status-interrupted, .status-flagged { background: #fff3e0; color: #8a4b00; }
.outcome-running, .status-resumed { background: #e3eefb; color: #1f4f8a; }
.flag { display: inline-block; font: 11px ui-monospace, SFMono-Regular, Menlo, Consolas, monospace;
  background: #fff3e0; color: #8a4b00; border: 1px solid #f3c98b; border-radius: 4px; padding: 0 5px;
  margin: 1px 3px 1px 0; white-space: nowrap; }
.note { color: var(--muted); margin: 6px 0 0; font-size: 13px; }
.warning { background: #fff8e1; border: 1px solid #f3d98b; border-radius: 6px; padding: 8px 12px; }
.ok { background: #e8f5e9; border: 1px solid #b7dfbb; border-radius: 6px; padding: 8px 12px; }
pre.failures { background: #fdecea; color: #8e1c1c; border: 1px solid #f5c2c0; border-radius: 6px;
  padding: 10px 12px; white-space: pre-wrap; overflow-wrap: anywhere; font-size: 12px; }
details { margin-top: 10px; font-size: 13px; }
summary { cursor: pointer; color: #8a4b00; }
ul.flags, ul.errors { margin: 6px 0; padding-left: 20px; }
figure { margin: 14px 0 6px; }
figcaption { font-size: 12.5px; color: var(--muted); margin-top: 2px; overflow-wrap: anywhere; }
svg.chart-svg { display: block; max-width: 100%; height: auto; }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(340px, 1fr)); gap: 6px 20px; }
figure.power { margin: 6px 0; }
figure.power figcaption { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace;
  font-size: 11.5px; }
"""
