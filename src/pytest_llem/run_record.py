"""The run's record as this pytest process keeps it: the session report and its file, the
baseline (and whether a case's comparison with it is still undecided) and the gate's outcome,
storage problems, skipped files, and the report's last word.

Runs in the pytest process, with no pytest in it. `session.BenchmarkSession` adds each
experiment's entry; what depends on the process's part in an xdist run (the report's file
name, repairs and the save at start, the baseline, the workers' reports, the gate,
publishing) is asked of its role (`roles`).
"""

from __future__ import annotations

import os
import shutil
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from pytest_llem import __version__
from pytest_llem.base.atomic import DiskFull, disk_is_full, make_reserve
from pytest_llem.base.redaction import redact_text
from pytest_llem.errors import INTERRUPTED_EXIT_CODE, ConfigError, LlemError, StorageError
from pytest_llem.fingerprints.differences import fingerprint_differences
from pytest_llem.fingerprints.machine import MachineInfo
from pytest_llem.fingerprints.source import source_info
from pytest_llem.formatting import shown_path
from pytest_llem.gating.compare import Comparison, MetricChange, measured_by_case, needs_more_samples
from pytest_llem.gating.gate import GateOutcome
from pytest_llem.isolation.signals import InterruptGuard, SessionInterrupts
from pytest_llem.processes import process_start_time
from pytest_llem.results import ExperimentResult
from pytest_llem.settings import LlemSettings
from pytest_llem.store.database import StoreBusy, StoreFailed
from pytest_llem.store.history import RunHistory, autosave_name
from pytest_llem.store.names import skipped_line
from pytest_llem.store.projects import project_key
from pytest_llem.store.report import ReportEntry, SessionOutcome, SessionReport, report_path, write_report
from pytest_llem.store.state import StateManager, utc_now

if TYPE_CHECKING:
    from pytest_llem.roles import Role


def new_run_id(now: datetime | None = None) -> str:
    now = now or datetime.now(timezone.utc)
    return f"{now:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}"


