"""The page's sections as HTML: header, results table, charts section, comparison."""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from html import escape
from typing import TYPE_CHECKING

from pytest_llem.energy.quality import UNMEASURED_CODES
from pytest_llem.gating.compare import Comparison, MetricChange
from pytest_llem.output.summary import (
    SummaryView,
    numeric_columns,
    sample_notes,
    summary_columns,
    summary_groups,
    summary_header,
)
from pytest_llem.output.terminal import energy_footnotes
from pytest_llem.results import ExperimentResult
from pytest_llem.store.report import ReportEntry, SessionReport

if TYPE_CHECKING:
    from matplotlib.figure import Figure

from pytest_llem.output.html.charts import (
    batch_size_chart,
    budget_chart,
    change_chart,
    figure_element,
    power_chart,
    tradeoff_chart,
)
from pytest_llem.output.html.points import (
    Point,
    group_colours,
    power_chart_points,
    shorten,
    unmeasured_reasons,
)


def header(report: SessionReport) -> str:
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


def results_section(report: SessionReport, view: SummaryView) -> str:
    columns = summary_columns(report.experiments, view)
    numeric = numeric_columns(columns)
    head = (
        "<tr>"
        + "".join(
            f"<th class='num'>{escape(h)}</th>" if i in numeric else f"<th>{escape(h)}</th>"
            for i, h in enumerate(summary_header(columns))
        )
        + "<th>quality flags</th></tr>"
    )
    width = len(columns) + 1
    rows = []
    for group in summary_groups(report.experiments, view):
        if group.title:
            rows.append(f"<tr class='group'><th colspan='{width}'>{escape(group.title)}</th></tr>")
        rows += [
            _result_row(entry, group.columns, row)
            for entry, row in zip(group.entries, group.rows, strict=True)
        ]
    results = [e.result for e in report.experiments if e.result is not None]
    notes = "".join(
        f'<p class="note">{escape(line)}</p>'
        for line in [*sample_notes(report.experiments), *_energy_lines(results)]
    )
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
        + ("\n".join(rows) or f"<tr><td colspan='{width}'>no experiments ran</td></tr>")
        + "\n</tbody></table></div>\n"
        + notes
        + _flag_details(report.experiments)
        + error_list
        + "\n</section>"
    )


def _result_row(entry: ReportEntry, columns: tuple[str, ...], cells: tuple[str, ...]) -> str:
    result = entry.result
    flags = {w.code: w.message for w in (result.warnings if result else []) if w.code not in UNMEASURED_CODES}
    flag_cells = " ".join(
        f'<span class="flag" title="{escape(message)}">{escape(code)}</span>'
        for code, message in sorted(flags.items())
    )
    numeric = numeric_columns(columns)
    html_cells = []
    for i, (name, cell) in enumerate(zip(columns, cells, strict=True)):
        if name == "status":
            html_cells.append(f'<td><span class="badge status-{escape(cell)}">{escape(cell)}</span></td>')
        elif name == "test":
            html_cells.append(f'<td class="test">{escape(cell)}</td>')
        else:
            html_cells.append(
                f'<td class="num">{escape(cell)}</td>' if i in numeric else f"<td>{escape(cell)}</td>"
            )
    html_cells.append(f"<td>{flag_cells}</td>")
    return "<tr>" + "".join(html_cells) + "</tr>"


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


