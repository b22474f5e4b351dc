"""Headless Chromium for the HTML report and the docs site: rendering a page offline to its
DOM or a screenshot, or many pages in one Chromium (`file_doms`, over the DevTools protocol:
a Chromium start took 0.7 CPU-seconds here, each page after it a small part of that).

Used by the browser tests of the report and of the docs site, and by `report_screenshot.py`,
which regenerates `docs/report-screenshot.png`. Chromium comes from the system (Debian's
`chromium`).
"""

from __future__ import annotations

import fcntl
import html
import json
import os
import re
import select
import shutil
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import unquote, urlsplit

BROWSER_NAMES = ("chromium", "chromium-browser", "google-chrome")
HREF = re.compile(r'<a\b[^>]*\bhref="([^"]*)"')
ELEMENT_ID = re.compile(r'\bid="([^"]*)"')
TIMEOUT_S = 180
# No sandbox: CI runs as root, where Chromium refuses its sandbox. The pages are ours.
HEADLESS = ("--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars")


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
        [browser, *HEADLESS, *args, page.as_uri()],
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


def file_doms(browser: str, pages: list[Path]) -> dict[Path, str]:
    """The DOM of each page already on disk, as `file_dom` gives it (`outerHTML` once the page
    has loaded), all loaded one after another by one Chromium, driven over the DevTools
    protocol on a pipe (`--remote-debugging-pipe`: JSON messages ended by NUL, read from its
    fd 3, answered on its fd 4)."""
    commands_read, commands_write = os.pipe()
    answers_read, answers_write = os.pipe()

    def on_fds_3_and_4() -> None:  # in the child, before Chromium starts
        # Out of the way first: either end may itself be descriptor 3 or 4.
        ends = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in (commands_read, answers_write)]
        for target, fd in zip((3, 4), ends, strict=True):
            os.dup2(fd, target)  # inheritable

    proc = subprocess.Popen(
        [browser, *HEADLESS, "--remote-debugging-pipe"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=on_fds_3_and_4,  # this test process starts no thread meanwhile
        # Open: closing the child's other descriptors would close 3 and 4 too, after the dup2.
        # Nothing else leaks: Python opens every descriptor non-inheritable.
        close_fds=False,
    )
    os.close(commands_read)
    os.close(answers_write)
    devtools = _DevTools(commands_write, answers_read, time.monotonic() + TIMEOUT_S)
    try:
        doms = {}
        for page in pages:  # each in a tab of its own, as each had a Chromium of its own
            target = devtools.call("Target.createTarget", url="about:blank")["targetId"]
            session = devtools.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
            devtools.call("Page.enable", session=session)
            address = page.resolve().as_uri()
            devtools.call("Page.navigate", session=session, url=address)
            while True:  # a load event of the blank page the tab opened with is not the page's
                devtools.wait_for("Page.loadEventFired", session)
                loaded = devtools.call(
                    "Runtime.evaluate",
                    session=session,
                    expression="[location.href, document.readyState, document.documentElement.outerHTML]",
                    returnByValue=True,
                )
                href, ready, dom = loaded["result"]["value"]
                if (href, ready) == (address, "complete"):
                    break
            doms[page] = dom
            devtools.call("Target.closeTarget", targetId=target)
        devtools.call("Browser.close")
        proc.wait(timeout=TIMEOUT_S)
        return doms
    finally:
        os.close(commands_write)
        os.close(answers_read)
        if proc.poll() is None:
            proc.kill()
            proc.wait()


class _DevTools:
    """Chromium's DevTools protocol over its pipe: a call waits for its answer, keeping the
    events that arrive meanwhile for `wait_for`."""

    def __init__(self, write_fd: int, read_fd: int, deadline: float) -> None:
        self._write_fd, self._read_fd, self._deadline = write_fd, read_fd, deadline
        self._buffer = b""
        self._events: list[dict] = []
        self._next_id = 0

    def call(self, method: str, session: str | None = None, **params: object) -> dict:
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params}
        if session is not None:
            message["sessionId"] = session
        os.write(self._write_fd, json.dumps(message).encode() + b"\0")
        while True:
            answer = self._receive()
            if answer.get("id") == self._next_id:
                if "error" in answer:
                    raise RuntimeError(f"Chromium refused {method}: {answer['error']}")
                return answer["result"]
            self._events.append(answer)

    def wait_for(self, event: str, session: str) -> None:
        while True:
            for i, message in enumerate(self._events):
                if message.get("method") == event and message.get("sessionId") == session:
                    del self._events[: i + 1]
                    return
            self._events.append(self._receive())

    def _receive(self) -> dict:
        while b"\0" not in self._buffer:
            left_s = self._deadline - time.monotonic()
            if left_s <= 0 or not select.select([self._read_fd], [], [], left_s)[0]:
                raise TimeoutError(f"Chromium did not answer within {TIMEOUT_S} s")
            chunk = os.read(self._read_fd, 1 << 16)
            if not chunk:
                raise RuntimeError("Chromium closed its DevTools pipe")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)


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
