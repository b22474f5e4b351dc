"""Process checks shared by the tests that signal real processes."""

from __future__ import annotations

import json
import time
from pathlib import Path


def is_live(pid: int) -> bool:
    """A zombie counts as gone: it holds nothing and never runs again."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def wait_for_file(path: Path, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        if time.monotonic() > deadline:
            raise AssertionError(f"{path.name} did not appear within {timeout_s} s")
        time.sleep(0.02)


def read_pids(path: Path) -> list[int]:
    return json.loads(path.read_text())


def wait_until_all_gone(pids: list[int], timeout_s: float) -> list[int]:
    """Wait up to timeout_s for every PID to be gone; return the ones still live."""
    deadline = time.monotonic() + timeout_s
    while True:
        live = [p for p in pids if is_live(p)]
        if not live or time.monotonic() > deadline:
            return live
        time.sleep(0.02)
