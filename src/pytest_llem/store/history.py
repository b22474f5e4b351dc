"""Saved runs: naming them, finding them in the results store, and cleaning them.

Every session's report is a row of the store's `runs` table (the figures queries use as
columns, the whole report compressed beside it) and, for people and CI, a file,
`<state_dir>/runs/<run_id>/report.json`. A run may carry a name (`--llem-save NAME`, or
`--llem-autosave`: git commit, time, dirty flag). Runs are grouped by project (see
`store.projects`: every project of a user shares the default state dir and its store) and
machine id (see `fingerprints.machine`): the default baseline is the newest run of the same
project on the same machine, and retention keeps the newest runs of each. Finding a run by
name or id, the default baseline and the newest runs are indexed queries: their cost does not
grow with the history.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import sqlalchemy as sa
from pydantic import ValidationError

from pytest_llem.errors import LlemError
from pytest_llem.fingerprints.source import SHORT_COMMIT_LENGTH, SourceInfo, git_output
from pytest_llem.store.database import CorruptRow, Store, as_utc, unpack
from pytest_llem.store.names import is_plain_name, printable, run_folder
from pytest_llem.store.opening import OpensStoreOnUse
from pytest_llem.store.report import (
    SessionReport,
    invalid_reason,
    load_report,
    read_worker_reports,
    repair_run,
    save_run,
    write_report,
)
from pytest_llem.store.schema import experiment_parts, experiments, run_experiments, run_reports, runs
from pytest_llem.store.state import StateManager


class UnknownRun(LlemError):
    """A run name, id or path that matches no saved run."""


def autosave_name(cwd: Path | None = None, now: datetime | None = None) -> str:
    """`<commit>-<UTC time>[-dirty]`, or `nogit-<time>` outside a git work tree."""
    stamp = f"{now or datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}"
    try:
        commit = git_output(cwd, "rev-parse", f"--short={SHORT_COMMIT_LENGTH}", "HEAD")
        dirty = bool(git_output(cwd, "status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return f"nogit-{stamp}"
    return f"{commit}-{stamp}" + ("-dirty" if dirty else "")


@dataclass(frozen=True)
class RunSummary:
    """A run as `list` shows it: read from the `runs` table's columns, no report loaded."""

    run_id: str
    name: str | None
    machine_id: str | None
    machine: str | None
    #: None: saved before runs recorded their project (legacy).
    project: str | None
    started_at: datetime
    outcome: str
    experiment_count: int
    #: The git commit as tables show it (`SourceInfo.label`); None: not recorded.
    commit: str | None = None

    @property
    def label(self) -> str:
        return self.name or self.run_id


