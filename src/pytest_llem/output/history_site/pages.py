"""The history site's pages as HTML: the front page (the regressions found, every case) and a
page per case (its steps, a chart per metric, where the machine changed, its runs). Every
page is self-contained (the HTML report's stylesheet and the charts inlined) and links to
the others by relative paths, so the folder reads the same from a disk, an artifact or any
static web server."""

from __future__ import annotations

from html import escape
from typing import TYPE_CHECKING

from pytest_llem.formatting import change_or_missing, figure_or_missing
from pytest_llem.gating.stats import SIGNIFICANCE_LEVEL
from pytest_llem.output.history_site.plots import history_chart
from pytest_llem.output.history_site.series import CaseHistory, MarkedStep, regressions
from pytest_llem.output.html import STYLESHEET
from pytest_llem.output.html.charts import figure_element
from pytest_llem.store.projects import shown_project

if TYPE_CHECKING:
    from matplotlib.figure import Figure

INDEX_PAGE = "index.html"
CASES_FOLDER = "cases"
_EXTRA_CSS = """
a { color: #1f4f8a; }
td.worse { color: #a31515; font-weight: 600; }
td code { white-space: nowrap; }
td.better { color: #1b5e20; }
nav.back { margin: 0 0 10px; font-size: 13px; }
section.metric figure { margin-top: 4px; }
"""


def case_path(case: CaseHistory) -> str:
    """The case page's path inside the site."""
    return f"{CASES_FOLDER}/{case.slug}.html"


def metric_anchor(name: str) -> str:
    return f"metric-{name}"


def index_page(cases: list[CaseHistory], run_count: int) -> str:
    projects = sorted({shown_project(case.project) for case in cases})
    regressed = regressions(cases)
    machines = sorted({run.machine_id for case in cases for run in case.runs})
    header = (
        "<header><h1>pytest-llem history</h1>"
        f'<p class="subtitle">{run_count} run(s), {len(cases)} case(s); project(s): '
        f"{escape(', '.join(projects))}; machine(s): {escape(', '.join(machines))}</p></header>"
    )
    if regressed:
        rows = "".join(_regression_row(case, metric, marked) for case, metric, marked in regressed)
        found = (
            '<div class="scroll"><table><thead><tr><th>case</th><th>metric</th><th>machine</th>'
            '<th>step at</th><th class="num">before</th><th class="num">after</th>'
            '<th class="num">change</th><th class="num">p</th></tr></thead>'
            f"<tbody>{rows}</tbody></table></div>"
        )
    else:
        found = '<p class="ok">No metric of any case got worse at its latest step.</p>'
    regressions_section = (
        '<section id="regressions"><h2>Regressions</h2>'
        '<p class="note">Each case and metric whose latest confirmed step (per machine) made it worse.</p>'
        f"{found}</section>"
    )
    case_rows = "".join(_case_row(case) for case in cases)
    cases_section = (
        '<section id="cases"><h2>Cases</h2><div class="scroll"><table><thead><tr><th>case</th>'
        '<th>project</th><th class="num">runs</th><th>latest</th><th class="num">steps</th>'
        f"<th>metrics</th></tr></thead><tbody>{case_rows}</tbody></table></div></section>"
    )
    method = (
        '<section id="method"><h2>How steps are found</h2><p class="note">Per case, metric and '
        "machine, over each run's figure (the median of its samples): PELT's penalised "
        "segmentation proposes steps, and a step is marked only where a two-sided Mann-Whitney U "
        f"test between the runs before and after it gives p &le; {SIGNIFICANCE_LEVEL:g}. Flagged "
        "figures are shown, hollow, and left out.</p></section>"
    )
    return _page("pytest-llem history", [header, regressions_section, cases_section, method])


def _regression_row(case: CaseHistory, metric: str, marked: MarkedStep) -> str:
    step = marked.step
    link = f"{case_path(case)}#{metric_anchor(metric)}"
    return (
        f'<tr><td class="test"><a href="{escape(link)}">{escape(case.key)}</a></td>'
        f"<td><code>{escape(metric)}</code></td><td>{escape(marked.machine_id)}</td>"
        f"<td><code>{escape(case.runs[step.index].label)}</code></td>"
        f'<td class="num">{figure_or_missing(step.before)}</td>'
        f'<td class="num">{figure_or_missing(step.after)}</td>'
        f'<td class="num worse">{change_or_missing(step.change_pct)}</td>'
        f'<td class="num">{step.p_value:.2g}</td></tr>'
    )


