"""The experiment child's stdout and stderr, passed on to the pytest process's own with the
values of secret variables blanked (`base.redaction`), line by line (a private key's lines
together, so that it is blanked whole).

A workload prints what it likes, and a careless one prints a token. Its output reaches the
user only through here: the terminal with `-s`, pytest's captured output otherwise (and from
there JUnit XML), so no path shows a secret that every file already hides. A reader thread
per stream keeps the pipe drained, so a chatty workload never blocks on a full pipe inside
its measured window.
"""

from __future__ import annotations

import os
import select
import sys
import threading
import time
from collections.abc import Callable, Mapping
from typing import IO, TextIO

from pytest_llem.base.redaction import ends_inside_private_key, secret_redactor

#: How often a reader checks whether it should stop, while its pipe is quiet.
_WAKE_S = 0.1
#: After the group is gone, how long a reader may keep draining (a process that escaped the
#: group could hold the pipe open and keep writing).
DRAIN_LIMIT_S = 1.0
#: A line longer than this is passed on in pieces, so a stream without newlines cannot grow
#: without bound (a secret split across two pieces is the price).
MAX_LINE_BYTES = 1 << 20


class OutputRelay:
    """Relays two pipes (the child's stdout and stderr) to this process's sys.stdout and
    sys.stderr as they are at each write, so pytest's capture sees them where it looks."""

    def __init__(self, stdout: IO[bytes], stderr: IO[bytes], environ: Mapping[str, str]) -> None:
        redact = secret_redactor(environ)
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(
                target=self._pump,
                args=(pipe, target, redact),
                name=f"pytest-llem-relay-{name}",
                daemon=True,
            )
            for pipe, target, name in (
                (stdout, lambda: sys.stdout, "stdout"),
                (stderr, lambda: sys.stderr, "stderr"),
            )
        ]
        for thread in self._threads:
            thread.start()

    def close(self) -> None:
        """Pass on what is left in the pipes (up to `DRAIN_LIMIT_S`), then stop."""
        self._stop.set()
        for thread in self._threads:
            thread.join(DRAIN_LIMIT_S + 2 * _WAKE_S)

    def _pump(self, pipe: IO[bytes], target: Callable[[], TextIO], redact: Callable[[str], str]) -> None:
        fd = pipe.fileno()
        pending = b""
        drain_deadline: float | None = None
        try:
            while True:
                if self._stop.is_set() and drain_deadline is None:
                    drain_deadline = time.monotonic() + DRAIN_LIMIT_S
                wait_s = 0.0 if drain_deadline is not None else _WAKE_S
                ready, _, _ = select.select([fd], [], [], wait_s)
                if not ready:
                    if drain_deadline is not None:
                        break  # stopped and nothing more to read
                    continue
                chunk = os.read(fd, 65536)
                if not chunk:
                    break  # every writer has gone
                pending += chunk
                if b"\n" in pending:
                    complete, _, rest = pending.rpartition(b"\n")
                    # A private key printed in pieces is held back until its end line, so
                    # that it is redacted whole.
                    if b"PRIVATE KEY" not in complete or not ends_inside_private_key(
                        complete.decode("utf-8", errors="replace")
                    ):
                        _write(target, redact, complete + b"\n")
                        pending = rest
                if len(pending) > MAX_LINE_BYTES:
                    _write(target, redact, pending)
                    pending = b""
                if drain_deadline is not None and time.monotonic() > drain_deadline:
                    break
            if pending:
                _write(target, redact, pending)
        finally:
            pipe.close()


def _write(target: Callable[[], TextIO], redact: Callable[[str], str], data: bytes) -> None:
    stream = target()
    try:
        stream.write(redact(data.decode("utf-8", errors="replace")))
        stream.flush()
    except (OSError, ValueError):
        pass  # the stream was closed (pytest's capture ended); nowhere left to show it
