"""Comparing a run with a baseline run, and deciding what is a regression.

A change is a regression when it is worse than its limit (`limits`) and, where both runs
have at least `MIN_ROUNDS_FOR_SIGNIFICANCE` samples, a one-sided Mann-Whitney U test over
them says it is real (p at most `SIGNIFICANCE_LEVEL`; with three samples a side the smallest
possible p is exactly 0.05); the compared values are then the samples' medians, so one odd
round cannot decide. Results carrying a measurement-quality flag are shown but not gated
unless asked.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar, Literal

from pydantic import BaseModel, Field

from pytest_llem.energy.uncertainty import change_uncertainty
from pytest_llem.fingerprints.differences import fingerprint_differences
from pytest_llem.formatting import change_or_missing, figure
from pytest_llem.gating.limits import Limit, lookup_metric, parse_limit_value
from pytest_llem.gating.metrics import METRICS, Metric, why_missing
from pytest_llem.gating.stats import (
    MIN_ROUNDS_FOR_SIGNIFICANCE,
    SIGNIFICANCE_LEVEL,
    gated_figure,
    p_worse,
    sample_values,
)
from pytest_llem.gating.work import describe_work, outputs_changed, work_differences
from pytest_llem.results import ExperimentResult
from pytest_llem.store.report import ReportEntry, SessionReport

#: Shown in every comparison, limit or not.
DEFAULT_SHOWN_METRICS = ("energy_per_token_j", "tokens_per_s")

Status = Literal["regression", "flagged", "ok", "improved", "over_budget", "incomparable"]


class MetricChange(BaseModel):
    nodeid: str
    metric: str
    unit: str
    baseline: float | None = None
    current: float
    change_pct: float | None = None
    p_value: float | None = None
    #: The change's relative uncertainty in % (energy metrics; `energy.uncertainty`).
    uncertainty_pct: float | None = None
    limit: str | None = None
    status: Status = "ok"
    note: str | None = None
    #: Beyond its limit, but the rank test found it not significant: more samples could decide.
    inconclusive: bool = False
    #: Worse than its limit allows: where the rank test (when both sides have the samples)
    #: decides whether the change is real.
    beyond_limit: bool = False

    COLUMNS: ClassVar[tuple[str, ...]] = (
        "test",
        "metric",
        "baseline",
        "current",
        "change",
        "limit",
        "p",
        "status",
    )

    @property
    def p_decides(self) -> bool:
        """Whether p is shown: the change went beyond its limit, where the rank test decides
        whether it is real (a regression, or not significant; real but flagged, not gated).
        Within its limit, without one, or between different work, p changes nothing."""
        return self.p_value is not None and self.beyond_limit and self.status != "incomparable"

    def cells(self) -> tuple[str, ...]:
        """This change as a table row, in `COLUMNS` order (for text, Markdown and HTML)."""
        return (
            self.nodeid,
            self.metric,
            "-" if self.baseline is None else f"{figure(self.baseline)} {self.unit}",
            f"{figure(self.current)} {self.unit}",
            self.change_text()
            + (f" ±{self.uncertainty_pct:.1f}%" if self.uncertainty_pct is not None else ""),
            self.limit or "-",
            f"{self.p_value:.3g}" if self.p_decides and self.p_value is not None else "-",
            self.status + (f" ({self.note})" if self.note else ""),
        )

    def change_text(self) -> str:
        return change_or_missing(self.change_pct)

    def line(self) -> str:
        """The one line printed for a regression or an exceeded budget."""
        if self.status == "over_budget":
            return (
                f"pytest-llem: OVER BUDGET {self.nodeid} {self.metric} {figure(self.current)} {self.unit} "
                f"(budget {self.limit})"
            )
        details = [self.change_text() if self.change_pct is not None else None, f"limit {self.limit}"]
        if self.p_value is not None:
            details.append(f"p={self.p_value:.3g}")
        assert self.baseline is not None
        change = f"{figure(self.baseline)} -> {figure(self.current)} {self.unit}"
        shown = ", ".join(d for d in details if d)
        return f"pytest-llem: REGRESSION {self.nodeid} {self.metric} {change} ({shown})"


class UnmeasuredLimit(BaseModel):
    """A limit on a metric that one side (or both) of a compared case has no figure for."""

    nodeid: str
    metric: str
    limit: str
    #: "this run", "the baseline", or both.
    missing_in: list[str]
    reason: str


class Comparison(BaseModel):
    baseline_run: str
    baseline_name: str | None = None
    machine_warning: str | None = None
    #: Every difference between the two runs' machines and software (`fingerprints.differences`).
    differences: list[str] = Field(default_factory=list)
    #: The hardware ones among them: they refuse a gate unless compared across machines.
    hardware_differences: list[str] = Field(default_factory=list)
    changes: list[MetricChange] = Field(default_factory=list)
    only_in_baseline: list[str] = Field(default_factory=list)
    only_in_current: list[str] = Field(default_factory=list)
    #: Measured cases of this run that found their baseline case (node ids of this run).
    matched: list[str] = Field(default_factory=list)
    #: Of those, the ones whose work differed from the baseline's, with why.
    incomparable: dict[str, str] = Field(default_factory=dict)
    #: Limits on compared cases that gated nothing: a side had no figure for the metric.
    unmeasured: list[UnmeasuredLimit] = Field(default_factory=list)

    @property
    def compared(self) -> list[str]:
        """Cases compared for real: in both runs, doing the same work."""
        return [nodeid for nodeid in self.matched if nodeid not in self.incomparable]

    @property
    def failures(self) -> list[MetricChange]:
        return [c for c in self.changes if c.status in ("regression", "over_budget")]


def measured_by_case(report: SessionReport) -> dict[str, ReportEntry]:
    """Measured experiments by case key (`ReportEntry.key`), which survives a moved rootdir."""
    return {e.key: e for e in report.measured}


def limits_of_test(result: ExperimentResult, nodeid: str) -> dict[str, Limit]:
    """The case's own `compare_fail` limits. A result's config was checked when it was built,
    so a bare number here is a saved run's from a release that read it as an amount."""
    source = f"{nodeid}: compare_fail"
    limits = {}
    for name, text in result.config.get("compare_fail", {}).items():
        metric = lookup_metric(name, source)
        limits[name] = parse_limit_value(metric, text, source, marker=True, bare_is_amount=True)
    return limits


