"""The gate: what fails a session (or `pytest-llem compare`), computed in one place.

A run fails the gate for each regression against its baseline and each exceeded budget.
The plugin and the command both call `run_gate`, so they can never disagree.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from pytest_llem.gating.budgets import check_budgets
from pytest_llem.gating.compare import Comparison, MetricChange, compare_reports
from pytest_llem.gating.limits import Limit
from pytest_llem.store.report import SessionReport


@dataclass
class GateOutcome:
    #: The comparison with the baseline; None when there is no baseline.
    comparison: Comparison | None = None
    #: Every budget checked, over or not.
    budget_checks: list[MetricChange] = field(default_factory=list)

    @property
    def failures(self) -> list[MetricChange]:
        """Regressions, then exceeded budgets: each one line, each a reason to fail."""
        regressions = self.comparison.failures if self.comparison is not None else []
        return regressions + [c for c in self.budget_checks if c.status == "over_budget"]


def run_gate(
    current: SessionReport,
    baseline: SessionReport | None,
    limits: Iterable[Limit] = (),
    gate_flagged: bool = False,
) -> GateOutcome:
    """Compare `current` with `baseline` (when there is one) and check its budgets."""
    comparison = None if baseline is None else compare_reports(baseline, current, limits, gate_flagged)
    return GateOutcome(comparison=comparison, budget_checks=check_budgets(current, gate_flagged))
