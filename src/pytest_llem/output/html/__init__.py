"""The HTML report: a session report as one self-contained page that opens offline.

Owns turning a `SessionReport`, and optionally its `Comparison` with a baseline run, into a
single HTML document: the run's header, the results table with what energy_j covers, and
the charts a benchmark run is read for (energy per token and throughput against batch
size, throughput against energy per token, each figure against its budget, device power
over each measured window, and the change against the baseline, a panel for every metric
a limit gates). Charts are drawn by matplotlib as SVG and inlined; the
page loads no stylesheet, script or font from anywhere, so a CI artifact or an attachment
reads the same with no network. matplotlib is the optional 'html' extra, imported only
when a page is rendered.

The page is assembled here; `points` turns results into what the charts plot, `sections`
writes the page's sections, `charts` draws them, and `report.css` styles the page.
"""

from __future__ import annotations

from html import escape
from importlib import resources

from pytest_llem.extras import import_extra
from pytest_llem.gating.compare import Comparison
from pytest_llem.output.html.charts import CHART_STYLE
from pytest_llem.output.html.points import chart_points, short_names
from pytest_llem.output.html.sections import (
    charts_section,
    comparison_section,
    gate_refusal,
    header,
    results_section,
)
from pytest_llem.output.summary import SummaryView
from pytest_llem.store.report import SessionReport


def render_html(
    report: SessionReport,
    comparison: Comparison | None = None,
    view: SummaryView | None = None,
    power_tests: tuple[str, ...] = (),
    refusal: str | None = None,
) -> str:
    """The whole page for `report`, with the comparison section when `comparison` is given;
    the results table follows `view` (columns, order, groups) as the terminal's does, and
    power over time is drawn for the tests `power_tests` choose (`power_chart_points`).
    `refusal`: the gate's `GATE FAILED` line, shown under the header when the gate compared
    nothing."""
    figure_class = import_extra("matplotlib.figure", "html", "the HTML report").Figure
    import matplotlib

    points = chart_points(report.experiments)
    with matplotlib.rc_context(CHART_STYLE):
        sections = [
            header(report),
            *([gate_refusal(refusal)] if refusal else []),
            results_section(report, view or SummaryView()),
            charts_section(figure_class, report, points, power_tests),
        ]
        if comparison is not None:
            sections.append(comparison_section(figure_class, comparison, short_names(report, comparison)))
    title = f"pytest-llem report: {report.name or report.run_id}"
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{escape(title)}</title>\n<style>{STYLESHEET}</style>\n</head>\n<body>\n<main>\n"
        + "\n".join(sections)
        + "\n</main>\n</body>\n</html>\n"
    )


#: The page's stylesheet, inlined so the report opens offline.
STYLESHEET = resources.files(__package__).joinpath("report.css").read_text(encoding="utf-8")
