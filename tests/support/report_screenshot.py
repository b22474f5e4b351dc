"""Regenerates `docs/report-screenshot.png`: the HTML report of the sample run that the HTML
tests check (six experiments and a comparison with limits), rendered by headless Chromium.

    .venv/bin/python tests/support/report_screenshot.py [PATH]

Every figure of that run is made up, under a header that looks real (a run name, dates, an
H100 and its driver), so the page is marked as sample data on the page itself: a banner put
above the report, in the rendered page, where no crop of the screenshot's top can lose it.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "tests" / "support"), str(ROOT / "tests" / "output")]

from browser import find_browser, sample_banner, screenshot, with_banner  # noqa: E402
from test_html import baseline_and_comparison  # noqa: E402

from pytest_llem.output.html import render_html  # noqa: E402

SAMPLE_DATA_TEXT = (
    "not a measurement. The run, its machine, its dates and every figure on this page "
    "are made up (the sample report the project's HTML tests render), to show the page's layout. "
    "Runs on real GPUs are recorded in docs/gpu-validation.md."
)
SAMPLE_DATA_BANNER = sample_banner("SAMPLE DATA", f", {SAMPLE_DATA_TEXT}", font_px=17)
#: Tall enough for the whole sample page at 1280 px wide (it ends near 3,090 px), so the
#: comparison's table is not cut off.
PAGE_HEIGHT_PX = 3140


def mark_as_sample(html: str) -> str:
    """The page with the sample-data banner above everything else in it."""
    return with_banner(html, SAMPLE_DATA_BANNER)


def sample_page() -> str:
    current, comparison = baseline_and_comparison()
    return mark_as_sample(render_html(current, comparison))


def main(target: Path) -> int:
    browser = find_browser()
    if browser is None:
        print("no Chromium found: install Debian's chromium (apt-get install chromium)", file=sys.stderr)
        return 1
    screenshot(browser, sample_page(), target, height=PAGE_HEIGHT_PX)
    print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs" / "report-screenshot.png"))
