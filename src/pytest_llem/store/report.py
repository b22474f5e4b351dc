"""The session report: one per pytest session, in the results store and as a JSON file.

Saved (`save_run`: the store's `runs` row, and `<state_dir>/runs/<run_id>/report.json` for
people and CI) after every experiment (outcome `running`, so a session killed outright
still leaves what it measured) and once more at the end. Entries carry the worker that ran
them, so reports from several pytest-xdist workers merge into one with `merge_reports`.
"""

from __future__ import annotations

import json
import os
import platform
import socket
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

import sqlalchemy as sa
from pydantic import BaseModel, Field, ValidationError

from pytest_llem.base.atomic import (
    atomic_write_text,
    ensure_private_dir,
    read_regular_file,
    write_model_redacted,
)
from pytest_llem.base.redaction import redact_json, redact_json_compact, redact_json_document
from pytest_llem.fingerprints.machine import MachineInfo
from pytest_llem.fingerprints.source import SourceInfo
from pytest_llem.processes import process_is_alive
from pytest_llem.results import ExperimentResult, UtcDatetime
from pytest_llem.store.database import Store, as_utc, open_default_store, pack_text, upsert
from pytest_llem.store.names import PlainName, ProjectName, RunName
from pytest_llem.store.schema import run_experiments, run_reports, runs

REPORT_SCHEMA_VERSION = 1
SessionOutcome = Literal["running", "passed", "failed", "interrupted"]
# Merged outcome: the worst of the parts wins.
_OUTCOME_SEVERITY = {"passed": 0, "failed": 1, "running": 2, "interrupted": 3}


class HostInfo(BaseModel):
    hostname: str
    platform: str
    machine: str
    cpu_count: int | None
    python_implementation: str

    @classmethod
    def current(cls) -> HostInfo:
        return cls(
            hostname=socket.gethostname(),
            platform=platform.platform(),
            machine=platform.machine(),
            cpu_count=os.cpu_count(),
            python_implementation=platform.python_implementation(),
        )


class WorkSignature(BaseModel):
    """What an experiment asked the model to do, so that two runs compare like with like.

    Built in the pytest process by `gating.work.describe_work`; None fields were not known
    (a custom workload that does not record them, a report written before they existed).
    """

    prompt_digest: str | None = Field(default=None, description="digest of the prompts' text, in order")
    settings: dict[str, Any] = Field(
        default_factory=dict, description="decoding and prompt-set settings that change the work"
    )
    request_tokens_digest: str | None = Field(
        default=None, description="digest of each request's input and output token counts"
    )
    output_digest: str | None = Field(default=None, description="digest of the generated token ids")
    greedy: bool = True


class ReportEntry(BaseModel):
    """One experiment as the session saw it: what was asked, how it ended, what it measured."""

    nodeid: str
    case_key: str | None = Field(
        default=None, description="the case across runs, whatever the rootdir (see store.cases)"
    )
    experiment_id: PlainName | None = None
    config: dict[str, Any] | None = None
    config_hash: str | None = None
    model_fingerprint: str | None = Field(
        default=None, description="digest of the model's own files (a local model folder only)"
    )
    workload: str | None = None
    phase: str | None = None
    failed: bool = False
    error: str | None = None
    interrupted: bool = False
    test_failed: bool = Field(
        default=False, description="the test failed after the experiment ran (its own assertions, say)"
    )
    resumed: bool = False
    worker_id: str = "main"
    result: ExperimentResult | None = None
    work: WorkSignature | None = None

    @property
    def key(self) -> str:
        """What a comparison matches on: the case key, or the node id in reports written before it."""
        return self.case_key or self.nodeid

    @property
    def status(self) -> str:
        if self.interrupted:
            return "interrupted"
        if self.failed or self.result is None or self.test_failed:  # as pytest says of the test
            return "failed"
        return "resumed" if self.resumed else "passed"