def _case_row(case: CaseHistory) -> str:
    steps = sum(len(h.steps) for h in case.metrics)
    names = ", ".join(h.metric.name for h in case.metrics)
    return (
        f'<tr><td class="test"><a href="{escape(case_path(case))}">{escape(case.key)}</a></td>'
        f"<td>{escape(shown_project(case.project))}</td>"
        f'<td class="num">{len(case.runs)}</td><td><code>{escape(case.runs[-1].label)}</code></td>'
        f'<td class="num">{steps}</td><td>{escape(names)}</td></tr>'
    )


def case_page(figure_class: type[Figure], case: CaseHistory) -> str:
    machines = ", ".join(dict.fromkeys(run.machine_id for run in case.runs))
    header = (
        f'<header><nav class="back"><a href="../{INDEX_PAGE}">&larr; all cases</a></nav>'
        f"<h1>{escape(case.key)}</h1>"
        '<dl class="meta">'
        f"<dt>project</dt><dd>{escape(shown_project(case.project))}</dd>"
        f"<dt>test</dt><dd><code>{escape(case.nodeid)}</code></dd>"
        f"<dt>runs</dt><dd>{len(case.runs)}, from {escape(case.runs[0].label)} to "
        f"{escape(case.runs[-1].label)}</dd>"
        f"<dt>machines</dt><dd>{escape(machines)}</dd></dl></header>"
    )
    sections = [header, _steps_section(case)]
    for index, history in enumerate(case.metrics):
        figure, caption = history_chart(figure_class, case, history)
        chart = figure_element(f"chart-{index}", figure, caption)
        sections.append(
            f'<section class="metric" id="{metric_anchor(history.metric.name)}">'
            f"<h2>{escape(history.metric.name)}</h2>{chart}</section>"
        )
    sections += [_machine_section(case), _runs_section(case)]
    return _page(f"pytest-llem history: {case.key}", sections)


def _steps_section(case: CaseHistory) -> str:
    rows = []
    for history in case.metrics:
        for marked in history.steps:
            step = marked.step
            verdict = "worse" if marked.worse else "better"
            rows.append(
                f'<tr><td><a href="#{metric_anchor(history.metric.name)}"><code>'
                f"{escape(history.metric.name)}</code></a></td><td>{escape(marked.machine_id)}</td>"
                f"<td><code>{escape(case.runs[step.index].label)}</code></td>"
                f'<td class="num">{figure_or_missing(step.before)}</td>'
                f'<td class="num">{figure_or_missing(step.after)}</td>'
                f'<td class="num {verdict}">{change_or_missing(step.change_pct)} ({verdict})</td>'
                f'<td class="num">{step.p_value:.2g}</td></tr>'
            )
    if not rows:
        body = '<p class="note">No confirmed step in any metric.</p>'
    else:
        body = (
            '<div class="scroll"><table><thead><tr><th>metric</th><th>machine</th><th>step at</th>'
            '<th class="num">before</th><th class="num">after</th><th class="num">change</th>'
            f'<th class="num">p</th></tr></thead><tbody>{"".join(rows)}</tbody></table></div>'
        )
    return f'<section id="steps"><h2>Steps</h2>{body}</section>'


def _machine_section(case: CaseHistory) -> str:
    if not case.machine_changes:
        return '<section id="machine-changes"><h2>Machine changes</h2><p class="note">None.</p></section>'
    items = []
    for change in case.machine_changes:
        what = f"new machine {change.machine_id}" if change.new_machine else f"machine {change.machine_id}"
        details = "; ".join(change.differences) or "no recorded difference"
        label = escape(case.runs[change.index].label)
        items.append(f"<li><code>{label}</code>: {escape(what)}: {escape(details)}</li>")
    return f'<section id="machine-changes"><h2>Machine changes</h2><ul>{"".join(items)}</ul></section>'


def _runs_section(case: CaseHistory) -> str:
    rows = "".join(
        f'<tr><td class="num">{i}</td><td><code>{escape(run.label)}</code></td>'
        f"<td>{escape(run.branch or '-')}</td><td>{run.started_at:%Y-%m-%d %H:%M:%S} UTC</td>"
        f"<td>{escape(run.machine_id)}</td><td><code>{escape(run.run_id)}</code></td></tr>"
        for i, run in enumerate(case.runs)
    )
    return (
        '<section id="runs"><h2>Runs</h2><div class="scroll"><table><thead><tr>'
        '<th class="num">#</th><th>commit</th><th>branch</th><th>started</th><th>machine</th>'
        f"<th>run</th></tr></thead><tbody>{rows}</tbody></table></div></section>"
    )


def _page(title: str, sections: list[str]) -> str:
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{escape(title)}</title>\n<style>{STYLESHEET}{_EXTRA_CSS}</style>\n</head>\n<body>\n<main>\n"
        + "\n".join(sections)
        + "\n</main>\n</body>\n</html>\n"
    )
