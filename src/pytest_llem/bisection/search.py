"""A commit's verdict against GOOD's run, and the binary search over verdicts.

A commit is judged by the comparison the gate makes (`gating.compare.compare_reports`, the
limit and its metric given): **bad** when the metric got worse than the limit allows and the
one-sided rank test says so with p at most alpha (the gate's own regression); **good** when it
is within the limit; **undecided** otherwise (beyond the limit but not significant, too few
samples, within the meter's uncertainty, a measurement-quality flag, different work, no
figure). An undecided commit is never taken for good or bad: the search goes round it, and
when it stands between the last good and the first bad commit the answer is the range left.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pytest_llem.formatting import figure
from pytest_llem.gating.compare import MetricChange, compare_reports
from pytest_llem.gating.limits import Limit
from pytest_llem.gating.metrics import Metric
from pytest_llem.gating.stats import sample_summary
from pytest_llem.store.report import SessionReport

Verdict = Literal["good", "bad", "undecided"]


@dataclass(frozen=True)
class CommitVerdict:
    verdict: Verdict
    #: The compared figure of the deciding case: `median [q1, q3] unit (n=N)`.
    figure: str
    #: `-39.8%` against GOOD, `p=0.05` where the rank test decided; empty without a comparison.
    change: str = ""
    #: Why a commit is undecided (or a note on a decided one).
    reason: str | None = None

    def text(self) -> str:
        return " ".join(part for part in (self.figure, self.change, self.verdict) if part) + (
            f" ({self.reason})" if self.reason else ""
        )


def figure_with_spread(report: SessionReport, metric: Metric, nodeid: str | None = None) -> str:
    """The metric of `report`'s case `nodeid` (default: its first measured case with a figure)
    as tables show it: the samples' median and interquartile range, unit, number of samples."""
    for entry in report.measured:
        assert entry.result is not None
        summary = sample_summary(entry.result, metric)
        if summary is None or nodeid not in (None, entry.nodeid):
            continue
        spread = f" [{figure(summary.q1)}, {figure(summary.q3)}]" if summary.n > 1 else ""
        return f"{metric.name} {figure(summary.median)}{spread} {metric.unit} (n={summary.n})"
    return f"{metric.name} -"


def judge(baseline: SessionReport, current: SessionReport, limit: Limit, alpha: float) -> CommitVerdict:
    """`current` (a commit's run) against `baseline` (GOOD's), on `limit`'s metric: bad if any
    compared case regressed with p <= `alpha`, else undecided if any case is, else good."""
    comparison = compare_reports(baseline, current, [limit])
    changes = [c for c in comparison.changes if c.metric == limit.metric.name]
    if not current.measured:
        return CommitVerdict(
            "undecided", f"{limit.metric.name} -", reason="no case was measured at this commit"
        )
    if not changes:
        why = "; ".join(f"{item.nodeid}: {item.reason}" for item in comparison.unmeasured)
        missing = why or "no case measured here is in GOOD's run"
        return CommitVerdict("undecided", figure_with_spread(current, limit.metric), reason=missing)
    judged = [(change, *_verdict(change, alpha)) for change in changes]
    for wanted in ("bad", "undecided", "good"):
        chosen = [item for item in judged if item[1] == wanted]
        if chosen:
            change, verdict, reason = chosen[0]
            cases = f"{len(changes)} cases; " if len(changes) > 1 else ""
            shown = reason if len(changes) == 1 else f"{change.nodeid}{': ' + reason if reason else ''}"
            return CommitVerdict(
                verdict,
                figure_with_spread(current, limit.metric, change.nodeid),
                _change_text(change),
                (cases + shown) if (cases or shown) else None,
            )
    raise AssertionError("every change has a verdict")


def _verdict(change: MetricChange, alpha: float) -> tuple[Verdict, str | None]:
    if change.status == "incomparable":
        return "undecided", change.note
    if not change.beyond_limit:
        return "good", None
    if change.status == "regression":
        if change.p_value is None:
            return "undecided", "worse than the limit, but too few samples for the rank test"
        if change.p_value <= alpha:
            return "bad", None
        return "undecided", f"worse than the limit, but p={change.p_value:.3g} > alpha {alpha:g}"
    # Beyond the limit but not a regression: not significant, within the meter's uncertainty,
    # or a measurement-quality flag; the comparison's note says which.
    return "undecided", change.note


def _change_text(change: MetricChange) -> str:
    parts = [change.change_text()] if change.change_pct is not None else []
    if change.p_value is not None and change.beyond_limit:
        parts.append(f"p={change.p_value:.3g}")
    return " ".join(parts)


@dataclass(frozen=True)
class SearchResult:
    """Where the search ended: the first bad commit (an index into the commits), or the
    commits it could be among when undecided ones stand in the way."""

    #: Index of the last commit known good (0: GOOD itself).
    last_good: int
    #: Index of the first commit known bad.
    first_bad: int
    #: The undecided commits between them.
    undecided: tuple[int, ...]

    @property
    def found(self) -> bool:
        return self.first_bad == self.last_good + 1

    @property
    def candidates(self) -> range:
        """The commits the first bad one may be: after the last good, up to the first bad."""
        return range(self.last_good + 1, self.first_bad + 1)


class Bisection:
    """Binary search over `count` commits, index 0 GOOD (good by definition) and the last one
    BAD (judged like any other before the search starts).

    Assumes what every bisection does: once the figure got worse it stays worse, so a good
    verdict clears every commit before it and a bad one every commit after it.
    """

    def __init__(self, count: int) -> None:
        if count < 2:
            raise ValueError("a bisection needs GOOD and at least one commit after it")
        self.count = count
        self.verdicts: dict[int, Verdict] = {0: "good"}

    def record(self, index: int, verdict: Verdict) -> None:
        self.verdicts[index] = verdict

    @property
    def last_good(self) -> int:
        bound = self._first_bad_or_end()
        return max(i for i, v in self.verdicts.items() if v == "good" and i < bound)

    def _first_bad_or_end(self) -> int:
        bad = [i for i, v in self.verdicts.items() if v == "bad"]
        return min(bad) if bad else self.count

    def next_index(self) -> int | None:
        """The commit to judge next (BAD first, then the middle of what is left, the nearest
        not undecided one when the middle is), or None when the search is over."""
        last = self.count - 1
        if last not in self.verdicts:
            return last
        if self.verdicts[last] != "bad" and self._first_bad_or_end() == self.count:
            return None  # BAD itself is not bad: nothing to search
        low, high = self.last_good, self._first_bad_or_end()
        open_ = [i for i in range(low + 1, high) if i not in self.verdicts]
        if not open_:
            return None
        middle = (low + high) // 2
        return min(open_, key=lambda i: (abs(i - middle), i))

    def result(self) -> SearchResult | None:
        """Where the search ended, once `next_index` is None; None when BAD was not bad."""
        high = self._first_bad_or_end()
        if high == self.count:
            return None
        low = self.last_good
        undecided = tuple(i for i in range(low + 1, high) if self.verdicts.get(i) == "undecided")
        return SearchResult(low, high, undecided)
