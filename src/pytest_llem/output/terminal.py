"""Terminal text: the session summary table, its energy footnotes, and the comparison table.

Printed by the plugin at the end of a session and by the `pytest-llem` command, from the
same functions, so both read the same.
"""

from __future__ import annotations

from collections import Counter

from pytest_llem.energy.quality import UNMEASURED_CODES
from pytest_llem.formatting import aligned
from pytest_llem.gating.compare import Comparison, MetricChange
from pytest_llem.output.serving_table import format_serving_table
from pytest_llem.output.summary import SummaryView, numeric_columns, sample_notes, summary_groups
from pytest_llem.results import ExperimentResult
from pytest_llem.store.report import ReportEntry


def format_summary(entries: list[ReportEntry], view: SummaryView | None = None) -> list[str]:
    """The terminal table(s): one row per experiment, columns, order and groups from `view`.
    A `!` marks a row with quality warnings."""
    view = view or SummaryView()

    def status(entry: ReportEntry) -> str:
        return entry.status + (" !" if entry.result is not None and entry.result.flagged else "")

    lines = []
    for group in summary_groups(entries, view, status):
        if group.title:
            lines.append(f"{group.title}:")
        lines += aligned(group.header, group.rows, right_aligned=numeric_columns(group.columns))
    lines.extend(format_serving_table(entries))
    lines.extend(sample_notes(entries))
    lines.extend(energy_footnotes([e.result for e in entries if e.result is not None]))
    lines.extend(placement_table(entries))
    return lines


def placement_table(entries: list[ReportEntry]) -> list[str]:
    """Where each case ran, when that tells something: GPUs leased, a Slurm job, several hosts."""
    placed = [(e, e.result.placement) for e in entries if e.result is not None and e.result.placement]
    if not any(p.gpu_uuids or p.job_id for _, p in placed) and len({p.host for _, p in placed}) < 2:
        return []
    rows = [
        (
            entry.nodeid,
            where.host,
            ",".join(map(str, where.gpu_indices)) or "-",
            where.job_id or "-",
            str(len(where.overlapped_with)),
        )
        for entry, where in placed
    ]
    return [
        "where each case ran:",
        *aligned(("test", "host", "gpus", "job", "beside"), rows, right_aligned={4}),
    ]


def energy_footnotes(results: list[ExperimentResult], flag_mark: str = "!") -> list[str]:
    """What energy_j contains, its uncertainty, why it is missing, and which flags the `!` rows carry."""
    lines = []
    covers = Counter(
        f"{' + '.join(r.energy_scope)} ({r.energy_source})"
        for r in results
        if r.energy_source and r.energy_scope
    )
    for what, count in sorted(covers.items()):
        lines.append(f"energy_j covers: {what} in {count} experiment(s)")
    parts = sorted({p for r in results if r.energy_uncertainty for p in r.energy_uncertainty.parts})
    if parts:
        lines.append(
            f"energy ± = relative uncertainty, root sum of squares of: {', '.join(parts)} "
            "(each in the report's energy_uncertainty)"
        )
    unmeasured = Counter(w.message for r in results for w in r.warnings if w.code in UNMEASURED_CODES)
    for message, count in sorted(unmeasured.items()):
        lines.append(f"{message} [{count} experiment(s)]")
    flags = Counter(w.code for r in results for w in {w.code: w for w in r.warnings}.values())
    flagged = {code: n for code, n in flags.items() if code not in UNMEASURED_CODES}
    if flagged:
        listed = ", ".join(f"{code} ({n})" for code, n in sorted(flagged.items()))
        lines.append(f"{flag_mark} = measurement-quality flags: {listed}; see `warnings` in the report")
    return lines


def format_comparison(comparison: Comparison) -> list[str]:
    """The comparison as aligned text lines: one row per test and metric, then tests on one side only.

    The failures' own lines (`MetricChange.line`) are printed by the caller, after problems.
    """
    against = comparison.baseline_name or comparison.baseline_run
    lines = [f"compared with {against}:"]
    if comparison.machine_warning:
        lines.append(f"warning: {comparison.machine_warning}")
    lines += [f"differs from the baseline: {d}" for d in comparison.differences]
    lines += aligned(MetricChange.COLUMNS, [c.cells() for c in comparison.changes], right_aligned=set())
    for nodeid in comparison.only_in_current:
        lines.append(f"new (no baseline): {nodeid}")
    for nodeid in comparison.only_in_baseline:
        lines.append(f"missing from this run: {nodeid}")
    return lines
