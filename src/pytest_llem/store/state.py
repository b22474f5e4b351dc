"""Experiment states kept in the results store: their transitions, resume and stale-state recovery.

One row per experiment in the store's `experiments` table (the state and its rows:
`store.experiments`). Every transition is one transaction, so sessions and xdist workers
writing the same store at once never see half of one. Only the pytest process writes
states: it records the child's group leader when it starts it, and the measuring phase when
the child reports its first measured window.

Stale cleanup reads only unfinished experiments of this host (an index), resume finds the
newest finished result by config hash (an index): neither grows with the history. A result's
power timelines and raw latencies are kept apart, compressed (`split_bulky`), and read only
when the result itself is.

Runs in the pytest process and the `pytest-llem` command.
"""

from __future__ import annotations

import errno
import json
import os
import socket
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from pytest_llem.base.atomic import DiskFull, ensure_private_dir, release_reserve
from pytest_llem.processes import process_is_alive, process_start_time
from pytest_llem.results import ExperimentResult, utc_now
from pytest_llem.store.database import CorruptRow, Store, StoreFull, as_utc, unpack
from pytest_llem.store.experiments import (
    ExperimentPhase,
    ExperimentState,
    join_bulky,
    save_states,
    state_rows,
    write_state_rows,
)
from pytest_llem.store.names import is_plain_name, printable
from pytest_llem.store.opening import OpensStoreOnUse
from pytest_llem.store.report import SessionReport, invalid_reason
from pytest_llem.store.schema import experiment_parts, experiments

#: How the message of a state failed by stale cleanup begins.
STALE_PREFIX = "stale:"
#: How an experiment skipped for its row in the store is named.
STORE_ROW_OF_EXPERIMENT = "the store's row of experiment "
#: How many unreadable rows a resume lookup passes over (each named) before it gives up.
_UNREADABLE_ROWS_PASSED = 20


