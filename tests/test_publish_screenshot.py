"""`tests/support/publish_screenshot.py`: the case page it photographs says, first thing, that
its history is a paced workload's, not a model's."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from publish_screenshot import BANNER, SAMPLE_TEXT, mark_as_sample
from sample_reports import sample_history

needs_matplotlib = pytest.mark.skipif(
    importlib.util.find_spec("matplotlib") is None, reason="the html extra (matplotlib) is not installed"
)


@needs_matplotlib
def test_a_published_case_page_gets_the_banner_above_everything_else(tmp_path: Path):
    from pytest_llem.output.history_site import publish_site

    site = publish_site(sample_history([[1.0, 1.1]] * 3), tmp_path)
    (page,) = (tmp_path / "cases").glob("*.html")
    marked = mark_as_sample(page.read_text())
    main = marked[marked.index("<main>") :]
    assert main.index(BANNER) < main.index("<header>")
    assert "not a model's measurement" in SAMPLE_TEXT and site.cases


def test_a_page_without_the_expected_start_is_refused_rather_than_left_unmarked():
    with pytest.raises(ValueError, match="update PAGE_START"):
        mark_as_sample("<html><body><div>history</div></body></html>")
