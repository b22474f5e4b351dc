"""Regenerates `docs/report-screenshot.png`: the HTML report of the sample run that the HTML
tests check (six experiments and a comparison with limits), rendered by headless Chromium.

    .venv/bin/python tests/support/report_screenshot.py [PATH]
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "tests" / "support"), str(ROOT / "tests" / "output")]

from browser import find_browser, screenshot  # noqa: E402
from test_html import baseline_and_comparison  # noqa: E402

from pytest_llem.output.html import render_html  # noqa: E402


def main(target: Path) -> int:
    browser = find_browser()
    if browser is None:
        print("no Chromium found: install Debian's chromium (apt-get install chromium)", file=sys.stderr)
        return 1
    current, comparison = baseline_and_comparison()
    screenshot(browser, render_html(current, comparison), target)
    print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs" / "report-screenshot.png"))
