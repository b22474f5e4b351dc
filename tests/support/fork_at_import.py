"""A workload module that forks a process when it is imported, as a module that starts a
helper daemon at import would. The process lingers with its stdio on /dev/null. Each process
that imports the module while FORK_AT_IMPORT_DIR is set leaves a file there named
`<importing pid>-<forked pid>`, and then goes on importing for FORK_AT_IMPORT_SLOW_S seconds
(none by default), as a heavy library would."""

from __future__ import annotations

import os
import time

from pytest_llem import ExperimentContext


def _start_a_lingering_process(directory: str) -> None:
    pid = os.fork()
    if pid == 0:
        try:
            devnull = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(devnull, fd)
            os.closerange(3, 1 << 16)  # no pipe or socket of the importer's stays open
            time.sleep(600)
        finally:
            os._exit(0)
    with open(os.path.join(directory, f"{os.getpid()}-{pid}"), "w"):
        pass


if "FORK_AT_IMPORT_DIR" in os.environ:
    _start_a_lingering_process(os.environ["FORK_AT_IMPORT_DIR"])
    time.sleep(float(os.environ.get("FORK_AT_IMPORT_SLOW_S", "0")))


def count(ctx: ExperimentContext) -> None:
    with ctx.window():
        time.sleep(0.01)
    ctx.record(output_tokens=2)
