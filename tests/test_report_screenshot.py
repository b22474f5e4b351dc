"""`tests/support/report_screenshot.py`: the page it photographs says it is sample data."""

from __future__ import annotations

import re

import pytest
from browser import find_browser, rendered_dom
from report_screenshot import SAMPLE_DATA_TEXT, mark_as_sample, sample_page
from test_html import needs_matplotlib

BROWSER = find_browser()


@needs_matplotlib
def test_the_sample_page_opens_with_the_sample_data_banner_above_the_report():
    page = sample_page()
    main = page[page.index("<main>") :]
    assert main.count('id="sample-data"') == 1
    assert main.index('id="sample-data"') < main.index("<header>") < main.index("NVIDIA H100")


@needs_matplotlib
@pytest.mark.skipif(BROWSER is None, reason="no Chromium (Debian: apt-get install chromium)")
def test_chromium_renders_the_banner_as_the_pages_first_text():
    assert BROWSER is not None
    dom = rendered_dom(BROWSER, sample_page())
    body_text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", dom[dom.index("<main>") :])).strip()
    assert body_text.startswith(f"SAMPLE DATA , {SAMPLE_DATA_TEXT}"), body_text[:300]


def test_a_page_without_the_expected_start_is_refused_rather_than_left_unmarked():
    with pytest.raises(ValueError, match="update PAGE_START"):
        mark_as_sample("<html><body><div>report</div></body></html>")