class RunHistory(OpensStoreOnUse):
    """The saved runs of one store (by default, the state dir's own)."""

    def __init__(self, state_dir: Path, store_url: str | None = None, store: Store | None = None) -> None:
        self.state_dir = Path(state_dir)
        self.runs_dir = self.state_dir / "runs"
        self.store_url = store_url
        self._store = store
        #: Reports that were skipped, as `runs/<run>/report.json` (a file) or as the store's
        #: row (`STORE_ROW_OF_RUN` and its id), with the reason.
        self.skipped: dict[str, str] = {}

    def save(self, report: SessionReport, root: Path | None = None) -> None:
        """Insert or replace the run, in one transaction (redacted as its file is)."""
        save_run(self.store, report, root)

    def runs(self) -> list[SessionReport]:
        """Every run, whole, oldest first (reads every report: for exports and tests, not lookups)."""
        with self.store.read() as conn:
            rows = conn.execute(
                sa.select(run_reports.c.run_id, run_reports.c.report_z)
                .join(runs, runs.c.run_id == run_reports.c.run_id)
                .order_by(runs.c.started_at, runs.c.run_id)
            ).all()
        found = (self._report_of(row.run_id, row.report_z) for row in rows)
        return [report for report in found if report is not None]

    def _report_of(self, run_id: str, blob: bytes) -> SessionReport | None:
        """The report a store row holds, or None (and the reason in `skipped`)."""
        try:
            return SessionReport.model_validate(unpack(blob))
        except (CorruptRow, ValidationError) as exc:
            self._skip_row(run_id, f"the store's row is not a report: {invalid_reason(exc)}")
            return None

    def _skip_row(self, run_id: str, reason: str) -> None:
        self.skipped.setdefault(f"{STORE_ROW_OF_RUN}{printable(str(run_id))[:140]}", reason)

    def summaries(
        self, limit: int | None = None, machine_id: str | None = None, project: str | None = None
    ) -> list[RunSummary]:
        """The newest `limit` runs (all when None), oldest first, from the runs table alone;
        only those of `machine_id` and of `project` when given."""
        conditions = []
        if machine_id is not None:
            conditions.append(runs.c.machine_id == machine_id)
        if project is not None:
            conditions.append(runs.c.project == project)
        return self._summaries(conditions, limit)

    def _summaries(self, conditions: list[sa.ColumnElement[bool]], limit: int | None) -> list[RunSummary]:
        """The newest `limit` runs that meet every condition, oldest first."""
        query = sa.select(
            runs.c.run_id,
            runs.c.name,
            runs.c.machine_id,
            runs.c.project,
            runs.c.git_commit,
            runs.c.started_at,
            runs.c.outcome,
            runs.c.experiment_count,
            runs.c.summary_json,
        ).order_by(runs.c.started_at.desc(), runs.c.run_id.desc())
        if conditions:
            query = query.where(sa.and_(*conditions))
        if limit is not None:
            query = query.limit(limit)
        with self.store.read() as conn:
            rows = conn.execute(query).all()
        summaries = []
        for row in reversed(rows):
            # A row another machine wrote to a shared store: its run id names a folder here.
            if not is_plain_name(row.run_id):
                self._skip_row(row.run_id, "its run id is not a plain name; left alone")
                continue
            try:
                summary = json.loads(row.summary_json)
                machine = summary.get("machine_description")
                source = summary.get("source") or {}
                dirty = source.get("dirty") is True
            except (TypeError, ValueError, AttributeError):
                machine, dirty = None, False
            summaries.append(
                RunSummary(
                    run_id=row.run_id,
                    name=row.name,
                    machine_id=row.machine_id,
                    machine=machine if isinstance(machine, str) else None,
                    project=row.project,
                    started_at=as_utc(row.started_at),
                    outcome=row.outcome,
                    experiment_count=row.experiment_count,
                    commit=_commit_label(row.git_commit, dirty),
                )
            )
        return summaries

    def repair(self, exclude_run_id: str | None = None) -> list[str]:
        """Complete the runs the store still has as running but whose session is over; return
        their ids. An xdist run left half-merged gets its workers' checkpoints. A run whose
        pytest process is gone (SIGKILLed; or it lost its store, so its final report reached
        only the file) gets that last word, `interrupted` if it had none, marked `repaired`
        (never a baseline), and the results it kept bring their experiments' states to
        `done`. A state dir that cannot be written is left as it is."""
        repaired = []
        with self.store.read() as conn:
            running = conn.execute(
                sa.select(runs.c.run_id).where(runs.c.outcome == "running").order_by(runs.c.run_id)
            ).scalars()
            candidates = [run_id for run_id in running if run_id != exclude_run_id]
        for run_id in candidates:
            run_dir = run_folder(self.runs_dir, run_id)
            if run_dir is None:
                continue
            try:
                merged = repair_run(run_dir) if run_dir.is_dir() else None
            except OSError:
                continue
            report = merged or self._last_word(run_id, run_dir)
            workers = read_worker_reports(run_dir).values() if run_dir.is_dir() else ()
            # Every process gone: an xdist worker that outlived its controller may still write.
            if report is not None and report.owner_gone() and all(w.owner_gone() for w in workers):
                if report.outcome == "running":
                    report.outcome = "interrupted"
                report.repaired = True
                states = StateManager(self.state_dir, store=self.store)
                states.restore_done(report)
                self.skipped.update(states.skipped)
            elif merged is None:
                continue
            try:
                if not run_dir.is_dir():  # a run of another state dir sharing the store: its row only
                    raise FileNotFoundError(run_dir)
                write_report(report, self.state_dir, store=self.store)
            except OSError:  # or a state dir that cannot be written: the store's row at least
                self.save(report)
            repaired.append(run_id)
        return repaired

    def _last_word(self, run_id: str, run_dir: Path) -> SessionReport | None:
        """A run's newest report: its file (written before the store's row), else the row."""
        try:
            return load_report(run_dir / "report.json")
        except (OSError, ValueError):
            pass
        with self.store.read() as conn:
            query = sa.select(run_reports.c.report_z).where(run_reports.c.run_id == run_id)
            blob = conn.execute(query).scalar()
        return None if blob is None else self._report_of(run_id, blob)

    def skipped_after(self, run_id: str | None) -> list[str]:
        """Skipped reports whose run folder sorts after `run_id` (run ids start with the time)."""
        return [
            f"{key} ({reason})"
            for key, reason in sorted(self.skipped.items())
            if (skipped_id := _skipped_run_id(key)) is not None and (run_id is None or skipped_id > run_id)
        ]

    def projects(self) -> list[str]:
        """Every project that has a saved run, sorted (legacy runs, which have none, left out)."""
        with self.store.read() as conn:
            query = sa.select(runs.c.project).where(runs.c.project.is_not(None)).distinct()
            return sorted(conn.execute(query).scalars())

    def find(self, ref: str, project: str | None = None) -> SessionReport:
        """A run by name (the newest of that name; when `project` is given, its own first, then
        one saved before runs recorded their project (maybe its own), then any project's, so
        that two projects that name runs alike each find theirs), run id, or path to a report
        file."""
        path = Path(ref).expanduser()
        if path.suffix == ".json" or path.is_file():
            try:
                return load_report(path)
            except OSError as exc:
                raise UnknownRun(f"cannot read report {printable(ref)!r}: {exc.strerror or exc}") from None
            except ValueError as exc:  # pydantic's ValidationError too: never quote the file
                raise UnknownRun(f"{printable(ref)!r} is not a report: {invalid_reason(exc)}") from None
        named = runs.c.name == ref
        preferred = [] if project is None else [runs.c.project == project, runs.c.project.is_(None)]
        for condition in [
            *(sa.and_(named, whose) for whose in preferred),
            sa.or_(named, runs.c.run_id == ref),
        ]:
            found = self._newest(condition)
            if found is not None:
                return found
        known = ", ".join(printable(run.label) for run in self.summaries(limit=5)) or "none saved yet"
        raise UnknownRun(
            f"no saved run named {printable(ref)!r} (latest: {known}); `pytest-llem list` shows them all"
        )

    def latest(
        self, machine_id: str | None, exclude_run_id: str | None = None, project: str | None = None
    ) -> SessionReport | None:
        """The default baseline: the newest run of `project` on `machine_id` (any project, any
        machine, when None), other than `exclude_run_id`, that can be one
        (`SessionReport.can_be_baseline`)."""
        conditions = self._baseline_conditions(machine_id, exclude_run_id)
        if project is not None:
            conditions.append(runs.c.project == project)
        return self._newest(sa.and_(*conditions))

    def latest_elsewhere(
        self, machine_id: str | None, project: str, exclude_run_id: str | None = None
    ) -> RunSummary | None:
        """The run `latest` would have chosen but for its project: the newest that can be a
        baseline on `machine_id` and belongs to another project or to none (legacy). Its row
        only: it is named to the user, never compared with unless named back."""
        conditions = self._baseline_conditions(machine_id, exclude_run_id)
        conditions.append(sa.or_(runs.c.project.is_(None), runs.c.project != project))
        found = self._summaries(conditions, limit=1)
        return found[0] if found else None

    @staticmethod
    def _baseline_conditions(
        machine_id: str | None, exclude_run_id: str | None
    ) -> list[sa.ColumnElement[bool]]:
        conditions = [runs.c.can_be_baseline.is_(True)]
        if machine_id is not None:
            conditions.append(runs.c.machine_id == machine_id)
        if exclude_run_id is not None:
            conditions.append(runs.c.run_id != exclude_run_id)
        return conditions

    def _newest(self, condition: sa.ColumnElement[bool]) -> SessionReport | None:
        """The newest readable run that meets `condition`; unreadable rows on the way are
        skipped and named (`skipped`), never passed over in silence."""
        query = (
            sa.select(run_reports.c.run_id)
            .join(runs, runs.c.run_id == run_reports.c.run_id)
            .where(condition)
            .order_by(runs.c.started_at.desc(), runs.c.run_id.desc())
            .limit(_UNREADABLE_ROWS_PASSED)
        )
        blob_of = sa.select(run_reports.c.report_z).where(run_reports.c.run_id == sa.bindparam("run_id"))
        with self.store.read() as conn:
            for run_id in conn.execute(query).scalars().all():
                report = self._report_of(run_id, conn.execute(blob_of, {"run_id": run_id}).scalar())
                if report is not None:
                    return report
        return None

    def clean(
        self,
        older_than: datetime | None = None,
        keep_named: bool = True,
        keep_newest: int | None = None,
    ) -> list[RunSummary]:
        """Delete runs started before `older_than`, or beyond the newest `keep_newest` of each
        project on each machine (so that a busy project never deletes another's baseline; named
        ones kept unless asked), with the experiments, bulky parts and files that belong only to
        them; return the deleted runs."""
        doomed = []
        seen_per_group: dict[tuple[str | None, str | None], int] = {}
        for run in reversed(self.summaries()):  # newest first
            group = (run.project, run.machine_id)
            seen = seen_per_group.get(group, 0)
            seen_per_group[group] = seen + 1
            if keep_named and run.name:
                continue
            too_old = older_than is not None and run.started_at < older_than
            beyond = keep_newest is not None and seen >= keep_newest
            if too_old or beyond:
                doomed.append(run)
        ids = [run.run_id for run in doomed]
        for chunk in _chunks(ids, 500):
            delete_runs(self.store, chunk)
        for run_id in ids:
            # Checked again right before deleting: never anything outside `runs/`.
            run_dir = run_folder(self.runs_dir, run_id)
            if run_dir is not None and run_dir.is_dir():
                shutil.rmtree(run_dir, ignore_errors=True)
        return list(reversed(doomed))


