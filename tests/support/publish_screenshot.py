"""Regenerates `docs/publish-screenshot.png`: the case page `pytest-llem publish` writes for a
history of real `pytest --llem` runs, one per commit of a scratch git repository whose suite
halves its throughput at one commit (`scratch_history`), rendered by headless Chromium.

    .venv/bin/python tests/support/publish_screenshot.py [PATH]

It takes about a minute: eight real sessions, then the site. The runs are real, but their
workload sets its own throughput (a paced sleep, not a model), so the page says so in a
banner above everything else on it, where no crop of the screenshot's top can lose it.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "tests" / "support")]

from browser import find_browser, sample_banner, screenshot, with_banner  # noqa: E402
from scratch_history import RATE_AFTER, RATE_BEFORE, build_history  # noqa: E402

from pytest_llem.cli import main as pytest_llem  # noqa: E402

COMMITS, STEP_AT = 10, 6
SAMPLE_TEXT = (
    f"real pytest --llem runs of a test whose workload sets its own throughput ({RATE_BEFORE:g} "
    f"tokens/s, halved to {RATE_AFTER:g} at the 7th of {COMMITS} commits of a scratch repository), "
    "to show the page's layout; not a model's measurement."
)
BANNER = sample_banner("SAMPLE HISTORY", f": {SAMPLE_TEXT}", font_px=16)
PAGE_HEIGHT_PX = 1500


def mark_as_sample(html: str) -> str:
    """The page with the sample banner above everything else in it."""
    return with_banner(html, BANNER)


def main(target: Path) -> int:
    browser = find_browser()
    if browser is None:
        print("no Chromium found: install Debian's chromium (apt-get install chromium)", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory() as tmp:
        state_dir, _ = build_history(Path(tmp), COMMITS, STEP_AT)
        site = Path(tmp) / "site"
        code = pytest_llem(["publish", str(site), "--state-dir", str(state_dir), "--metric", "tokens_per_s"])
        if code != 0:
            return code
        (page,) = (site / "cases").glob("*.html")
        screenshot(browser, mark_as_sample(page.read_text(encoding="utf-8")), target, height=PAGE_HEIGHT_PX)
    print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs" / "publish-screenshot.png"))
