"""This pytest process's part in the run, chosen once when pytest is configured.

Runs in the pytest process and knows nothing of pytest (the plugin picks the role from
xdist's `workerinput` and registers xdist's hooks only for the role that has them, as
pytest-cov's engines do):

- `SingleProcessRole`: the whole run in one process. It completes earlier runs left
  unfinished, saves its run to the store at start, finds the baseline `--llem-compare`
  names, gates and publishes.
- `XdistControllerRole`: the same for an xdist run, plus its workers' reports, taken in from
  `workeroutput` and from the checkpoints they left on disk; it writes the merged `report.json`.
- `XdistWorkerRole`: one worker of an xdist run. It writes `report-<worker_id>.json` under its
  controller's run id, reads the baseline its controller found (for `repeats="auto"`), and
  never repairs, saves the run, gates or publishes: its report goes to the controller.

Each role acts on the process's `run_record.RunRecord`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pytest_llem.errors import ConfigError
from pytest_llem.gating.gate import run_gate
from pytest_llem.publish import publish
from pytest_llem.store.history import RunHistory, UnknownRun
from pytest_llem.store.names import printable
from pytest_llem.store.projects import shown_project
from pytest_llem.store.report import SessionReport, read_worker_reports, report_path, take_in_workers

if TYPE_CHECKING:
    from pytest_llem.run_record import RunRecord

#: The worker id of the process that holds every experiment (a single process, the controller).
MAIN_WORKER_ID = "main"


class Role:
    """What a pytest process does with the run's record; the base does what a worker does."""

    #: The id every entry of this process's experiments carries.
    worker_id = MAIN_WORKER_ID
    #: The run this process reports to; None: a new run.
    run_id: str | None = None

    @property
    def report_name(self) -> str:
        """The report's file name in the run's folder."""
        return "report.json"

    def repair_earlier_runs(self, record: RunRecord) -> None:
        """Complete the runs that a killed session left unfinished, at the session's start."""

    def save_at_start(self, record: RunRecord) -> None:
        """Write the run's row to the store as the session starts."""

    def find_baseline(self, record: RunRecord) -> SessionReport | None:
        """The run this one is compared with, if any."""
        return None

    def take_in_workers(self, report: SessionReport) -> None:
        """Merge the workers' latest reports into `report` before it is written."""

    def absorb_checkpoints(self, record: RunRecord) -> bool:
        """Take in reports workers left on disk; True if the report changed."""
        return False

    def gate(self, record: RunRecord) -> bool:
        """Compare with the baseline and check budgets; return whether that fails the session."""
        return False

    def publish(self, record: RunRecord) -> None:
        """Write the session's optional outputs (JSON, Markdown, HTML, benchmark JSON)."""


class SingleProcessRole(Role):
    """The process that holds every experiment of the run: it repairs, saves, compares, gates
    and publishes."""

    def repair_earlier_runs(self, record: RunRecord) -> None:
        # Before stale cleanup: a run that lost its store kept its results in its report
        # file, and they bring its experiments' states to done instead of stale.
        repaired = record.history.repair(exclude_run_id=record.report.run_id)
        if repaired:
            record.problems.append(
                f"completed the report of {len(repaired)} earlier run(s) that a killed session, an "
                f"interrupted xdist session or a lost store left unfinished: {', '.join(repaired)}"
            )

    def save_at_start(self, record: RunRecord) -> None:
        # In the store from the start, so that a controller killed before its first
        # checkpoint still leaves a run that the next session can complete.
        record.history.save(record.report, record.root)

    def find_baseline(self, record: RunRecord) -> SessionReport | None:
        settings = record.settings
        if not (settings.compare or settings.compare_fail):
            return None
        ref = settings.compare or "latest"
        history = record.history
        project = record.report.project
        if ref != "latest":  # named: any project's run, this project's first
            try:
                named = history.find(ref, project=project)
            except UnknownRun as exc:
                raise ConfigError(f"--llem-compare: {exc}") from None
            if named.name == ref and named.project != project:  # a name this project never gave
                mine = printable(shown_project(project))
                record.problems.append(
                    f"--llem-compare={printable(ref)}: no run of project {mine!r} has that name, so the "
                    f"comparison uses the newest run that has: {named.run_id}, {_whose(named.project)}"
                )
            return named
        run_id = record.report.run_id
        machine_id = record.report.machine.id if record.report.machine else None
        baseline = history.latest(machine_id, exclude_run_id=run_id, project=project)
        newer_unreadable = [
            item
            for item in history.skipped_after(baseline.run_id if baseline else None)
            if f"/{run_id}/" not in item
        ]
        if newer_unreadable:  # never a silent fall-back to an older baseline
            record.problems.append(
                f"the newest saved run(s) cannot be read, so the comparison uses "
                f"{'run ' + baseline.run_id if baseline else 'nothing'}: {'; '.join(newer_unreadable)}"
            )
        record.skipped.update(history.skipped)
        if baseline is None:
            record.problems.append(_nothing_to_compare_with(history, project, machine_id, run_id))
        return baseline

    def gate(self, record: RunRecord) -> bool:
        settings = record.settings
        if not settings.gated:
            return False
        record.gate_outcome = run_gate(
            record.report,
            record.baseline,
            settings.compare_fail,
            settings.gate_flagged,
            compare_requested=bool(settings.compare or settings.compare_fail),
            across_machines=settings.compare_across_machines,
        )
        record.problems.extend(record.gate_outcome.notes)
        return record.gate_outcome.failed

    def publish(self, record: RunRecord) -> None:
        published = publish(
            record.report,
            record.comparison,
            record.failures,
            record.settings,
            record.root,
            refusal=record.gate_outcome.refusal,
        )
        record.written.extend(published.written)
        record.problems.extend(published.problems)


