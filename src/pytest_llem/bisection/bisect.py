"""The whole bisection: GOOD's run first (the baseline), then BAD's, then the binary search,
one transcript line per commit judged, and the answer.

A commit whose run `bisect-<sha>` is already saved (by an earlier bisection of the same
benchmark, in the same store, on this machine) is judged from it without running anything,
unless it was undecided and this bisection allows more processes than that run did.

Exit codes: 0 when the first bad commit is found; 1 when undecided commits leave a range,
when BAD is not worse than GOOD, or when GOOD's benchmark measured nothing; 2 for a user
error (one line, from `git` and `runner`); 128 + the signal when SIGINT or SIGTERM stopped it.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from pytest_llem.bisection.git import Commit, Worktree, commits_between, repository_top, resolve_commit
from pytest_llem.bisection.runner import (
    CommitRun,
    Interrupted,
    bisect_project,
    run_name,
    run_pytest,
    signals_as_exceptions,
)
from pytest_llem.bisection.search import Bisection, CommitVerdict, figure_with_spread, judge
from pytest_llem.fingerprints.machine import MachineInfo
from pytest_llem.gating.limits import Limit
from pytest_llem.store.history import RunHistory, UnknownRun
from pytest_llem.store.names import printable
from pytest_llem.store.projects import project_folder, project_key
from pytest_llem.store.report import SessionReport

EXIT_FOUND, EXIT_NOT_FOUND = 0, 1
#: The limit a bisection uses when none is given: the metric worse by more than this.
DEFAULT_LIMIT = "5%"
#: Lines of a failed run's pytest output shown with its transcript line.
OUTPUT_TAIL_LINES = 20


@dataclass(frozen=True)
class BisectRequest:
    good: str
    bad: str
    pytest_args: tuple[str, ...]
    limit: Limit
    #: The limit as the user wrote it, `METRIC:LIMIT`: what each commit's pytest is given.
    limit_spec: str
    alpha: float
    max_runs: int
    cwd: Path
    state_dir: Path
    store_url: str | None
    #: pytest's output to stderr as it runs, instead of only a failed run's last lines.
    show_output: bool = False


class Bisector:
    """One bisection over the commits of the repository `request.cwd` lies in."""

    def __init__(
        self,
        request: BisectRequest,
        open_history: Callable[[], RunHistory],
        say: Callable[[str], None] = print,
        warn: Callable[[str], None] | None = None,
    ) -> None:
        """Checks GOOD, BAD and the repository (`git.BisectError`) before the store is opened
        by `open_history`, so a user error leaves no state dir behind."""
        self.request = request
        self.say = say
        self.warn = warn or (lambda line: print(line, file=sys.stderr))
        self.top = repository_top(request.cwd)
        good = resolve_commit(self.top, request.good, "GOOD")
        bad = resolve_commit(self.top, request.bad, "BAD")
        self.commits = [good, *commits_between(self.top, good, bad)]
        self.inside = request.cwd.resolve().relative_to(self.top)
        self.project = bisect_project(project_key(project_folder(None, request.cwd)), request.pytest_args)
        self.run = CommitRun(
            pytest_args=request.pytest_args,
            state_dir=request.state_dir.resolve(),
            store_url=request.store_url,
            project=self.project,
            repeats_max=request.max_runs,
            limit_spec=request.limit_spec,
        )
        #: Why the last run gave nothing to judge.
        self.failure = ""
        self.worktree: Worktree | None = None
        self._machine_id: str | None = None
        self.history = open_history()

    def bisect(self) -> int:
        """Run the bisection; its exit code. `Interrupted` ends it with the worktree removed."""
        request, limit = self.request, self.request.limit
        good, bad = self.commits[0], self.commits[-1]
        self.say(
            f"bisecting {len(self.commits) - 1} commits after GOOD {good.short} up to BAD {bad.short}: "
            f"bad when {limit.metric.name} is worse than GOOD's by more than {limit.text} with p <= "
            f"{request.alpha:g}; up to {request.max_runs} processes a commit"
        )
        with signals_as_exceptions(), Worktree(self.top, good) as worktree:
            self.worktree = worktree
            try:
                return self._search()
            finally:
                self.worktree = None

    def _search(self) -> int:
        good, bad = self.commits[0], self.commits[-1]
        baseline = self._saved(good)
        reused = baseline is not None and baseline.can_be_baseline
        if not reused:
            baseline = self._run(good, None, baseline)
        if baseline is None or not baseline.can_be_baseline:
            why = self.failure or "its run did not finish"
            self.say(f"GOOD  {good}  {why}: no baseline to judge the other commits by")
            return EXIT_NOT_FOUND
        self.say(
            f"GOOD  {good}  {figure_with_spread(baseline, self.request.limit.metric)} baseline"
            + (" (saved run reused)" if reused else "")
        )
        search = Bisection(len(self.commits))
        while (index := search.next_index()) is not None:
            verdict = self._judge(self.commits[index], baseline, index)
            search.record(index, verdict.verdict)
        result = search.result()
        if result is None:
            if search.verdicts[len(self.commits) - 1] == "good":
                self.say(
                    f"BAD {bad.short} is not worse than GOOD {good.short} beyond the limit: nothing to bisect"
                )
            else:
                self.say(
                    f"BAD {bad.short} is undecided against GOOD {good.short}: the regression is not shown"
                )
            return EXIT_NOT_FOUND
        if result.found:
            first = self.commits[result.first_bad]
            self.say(f"first bad commit: {first.sha} {printable(first.subject)}")
            return EXIT_FOUND
        count = len(result.candidates)
        self.say(f"undecided commits block the search: the first bad commit is one of these {count}:")
        for index in result.candidates:
            verdict = search.verdicts.get(index, "not judged")
            self.say(f"  {self.commits[index]} ({verdict})")
        return EXIT_NOT_FOUND

    def _judge(self, commit: Commit, baseline: SessionReport, index: int) -> CommitVerdict:
        request = self.request
        label = "BAD " if index == len(self.commits) - 1 else f"{index:>4}"
        saved = self._saved(commit)
        if saved is not None and saved.can_be_baseline:
            verdict = judge(baseline, saved, request.limit, request.alpha)
            if verdict.verdict != "undecided" or _allowed_processes(saved) >= request.max_runs:
                self.say(f"{label}  {commit}  {verdict.text()} (saved run reused)")
                return verdict
        report = self._run(commit, run_name(self.commits[0]), saved)
        if report is None:
            verdict = CommitVerdict("undecided", f"{request.limit.metric.name} -", reason=self.failure)
        else:
            verdict = judge(baseline, report, request.limit, request.alpha)
        self.say(f"{label}  {commit}  {verdict.text()}")
        return verdict

    def _saved(self, commit: Commit) -> SessionReport | None:
        """The newest run of `commit` saved by a bisection of this project on this machine, if
        any. A run of that name in another project (another repository, other tests) is not
        this commit's, and one another machine saved to a shared store does not judge this
        machine's figures."""
        try:
            report = self.history.find(run_name(commit), project=self.project)
        except UnknownRun:
            return None
        if report.project != self.project or report.machine is None:
            return None
        if self._machine_id is None:
            self._machine_id = MachineInfo.current().id
        return report if report.machine.id == self._machine_id else None

    def _run(
        self, commit: Commit, baseline: str | None, before: SessionReport | None
    ) -> SessionReport | None:
        """Check `commit` out, run its benchmark, and read back the run it saved (not `before`,
        the one saved earlier)."""
        worktree = self.worktree
        assert worktree is not None and worktree.folder is not None
        cwd = worktree.checkout(commit) / self.inside
        if not cwd.is_dir():
            self.failure = f"the commit has no folder {self.inside}: not run"
            return None
        command = self.run.command(commit, baseline)
        if self.request.show_output:
            code = run_pytest(command, cwd, sys.stderr)
            log = None
        else:
            log = worktree.folder / f"pytest-{commit.short}.log"
            with log.open("w", encoding="utf-8") as output:
                code = run_pytest(command, cwd, output)
        saved = self._saved(commit)
        if saved is None or not saved.measured or saved.run_id == getattr(before, "run_id", None):
            self.failure = f"its benchmark measured nothing: pytest exited {code}"
            self.warn(f"pytest-llem: bisect: at {commit.short}, {self.failure}" + (":" if log else ""))
            if log is not None:
                _show_tail(log, self.warn)
            return None
        return saved