def _compared_values(metric: Metric, baseline: ExperimentResult, current: ExperimentResult):
    """The figures compared are those summaries show (`gated_figure`: the samples' median);
    the samples themselves go to the rank test when both sides have enough."""
    before, after = sample_values(baseline.rounds, metric), sample_values(current.rounds, metric)
    tested = min(len(before), len(after)) >= MIN_ROUNDS_FOR_SIGNIFICANCE
    return (
        gated_figure(baseline, metric),
        gated_figure(current, metric),
        before if tested else [],
        after if tested else [],
    )


def compare_reports(
    baseline: SessionReport,
    current: SessionReport,
    limits: Iterable[Limit] = (),
    gate_flagged: bool = False,
    across_machines: bool = False,
) -> Comparison:
    """Per test and metric: baseline, current, change, and whether it fails the session.

    Changes are `incomparable` when the two sides did different work, or ran on different
    hardware and `across_machines` is not set.
    """
    global_limits = {limit.metric.name: limit for limit in limits}
    comparison = Comparison(baseline_run=baseline.run_id, baseline_name=baseline.name)
    if baseline.machine and current.machine and baseline.machine.id != current.machine.id:
        comparison.machine_warning = (
            f"baseline {baseline.name or baseline.run_id} ran on another machine "
            f"({baseline.machine.describe()}, id {baseline.machine.id}) than this run "
            f"({current.machine.describe()}, id {current.machine.id}); differences may be the machine's"
        )
    found = fingerprint_differences(baseline.machine, current.machine)
    comparison.differences, comparison.hardware_differences = found.lines(), found.hardware
    before, after = measured_by_case(baseline), measured_by_case(current)
    comparison.only_in_baseline = sorted(before[key].nodeid for key in set(before) - set(after))
    comparison.only_in_current = sorted(after[key].nodeid for key in set(after) - set(before))
    for key, entry in after.items():
        if key not in before:
            continue
        nodeid, result, old = entry.nodeid, entry.result, before[key].result
        assert result is not None and old is not None
        comparison.matched.append(nodeid)
        old_model, new_model = before[key].model_fingerprint, entry.model_fingerprint
        if old_model and new_model and old_model != new_model:
            comparison.differences.append(f"model: the files of {nodeid}'s model changed")
        differences = work_differences(before[key].work, entry.work)
        if found.hardware and not across_machines:
            differences.append("the baseline ran on different hardware")
        if differences:
            comparison.incomparable[nodeid] = "; ".join(differences)
        changed_outputs = outputs_changed(before[key].work, entry.work)
        test_limits = {**global_limits, **limits_of_test(result, nodeid)}
        names = list(dict.fromkeys([*DEFAULT_SHOWN_METRICS, *test_limits]))
        for name in names:
            change = _change(nodeid, METRICS[name], old, result, test_limits.get(name), gate_flagged)
            if change is None:
                if name in test_limits and not differences:
                    missing = _unmeasured(nodeid, METRICS[name], test_limits[name], old, result)
                    comparison.unmeasured.append(missing)
                continue
            if differences:  # never ok, improved or a regression: the two sides did different work
                change.status, change.note = "incomparable", comparison.incomparable[nodeid]
            elif changed_outputs:
                change.note = "; ".join(n for n in ("outputs changed", change.note) if n)
            comparison.changes.append(change)
    return comparison