class SessionReport(BaseModel):
    schema_version: int = REPORT_SCHEMA_VERSION
    run_id: PlainName
    name: RunName | None = Field(default=None, description="--llem-save NAME or --llem-autosave")
    project: ProjectName | None = Field(
        default=None,
        description="the project whose suite ran (store.projects); none: saved before runs recorded one",
    )
    machine: MachineInfo | None = Field(default=None, description="what the figures depend on")
    source: SourceInfo | None = Field(
        default=None,
        description="the git commit the suite's checkout was at (fingerprints.source); none: not a "
        "git checkout, git unavailable, or saved before runs recorded it",
    )
    started_at: UtcDatetime
    finished_at: UtcDatetime | None = None
    outcome: SessionOutcome = "running"
    #: A process's exit status; bounded so that a foreign file cannot overflow the store's column.
    exit_code: int | None = Field(default=None, ge=-(2**31), lt=2**31)
    plugin_version: str
    python_version: str = Field(default_factory=lambda: platform.python_version())
    host: HostInfo = Field(default_factory=HostInfo.current)
    stale_experiments: list[str] = Field(
        default_factory=list, description="experiments found orphaned at start and marked failed"
    )
    owner_pid: int | None = Field(default=None, description="the pytest process that wrote the run")
    owner_start_time: float | None = Field(default=None, description="its start time (a reused PID differs)")
    repaired: bool = Field(
        default=False,
        description="completed by a later session (`repair_run`): its own was killed, or lost its store "
        "before the end, so it never finished as one session",
    )
    experiments: list[ReportEntry] = Field(default_factory=list)

    @property
    def measured(self) -> list[ReportEntry]:
        """The experiments that came back with a result (a failed session's passing ones too)."""
        return [e for e in self.experiments if e.result is not None]

    @property
    def can_be_baseline(self) -> bool:
        """Finished, not interrupted, not repaired, and measured at least one experiment.

        A repaired run was completed by a later session (its controller was killed, or it lost
        its store before the end): whatever its workers said, the session as a whole never
        finished, so it is never what a later run is gated against."""
        return (
            self.finished_at is not None
            and self.outcome != "interrupted"
            and not self.repaired
            and bool(self.measured)
        )

    def owner_gone(self) -> bool:
        """True when the pytest process that wrote this run ran on this host and is gone (a
        run of another host, or of a version that did not record its process, is never judged)."""
        return (
            self.owner_pid is not None
            and self.host.hostname == socket.gethostname()
            and not process_is_alive(self.owner_pid, self.owner_start_time)
        )


def report_path(state_dir: Path, run_id: str, name: str = "report.json") -> Path:
    return state_dir / "runs" / run_id / name


REPORT_FILE = "report.json"


def write_report(
    report: SessionReport,
    state_dir: Path,
    root: Path | None = None,
    name: str = REPORT_FILE,
    store: Store | None = None,
) -> Path:
    """The report's file; a run's own report (not a worker's checkpoint) also goes to the
    store (`store`, or the state dir's own)."""
    path = report_path(state_dir, report.run_id, name)
    ensure_private_dir(path.parent.parent)
    ensure_private_dir(path.parent)
    redacted = redact_json(report.model_dump_json(), root=root)
    atomic_write_text(path, redacted)
    if name == REPORT_FILE:
        save_run(store or open_default_store(state_dir), report, root, redacted)
    return path


def save_run(
    store: Store, report: SessionReport, root: Path | None = None, redacted: str | None = None
) -> None:
    """The run's row, its compressed report and the experiments it refers to: one transaction.
    `redacted`: the report's redacted JSON, when the caller has it already."""
    _write_run_rows(store, [_run_rows(report, root, redacted)])


def save_runs(store: Store, reports: Iterable[SessionReport], root: Path | None = None) -> int:
    """Many runs in one transaction (an import of a state dir, a history built in bulk): each
    table gets one statement executed for all rows, each report is redacted and compressed
    once. Returns how many runs were saved."""
    rows = [_run_rows(report, root) for report in reports]
    _write_run_rows(store, rows)
    return len(rows)


#: A run as the store keeps it: its `runs` row, its `run_reports` row, its experiments' ids.
_RunRows = tuple[dict[str, Any], dict[str, Any], list[str]]


def _run_rows(report: SessionReport, root: Path | None, redacted: str | None = None) -> _RunRows:
    # The whole report is compressed as it was dumped (and redacted), never parsed again; the
    # summary, which queries read, is the report without its experiments.
    redacted = redacted or redact_json_compact(report.model_dump_json(), root=root)
    summary = redact_json_document(report.model_dump_json(exclude={"experiments"}), root=root)
    summary["machine_description"] = report.machine.describe() if report.machine else None
    row = dict(
        run_id=report.run_id,
        name=summary.get("name"),  # redacted, as the report is
        machine_id=report.machine.id if report.machine else None,
        project=summary.get("project"),  # redacted, as the report is
        git_commit=report.source.commit if report.source else None,
        started_at=as_utc(report.started_at),
        finished_at=as_utc(report.finished_at) if report.finished_at else None,
        outcome=report.outcome,
        exit_code=report.exit_code,
        can_be_baseline=report.can_be_baseline,
        experiment_count=len(report.experiments),
        measured_count=len(report.measured),
        failed_count=sum(1 for e in report.experiments if e.status in ("failed", "interrupted")),
        summary_json=json.dumps(summary, separators=(",", ":")),
    )
    experiment_ids = sorted({e.experiment_id for e in report.experiments if e.experiment_id})
    return row, {"run_id": report.run_id, "report_z": pack_text(redacted)}, experiment_ids


