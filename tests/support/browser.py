"""Headless Chromium for the HTML report and the docs site: rendering a page offline to its
DOM or a screenshot.

Used by the browser tests of the report and of the docs site, and by `report_screenshot.py`,
which regenerates `docs/report-screenshot.png`. Chromium comes from the system (Debian's
`chromium`).
"""

from __future__ import annotations

import html
import re
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import unquote, urlsplit

BROWSER_NAMES = ("chromium", "chromium-browser", "google-chrome")
HREF = re.compile(r'<a\b[^>]*\bhref="([^"]*)"')
ELEMENT_ID = re.compile(r'\bid="([^"]*)"')
TIMEOUT_S = 180


#: Where the pages pytest-llem writes (the HTML report, the history site) start their body:
#: a sample banner goes first inside it.
PAGE_START = "<body>\n<main>\n"


def sample_banner(label: str, text: str, font_px: int) -> str:
    """A banner that marks a screenshot's page as sample data, in words on the page itself."""
    return (
        '<div role="note" id="sample-data" style="background: #fff3cd; border: 2px solid #c98a00; '
        f'border-radius: 8px; padding: 12px 16px; margin: 0 0 16px; font-size: {font_px}px; color: #4a3200;">'
        f"<strong>{label}</strong>{text}</div>\n"
    )


def with_banner(page_html: str, banner: str) -> str:
    """The page with `banner` above everything else in it, where no crop of the top loses it."""
    if PAGE_START not in page_html:
        raise ValueError(f"the page no longer starts its body with {PAGE_START!r}: update PAGE_START")
    return page_html.replace(PAGE_START, PAGE_START + banner, 1)


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


def broken_links(page: Path, dom: str, doms: Mapping[Path, str] | None = None) -> list[str]:
    """The links in `page`'s rendered `dom` that lead nowhere, each as `href (why)`: to no file
    (a folder means its index.html), or to an anchor the target page lacks (its DOM from `doms`
    where rendered, else its file's text). Outside addresses are not the page's to check."""
    broken = []
    for href in HREF.findall(dom):
        link = urlsplit(html.unescape(href))
        if link.scheme or link.netloc or href.startswith(("mailto:", "javascript:")):
            continue
        target = (page.parent / unquote(link.path)).resolve() if link.path else page.resolve()
        if target.is_dir():
            target = target / "index.html"
        if not target.is_file():
            broken.append(f"{href} (no such page)")
            continue
        if link.fragment and target.suffix == ".html":
            target_dom = (doms or {}).get(target) or target.read_text(encoding="utf-8")
            if unquote(link.fragment) not in set(ELEMENT_ID.findall(target_dom)):
                broken.append(f"{href} (no such anchor)")
    return broken
