"""The HTML report in a real browser: headless Chromium loads it offline and renders it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from browser import find_browser, rendered_dom, screenshot
from test_html import baseline_and_comparison, needs_matplotlib

from pytest_llem.output.html import render_html

BROWSER = find_browser()
needs_browser = pytest.mark.skipif(BROWSER is None, reason="no Chromium (Debian: apt-get install chromium)")


@needs_matplotlib
@needs_browser
def test_chromium_renders_every_chart_and_table_of_the_report(tmp_path: Path):
    assert BROWSER is not None
    current, comparison = baseline_and_comparison()
    html = render_html(current, comparison)
    dom = rendered_dom(BROWSER, html)
    # Every inline chart and every table survived the browser's parser.
    assert dom.count("<svg") == html.count("<svg") > 0
    for element_id in ("results", "comparison", "chart-batch-size", "chart-changes", "chart-power-0"):
        assert re.search(rf'id="{element_id}"', dom), element_id
    target = tmp_path / "page.png"
    screenshot(BROWSER, html, target, height=1200)
    data = target.read_bytes()
    assert data.startswith(b"\x89PNG") and len(data) > 20_000  # a drawn page, not a blank one