class RunRecord:
    """This process's report of the run, from the session's start to its last word.

    Under pytest-xdist every process has one, sharing the controller's `run_id`; a worker's
    is checkpointed as `report-<worker_id>.json` and taken in by the controller's, which
    writes the merged `report.json` (`roles`).
    """

    def __init__(
        self,
        settings: LlemSettings,
        role: Role,
        states: StateManager,
        interrupts: SessionInterrupts,
        root: Path | None = None,
        project_dir: Path | None = None,
    ) -> None:
        self.settings = settings
        self.role = role
        self.states = states
        self.interrupts = interrupts
        self.root = root
        #: The suite's folder, whose project the run is saved under (`store.projects.project_folder`).
        self.project_dir = project_dir
        self.history = RunHistory(settings.state_dir, settings.store_url)
        self.report = SessionReport(
            run_id=role.run_id or new_run_id(),
            started_at=utc_now(),
            plugin_version=__version__,
            owner_pid=os.getpid(),
            owner_start_time=process_start_time(os.getpid()),
        )
        self.report_path: Path | None = None
        #: Problems that did not stop the session, for the terminal summary.
        self.problems: list[str] = []
        #: The optional outputs written at the end (`publish`), a line each naming where.
        self.written: list[str] = []
        self.baseline: SessionReport | None = None
        #: The comparison, budgets and failures, once `gate` has run.
        self.gate_outcome = GateOutcome()
        self.finished = False
        #: The state dir or the store could not be written (a full disk, a store gone): one line,
        #: the session stops (exit 1).
        self.storage_problem: str | None = None
        #: A finished experiment's state could not reach done: `finish` tries again from the report.
        self.states_behind = False
        self.report_written = False
        self.storage_problem_shown = False
        #: Foreign or broken files met in the state dir, by path, with why they were skipped.
        self.skipped: dict[str, str] = {}

    @property
    def entries(self) -> list[ReportEntry]:
        return self.report.experiments

    @property
    def comparison(self) -> Comparison | None:
        return self.gate_outcome.comparison

    @property
    def failures(self) -> list[MetricChange]:
        """Regressions and exceeded budgets, once `gate` has run."""
        return self.gate_outcome.failures

    def open_store(self) -> None:
        """Create the state dir and open the store (an unreachable one stops the session before
        anything is measured)."""
        try:
            self.states.ensure_dirs()
        except StorageError:
            raise
        except OSError as exc:
            raise ConfigError(
                f"cannot use state dir {self.settings.state_dir}: {exc.strerror or exc}; "
                "choose another with --llem-state-dir or PYTEST_LLEM_STATE_DIR"
            ) from None
        self.history = RunHistory(self.settings.state_dir, store=self.states.store)
        self.history.skipped.update(self.states.skipped)  # JSON files of the state dir, imported once
        make_reserve(self.settings.state_dir)

    def start(self) -> None:
        """Fail states orphaned by a session that died, describe the run, and find its baseline.
        A role that repairs earlier runs does so first: a run that lost its store kept its
        results in its report file, and they bring its experiments' states to done instead of
        stale."""
        self.role.repair_earlier_runs(self)
        stale = self.states.cleanup_stale()
        self.report.stale_experiments = [s.experiment_id for s in stale]
        self.skipped.update(self.states.skipped)
        self.report.machine = MachineInfo.current()
        # The checkout pytest's rootdir lies in; none outside git, never an error.
        self.report.source = source_info(self.root or self.project_dir or Path.cwd())
        self.report.project = self.project()
        if self.settings.save_name:
            self.report.name = self.settings.save_name
        elif self.settings.autosave:
            self.report.name = autosave_name(self.root)
        self.role.save_at_start(self)
        self.baseline = self.role.find_baseline(self)

    def project(self) -> str:
        """The run's project: `--llem-project`, else derived from the suite's folder (the
        rootdir, then the folder pytest was started from, when none was given); redacted as the
        report is, so the store's column and the report say the same."""
        project = self.settings.project or project_key(self.project_dir or self.root or Path.cwd())
        return redact_text(project, root=self.root)

    def full_disk_at_start(self, exc: LlemError) -> str | None:
        """The line for a `start` that failed because the state dir's disk is full, which stops
        the session with exit 1 as a disk that fills later does; None when it failed for another
        reason (a usage error, exit 4). A store that cannot even be opened on a full disk says
        "check the URL": the disk is what to fix, and the line says so."""
        if isinstance(exc, DiskFull):
            return str(exc)
        if not disk_is_full(self.settings.state_dir):
            return None
        reason = str(exc).split("; ")[0]
        return (
            f"the disk of the state dir {self.settings.state_dir} is full, so the session cannot "
            f"start ({reason}); free space there or choose another --llem-state-dir"
        )

    def gate(self) -> bool:
        """Compare with the baseline and check budgets, as the role does; return whether that
        fails the session."""
        return self.role.gate(self)

    def undecided(self, entry: ReportEntry, result: ExperimentResult) -> bool:
        """Whether one more process could decide `entry`'s comparison with its baseline case
        (`repeats="auto"`); without a baseline, or a baseline on other hardware, nothing can."""
        baseline = self.baseline
        if baseline is None:
            return False
        before = measured_by_case(baseline).get(entry.key)
        if before is None:
            return False
        hardware = fingerprint_differences(baseline.machine, self.report.machine).hardware
        if hardware and not self.settings.compare_across_machines:
            return False
        prompt_digest = entry.work.prompt_digest if entry.work else None
        return needs_more_samples(
            before, result, prompt_digest, self.settings.compare_fail, self.settings.gate_flagged
        )

    def test_failed(self, nodeid: str) -> None:
        """pytest failed the test `nodeid`: its experiments' status says so, whatever they measured."""
        for entry in self.entries:
            if entry.nodeid == nodeid:
                entry.test_failed = True

    def skipped_files(self) -> list[str]:
        """One line per file of the state dir skipped this session (each named once)."""
        self.skipped.update(self.states.skipped)
        return [skipped_line(what, why) for what, why in sorted(self.skipped.items())]

    def checkpoint(self) -> None:
        """Write the report; a full disk or a failed store is noted in `storage_problem`, never
        raised. The file is written before the store's row, so a store that failed leaves it."""
        self.role.take_in_workers(self.report)
        report_name = self.role.report_name
        try:
            self.report_path = write_report(
                self.report, self.settings.state_dir, self.root, report_name, self.states.store
            )
            self.report_written = True
        except (StoreFailed, StoreBusy) as exc:
            self.report_path = report_path(self.settings.state_dir, self.report.run_id, report_name)
            self.report_written = True
            self.storage_failed(exc)
        except StorageError as exc:
            self.storage_failed(exc)
            self.report_written = False

    def storage_failed(self, exc: StorageError) -> None:
        """Note the first storage problem as the session's one line."""
        if self.storage_problem is not None:
            return
        line = str(exc)
        if isinstance(exc, (StoreFailed, StoreBusy)):
            kept = report_path(self.settings.state_dir, self.report.run_id, self.role.report_name)
            line += (
                f"; the results measured are kept in {kept}, and the next session on this state dir "
                f"(or `pytest-llem import {self.settings.state_dir}`) takes them into the store"
            )
        self.storage_problem = line

    def catch_up_states(self) -> None:
        """States whose `done` the store refused (busy, gone) are brought there from the
        report, if the store works again; if not, the next session's repair does it."""
        if not self.states_behind:
            return
        try:
            self.states.restore_done(self.report)
            self.states_behind = False
        except StorageError:
            pass

    def complete_at_exit(self) -> None:
        """The last word on the report: rewritten when a signal came after it was written (or
        before there was one), or when xdist workers checkpointed after sessionfinish."""
        self.interrupts.stop_raising()
        workers_wrote_more = self.finished and self.role.absorb_checkpoints(self)
        interrupted = self.interrupts.received is not None
        if workers_wrote_more or (interrupted and self.report.outcome != "interrupted"):
            self.finish(self.report.outcome, self.report.exit_code or 0)  # a signal: interrupted

    def finish(self, outcome: SessionOutcome, exit_code: int) -> Path | None:
        """Write the final report; signals arriving meanwhile are ignored (we are stopping anyway).

        A session that received a signal at any point is "interrupted", whatever it was told.
        A session with a throwaway state dir (smoke mode) removes it instead and returns None.
        """
        if self.interrupts.received is not None:
            outcome, exit_code = "interrupted", INTERRUPTED_EXIT_CODE
        self.report.outcome = outcome
        self.report.exit_code = exit_code
        self.report.finished_at = utc_now()
        self.finished = True
        self.role.absorb_checkpoints(self)
        with InterruptGuard(self.interrupts).installed():
            if self.settings.throwaway_state_dir:
                shutil.rmtree(self.settings.state_dir, ignore_errors=True)
                self.report_path = None
                return None
            self.catch_up_states()
            self.checkpoint()
            self.role.publish(self)
        return self.report_path

    def closing_lines(self) -> list[str]:
        """The terminal summary's last lines: the name the run was saved under, each output
        written, and where the report went (or that none was kept)."""
        if self.settings.throwaway_state_dir:
            return [
                f"smoke run: {len(self.entries)} case(s) ran once with the smallest workload; "
                "nothing was measured, saved to the history or published"
            ]
        lines = []
        if self.report_written and self.report.name:
            lines.append(
                f"run saved as {self.report.name} (compare with it: --llem-compare={self.report.name})"
            )
        lines += self.written
        if self.report_written and self.report_path is not None:
            lines.append(f"report written to {shown_path(self.report_path)}")
        return lines

    def verdict(self) -> str | None:
        """The session's very last line when its gate failed it (None otherwise, or when a
        signal stopped it: an interrupted run's gate decides nothing)."""
        if not self.finished or self.report.outcome == "interrupted":
            return None
        return self.gate_outcome.verdict()
