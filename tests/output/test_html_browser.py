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


@needs_matplotlib
@needs_browser
def test_chromium_draws_a_servers_own_metrics_under_its_power_chart():
    from sample_reports import make_entry, make_report
    from serving_loads import serving_result

    from pytest_llem.results import DeviceEnergy, PowerSample, ServerMetrics, ServerMetricsSample

    assert BROWSER is not None
    result = serving_result(8)
    timeline = [PowerSample(t_s=0.1 * i, power_w=200.0 + 50 * (i % 3)) for i in range(40)]
    result.energy_by_device = [DeviceEnergy(device="gpu0", energy_j=800.0, timeline=timeline)]
    samples = [
        ServerMetricsSample(t_s=0.5 * i, kv_cache_usage=0.1 * i, requests_running=4, requests_waiting=i % 2)
        for i in range(8)
    ]
    result.serving.server_metrics = ServerMetrics(exposed=True, interval_s=0.5, scrapes=8, timeline=samples)
    html = render_html(make_report("r1", [make_entry("t.py::test_serve", result)]))
    dom = rendered_dom(BROWSER, html)
    figure = re.search(r'<figure class="power" id="chart-power-0">.*?</figure>', dom, re.S)
    assert figure is not None
    caption = re.search(r"<figcaption>(.*?)</figcaption>", figure.group(0), re.S).group(1)
    assert "below, the server's own metrics (its /metrics, scraped every 0.5 s): running requests" in caption
    assert "KV cache" in caption and figure.group(0).count("<svg") == 1
