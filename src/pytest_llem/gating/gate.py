"""The gate: what fails a session (or `pytest-llem compare`), computed in one place.

A run fails the gate for each regression against its baseline and each exceeded budget,
and, when limits were set against a baseline, when it compared nothing: no baseline run, or
none of the measured cases found its baseline case. A gate that compares nothing must not
pass, nor one whose limit or budget names a metric a side has no figure for (energy on a
machine no meter reads, say): one `GATE FAILED` line per such metric says which and why.
The plugin and the command both call `run_gate`, so they can never disagree.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from pytest_llem.gating.budgets import check_budgets, unmeasured_budgets
from pytest_llem.gating.compare import Comparison, MetricChange, UnmeasuredLimit, compare_reports
from pytest_llem.gating.limits import Limit
from pytest_llem.gating.metrics import METRICS
from pytest_llem.store.report import SessionReport

GATE_FAILED = "pytest-llem: GATE FAILED:"


@dataclass
class GateOutcome:
    #: The comparison with the baseline; None when there is no baseline.
    comparison: Comparison | None = None
    #: Every budget checked, over or not.
    budget_checks: list[MetricChange] = field(default_factory=list)
    #: Why the gate could not do what it was asked (a line each: it compared nothing, or a limit
    #: or budget names a metric without a figure); it fails the session.
    refusal: str | None = None
    #: What the gate could not check, not failing: baseline cases this run did not measure.
    notes: list[str] = field(default_factory=list)

    @property
    def failures(self) -> list[MetricChange]:
        """Regressions, then exceeded budgets: each one line, each a reason to fail."""
        regressions = self.comparison.failures if self.comparison is not None else []
        return regressions + [c for c in self.budget_checks if c.status == "over_budget"]

    @property
    def failed(self) -> bool:
        return bool(self.failures) or self.refusal is not None

    def failure_lines(self) -> list[str]:
        """One line per reason the gate fails the run, refusal last."""
        return [c.line() for c in self.failures] + ([self.refusal] if self.refusal else [])

    def verdict(self) -> str | None:
        """The last word on a failed gate, after every line that says why (None: it passed):
        `gate failed: 2 regressions, 1 budget exceeded (each named above)`."""
        if not self.failed:
            return None
        regressions = sum(c.status == "regression" for c in self.failures)
        over_budget = len(self.failures) - regressions
        unchecked = len(self.refusal.splitlines()) if self.refusal else 0
        counts = [
            _counted(regressions, "regression", "regressions"),
            _counted(over_budget, "budget exceeded", "budgets exceeded"),
            _counted(unchecked, "check it could not make", "checks it could not make"),
        ]
        return f"gate failed: {', '.join(c for c in counts if c)} (each named above)"


def _counted(count: int, one: str, many: str) -> str | None:
    return None if not count else f"{count} {one if count == 1 else many}"


def is_gated(current: SessionReport, limits: Iterable[Limit]) -> bool:
    """Limits apply to a comparison: given for the session, or a measured case's `compare_fail`."""
    return bool(list(limits)) or any(
        e.result is not None and e.result.config.get("compare_fail") for e in current.measured
    )


def run_gate(
    current: SessionReport,
    baseline: SessionReport | None,
    limits: Iterable[Limit] = (),
    gate_flagged: bool = False,
    compare_requested: bool = True,
    across_machines: bool = False,
) -> GateOutcome:
    """Compare `current` with `baseline` (when there is one) and check its budgets.

    `compare_requested`: a baseline was asked for, so per-test `compare_fail` limits apply
    (always so for `pytest-llem compare`). `across_machines`: gate even when the baseline
    ran on different hardware.
    """
    limits = list(limits)
    comparison = (
        None
        if baseline is None
        else compare_reports(baseline, current, limits, gate_flagged, across_machines)
    )
    outcome = GateOutcome(comparison=comparison, budget_checks=check_budgets(current, gate_flagged))
    unmeasured = unmeasured_budgets(current)
    lines = []
    if compare_requested and is_gated(current, limits):
        refusal = _comparison_refusal(current, baseline, comparison, across_machines)
        if refusal is not None:
            lines.append(refusal)
        elif comparison is not None:
            unmeasured = comparison.unmeasured + unmeasured
            _add_notes(outcome, comparison)
    lines.extend(_unmeasured_lines(unmeasured))
    outcome.refusal = "\n".join(lines) or None
    return outcome


def _comparison_refusal(
    current: SessionReport,
    baseline: SessionReport | None,
    comparison: Comparison | None,
    across_machines: bool,
) -> str | None:
    """Why a gated run compared nothing (one line), or None when it compared something."""
    if baseline is None or comparison is None:
        return (
            f"{GATE_FAILED} limits were set but there is no baseline to compare with (no earlier run "
            "of this project on this machine finished uninterrupted with a measured experiment); record "
            "one with a run without --llem-compare-fail, or name one with --llem-compare=RUN"
        )
    if comparison.hardware_differences and not across_machines:
        return (
            f"{GATE_FAILED} the baseline ran on different hardware ("
            + "; ".join(comparison.hardware_differences)
            + "), so its figures do not gate this run; compare with a run on this hardware, or pass "
            "--llem-compare-across-machines (pytest-llem compare: --across-machines) to gate anyway"
        )
    if not current.measured:
        return f"{GATE_FAILED} this run measured no case, so nothing was compared with the baseline"
    if not comparison.matched:
        against = baseline.name or baseline.run_id
        return (
            f"{GATE_FAILED} none of this run's {len(current.measured)} measured case(s) is in baseline "
            f"{against} ({len(baseline.measured)} case(s)), so nothing was compared; run the same tests "
            "as the baseline, or compare with a run of these tests"
        )
    if not comparison.compared:
        against = baseline.name or baseline.run_id
        return (
            f"{GATE_FAILED} every case in common with baseline {against} did different work "
            "(incomparable, see the table), so nothing was compared; gate against a run of the same work"
        )
    return None


def _unmeasured_lines(unmeasured: list[UnmeasuredLimit]) -> list[str]:
    """One `GATE FAILED` line per metric whose limits or budgets had no figure to check."""
    by_metric: dict[str, list[UnmeasuredLimit]] = {}
    for item in unmeasured:
        by_metric.setdefault(item.metric, []).append(item)
    lines = []
    for metric, items in by_metric.items():
        sides = sorted({side for item in items for side in item.missing_in}, reverse=True)
        cases = ", ".join(f"{item.nodeid} ({item.limit})" for item in items)
        how = " (for energy: a meter that reads this machine)" if METRICS[metric].unit == "J" else ""
        lines.append(
            f"{GATE_FAILED} {metric} was not measured in {' or '.join(sides)} ({items[0].reason}), so "
            f"its limits gated nothing: {cases}; measure it{how} or drop the limit"
        )
    return lines


def _add_notes(outcome: GateOutcome, comparison: Comparison) -> None:
    if comparison.only_in_baseline:
        missing = comparison.only_in_baseline
        outcome.notes.append(
            f"{len(missing)} baseline case(s) were not measured in this run and were not gated: "
            + ", ".join(missing)
        )
    if comparison.incomparable:
        outcome.notes.append(
            f"{len(comparison.incomparable)} case(s) did different work than in the baseline and were "
            "not gated: " + ", ".join(f"{nodeid} ({why})" for nodeid, why in comparison.incomparable.items())
        )
