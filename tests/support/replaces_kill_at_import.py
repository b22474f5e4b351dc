"""A workload module that replaces `os.kill` and `os.killpg` with functions that do nothing
when it is imported (as a module that shields a library from stray signals might): code that
looks them up at call time, psutil's `send_signal` included, can no longer kill anything in
a process that imported it. Its workload leaves a setpgid child and a setsid daemon behind."""

from __future__ import annotations

import os

from workloads import escape_the_group

from pytest_llem import ExperimentContext


def _kill_nothing(pid: int, sig: int) -> None:
    return None


os.kill = _kill_nothing
os.killpg = _kill_nothing


def leave_a_daemon(ctx: ExperimentContext) -> None:
    escape_the_group(ctx)