def _nothing_to_compare_with(
    history: RunHistory, project: str | None, machine_id: str | None, run_id: str
) -> str:
    """The line for a bare `--llem-compare` that found no run of its project: it names the run
    another project (or an earlier pytest-llem, without a project) left, which is compared with
    only when named."""
    mine = f"project {printable(shown_project(project))!r}"
    line = (
        f"nothing to compare with: no earlier run of {mine} on this machine (id {machine_id}) "
        "finished uninterrupted with a measured experiment"
    )
    other = history.latest_elsewhere(machine_id, project, exclude_run_id=run_id) if project else None
    if other is None:
        return f"{line}; this run can be the baseline of the next"
    return (
        f"{line}; the newest run that did is {other.run_id}, {_whose(other.project)}, compared with only "
        f"when named: --llem-compare={other.run_id}"
    )


def _whose(project: str | None) -> str:
    """Whose a run of another project is, for a line that names it."""
    if project is None:
        return "saved without a project (by an earlier pytest-llem)"
    return f"of project {printable(project)!r}"


class XdistControllerRole(SingleProcessRole):
    """The controller of an xdist run: a single process's part, with its workers' reports."""

    def __init__(self) -> None:
        #: Each worker's latest report, and the workers that handed theirs over at their end.
        self.workers: dict[str, SessionReport] = {}
        self.final_workers: set[str] = set()

    def absorb(self, record: RunRecord, worker_id: str, worker_report: SessionReport) -> None:
        """Take in a finished worker's experiments (its `workeroutput`) and write the report."""
        self.workers[worker_id] = worker_report
        self.final_workers.add(worker_id)
        record.checkpoint()

    def absorb_checkpoints(self, record: RunRecord) -> bool:
        """Take in the workers' checkpoints on disk that never came back through xdist (a
        worker killed, the controller interrupted first); True if the report changed."""
        run_dir = report_path(record.settings.state_dir, record.report.run_id).parent
        changed = False
        for wid, worker_report in read_worker_reports(run_dir).items():
            if wid in self.final_workers or self.workers.get(wid) == worker_report:
                continue
            self.workers[wid] = worker_report
            changed = True
        return changed

    def take_in_workers(self, report: SessionReport) -> None:
        if self.workers:
            take_in_workers(report, self.workers)


class XdistWorkerRole(Role):
    """One worker of an xdist run, reporting to its controller's run."""

    def __init__(self, worker_id: str, run_id: str | None, baseline_run_id: str | None) -> None:
        self.worker_id = worker_id
        self.run_id = run_id
        #: The run its controller compares with (`repeats="auto"` needs it); None: none.
        self.baseline_run_id = baseline_run_id

    @property
    def report_name(self) -> str:
        return f"report-{self.worker_id}.json"

    def find_baseline(self, record: RunRecord) -> SessionReport | None:
        # The controller chose it and says what it found; a worker reads the same run so
        # that `repeats="auto"` can tell when a case's comparison is settled.
        if self.baseline_run_id is None:
            return None
        try:
            return record.history.find(self.baseline_run_id)
        except UnknownRun:
            return None
