"""Saved runs: naming them, identifying the machine they ran on, finding and cleaning them.

Every session's report stays in `<state_dir>/runs/<run_id>/report.json`. A run may carry a
name (`--llem-save NAME`, or `--llem-autosave`: git commit, time, dirty flag). Runs are
grouped by machine id (see `machine.py`).
"""

from __future__ import annotations

import shutil
import subprocess
from datetime import datetime, timezone
from pathlib import Path

from pydantic import ValidationError

from pytest_llem.errors import LlemError
from pytest_llem.store.report import SessionReport, load_report, repair_run


class UnknownRun(LlemError):
    """A run name, id or path that matches no saved run."""


def autosave_name(cwd: Path | None = None, now: datetime | None = None) -> str:
    """`<commit>-<UTC time>[-dirty]`, or `nogit-<time>` outside a git work tree."""
    stamp = f"{now or datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}"
    try:
        commit = _git(cwd, "rev-parse", "--short=10", "HEAD")
        dirty = bool(_git(cwd, "status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.CalledProcessError):
        return f"nogit-{stamp}"
    return f"{commit}-{stamp}" + ("-dirty" if dirty else "")


def _git(cwd: Path | None, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True).stdout.strip()


class RunHistory:
    """The saved runs of one state dir."""

    def __init__(self, state_dir: Path) -> None:
        self.runs_dir = state_dir / "runs"
        #: Reports that were skipped, as `runs/<run>/report.json`, with the reason.
        self.skipped: dict[str, str] = {}

    def runs(self) -> list[SessionReport]:
        """Every readable run, oldest first (unreadable ones are skipped and noted in `skipped`)."""
        reports = []
        self.repair()
        for path in sorted(self.runs_dir.glob("*/report.json")):
            key = f"runs/{path.parent.name}/report.json"
            try:
                if path.parent.is_symlink():
                    raise OSError("its run folder is a symbolic link, not followed")
                reports.append(load_report(path))
            except OSError as exc:
                self.skipped[key] = f"unreadable: {exc.strerror or exc}"
            except (ValueError, ValidationError) as exc:
                self.skipped[key] = f"not a report: {str(exc).splitlines()[0]}"
        return sorted(reports, key=lambda r: r.started_at)

    def repair(self, exclude_run_id: str | None = None) -> list[str]:
        """Write `report.json` for runs left half-merged (an xdist controller killed or
        interrupted); return their ids. A state dir that cannot be written is left as it is."""
        repaired = []
        if not self.runs_dir.is_dir():
            return repaired
        for run_dir in sorted(self.runs_dir.iterdir()):
            if run_dir.name == exclude_run_id or run_dir.is_symlink() or not run_dir.is_dir():
                continue
            try:
                if repair_run(run_dir) is not None:
                    repaired.append(run_dir.name)
            except OSError:
                continue
        return repaired

    def skipped_after(self, run_id: str | None) -> list[str]:
        """Skipped reports whose run folder sorts after `run_id` (run ids start with the time)."""
        return [
            f"{key} ({reason})"
            for key, reason in sorted(self.skipped.items())
            if run_id is None or key.split("/")[1] > run_id
        ]

    def find(self, ref: str) -> SessionReport:
        """A run by name (the newest of that name), run id, or path to a report file."""
        path = Path(ref).expanduser()
        if path.suffix == ".json" or path.is_file():
            try:
                return load_report(path)
            except (OSError, ValueError, ValidationError) as exc:
                raise UnknownRun(f"cannot read report {ref!r}: {exc}") from None
        runs = self.runs()
        for run in reversed(runs):
            if ref in (run.name, run.run_id):
                return run
        known = ", ".join(r.name or r.run_id for r in runs[-5:]) or "none saved yet"
        raise UnknownRun(f"no saved run named {ref!r} (latest: {known}); `pytest-llem list` shows them all")

    def latest(self, machine_id: str | None, exclude_run_id: str | None = None) -> SessionReport | None:
        """The default baseline: the newest run on `machine_id` (any machine when None), other than
        `exclude_run_id`, that can be one (`SessionReport.can_be_baseline`)."""
        for run in reversed(self.runs()):
            if run.run_id == exclude_run_id or not run.can_be_baseline:
                continue
            if machine_id is None or (run.machine is not None and run.machine.id == machine_id):
                return run
        return None

    def clean(self, older_than: datetime, keep_named: bool = True) -> list[SessionReport]:
        """Delete runs started before `older_than` (named ones kept unless asked); return them."""
        removed = []
        for run in self.runs():
            if run.started_at < older_than and not (keep_named and run.name):
                shutil.rmtree(self.runs_dir / run.run_id, ignore_errors=True)
                removed.append(run)
        return removed
