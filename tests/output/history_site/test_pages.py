"""The history site's pages: the front page's regressions and cases, linked to the case pages'
charts; each case page's steps, charts, machine changes and runs; everything escaped."""

from __future__ import annotations

import importlib.util
import random
import re

import pytest
from sample_reports import sample_commit_label, sample_history

from pytest_llem.output.history_site.pages import case_page, case_path, index_page, metric_anchor
from pytest_llem.output.history_site.series import case_histories

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("matplotlib") is None, reason="the html extra (matplotlib) is not installed"
)


def history(step: float, nodeid: str = "tests/test_bench.py::test_gpt2[bs4]"):
    rng = random.Random(4)
    energies = [[rng.gauss(5.0 if i < 8 else 5.0 + step, 0.05) for _ in range(5)] for i in range(16)]
    (case,) = case_histories(sample_history(energies, nodeid=nodeid))
    return case


def test_the_front_page_lists_each_regression_linked_to_its_chart():
    case = history(step=1.0)
    page = index_page([case], 16)

    regressions = page[page.index('id="regressions"') : page.index('id="cases"')]
    rows = re.findall(r"<tr><td.*?</tr>", regressions)
    metrics = [re.search(r"<code>(\w+)</code>", row).group(1) for row in rows]
    assert metrics == ["energy_per_token_j", "energy_j"]
    assert f'href="{case_path(case)}#{metric_anchor("energy_j")}"' in regressions
    expected = [f"{h.regressions[0].step.change_pct:+.1f}%" for h in case.metrics[:2]]
    assert [re.search(r"[+-]\d+\.\d%", row).group(0) for row in rows] == expected
    assert all(change.startswith("+1") or change.startswith("+2") for change in expected)
    assert all(f"<code>{sample_commit_label(8)}</code>" in row for row in rows)
    assert "16 run(s), 1 case(s)" in page
    assert f'<a href="{case_path(case)}">' in page[page.index('id="cases"') :]


def test_a_front_page_without_a_worse_step_says_so():
    page = index_page([history(step=-1.0)], 16)
    assert "No metric of any case got worse at its latest step." in page


def test_the_case_page_has_its_steps_a_chart_per_metric_its_runs_and_a_way_back():
    import matplotlib
    from matplotlib.figure import Figure

    from pytest_llem.output.html.charts import CHART_STYLE

    case = history(step=1.0)
    with matplotlib.rc_context(CHART_STYLE):
        page = case_page(Figure, case)

    assert '<a href="../index.html">' in page
    ids = re.findall(r'<section[^>]*\bid="([^"]+)"', page)
    charted = [metric_anchor(h.metric.name) for h in case.metrics]
    assert ids == ["steps", *charted, "machine-changes", "runs"]
    assert page.count("<svg") == len(case.metrics)
    steps = page[page.index('id="steps"') : page.index('<section class="metric"')]
    assert steps.count("(worse)") == 2 and f"<code>{sample_commit_label(8)}</code>" in steps
    assert page.count('<td class="num">') >= 16  # the runs table numbers every run


def test_what_comes_from_runs_is_escaped():
    case = history(step=0.0, nodeid="tests/test_x.py::test_a[<script>alert(1)</script>]")
    page = index_page([case], 16)
    assert "<script>" not in page and "&lt;script&gt;" in page
