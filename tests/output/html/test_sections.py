"""The HTML page's sections (`output.html.sections`) one at a time: the header's facts, the
results table (empty, grouped, with errors and flags), the charts section's messages when
there is nothing to chart or no energy, the gate's refusal, and the comparison's text. Each
is well-formed HTML with the report's text escaped."""

from __future__ import annotations

import importlib.util
from html.parser import HTMLParser

import pytest
from sample_reports import EPYC, GPT2, NOT_MEASURED, OPT, SHORT_WINDOW, make_entry, make_report, make_result

from pytest_llem.gating.compare import Comparison, MetricChange
from pytest_llem.output.html.points import chart_points
from pytest_llem.output.html.sections import comparison_section, gate_refusal, header, results_section
from pytest_llem.output.summary import SummaryView

VOID = {"meta", "link", "br", "img", "input", "hr", "source", "wbr"}
HOSTILE = "<script>alert(1)</script>"


class Balanced(HTMLParser):
    """Checks that every element closes where it should (the page is assembled from strings)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.open: list[str] = []
        self.tags: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        if tag not in VOID:
            self.open.append(tag)

    def handle_endtag(self, tag):
        assert self.open and self.open[-1] == tag, f"</{tag}> closes {self.open[-1:]}"
        self.open.pop()


def well_formed(fragment: str) -> str:
    parser = Balanced()
    parser.feed(fragment)
    parser.close()
    assert parser.open == [], f"unclosed: {parser.open}"
    assert not {"script", "img"} & set(parser.tags)  # the report's text never becomes markup
    return fragment


def test_the_header_names_the_run_its_outcome_machine_and_what_each_experiment_did():
    report = make_report("r1", [make_entry(GPT2, make_result([1.0])), make_entry(OPT, None)], machine=EPYC)
    report.outcome = "failed"
    html = well_formed(header(report))
    assert '<h1>r1 <span class="badge outcome-failed">failed</span></h1>' in html
    assert f"<dd>{EPYC.describe()} (machine id epyc)</dd>" in html
    assert "<dd>2 (1 failed, 1 passed)</dd>" in html
    assert "<dd>2026-01-01 00:05:00 UTC (300 s)</dd>" in html  # make_report's runs last five minutes
    assert "orphaned" not in html


def test_a_running_run_without_a_machine_says_so_and_lists_its_orphans_escaped():
    # A run's name holds no '/', so no closing tag: an element that needs none.
    report = make_report("r2", [], name="nightly <img src=x onerror=alert(1)>", machine=None)
    report.finished_at = None
    report.stale_experiments = [f"exp-{HOSTILE}"]
    html = well_formed(header(report))
    assert "<h1>nightly &lt;img src=x onerror=alert(1)&gt; " in html
    assert "<dd>still running</dd>" in html and "<dd>not recorded</dd>" in html and "<dd>0</dd>" in html
    assert "marked failed: <code>exp-&lt;script&gt;alert(1)&lt;/script&gt;</code>" in html


def test_a_run_without_experiments_has_a_table_that_says_so():
    view = SummaryView()
    html = well_formed(results_section(make_report("r", []), view))
    assert f"<tr><td colspan='{len(view.columns) + 1}'>no experiments ran</td></tr>" in html
    assert "<h3>Errors</h3>" not in html and "<details>" not in html


def test_failed_experiments_are_listed_with_their_error_escaped():
    failed = make_entry(OPT, None, error=f"workload raised ValueError: {HOSTILE}")
    html = well_formed(
        results_section(make_report("r", [make_entry(GPT2, make_result([1.0])), failed]), SummaryView())
    )
    assert "<h3>Errors</h3>" in html
    assert f"<li><code>{OPT}</code>: workload raised ValueError: &lt;script&gt;" in html


def test_flags_other_than_missing_energy_show_in_their_row_and_in_the_details():
    flagged = make_entry(GPT2, make_result([1.0], warnings=[SHORT_WINDOW, NOT_MEASURED]))
    html = well_formed(results_section(make_report("r", [flagged]), SummaryView()))
    assert f'<span class="flag" title="{SHORT_WINDOW.message}">short_window</span>' in html
    assert "Measurement-quality flags (1): figures to read with care" in html
    assert '<span class="flag" title="' + NOT_MEASURED.message not in html  # said once, as a note instead


def test_a_grouped_view_puts_a_title_row_over_each_group():
    small, large = make_result([1.0]), make_result([2.0])
    small.config = {**small.config, "batch_size": 1}
    large.config = {**large.config, "batch_size": 8}
    report = make_report("r", [make_entry("t.py::test_a", small), make_entry("t.py::test_b", large)])
    view = SummaryView(columns=("test", "energy_j"), group_by="batch_size")
    html = well_formed(results_section(report, view))
    titles = [line for line in html.splitlines() if "class='group'" in line]
    assert titles == [
        "<tr class='group'><th colspan='3'>batch_size: 1</th></tr>",
        "<tr class='group'><th colspan='3'>batch_size: 8</th></tr>",
    ]
    assert "<th>test</th><th class='num'>energy_j</th><th>quality flags</th>" in html


needs_matplotlib = pytest.mark.skipif(
    importlib.util.find_spec("matplotlib") is None, reason="the html extra (matplotlib) is not installed"
)


@needs_matplotlib
def test_nothing_to_chart_is_a_sentence_not_an_empty_section():
    from matplotlib.figure import Figure

    from pytest_llem.output.html.sections import charts_section

    entries = [make_entry(GPT2, None)]
    html = well_formed(charts_section(Figure, make_report("r", entries), chart_points(entries)))
    assert "<p>No experiment produced a result to chart.</p>" in html and "<figure" not in html


@needs_matplotlib
def test_a_run_without_energy_says_why_in_one_sentence_and_charts_only_throughput():
    from matplotlib.figure import Figure

    from pytest_llem.output.html.sections import charts_section

    unmeasured = make_result([1.0], energy_j=None, warnings=[NOT_MEASURED])
    entries = [make_entry(GPT2, unmeasured)]
    html = well_formed(charts_section(Figure, make_report("r", entries), chart_points(entries)))
    reason = NOT_MEASURED.message.removeprefix("energy not measured: ")
    assert (
        '<p class="warning" id="no-energy">Energy was not measured in this run, so there are no energy '
        f"charts: {reason}.</p>"
    ) in html
    assert 'id="chart-batch-size"' in html and 'id="chart-tradeoff"' not in html


def test_the_gates_refusal_is_shown_as_it_is_escaped():
    html = well_formed(gate_refusal(f"pytest-llem: GATE FAILED: {HOSTILE}"))
    assert "<pre class='failures' id='gate-failed'>pytest-llem: GATE FAILED: &lt;script&gt;" in html


def test_a_comparison_names_its_baseline_and_what_only_one_side_ran():
    comparison = Comparison(
        baseline_run="20260101-abc",
        baseline_name="main",
        machine_warning="the baseline ran on another machine",
        only_in_baseline=["t.py::test_gone"],
        only_in_current=[f"t.py::test_new[{HOSTILE}]"],
    )
    html = well_formed(comparison_section(None, comparison, {}))  # no change: nothing is drawn
    assert "<h2>Compared with baseline main</h2>" in html
    assert "<p class='note'>baseline run id 20260101-abc</p>" in html
    assert "<p class='warning'>the baseline ran on another machine</p>" in html
    assert "<p class='ok' id='regressions'>No regression beyond a limit.</p>" in html
    assert "<p class='note'>Only in the baseline: <code>t.py::test_gone</code></p>" in html
    assert "Only in this run: <code>t.py::test_new[&lt;script&gt;" in html
    assert '<table id="comparison">' not in html


@needs_matplotlib
def test_a_regression_is_its_line_and_every_change_a_row():
    from matplotlib.figure import Figure

    regression = MetricChange(
        nodeid=GPT2,
        metric="energy_per_token_j",
        unit="J",
        baseline=1.0,
        current=1.2,
        change_pct=20.0,
        p_value=0.01,
        limit="5%",
        status="regression",
    )
    fine = regression.model_copy(
        update={"metric": "tokens_per_s", "unit": "tokens/s", "limit": None, "status": "ok"}
    )
    comparison = Comparison(baseline_run="b", changes=[regression, fine])
    html = well_formed(comparison_section(Figure, comparison, {}))
    assert f"<pre class='failures' id='regressions'>{regression.line()}</pre>".replace("->", "-&gt;") in html
    body = html.split('<table id="comparison">', 1)[1]
    assert body.count("<tr>") == 3  # the header and one row per change
    assert '<span class="badge status-regression">regression</span>' in body
    assert 'id="chart-changes"' in html
