"""How numbers, tables and paths are written for people: one set of formatters for the
terminal, the `pytest-llem` command, Markdown and HTML, so a figure reads the same everywhere.

Plain functions with no imports of the project; used in every process that prints.
"""

from __future__ import annotations

import os
from pathlib import Path

MISSING = "-"


def shown_path(path: Path, cwd: Path | None = None) -> str:
    """`path` relative to the working directory when it lies inside it, else as it is."""
    absolute = Path(os.path.abspath(path))
    try:
        return str(absolute.relative_to(os.path.abspath(cwd or Path.cwd())))
    except ValueError:
        return str(path)


def figure(value: float) -> str:
    """Three significant digits, thousands grouped from 1,000 up (as gate lines show figures)."""
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:#.3g}".removesuffix(".")


def figure_or_missing(value: float | None) -> str:
    """`figure` in a table column: `-` where there is no value, and no trailing point ("221.")."""
    return MISSING if value is None else figure(value).rstrip(".")


def change_or_missing(change_pct: float | None) -> str:
    """A relative change as `+16.7%`, `-` where there is none; one that rounds to zero reads
    `+0.0%`, never `-0.0%`."""
    if change_pct is None:
        return MISSING
    return f"{change_pct if round(change_pct, 1) else 0.0:+.1f}%"


def number(value: float | None, spec: str) -> str:
    """`value` in a fixed format spec (".3f", ...), or `-` where there is no value."""
    return MISSING if value is None else format(value, spec)


def aligned(header: tuple[str, ...], rows: list[tuple[str, ...]], right_aligned: set[int]) -> list[str]:
    """Text columns padded to their widest cell; numbers right-aligned so their digits line up."""
    table = [header, *rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    return [
        "  ".join(
            cell.rjust(width) if i in right_aligned else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in table
    ]


def markdown_table(
    header: tuple[str, ...], rows: list[tuple[str, ...]], right_aligned: set[int]
) -> list[str]:
    """A Markdown table; cells must already be escaped (`markdown_cell`)."""
    rule = ["---:" if i in right_aligned else "---" for i in range(len(header))]
    return [f"| {' | '.join(row)} |" for row in [header, tuple(rule), *rows]]


def markdown_cell(text: str) -> str:
    # A parametrised test id may hold `|`, which would split the table's row.
    return text.replace("|", "\\|")
