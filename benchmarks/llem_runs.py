"""What the benchmark scripts share: the command line of a `pytest --llem` run in a subprocess."""

from __future__ import annotations

import sys
from pathlib import Path


def pytest_llem_command(state_dir: Path | str, *args: str) -> list[str]:
    """`pytest --llem` in this interpreter, quiet, without pytest's cache (a benchmark leaves
    nothing behind), keeping its state in `state_dir`; `args` follow."""
    return [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "--llem",
        f"--llem-state-dir={state_dir}",
        *args,
    ]