def _write_run_rows(store: Store, rows: list[_RunRows]) -> None:
    if not rows:
        return
    run_ids = [row["run_id"] for row, _, _ in rows]
    with store.write() as conn:
        upsert(conn, runs, [row for row, _, _ in rows])
        upsert(conn, run_reports, [blob for _, blob, _ in rows])
        for start in range(0, len(run_ids), 500):
            chunk = run_ids[start : start + 500]
            conn.execute(sa.delete(run_experiments).where(run_experiments.c.run_id.in_(chunk)))
        links = [{"run_id": row["run_id"], "experiment_id": eid} for row, _, ids in rows for eid in ids]
        if links:
            conn.execute(sa.insert(run_experiments), links)


def copy_report(report: SessionReport, destination: Path, root: Path | None = None) -> None:
    destination.parent.mkdir(parents=True, exist_ok=True)
    write_model_redacted(destination, report, root)


def load_report(path: Path) -> SessionReport:
    """Raises OSError (not a regular file, unreadable, too large) or ValueError (not a report)."""
    return SessionReport.model_validate_json(read_regular_file(path))


def invalid_reason(exc: Exception) -> str:
    """Why a document is not what it should be, in one line that never quotes its content
    (a file given by mistake, `/etc/passwd` say, must not be printed)."""
    if isinstance(exc, ValidationError):
        first = exc.errors(include_url=False, include_input=False, include_context=False)[0]
        where = ".".join(str(part) for part in first["loc"]) or "the document"
        count = exc.error_count()
        more = f" (and {count - 1} more problem(s))" if count > 1 else ""
        return f"{where}: {first['msg']}{more}"
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


WORKER_REPORT_GLOB = "report-*.json"


def read_worker_reports(run_dir: Path) -> dict[str, SessionReport]:
    """The xdist workers' checkpoints in a run folder, by worker id (unreadable ones left out)."""
    workers = {}
    for path in sorted(run_dir.glob(WORKER_REPORT_GLOB)):
        try:
            workers[path.name.removeprefix("report-").removesuffix(".json")] = load_report(path)
        except (OSError, ValueError):
            continue
    return workers


def take_in_workers(report: SessionReport, workers: Mapping[str, SessionReport]) -> None:
    """`report`'s own entries, then every worker's, in worker order; the same however often
    it is done, so the controller can take in a worker's checkpoint and later its final word."""
    own = [entry for entry in report.experiments if entry.worker_id == "main"]
    report.experiments = own + [entry for wid in sorted(workers) for entry in workers[wid].experiments]
    stale = {s for worker in workers.values() for s in worker.stale_experiments}
    report.stale_experiments = sorted(stale | set(report.stale_experiments))


def repair_run(run_dir: Path, root: Path | None = None) -> SessionReport | None:
    """Complete a run whose controller never merged its workers (killed, or interrupted
    before every worker handed over): `report.json` from the checkpoints. None if not needed."""
    workers = read_worker_reports(run_dir)
    if not workers:
        return None
    path = run_dir / "report.json"
    try:
        report = load_report(path)
    except FileNotFoundError:  # the controller died before its first checkpoint
        report = merge_reports(run_dir.name, list(workers.values()))
        report.experiments = []
    except (OSError, ValueError):
        return None  # not ours to overwrite; reported as skipped
    else:
        if report.outcome != "running":  # its controller finished: complete already
            return None
    before = [entry.model_dump() for entry in report.experiments]
    take_in_workers(report, workers)
    if path.exists() and [entry.model_dump() for entry in report.experiments] == before:
        return None
    report.repaired = True
    write_model_redacted(path, report, root)
    return report


def merge_reports(run_id: str, reports: list[SessionReport]) -> SessionReport:
    """One report from several workers' reports of the same session."""
    if not reports:
        raise ValueError("merge_reports needs at least one report")
    finished = [r.finished_at for r in reports if r.finished_at is not None]
    return reports[0].model_copy(
        update={
            "run_id": run_id,
            "started_at": min(r.started_at for r in reports),
            "finished_at": max(finished) if len(finished) == len(reports) else None,
            "outcome": max((r.outcome for r in reports), key=_OUTCOME_SEVERITY.__getitem__),
            "stale_experiments": sorted({s for r in reports for s in r.stale_experiments}),
            "experiments": [e for r in reports for e in r.experiments],
        }
    )
