"""A workload module that starts a thread when it is imported: forking a process that
imported it is unsafe, so a preloaded start must fall back to a cold one."""

from __future__ import annotations

import threading
import time

from pytest_llem import ExperimentContext

_ticker = threading.Thread(target=lambda: time.sleep(3600), name="ticker-started-at-import", daemon=True)
_ticker.start()


def count(ctx: ExperimentContext) -> None:
    with ctx.window():
        time.sleep(0.01)
    ctx.record(output_tokens=2)
