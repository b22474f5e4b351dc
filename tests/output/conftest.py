"""Fixtures shared by the tests of the outputs' charts (the HTML report and the history site)."""

from __future__ import annotations

import pytest


@pytest.fixture
def figure_class():
    """matplotlib's Figure, under the style every chart of pytest-llem is drawn in (as
    render_html and publish_site draw them)."""
    import matplotlib
    from matplotlib.figure import Figure

    from pytest_llem.output.html.charts import CHART_STYLE

    with matplotlib.rc_context(CHART_STYLE):
        yield Figure
