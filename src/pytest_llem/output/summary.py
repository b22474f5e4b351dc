"""The results table's content, chosen once for the terminal, Markdown and HTML alike.

Columns, sort order and grouping come from `--llem-columns`, `--llem-sort` and
`--llem-group-by` (a `SummaryView`). A metric's cell is its `sample_summary`: for a case
with several samples (rounds, or processes with `repeats`), the median and the
interquartile range, `median [q1, q3]`; with one sample, the figure itself. That median is
the figure the gate compares and checks budgets on (`gating.stats.gated_figure`), and every
output (terminal, `pytest-llem show`, CSV, Markdown, HTML, charts) shows it. `n` says how
many samples there are. A column no row has a value for is left out (`summary_columns`).
Renderers add their own markup (code spans, flag details).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Any

from pytest_llem.errors import ConfigError
from pytest_llem.formatting import MISSING, figure_or_missing
from pytest_llem.gating.metrics import METRICS
from pytest_llem.gating.stats import gated_figure, sample_count, sample_summary
from pytest_llem.store.report import ReportEntry

#: Columns read from the experiment's config (or its test id), in the order they are listed.
FIELD_COLUMNS = ("test", "model", "backend", "precision", "batch_size")
COLUMN_CHOICES = (*FIELD_COLUMNS, "n", *METRICS, "status")
DEFAULT_COLUMNS = ("test", "n", "duration_s", "tokens_per_s", "energy_j", "energy_per_token_j", "status")
GROUP_CHOICES = ("model", "backend", "precision", "batch_size", "test")
#: Shorter headers for the metrics most tables show.
HEADERS = {"tokens_per_s": "tokens/s", "energy_per_token_j": "J/token", "batch_size": "batch size"}
SPREAD_NOTE = (
    "n > 1: each figure is the median [interquartile range] over the case's n samples "
    "(its rounds, or its processes with repeats); the comparison compares the same medians"
)


@dataclass(frozen=True)
class SummaryView:
    columns: tuple[str, ...] = DEFAULT_COLUMNS
    #: A column to sort by, ascending; "-column" descending. None: the order tests ran in.
    sort: str | None = None
    group_by: str | None = None


@dataclass
class SummaryGroup:
    """One table: its title when grouped, its columns and header, and rows of plain text cells."""

    title: str | None
    columns: tuple[str, ...]
    header: tuple[str, ...]
    rows: list[tuple[str, ...]] = field(default_factory=list)
    entries: list[ReportEntry] = field(default_factory=list)


def numeric_columns(columns: tuple[str, ...]) -> set[int]:
    """The positions of the columns that hold numbers (right-aligned in tables)."""
    return {i for i, name in enumerate(columns) if name in ("n", "batch_size") or name in METRICS}


def parse_columns(raw: str, source: str) -> tuple[str, ...]:
    names = tuple(name.strip() for name in raw.split(",") if name.strip())
    unknown = [name for name in names if name not in COLUMN_CHOICES]
    if unknown or not names:
        raise ConfigError(
            f"{source}: unknown column {', '.join(map(repr, unknown)) or repr(raw)}; "
            f"give a comma-separated list of {', '.join(COLUMN_CHOICES)}"
        )
    return names


def parse_sort(raw: str, source: str) -> str:
    if raw.removeprefix("-") not in COLUMN_CHOICES:
        raise ConfigError(
            f"{source}: cannot sort by {raw!r}; choose a column ({', '.join(COLUMN_CHOICES)}), "
            "with a leading '-' for descending"
        )
    return raw


def parse_group_by(raw: str, source: str) -> str:
    if raw not in GROUP_CHOICES:
        raise ConfigError(f"{source}: cannot group by {raw!r}; choose one of {', '.join(GROUP_CHOICES)}")
    return raw


def model_name(model: object) -> str:
    """A model as people know it: a local directory by its last part (never a temp path, nor
    the `$TMPDIR/...` a saved report holds in its place)."""
    if model is None:
        return MISSING
    text = str(model)
    if text.startswith(("/", "~", ".", "$")) or "\\" in text:
        return PurePath(text).name or text
    return text


def field_value(entry: ReportEntry, name: str) -> str:
    if name == "test":
        return entry.nodeid
    config = (entry.result.config if entry.result else None) or entry.config or {}
    if name == "model":
        return model_name(config.get("model"))
    value = config.get(name)
    return MISSING if value is None else str(value)


def _test_function(entry: ReportEntry) -> str:
    return entry.nodeid.split("[", 1)[0]


def summary_groups(
    entries: list[ReportEntry],
    view: SummaryView = SummaryView(),
    status: Callable[[ReportEntry], str] = lambda entry: entry.status,
) -> list[SummaryGroup]:
    """The tables to print: one, or one per group, each sorted as the view says, every one
    with the same columns (`summary_columns`)."""
    columns = summary_columns(entries, view)
    header = summary_header(columns)
    groups: dict[str, SummaryGroup] = {}
    for entry in _sorted(entries, view.sort):
        if view.group_by is None:
            key = title = ""
        else:
            key = _test_function(entry) if view.group_by == "test" else field_value(entry, view.group_by)
            title = f"{view.group_by}: {key}"
        group = groups.setdefault(key, SummaryGroup(title or None, columns, header))
        group.entries.append(entry)
        group.rows.append(tuple(_cell(entry, name, status) for name in columns))
    return list(groups.values())


def summary_columns(entries: list[ReportEntry], view: SummaryView) -> tuple[str, ...]:
    """The view's columns less those no entry has a value for (a serving metric in an offline
    run, energy where no meter read): a column of dashes only pushes the others off screen.
    With no entry at all, every column stays, as the table's header."""
    if not entries:
        return view.columns
    return tuple(
        name
        for name in view.columns
        if name == "status" or any(_cell(entry, name, _plain_status) != MISSING for entry in entries)
    )