def _allowed_processes(report: SessionReport) -> int:
    """How many processes each case of `report` was allowed at least (`repeats="auto:N"`'s N;
    a run without repeats: the processes it had)."""
    return min(
        (
            int(e.result.extra.get("repeats_max", e.result.extra.get("repeats", 1)))
            for e in report.measured
            if e.result
        ),
        default=0,
    )


def _show_tail(log: Path, warn: Callable[[str], None]) -> None:
    lines = log.read_text(encoding="utf-8", errors="replace").splitlines()
    for line in lines[-OUTPUT_TAIL_LINES:]:
        warn(f"  | {line}")


def run_bisection(
    request: BisectRequest,
    open_history: Callable[[], RunHistory],
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """`pytest-llem bisect`: the transcript on `out`, warnings on `err`; the exit code."""
    out, err = out or sys.stdout, err or sys.stderr

    def say(line: str) -> None:
        print(line, file=out, flush=True)

    try:
        bisector = Bisector(request, open_history, say, lambda line: print(line, file=err, flush=True))
    except KeyboardInterrupt:  # Ctrl-C while git resolved the commits: nothing made yet
        print("pytest-llem: bisect stopped by SIGINT before it began", file=err, flush=True)
        return Interrupted(signal.SIGINT).exit_code
    try:
        return bisector.bisect()
    except Interrupted as interrupted:
        print(f"pytest-llem: bisect stopped by {interrupted}; its worktree was removed", file=err, flush=True)
        return interrupted.exit_code
