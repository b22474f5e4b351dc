"""Headless Chromium for the HTML report and the docs site: rendering a page offline to its
DOM or a screenshot.

Used by the browser tests of the report and of the docs site, and by `report_screenshot.py`,
which regenerates `docs/report-screenshot.png`. Chromium comes from the system (Debian's
`chromium`).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

BROWSER_NAMES = ("chromium", "chromium-browser", "google-chrome")
TIMEOUT_S = 180


def find_browser() -> str | None:
    return next((path for name in BROWSER_NAMES if (path := shutil.which(name))), None)


def _run(browser: str, page: Path, *args: str) -> str:
    proc = subprocess.run(
        # No sandbox: CI runs as root, where Chromium refuses its sandbox. The page is ours.
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", *args, page.as_uri()],
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=True,
    )
    return proc.stdout


def rendered_dom(browser: str, html: str) -> str:
    """The page's DOM after Chromium has loaded it from a file (no network)."""
    with tempfile.TemporaryDirectory() as tmp:
        page = Path(tmp) / "report.html"
        page.write_text(html, encoding="utf-8")
        return file_dom(browser, page)


def file_dom(browser: str, page: Path) -> str:
    """The DOM of a page already on disk, loaded where it lies so its relative links and
    assets resolve as they would on a web server."""
    return _run(browser, page.resolve(), "--dump-dom")


def screenshot(browser: str, html: str, target: Path, width: int = 1280, height: int = 2600) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        page = Path(tmp) / "report.html"
        page.write_text(html, encoding="utf-8")
        _run(browser, page, f"--window-size={width},{height}", f"--screenshot={target.resolve()}")