def _plain_status(entry: ReportEntry) -> str:
    return entry.status


def summary_header(columns: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(HEADERS.get(name, name) for name in columns)


def has_spread(entries: list[ReportEntry]) -> bool:
    return any(e.result is not None and sample_count(e.result) > 1 for e in entries)


def sample_notes(entries: list[ReportEntry]) -> list[str]:
    """The notes under every results table about samples: what a median [IQR] cell is, and
    how many processes each case with `repeats="auto"` needed (of its maximum)."""
    notes = [SPREAD_NOTE] if has_spread(entries) else []
    needed = [
        f"{e.nodeid} {e.result.extra['repeats']}/{e.result.extra['repeats_max']}"
        + ("" if e.result.extra.get("repeats_decided") else " (still undecided)")
        for e in entries
        if e.result is not None and "repeats_max" in e.result.extra
    ]
    if needed:
        notes.append(
            "repeats=auto: processes each case needed to settle its comparison, of its maximum: "
            + ", ".join(needed)
        )
    return notes


def _cell(entry: ReportEntry, name: str, status: Callable[[ReportEntry], str]) -> str:
    result = entry.result
    if name == "status":
        return status(entry)
    if name == "n":
        return str(sample_count(result)) if result else MISSING
    if name in METRICS:
        summary = sample_summary(result, METRICS[name]) if result else None
        if summary is None:
            return MISSING
        text = figure_or_missing(summary.median)
        if summary.n > 1:
            text += f" [{figure_or_missing(summary.q1)}, {figure_or_missing(summary.q3)}]"
        # The meter's, for the window the figure comes from (see docs/uncertainty.md).
        uncertainty = (
            result.uncertainty_of(name) if result is not None and name.startswith("energy") else None
        )
        if uncertainty is not None:
            text += f" ±{100 * uncertainty.relative:.1f}%"
        return text
    return field_value(entry, name)


def _sort_key(entry: ReportEntry, name: str) -> tuple[int, Any]:
    """Missing values last, whichever the direction."""
    result = entry.result
    if name in METRICS:
        value = gated_figure(result, METRICS[name]) if result else None
        return (0, value) if value is not None else (1, 0.0)
    if name == "n":
        return (0, sample_count(result)) if result else (1, 0)
    if name == "status":
        return (0, entry.status)
    if name == "batch_size":
        value = field_value(entry, name)
        return (0, int(value)) if value.isdigit() else (1, 0)
    return (0, field_value(entry, name))


def _sorted(entries: list[ReportEntry], sort: str | None) -> list[ReportEntry]:
    if sort is None:
        return list(entries)
    name = sort.removeprefix("-")
    present = [e for e in entries if _sort_key(e, name)[0] == 0]
    missing = [e for e in entries if _sort_key(e, name)[0] == 1]
    return sorted(present, key=lambda e: _sort_key(e, name)[1], reverse=sort.startswith("-")) + missing
