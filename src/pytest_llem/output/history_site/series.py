"""What the history site plots: per case, its runs in order, and per metric each run's figure,
its spread, whether it is flagged, the steps found in it and where the machine changed.

A case is a test across runs (`ReportEntry.key`, which does not move with pytest's rootdir)
within one project. Each run contributes the figure every other output shows
(`stats.sample_summary`: the median of its samples, with their interquartile range where
there are several). Steps are searched per machine id (`fingerprints.machine`): figures of
other hardware are not comparable, as the gate says, so a run on a new machine starts that
machine's own series, and the differences to the machine before are marked instead.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime

from pytest_llem.base.digests import json_digest
from pytest_llem.fingerprints.differences import fingerprint_differences
from pytest_llem.fingerprints.machine import MachineInfo
from pytest_llem.gating.changepoints import Step, find_steps
from pytest_llem.gating.metrics import METRICS, Metric
from pytest_llem.gating.stats import sample_summary
from pytest_llem.results import ExperimentResult
from pytest_llem.store.report import SessionReport

#: The machine of runs that recorded none.
UNKNOWN_MACHINE = "unknown"
_NOT_A_NAME = re.compile(r"[^A-Za-z0-9_.-]+")


@dataclass(frozen=True)
class CaseRun:
    """One run of a case: where it sits on the x axis and what labels it."""

    run_id: str
    started_at: datetime
    #: The commit as the axis shows it (`SourceInfo.label`), else the run's start time.
    label: str
    commit: str | None
    branch: str | None
    machine_id: str
    machine: MachineInfo | None
    nodeid: str
    result: ExperimentResult


@dataclass(frozen=True)
class RunFigure:
    """One run's figure of one metric: the samples' median, their quartiles where there are
    several samples (`n`), and whether a quality flag doubts it."""

    value: float | None
    q1: float | None = None
    q3: float | None = None
    n: int = 0
    flagged: bool = False


@dataclass(frozen=True)
class MarkedStep:
    """A confirmed step (`gating.changepoints.Step`, its index a position in the case's runs)
    on one machine, and whether the metric got worse across it."""

    step: Step
    machine_id: str
    worse: bool


@dataclass(frozen=True)
class MachineChange:
    """Where the machine's fingerprint differs from the run before on the same machine id, or
    where a machine id first appears (its differences from the run before it)."""

    index: int
    machine_id: str
    new_machine: bool
    differences: list[str]


@dataclass
class MetricHistory:
    metric: Metric
    figures: list[RunFigure]
    steps: list[MarkedStep] = field(default_factory=list)

    @property
    def regressions(self) -> list[MarkedStep]:
        """Per machine, its latest step, where the metric got worse across it."""
        latest: dict[str, MarkedStep] = {}
        for marked in self.steps:
            latest[marked.machine_id] = marked
        return [marked for marked in latest.values() if marked.worse]


@dataclass
class CaseHistory:
    key: str
    project: str | None
    runs: list[CaseRun]
    metrics: list[MetricHistory]
    machine_changes: list[MachineChange]

    @property
    def nodeid(self) -> str:
        """The test's node id in its newest run."""
        return self.runs[-1].nodeid

    @property
    def slug(self) -> str:
        """The case's page name: readable, and unique by a digest of its project and key."""
        readable = _NOT_A_NAME.sub("-", self.key.rsplit("/", 1)[-1]).strip("-.")[:60] or "case"
        return f"{readable}-{json_digest([self.project, self.key])[:8]}"


def regressions(cases: Sequence[CaseHistory]) -> list[tuple[CaseHistory, str, MarkedStep]]:
    """Each case, metric and latest step that made the metric worse (per machine)."""
    return [
        (case, history.metric.name, marked)
        for case in cases
        for history in case.metrics
        for marked in history.regressions
    ]


def case_histories(reports: Sequence[SessionReport], metric_names: Sequence[str] = ()) -> list[CaseHistory]:
    """Every case measured in `reports` (taken in the order given: oldest run first), with a
    history per metric that has a figure in some run (only `metric_names` when given)."""
    runs_of: dict[tuple[str | None, str], list[CaseRun]] = {}
    for report in reports:
        latest: dict[str, CaseRun] = {}
        for entry in report.experiments:
            result = entry.result
            # A resumed result repeats an earlier run's figure: counted once, where it was measured.
            if result is None or entry.resumed or result.resumed:
                continue
            latest[entry.key] = CaseRun(
                run_id=report.run_id,
                started_at=report.started_at,
                label=report.source.label if report.source else f"{report.started_at:%Y-%m-%d %H:%M}",
                commit=report.source.commit if report.source else None,
                branch=report.source.branch if report.source else None,
                machine_id=report.machine.id if report.machine else UNKNOWN_MACHINE,
                machine=report.machine,
                nodeid=entry.nodeid,
                result=result,
            )
        for key, run in latest.items():
            runs_of.setdefault((report.project, key), []).append(run)
    wanted = list(metric_names) or list(METRICS)
    cases = []
    for (project, key), runs in sorted(runs_of.items(), key=lambda item: (item[0][0] or "", item[0][1])):
        metrics = [_metric_history(METRICS[name], runs) for name in wanted]
        metrics = [m for m in metrics if any(f.value is not None for f in m.figures)]
        cases.append(CaseHistory(key, project, runs, metrics, machine_changes(runs)))
    return cases


def _metric_history(metric: Metric, runs: list[CaseRun]) -> MetricHistory:
    figures = [_figure(run.result, metric) for run in runs]
    history = MetricHistory(metric, figures)
    for machine_id in dict.fromkeys(run.machine_id for run in runs):
        positions = [i for i, run in enumerate(runs) if run.machine_id == machine_id]
        found = find_steps([figures[i].value for i in positions], [figures[i].flagged for i in positions])
        for step in found:
            moved = replace(step, index=positions[step.index])
            history.steps.append(MarkedStep(moved, machine_id, metric.worse_by(step.before, step.after) > 0))
    history.steps.sort(key=lambda marked: marked.step.index)
    return history


def _figure(result: ExperimentResult, metric: Metric) -> RunFigure:
    summary = sample_summary(result, metric)
    if summary is None or not math.isfinite(summary.median):
        return RunFigure(None)  # a NaN or infinite figure is no point on a chart: shown as missing
    spread = (summary.q1, summary.q3) if summary.n > 1 else (None, None)
    return RunFigure(summary.median, *spread, n=summary.n, flagged=result.flagged_for(metric.name))


def machine_changes(runs: list[CaseRun]) -> list[MachineChange]:
    """Each run whose machine differs from the one before it on the same machine id (software,
    settings, boards), and each first run of a new machine id after another's runs."""
    changes = []
    last_of: dict[str, CaseRun] = {}
    for index, run in enumerate(runs):
        before = last_of.get(run.machine_id)
        if before is not None:
            found = fingerprint_differences(before.machine, run.machine)
            if found.hardware or found.other:
                changes.append(MachineChange(index, run.machine_id, False, found.lines()))
        elif index > 0:
            previous = runs[index - 1]
            found = fingerprint_differences(previous.machine, run.machine)
            changes.append(MachineChange(index, run.machine_id, True, found.lines()))
        last_of[run.machine_id] = run
    return changes