class StateManager(OpensStoreOnUse):
    """Reads and writes the experiment states of one store (by default, the state dir's own)."""

    def __init__(self, state_dir: Path, store_url: str | None = None, store: Store | None = None) -> None:
        self.state_dir = Path(state_dir)
        self.store_url = store_url
        self._store = store
        #: Where states lived before the store: read once, by `store.legacy`.
        self.experiments_dir = self.state_dir / "experiments"
        #: Files (`experiments/<name>`) and store rows (`the store's row of experiment <id>`)
        #: that were skipped, with the reason (each reported once).
        self.skipped: dict[str, str] = {}

    def ensure_dirs(self) -> None:
        """The state dir (reports and logs still go there) and the store, opened."""
        ensure_private_dir(self.state_dir)
        _ = self.store

    def create(
        self,
        experiment_id: str,
        config_hash: str,
        *,
        run_id: str | None = None,
        nodeid: str | None = None,
        case_key: str | None = None,
    ) -> ExperimentState:
        now = utc_now()
        state = ExperimentState(
            experiment_id=experiment_id,
            config_hash=config_hash,
            started_at=now,
            last_updated=now,
            hostname=socket.gethostname(),
            owner_pid=os.getpid(),
            owner_start_time=process_start_time(os.getpid()),
        )
        self.save(state, run_id=run_id, nodeid=nodeid, case_key=case_key)
        return state

    def save(
        self,
        state: ExperimentState,
        *,
        run_id: str | None = None,
        nodeid: str | None = None,
        case_key: str | None = None,
    ) -> None:
        """Write the whole state in one transaction (its run and test kept unless given).

        On a full disk the state dir's reserve is given up and the write tried once more, so
        a finished result still lands; either way `DiskFull` says so (the session stops)."""
        if not is_plain_name(state.experiment_id):
            raise ValueError(f"experiment id {state.experiment_id!r} is not sanitised")

        def write() -> None:
            with self.store.write() as conn:
                self._put(conn, state, run_id=run_id, nodeid=nodeid, case_key=case_key)

        try:
            write()
        except StoreFull:
            database_file = self.store.sqlite_path
            if database_file is None:
                raise
            written = False
            if release_reserve(database_file.parent):
                try:
                    write()
                    written = True
                except StoreFull:
                    pass
            raise DiskFull(database_file, os.strerror(errno.ENOSPC), written) from None

    def save_all(self, states: list[ExperimentState], *, run_id: str | None = None) -> None:
        """Write many states in one transaction (an import, a history built in bulk): each
        table gets one statement executed for all rows, each state is redacted and its bulky
        parts compressed once."""
        save_states(self.store, states, run_id=run_id)

    def load(self, experiment_id: str, with_parts: bool = True) -> ExperimentState | None:
        with self.store.read() as conn:
            return self._get(conn, experiment_id, with_parts)

    def advance(self, experiment_id: str, to: ExperimentPhase) -> ExperimentState:
        with self.store.write() as conn:
            state = self._require(conn, experiment_id)
            state.advance(to)
            self._update(conn, state, phase=state.phase.value, active=state.active)
        return state

    def record_subprocess(self, experiment_id: str, pid: int, start_time: float | None) -> ExperimentState:
        with self.store.write() as conn:
            state = self._require(conn, experiment_id)
            state.subprocess_pid = pid
            state.subprocess_start_time = start_time
            state.last_updated = utc_now()
            self._update(conn, state, subprocess_pid=pid, subprocess_start_time=start_time)
        return state

    def mark_failed(self, experiment_id: str, error_message: str) -> ExperimentState:
        with self.store.write() as conn:
            state = self._require(conn, experiment_id)
            state.mark_failed(error_message)
            self._update(conn, state, failed=True, active=False, error_message=state.error_message)
        return state

    def all_states(self) -> list[ExperimentState]:
        with self.store.read() as conn:
            rows = conn.execute(sa.select(experiments).order_by(experiments.c.experiment_id)).all()
            return [self._from_row(conn, row, with_parts=True) for row in rows]

    def find_by_config_hash(self, config_hash: str) -> list[ExperimentState]:
        """States with this hash, newest first (without their results' bulky parts)."""
        query = (
            sa.select(experiments)
            .where(experiments.c.config_hash == config_hash)
            .order_by(experiments.c.last_updated.desc())
        )
        with self.store.read() as conn:
            return [self._from_row(conn, row, with_parts=False) for row in conn.execute(query)]

    def find_resumable(self, config_hash: str) -> ExperimentState | None:
        """The newest finished, unfailed state with this hash and a result, whole; a row that
        cannot be read is not resumable (skipped, and named in `skipped`)."""
        query = (
            sa.select(experiments)
            .where(
                experiments.c.config_hash == config_hash,
                experiments.c.phase == ExperimentPhase.DONE.value,
                experiments.c.failed.is_(False),
                experiments.c.result_json.is_not(None),
            )
            .order_by(experiments.c.last_updated.desc())
            .limit(_UNREADABLE_ROWS_PASSED)
        )
        with self.store.read() as conn:
            for row in conn.execute(query).all():
                state = self._readable(conn, row, with_parts=True, why="not resumable")
                if state is not None:
                    return state
        return None

    def _readable(
        self, conn: sa.Connection, row: sa.Row[Any], with_parts: bool, why: str
    ) -> ExperimentState | None:
        try:
            return self._from_row(conn, row, with_parts)
        except CorruptRow as exc:
            self.skipped.setdefault(f"{STORE_ROW_OF_EXPERIMENT}{row.experiment_id}", f"{why}: {exc}")
            return None

    def restore_done(self, report: SessionReport) -> list[str]:
        """Bring to `done` the states of `report`'s measured experiments that its session could
        not (the store was busy or down when they finished; the report file kept the results),
        so that `--llem-resume` finds them. Only a state still unfinished, or failed as stale,
        with the same config hash, and not held by a live session, is changed; returns their ids."""
        restored = []
        for entry in report.experiments:
            if entry.result is None or entry.resumed or entry.experiment_id is None:
                continue
            try:
                state = self.load(entry.experiment_id)
            except CorruptRow as exc:
                self.skipped.setdefault(
                    f"{STORE_ROW_OF_EXPERIMENT}{entry.experiment_id}", f"left alone: {exc}"
                )
                continue
            if state is None or state.config_hash != entry.config_hash:
                continue
            if self.held_by_another_live_session(state):
                continue
            stale = state.failed and (state.error_message or "").startswith(STALE_PREFIX)
            if state.phase is ExperimentPhase.DONE or (state.failed and not stale):
                continue
            state.phase, state.failed, state.error_message = ExperimentPhase.DONE, False, None
            state.result = entry.result
            state.last_updated = utc_now()
            self.save(state)
            restored.append(state.experiment_id)
        return restored

    def held_by_another_live_session(self, state: ExperimentState) -> bool:
        """True if `state` is unfinished and owned by another pytest process still running here."""
        return (
            state.active
            and state.hostname == socket.gethostname()
            and state.owner_pid != os.getpid()
            and process_is_alive(state.owner_pid, state.owner_start_time)
        )

    def unfinished_here(self) -> list[ExperimentState]:
        """Unfinished states of this host (an indexed query: finished ones are never read)."""
        query = sa.select(experiments).where(
            experiments.c.active.is_(True), experiments.c.hostname == socket.gethostname()
        )
        with self.store.read() as conn:
            found = [self._readable(conn, row, False, "left alone") for row in conn.execute(query).all()]
        return [state for state in found if state is not None]

    def cleanup_stale(self) -> list[ExperimentState]:
        """Mark failed every unfinished state of this host whose owner and child are both gone."""
        marked = []
        for state in self.unfinished_here():
            if process_is_alive(state.owner_pid, state.owner_start_time):
                continue
            if state.subprocess_pid is not None and process_is_alive(
                state.subprocess_pid, state.subprocess_start_time
            ):
                continue
            state.mark_failed(
                f"{STALE_PREFIX} its process is gone (left in phase {state.phase.value} by a session "
                "that ended without cleaning up)"
            )
            with self.store.write() as conn:
                # Only if it is still the same unfinished state: another session may have won.
                changed = conn.execute(
                    sa.update(experiments)
                    .where(
                        experiments.c.experiment_id == state.experiment_id,
                        experiments.c.active.is_(True),
                        experiments.c.owner_pid == state.owner_pid,
                    )
                    .values(
                        failed=True,
                        active=False,
                        error_message=state.error_message,
                        last_updated=as_utc(state.last_updated),
                    )
                ).rowcount
            if changed:
                marked.append(state)
        return marked

    # -- rows ----------------------------------------------------------------------------------

    def _require(self, conn: sa.Connection, experiment_id: str) -> ExperimentState:
        state = self._get(conn, experiment_id, with_parts=True)
        if state is None:
            raise FileNotFoundError(f"no state for experiment {experiment_id!r} in the store")
        return state

    def _get(self, conn: sa.Connection, experiment_id: str, with_parts: bool) -> ExperimentState | None:
        row = conn.execute(sa.select(experiments).where(experiments.c.experiment_id == experiment_id)).first()
        return None if row is None else self._from_row(conn, row, with_parts)

    def _from_row(self, conn: sa.Connection, row: sa.Row[Any], with_parts: bool) -> ExperimentState:
        """The state a row holds; `CorruptRow` (one line, never the row's content) if it
        holds something this version cannot read."""
        try:
            return self._state_of(conn, row, with_parts)
        except (ValueError, TypeError, KeyError, IndexError) as exc:  # ValidationError, CorruptRow too
            reason = invalid_reason(exc) if isinstance(exc, ValueError) else repr(exc)
            which = printable(str(row.experiment_id))
            raise CorruptRow(f"experiment {which!r} in the store: {reason}") from None

    def _state_of(self, conn: sa.Connection, row: sa.Row[Any], with_parts: bool) -> ExperimentState:
        result = None
        if row.result_json is not None:
            document = json.loads(row.result_json)
            if with_parts:
                blob = conn.execute(
                    sa.select(experiment_parts.c.parts_z).where(
                        experiment_parts.c.experiment_id == row.experiment_id
                    )
                ).scalar()
                if blob is not None:
                    document = join_bulky(document, unpack(blob))
            result = ExperimentResult.model_validate(document)
        return ExperimentState(
            experiment_id=row.experiment_id,
            phase=ExperimentPhase(row.phase),
            failed=row.failed,
            config_hash=row.config_hash,
            error_message=row.error_message,
            started_at=as_utc(row.started_at),
            last_updated=as_utc(row.last_updated),
            subprocess_pid=row.subprocess_pid,
            subprocess_start_time=row.subprocess_start_time,
            owner_pid=row.owner_pid,
            owner_start_time=row.owner_start_time,
            hostname=row.hostname,
            result=result,
        )

    def _update(self, conn: sa.Connection, state: ExperimentState, **values: Any) -> None:
        conn.execute(
            sa.update(experiments)
            .where(experiments.c.experiment_id == state.experiment_id)
            .values(last_updated=as_utc(state.last_updated), **values)
        )

    def _put(
        self,
        conn: sa.Connection,
        state: ExperimentState,
        *,
        run_id: str | None,
        nodeid: str | None,
        case_key: str | None,
    ) -> None:
        write_state_rows(conn, [state_rows(state, run_id=run_id, nodeid=nodeid, case_key=case_key)])