def charts_section(
    figure_class: type[Figure], report: SessionReport, points: list[Point], power_tests: tuple[str, ...] = ()
) -> str:
    if not points:
        return (
            '<section id="charts">\n<h2>Charts</h2>\n'
            "<p>No experiment produced a result to chart.</p>\n</section>"
        )
    colours = group_colours(points)
    with_energy = any(p.energy_per_token_j is not None for p in points)
    parts = ['<section id="charts">\n<h2>Charts</h2>']
    if not with_energy:
        reasons = unmeasured_reasons([p.result for p in points])
        # The meters' messages open with "energy not measured: ", which the sentence already says.
        why = "; ".join(r.removeprefix("energy not measured: ") for r in reasons)
        why = why or "no experiment reported an energy figure"
        parts.append(
            '<p class="warning" id="no-energy">Energy was not measured in this run, so there are no energy '
            f"charts: {escape(why)}.</p>"
        )
    figure = batch_size_chart(figure_class, points, colours, with_energy)
    if figure is not None:
        caption = (
            (
                "Energy per output token and throughput against batch size."
                if with_energy
                else "Throughput against batch size."
            )
            + (
                " One line per set of settings: experiments that differ in anything but the batch size "
                "(the model, precision, max_new_tokens, ...) are different lines, each named by its model "
                "and the settings that tell it from the others."
            )
            + (
                " Each point is the median of its samples; where there are several, "
                "the bar spans their interquartile range."
            )
        )
        parts.append(figure_element("chart-batch-size", figure, caption))
    figure = tradeoff_chart(figure_class, points, colours) if with_energy else None
    if figure is not None:
        parts.append(
            figure_element(
                "chart-tradeoff",
                figure,
                "Throughput against energy per output token, one point per experiment: "
                "the best configurations sit top left (fast and frugal).",
            )
        )
    figure = budget_chart(figure_class, report, shorten([p.nodeid for p in points]))
    if figure is not None:
        parts.append(
            figure_element(
                "chart-budgets",
                figure,
                "Each test's figure against its budget (the dashed tick), one panel per metric a budget "
                "is set on: the figure the results table shows, which the budget is checked on. "
                "Red with a dark edge: over budget; orange: over budget on a result with a "
                "measurement-quality flag; green: within budget. Every metric with a budget has its panel.",
            )
        )
    parts += _power_charts(figure_class, points, power_tests)
    parts.append("</section>")
    return "\n".join(parts)


def _power_charts(figure_class: type[Figure], points: list[Point], power_tests: tuple[str, ...]) -> list[str]:
    chosen, others = power_chart_points(points, power_tests)
    if not chosen and not others:
        return []
    parts = ["<h3>Device power during the measured windows</h3>"]
    if others:
        asked = (
            f"the experiments matching {', '.join(power_tests)}" if power_tests else "the first experiments"
        )
        parts.append(
            f"<p class='note' id='power-choice'>Drawn for {escape(asked)}; {others} more recorded power "
            "over time: choose which with --llem-power-chart=PATTERN (pytest-llem export: --power-chart).</p>"
        )
    parts.append("<div class='grid' id='power-charts'>")
    for index, point in enumerate(chosen):
        drawn = power_chart(figure_class, point.result, f"{point.label}, {point.group}")
        assert drawn is not None  # chosen for having a timeline
        figure, caption = drawn
        parts.append(figure_element(f"chart-power-{index}", figure, caption, css_class="power"))
    parts.append("</div>")
    return parts


def gate_refusal(refusal: str) -> str:
    """The gate's `GATE FAILED` line: the run failed because it compared nothing."""
    line = f"<pre class='failures' id='gate-failed'>{escape(refusal)}</pre>"
    return f'<section id="gate-section">\n{line}\n</section>'


def comparison_section(figure_class: type[Figure], comparison: Comparison, names: dict[str, str]) -> str:
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
    figure = change_chart(figure_class, comparison, names)
    if figure is not None:
        parts.append(
            figure_element(
                "chart-changes",
                figure,
                "Change against the baseline per test. Red with a dark edge: a regression beyond its limit; "
                "orange: beyond its limit but carrying a measurement-quality flag, so not gated; "
                "pale red or green: worse or better, within the limits. A dashed tick marks a gated "
                "metric's limit on the worse side. Every metric with a limit has its panel; one "
                "without a figure says why.",
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
    """The terminal's and Markdown's comparison table (`MetricChange.cells`), the same cells,
    with the status as a badge and its note beneath it."""
    numeric = {"baseline", "current", "change", "p"}
    head = (
        "<tr>"
        + "".join(
            f"<th class='num'>{escape(c)}</th>" if c in numeric else f"<th>{escape(c)}</th>"
            for c in MetricChange.COLUMNS
        )
        + "</tr>"
    )
    rows = []
    for change in changes:
        cells = []
        for column, text in zip(MetricChange.COLUMNS, change.cells(), strict=True):
            if column == "status":
                note = f"<div class='note'>{escape(change.note)}</div>" if change.note else ""
                badge = f'<span class="badge status-{escape(change.status)}">{escape(change.status)}</span>'
                cells.append(f"<td>{badge}{note}</td>")
            elif column == "test":
                cells.append(f'<td class="test">{escape(text)}</td>')
            else:
                cells.append(
                    f'<td class="num">{escape(text)}</td>'
                    if column in numeric
                    else f"<td>{escape(text)}</td>"
                )
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return (
        f'<div class="scroll"><table id="comparison">\n<thead>{head}</thead>\n<tbody>\n'
        + "\n".join(rows)
        + "\n</tbody></table></div>"
    )
