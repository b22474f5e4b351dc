"""Budgets: a test's absolute ceilings (or floors) per metric, `budget={metric: value}`,
checked on the run itself with no baseline needed, on the figure the results table shows
and comparisons compare (`stats.gated_figure`: the samples' median). A budget on a metric
the run has no figure for checked nothing: `unmeasured_budgets` names it, and the gate
fails on it."""

from __future__ import annotations

from pytest_llem.formatting import figure
from pytest_llem.gating.compare import MetricChange, UnmeasuredLimit
from pytest_llem.gating.limits import lookup_metric
from pytest_llem.gating.metrics import why_missing
from pytest_llem.gating.stats import gated_figure
from pytest_llem.store.report import SessionReport


def check_budgets(report: SessionReport, gate_flagged: bool = False) -> list[MetricChange]:
    """Each test's `budget={metric: value}`: an absolute limit that needs no baseline."""
    changes = []
    for entry in report.measured:
        nodeid, result = entry.nodeid, entry.result
        assert result is not None
        for name, budget in result.config.get("budget", {}).items():
            metric = lookup_metric(name, f"{nodeid}: budget")
            value = gated_figure(result, metric)
            if value is None:
                continue
            change = MetricChange(
                nodeid=nodeid,
                metric=name,
                unit=metric.unit,
                current=value,
                limit=f"{figure(budget)} {metric.unit}",
            )
            if metric.worse_by(budget, value) > 0:
                flagged = result.flagged_for(name) and not gate_flagged
                change.status = "flagged" if flagged else "over_budget"
            changes.append(change)
    return changes


def unmeasured_budgets(report: SessionReport) -> list[UnmeasuredLimit]:
    """Each measured test's budgets on metrics its result has no figure for."""
    missing = []
    for entry in report.measured:
        assert entry.result is not None
        for name, budget in entry.result.config.get("budget", {}).items():
            metric = lookup_metric(name, f"{entry.nodeid}: budget")
            if gated_figure(entry.result, metric) is None:
                missing.append(
                    UnmeasuredLimit(
                        nodeid=entry.nodeid,
                        metric=name,
                        limit=f"budget {figure(budget)} {metric.unit}",
                        missing_in=["this run"],
                        reason=why_missing(metric, entry.result),
                    )
                )
    return missing
