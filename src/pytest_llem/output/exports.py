"""A session report in the shapes other tools read: CSV rows for spreadsheets, a Markdown
section for a pull request or CI job summary, and the JSON files of the GitHub
benchmark-tracking action (benchmark-action/github-action-benchmark).

Units, directions and number formatting come from `metrics.METRICS` and `formatting`, so
an export never disagrees with the terminal or with the regression gate.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from pytest_llem.energy.quality import UNMEASURED_CODES
from pytest_llem.formatting import figure, markdown_cell, markdown_table
from pytest_llem.gating.compare import Comparison, MetricChange
from pytest_llem.gating.metrics import METRICS
from pytest_llem.gating.stats import gated_figure, sample_count
from pytest_llem.output.summary import (
    SummaryView,
    numeric_columns,
    sample_notes,
    summary_groups,
)
from pytest_llem.output.terminal import energy_footnotes
from pytest_llem.results import ExperimentResult
from pytest_llem.store.report import ReportEntry, SessionReport

#: The config fields that tell one experiment's row from another's in a spreadsheet.
CONFIG_COLUMNS = ("batch_size", "precision", "backend", "model")
#: Exported to the benchmark-tracking action; each lands in the file of its metric's direction.
BENCHMARK_METRICS = ("energy_per_token_j", "energy_j", "tokens_per_s", "batch_latency_p50_s", "ttft_p50_s")
FLAG_MARK = "⚠"


def csv_text(report: SessionReport, view: SummaryView | None = None) -> str:
    """One row per experiment: identity, config columns, its number of samples `n`, then every
    metric: the figure the results table shows and the gate compares (`gated_figure`: the
    samples' median), at full precision.

    Rows come in the order of the results table `view` shows (its sort, then its groups);
    every column stays, since a spreadsheet picks its own, but one empty in every row (the
    serving metrics of an offline run, say) is left out."""
    header = ["nodeid", "status", "config_hash", *CONFIG_COLUMNS, "n", *METRICS]
    rows = [
        _csv_row(entry)
        for group in summary_groups(report.experiments, view or SummaryView())
        for entry in group.entries
    ]
    kept = [i for i in range(len(header)) if not rows or any(row[i] != "" for row in rows)]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    for row in [header, *rows]:
        writer.writerow([row[i] for i in kept])
    return buffer.getvalue()


def _csv_row(entry: ReportEntry) -> list[Any]:
    result = entry.result
    # A failed experiment has no result, but the session still recorded what it was asked to run.
    config = entry.config or (result.config if result else {})
    config_hash = entry.config_hash or (result.config_hash if result else None)
    metrics = [_blank_if_none(gated_figure(result, m) if result else None) for m in METRICS.values()]
    return [
        entry.nodeid,
        entry.status,
        _blank_if_none(config_hash),
        *(_blank_if_none(config.get(name)) for name in CONFIG_COLUMNS),
        sample_count(result) if result else "",
        *metrics,
    ]


def _blank_if_none(value: Any) -> Any:
    return "" if value is None else value


def markdown_summary(
    report: SessionReport,
    comparison: Comparison | None = None,
    failures: list[MetricChange] | None = None,
    view: SummaryView | None = None,
    refusal: str | None = None,
) -> str:
    """A GitHub-flavoured Markdown section: the run's table, what energy covers, the comparison,
    and the lines of what failed the session (regressions, exceeded budgets, and `refusal`: the
    gate's `GATE FAILED` line when it compared nothing), as the terminal prints them."""
    title = f"{report.name} ({report.run_id})" if report.name else report.run_id
    machine = f"{report.machine.describe()}, id `{report.machine.id}`" if report.machine else "unknown"
    lines = [
        f"## pytest-llem: {title}",
        "",
        f"Machine: {machine}. Outcome: {report.outcome}. Started {report.started_at:%Y-%m-%d %H:%M:%S %Z}.",
    ]
    view = view or SummaryView()
    for group in summary_groups(report.experiments, view, _markdown_status):
        if group.title:
            lines += ["", f"#### {markdown_cell(group.title)}"]
        rows = [
            tuple(
                _code(cell) if name == "test" else markdown_cell(cell)
                for name, cell in zip(group.columns, row, strict=True)
            )
            for row in group.rows
        ]
        lines += ["", *markdown_table(group.header, rows, right_aligned=numeric_columns(group.columns))]
    notes = energy_footnotes([e.result for e in report.experiments if e.result is not None], FLAG_MARK)
    notes[:0] = sample_notes(report.experiments)
    if notes:
        lines += ["", *(f"- {note}" for note in notes)]
    if comparison is not None:
        lines += ["", *_markdown_comparison(comparison)]
    if failures is None and comparison is not None:
        failures = comparison.failures
    failed = [change.line() for change in failures or []] + ([refusal] if refusal else [])
    if failed:
        lines += ["", "```", *failed, "```"]
    return "\n".join(lines) + "\n"


def _markdown_status(entry: ReportEntry) -> str:
    status = entry.status
    result = entry.result
    if result is not None and result.flagged:
        codes = sorted({w.code for w in result.warnings if w.code not in UNMEASURED_CODES})
        status += f" {FLAG_MARK} {', '.join(codes)}"
    return status


def _markdown_comparison(comparison: Comparison) -> list[str]:
    baseline = comparison.baseline_name or comparison.baseline_run
    lines = [f"### Compared with {baseline}", ""]
    if comparison.machine_warning:
        lines += [f"> {FLAG_MARK} {comparison.machine_warning}", ""]
    if comparison.changes:
        rows = [
            (_code(test), _code(metric), *(markdown_cell(c) for c in rest))
            for test, metric, *rest in (change.cells() for change in comparison.changes)
        ]
        lines += markdown_table(MetricChange.COLUMNS, rows, right_aligned={2, 3, 4, 5, 6})
    else:
        lines.append("No test ran in both runs.")
    for label, nodeids in (
        ("Only in the baseline", comparison.only_in_baseline),
        ("Only in this run", comparison.only_in_current),
    ):
        if nodeids:
            lines += ["", f"{label}: {', '.join(_code(n) for n in nodeids)}"]
    return lines


def _code(text: str) -> str:
    return markdown_cell(text) if "`" in text else f"`{markdown_cell(text)}`"


def benchmark_action_json(report: SessionReport) -> tuple[list[dict], list[dict]]:
    """Entries for the action's `customSmallerIsBetter` and `customBiggerIsBetter` tools, in that order."""
    smaller: list[dict] = []
    bigger: list[dict] = []
    for entry in report.experiments:
        if entry.result is None:
            continue
        for name in BENCHMARK_METRICS:
            point = _benchmark_point(entry.nodeid, name, entry.result)
            if point is not None:
                (bigger if METRICS[name].higher_is_better else smaller).append(point)
    return smaller, bigger


def _benchmark_point(nodeid: str, name: str, result: ExperimentResult) -> dict | None:
    metric = METRICS[name]
    # The figure the results table shows, so a chart of the history plots what the run printed.
    value = gated_figure(result, metric)
    if value is None:
        return None
    point: dict[str, Any] = {"name": f"{nodeid} {name}", "unit": metric.unit, "value": value}
    stats = result.statistics.get(name)
    if stats is not None and stats.stdev is not None:
        point["range"] = f"± {figure(stats.stdev)}"
    # A result of one round keeps no per-round list.
    point["extra"] = f"rounds: {len(result.rounds) or 1}"
    return point


def benchmark_json_paths(path: Path) -> list[Path]:
    """The smaller-is-better file at `path`, the bigger-is-better one beside it (`<stem>-bigger`)."""
    return [path, path.with_name(f"{path.stem}-bigger{path.suffix}")]


def write_benchmark_json(report: SessionReport, path: Path) -> list[Path]:
    """Both files of `benchmark_json_paths`; returns their paths."""
    smaller, bigger = benchmark_action_json(report)
    path.parent.mkdir(parents=True, exist_ok=True)
    paths = benchmark_json_paths(path)
    for target, points in zip(paths, (smaller, bigger), strict=True):
        target.write_text(json.dumps(points, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return paths
