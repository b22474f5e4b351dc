"""Comparing a run with a baseline run, and deciding what is a regression.

A limit is `METRIC:LIMIT`: a percentage (`energy_per_token_j:5%`) or an absolute amount in
the metric's unit (`tokens_per_s:50tokens/s`, `energy_per_token_j:0.002J`). Each metric
knows which direction is worse (`metrics.METRICS`). A change is a regression when it is
worse than its limit and, where both runs have at least `MIN_ROUNDS_FOR_SIGNIFICANCE`
rounds, a one-sided Mann-Whitney U test over the rounds says it is real (p at most
`SIGNIFICANCE_LEVEL`; with three rounds a side the smallest possible p is exactly 0.05);
the compared values are then the rounds' medians, so one odd round
cannot decide. Results carrying a measurement-quality flag are shown but not gated unless
asked. Budgets are absolute ceilings (or floors) that need no baseline.
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Iterable
from dataclasses import dataclass
from typing import ClassVar, Literal

from pydantic import BaseModel, Field

from pytest_llem.energy.quality import UNMEASURED_CODES
from pytest_llem.errors import ConfigError
from pytest_llem.metrics import METRICS, Metric
from pytest_llem.report import SessionReport
from pytest_llem.results import ExperimentResult
from pytest_llem.stats import MIN_ROUNDS_FOR_SIGNIFICANCE, SIGNIFICANCE_LEVEL, p_worse, sample_values

#: Shown in every comparison, limit or not.
DEFAULT_SHOWN_METRICS = ("energy_per_token_j", "tokens_per_s")
_AMOUNT = re.compile(r"^\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*(%|[A-Za-z/]+)?\s*$")

Status = Literal["regression", "flagged", "ok", "improved", "over_budget"]


@dataclass(frozen=True)
class Limit:
    metric: Metric
    text: str
    relative: float | None = None
    absolute: float | None = None

    def exceeded_by(self, baseline: float, current: float) -> bool:
        worse = self.metric.worse_by(baseline, current)
        if self.relative is not None:
            return baseline != 0 and worse / abs(baseline) > self.relative
        assert self.absolute is not None
        return worse > self.absolute


def lookup_metric(name: str, source: str) -> Metric:
    try:
        return METRICS[name]
    except KeyError:
        raise ConfigError(f"{source}: unknown metric {name!r} (known: {', '.join(METRICS)})") from None


def parse_limit_value(metric: Metric, text: str, source: str) -> Limit:
    match = _AMOUNT.match(str(text))
    if match is None:
        raise ConfigError(
            f"{source}: limit {text!r} for {metric.name} is not a number with an optional unit; "
            f"write e.g. '5%' or '0.01{metric.unit}'"
        )
    value, unit = float(match.group(1)), match.group(2)
    if value < 0:
        raise ConfigError(f"{source}: limit {text!r} for {metric.name} must not be negative")
    if unit == "%":
        return Limit(metric, str(text).strip(), relative=value / 100)
    if unit is not None and unit != metric.unit:
        raise ConfigError(
            f"{source}: limit {text!r}: {metric.name} is measured in {metric.unit!r}, not {unit!r}"
        )
    return Limit(metric, str(text).strip(), absolute=value)


def parse_limit(spec: str, source: str = "--llem-compare-fail") -> Limit:
    """`METRIC:LIMIT`, as given on the command line or in ini."""
    name, sep, value = spec.partition(":")
    if not sep or not value.strip():
        raise ConfigError(f"{source}: expected METRIC:LIMIT such as 'energy_per_token_j:5%', got {spec!r}")
    return parse_limit_value(lookup_metric(name.strip(), source), value, source)


class MetricChange(BaseModel):
    nodeid: str
    metric: str
    unit: str
    baseline: float | None = None
    current: float
    change_pct: float | None = None
    p_value: float | None = None
    limit: str | None = None
    status: Status = "ok"
    note: str | None = None

    COLUMNS: ClassVar[tuple[str, ...]] = ("test", "metric", "baseline", "current", "change", "p", "status")

    def cells(self) -> tuple[str, ...]:
        """This change as a table row, in `COLUMNS` order (for text, Markdown and HTML)."""
        return (
            self.nodeid,
            self.metric,
            "-" if self.baseline is None else f"{fmt(self.baseline)} {self.unit}",
            f"{fmt(self.current)} {self.unit}",
            self.change_text(),
            "-" if self.p_value is None else f"{self.p_value:.3g}",
            self.status + (f" ({self.note})" if self.note else ""),
        )

    def change_text(self) -> str:
        """`+16.7%`; a change that rounds to zero reads `+0.0%`, never `-0.0%`."""
        if self.change_pct is None:
            return "-"
        shown = self.change_pct if round(self.change_pct, 1) else 0.0
        return f"{shown:+.1f}%"

    def line(self) -> str:
        """The one line printed for a regression or an exceeded budget."""
        if self.status == "over_budget":
            return (
                f"pytest-llem: OVER BUDGET {self.nodeid} {self.metric} {fmt(self.current)} {self.unit} "
                f"(budget {self.limit})"
            )
        details = [self.change_text() if self.change_pct is not None else None, f"limit {self.limit}"]
        if self.p_value is not None:
            details.append(f"p={self.p_value:.3g}")
        assert self.baseline is not None
        return (
            f"pytest-llem: REGRESSION {self.nodeid} {self.metric} "
            f"{fmt(self.baseline)} -> {fmt(self.current)} {self.unit} ({', '.join(d for d in details if d)})"
        )


class Comparison(BaseModel):
    baseline_run: str
    baseline_name: str | None = None
    machine_warning: str | None = None
    changes: list[MetricChange] = Field(default_factory=list)
    only_in_baseline: list[str] = Field(default_factory=list)
    only_in_current: list[str] = Field(default_factory=list)

    @property
    def failures(self) -> list[MetricChange]:
        return [c for c in self.changes if c.status in ("regression", "over_budget")]


def fmt(value: float) -> str:
    """Three significant digits, kept when they are zeros (0.120); thousands grouped."""
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:#.3g}".removesuffix(".")


def is_flagged(result: ExperimentResult) -> bool:
    return any(w.code not in UNMEASURED_CODES for w in result.warnings)


def _results(report: SessionReport) -> dict[str, ExperimentResult]:
    return {e.nodeid: e.result for e in report.experiments if e.result is not None}


def _test_limits(result: ExperimentResult, nodeid: str) -> dict[str, Limit]:
    source = f"{nodeid}: compare_fail"
    limits = {}
    for name, text in result.config.get("compare_fail", {}).items():
        limits[name] = parse_limit_value(lookup_metric(name, source), text, source)
    return limits


def _compared_values(metric: Metric, baseline: ExperimentResult, current: ExperimentResult):
    before, after = sample_values(baseline.rounds, metric), sample_values(current.rounds, metric)
    if min(len(before), len(after)) >= MIN_ROUNDS_FOR_SIGNIFICANCE:
        return statistics.median(before), statistics.median(after), before, after
    return metric.of_result(baseline), metric.of_result(current), [], []


def compare_reports(
    baseline: SessionReport,
    current: SessionReport,
    limits: Iterable[Limit] = (),
    gate_flagged: bool = False,
) -> Comparison:
    """Per test and metric: baseline, current, change, and whether it fails the session."""
    global_limits = {limit.metric.name: limit for limit in limits}
    comparison = Comparison(baseline_run=baseline.run_id, baseline_name=baseline.name)
    if baseline.machine and current.machine and baseline.machine.id != current.machine.id:
        comparison.machine_warning = (
            f"baseline {baseline.name or baseline.run_id} ran on another machine "
            f"({baseline.machine.describe()}, id {baseline.machine.id}) than this run "
            f"({current.machine.describe()}, id {current.machine.id}); differences may be the machine's"
        )
    before, after = _results(baseline), _results(current)
    comparison.only_in_baseline = sorted(set(before) - set(after))
    comparison.only_in_current = sorted(set(after) - set(before))
    for nodeid, result in after.items():
        if nodeid not in before:
            continue
        test_limits = {**global_limits, **_test_limits(result, nodeid)}
        names = list(dict.fromkeys([*DEFAULT_SHOWN_METRICS, *test_limits]))
        for name in names:
            change = _change(
                nodeid, METRICS[name], before[nodeid], result, test_limits.get(name), gate_flagged
            )
            if change is not None:
                comparison.changes.append(change)
    return comparison


def _change(
    nodeid: str,
    metric: Metric,
    baseline: ExperimentResult,
    current: ExperimentResult,
    limit: Limit | None,
    gate_flagged: bool,
) -> MetricChange | None:
    old, new, old_rounds, new_rounds = _compared_values(metric, baseline, current)
    if old is None or new is None:
        return None
    change = MetricChange(
        nodeid=nodeid,
        metric=metric.name,
        unit=metric.unit,
        baseline=old,
        current=new,
        change_pct=(new - old) / abs(old) * 100 if old else None,
        limit=limit.text if limit else None,
    )
    if old_rounds:
        change.p_value = p_worse(old_rounds, new_rounds, metric.higher_is_better)
    if limit is None:
        return change
    if not limit.exceeded_by(old, new):
        # Improved only when better by more than the limit: a hair's difference is just "ok".
        change.status = "improved" if limit.exceeded_by(new, old) else "ok"
    elif change.p_value is not None and change.p_value > SIGNIFICANCE_LEVEL:
        change.note = f"beyond the limit but not significant (p={change.p_value:.3g})"
    elif (is_flagged(baseline) or is_flagged(current)) and not gate_flagged:
        change.status = "flagged"
        change.note = "beyond the limit, but a measurement-quality flag is set: not gated"
    else:
        change.status = "regression"
    return change


def check_budgets(report: SessionReport, gate_flagged: bool = False) -> list[MetricChange]:
    """Each test's `budget={metric: value}`: an absolute limit that needs no baseline."""
    changes = []
    for nodeid, result in _results(report).items():
        for name, budget in result.config.get("budget", {}).items():
            metric = lookup_metric(name, f"{nodeid}: budget")
            value = metric.of_result(result)
            if value is None:
                continue
            change = MetricChange(
                nodeid=nodeid,
                metric=name,
                unit=metric.unit,
                current=value,
                limit=f"{fmt(budget)} {metric.unit}",
            )
            if metric.worse_by(budget, value) > 0:
                flagged = is_flagged(result) and not gate_flagged
                change.status = "flagged" if flagged else "over_budget"
            changes.append(change)
    return changes


def format_comparison(comparison: Comparison) -> list[str]:
    """The comparison as aligned text lines: one row per test and metric, then tests on one side only.

    The failures' own lines (`MetricChange.line`) are printed by the caller, after problems.
    """
    against = comparison.baseline_name or comparison.baseline_run
    lines = [f"compared with {against}:"]
    if comparison.machine_warning:
        lines.append(f"warning: {comparison.machine_warning}")
    header = MetricChange.COLUMNS
    rows = [c.cells() for c in comparison.changes]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header) - 1)]
    for row in [header, *rows]:
        lines.append("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=False)) + "  " + row[-1])
    for nodeid in comparison.only_in_current:
        lines.append(f"new (no baseline): {nodeid}")
    for nodeid in comparison.only_in_baseline:
        lines.append(f"missing from this run: {nodeid}")
    return lines