#: How many unreadable rows a lookup passes over (each named) before it gives up.
_UNREADABLE_ROWS_PASSED = 20


#: How a run skipped for its row in the store (not a file) is named.
STORE_ROW_OF_RUN = "the store's row of run "


def _skipped_run_id(key: str) -> str | None:
    if key.startswith(STORE_ROW_OF_RUN):
        return key.removeprefix(STORE_ROW_OF_RUN)
    return key.split("/")[1] if key.startswith("runs/") else None


def _commit_label(commit: str | None, dirty: bool) -> str | None:
    if not isinstance(commit, str) or not commit:
        return None
    return SourceInfo(commit=commit, dirty=dirty).label


def _chunks(items: list[str], size: int) -> list[list[str]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def delete_runs(store: Store, run_ids: list[str]) -> None:
    """Delete runs, then every experiment of theirs that no remaining run refers to."""
    if not run_ids:
        return
    with store.write() as conn:
        # Delete children explicitly: a SQLite store opened without foreign keys must not keep orphans.
        # Theirs: owned by one of them, or shown by one of them and owned by a run already gone.
        # Kept: shown by a remaining run (a resume), or owned by a remaining run.
        shown = sa.select(run_experiments.c.experiment_id).where(run_experiments.c.run_id.in_(run_ids))
        shown_elsewhere = sa.select(run_experiments.c.experiment_id).where(
            run_experiments.c.run_id.not_in(run_ids)
        )
        remaining = sa.select(runs.c.run_id).where(runs.c.run_id.not_in(run_ids))
        owned = sa.select(experiments.c.experiment_id).where(
            sa.or_(experiments.c.run_id.in_(run_ids), experiments.c.experiment_id.in_(shown)),
            experiments.c.experiment_id.not_in(shown_elsewhere),
            sa.or_(experiments.c.run_id.is_(None), experiments.c.run_id.not_in(remaining)),
        )
        orphaned = list(conn.execute(owned).scalars())
        for chunk in _chunks(orphaned, 500):
            conn.execute(sa.delete(experiment_parts).where(experiment_parts.c.experiment_id.in_(chunk)))
            conn.execute(sa.delete(experiments).where(experiments.c.experiment_id.in_(chunk)))
        conn.execute(sa.delete(run_experiments).where(run_experiments.c.run_id.in_(run_ids)))
        conn.execute(sa.delete(run_reports).where(run_reports.c.run_id.in_(run_ids)))
        conn.execute(sa.delete(runs).where(runs.c.run_id.in_(run_ids)))