def _unmeasured(
    nodeid: str, metric: Metric, limit: Limit, baseline: ExperimentResult, current: ExperimentResult
) -> UnmeasuredLimit:
    sides = [
        (side, result)
        for side, result in (("this run", current), ("the baseline", baseline))
        if gated_figure(result, metric) is None
    ]
    return UnmeasuredLimit(
        nodeid=nodeid,
        metric=metric.name,
        limit=limit.text,
        missing_in=[side for side, _ in sides],
        reason=why_missing(metric, sides[0][1]),
    )


def needs_more_samples(
    before: ReportEntry,
    current: ExperimentResult,
    prompt_digest: str | None,
    limits: Iterable[Limit] = (),
    gate_flagged: bool = False,
) -> bool:
    """Whether more processes of `current` could decide its comparison with `before` (the same
        case in the baseline run; `prompt_digest`: the current run's prompts), which `compare_reports`
    would otherwise leave undecided: a change
        beyond its limit that is not significant, or one the rank test cannot judge yet because
        `current` has too few samples while the baseline has enough. Decided either way (within
        every limit, a regression, improved, incomparable work, a flag not gated): False.

        `repeats="auto"` asks this after each process (`isolation.repeats.run_repeats`).
    """
    old = before.result
    if old is None:
        return False
    if work_differences(before.work, describe_work(current.config, current, prompt_digest)):
        return False
    test_limits = {**{limit.metric.name: limit for limit in limits}, **limits_of_test(current, before.nodeid)}
    for name, limit in test_limits.items():
        metric = METRICS[name]
        change = _change(before.nodeid, metric, old, current, limit, gate_flagged)
        if change is None:
            continue
        if change.inconclusive:
            return True
        untested = change.p_value is None and change.status == "regression"
        testable = len(sample_values(old.rounds, metric)) >= MIN_ROUNDS_FOR_SIGNIFICANCE
        if untested and testable and len(sample_values(current.rounds, metric)) < MIN_ROUNDS_FOR_SIGNIFICANCE:
            return True
    return False


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
    uncertainty = _relative_uncertainty(metric, baseline, current)
    if uncertainty is not None:
        change.uncertainty_pct = 100 * uncertainty
    if limit is None:
        return change
    within = (
        change.uncertainty_pct is not None
        and change.change_pct is not None
        and abs(change.change_pct) <= change.uncertainty_pct
    )
    change.beyond_limit = limit.exceeded_by(old, new)
    if not change.beyond_limit:
        # Improved only when better by more than the limit: a hair's difference is just "ok".
        change.status = "improved" if limit.exceeded_by(new, old) and not within else "ok"
    elif within:
        change.note = f"beyond the limit but within the ±{change.uncertainty_pct:.1f}% uncertainty"
    elif change.p_value is not None and change.p_value > SIGNIFICANCE_LEVEL:
        change.note = f"beyond the limit but not significant (p={change.p_value:.3g})"
        change.inconclusive = True
    elif (baseline.flagged_for(metric.name) or current.flagged_for(metric.name)) and not gate_flagged:
        change.status = "flagged"
        change.note = "beyond the limit, but a measurement-quality flag is set: not gated"
    else:
        change.status = "regression"
    return change


def _relative_uncertainty(
    metric: Metric, baseline: ExperimentResult, current: ExperimentResult
) -> float | None:
    """The change's relative uncertainty for an energy metric (unit J); None for the others.

    Energy above idle carries the absolute uncertainty of the whole figure, so its relative
    one is larger by energy_j / energy_adjusted_j.
    """
    if metric.unit != "J":
        return None
    relative = change_uncertainty(baseline.uncertainty_of(metric.name), current.uncertainty_of(metric.name))
    if relative is None or metric.name != "energy_adjusted_j":
        return relative
    scales = [
        r.energy_j / r.energy_adjusted_j for r in (baseline, current) if r.energy_j and r.energy_adjusted_j
    ]
    return relative * max(scales) if len(scales) == 2 else None
