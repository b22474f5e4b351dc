"""Experiment states on disk: the phase machine, atomic persistence and stale-state recovery.

Layout: `<state_dir>/experiments/<experiment_id>.json`, one file per experiment. Phases move
`initialising -> measuring -> done` only; `failed` is a separate flag so a failure keeps the
phase it happened in. Writers in several processes (pytest, the child, a second session) may
touch the folder at once: every write is atomic, every read tolerates foreign files.
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
from datetime import datetime, timezone
from enum import Enum
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError

from pytest_llem.errors import InvalidStateTransitionError
from pytest_llem.processes import process_is_alive, process_start_time
from pytest_llem.results import ExperimentResult, UtcDatetime
from pytest_llem.store.atomic import ensure_private_dir, read_regular_file, write_model_redacted

log = logging.getLogger(__name__)

MAX_EXPERIMENT_ID_LENGTH = 128
_UNSAFE_ID_CHARS = re.compile(r"[^A-Za-z0-9._-]+")


class ExperimentPhase(str, Enum):
    INITIALISING = "initialising"
    MEASURING = "measuring"
    DONE = "done"


_NEXT_PHASE = {
    ExperimentPhase.INITIALISING: ExperimentPhase.MEASURING,
    ExperimentPhase.MEASURING: ExperimentPhase.DONE,
}


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


class ExperimentState(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    experiment_id: str
    phase: ExperimentPhase = ExperimentPhase.INITIALISING
    failed: bool = False
    config_hash: str
    error_message: str | None = None
    started_at: UtcDatetime
    last_updated: UtcDatetime
    #: The child's group leader; with its start time it tells a live process from a reused PID.
    subprocess_pid: int | None = None
    subprocess_start_time: float | None = None
    #: The pytest process that owns the experiment, identified the same way.
    owner_pid: int
    owner_start_time: float | None = None
    #: PIDs only mean something on the machine that owns them (state dirs can be shared).
    hostname: str
    result: ExperimentResult | None = None

    @property
    def active(self) -> bool:
        return not self.failed and self.phase is not ExperimentPhase.DONE

    def advance(self, to: ExperimentPhase) -> None:
        if self.failed:
            raise InvalidStateTransitionError(
                f"experiment {self.experiment_id} has failed; it cannot move to {to.value}"
            )
        if _NEXT_PHASE.get(self.phase) is not to:
            raise InvalidStateTransitionError(
                f"experiment {self.experiment_id}: {self.phase.value} -> {to.value} is not allowed "
                "(initialising -> measuring -> done)"
            )
        self.phase = to
        self.last_updated = utc_now()

    def mark_failed(self, error_message: str) -> None:
        self.failed = True
        self.error_message = error_message
        self.last_updated = utc_now()


def sanitise_experiment_id(raw: str) -> str:
    """Letters, digits, '.', '_' and '-' only, no leading dot, bounded length."""
    cleaned = _UNSAFE_ID_CHARS.sub("_", raw).lstrip(".")[:MAX_EXPERIMENT_ID_LENGTH]
    if not cleaned:
        raise ValueError(f"experiment id {raw!r} has no usable characters")
    return cleaned


class StateManager:
    """Reads and writes experiment states under one state dir."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = Path(state_dir)
        self.experiments_dir = self.state_dir / "experiments"
        #: Files that were skipped, by name, with the reason (each reported once).
        self.skipped: dict[str, str] = {}

    def ensure_dirs(self) -> None:
        ensure_private_dir(self.state_dir)
        ensure_private_dir(self.experiments_dir)

    def path_for(self, experiment_id: str) -> Path:
        if sanitise_experiment_id(experiment_id) != experiment_id:
            raise ValueError(f"experiment id {experiment_id!r} is not sanitised")
        path = (self.experiments_dir / f"{experiment_id}.json").resolve()
        if path.parent != self.experiments_dir.resolve():
            raise ValueError(f"experiment id {experiment_id!r} escapes the state dir")
        return path

    def create(
        self,
        experiment_id: str,
        config_hash: str,
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
        self.save(state)
        return state

    def save(self, state: ExperimentState) -> None:
        self.ensure_dirs()
        write_model_redacted(self.path_for(state.experiment_id), state)

    def load(self, experiment_id: str) -> ExperimentState | None:
        return self._read(self.path_for(experiment_id))

    def advance(self, experiment_id: str, to: ExperimentPhase) -> ExperimentState:
        state = self._require(experiment_id)
        state.advance(to)
        self.save(state)
        return state

    def record_subprocess(self, experiment_id: str, pid: int, start_time: float | None) -> ExperimentState:
        state = self._require(experiment_id)
        state.subprocess_pid = pid
        state.subprocess_start_time = start_time
        state.last_updated = utc_now()
        self.save(state)
        return state

    def mark_failed(self, experiment_id: str, error_message: str) -> ExperimentState:
        state = self._require(experiment_id)
        state.mark_failed(error_message)
        self.save(state)
        return state

    def all_states(self) -> list[ExperimentState]:
        if not self.experiments_dir.is_dir():
            return []
        states = []
        for path in sorted(self.experiments_dir.glob("*.json")):
            state = self._read(path)
            if state is not None:
                states.append(state)
        return states

    def find_by_config_hash(self, config_hash: str) -> list[ExperimentState]:
        """States with this hash, newest first."""
        matches = [s for s in self.all_states() if s.config_hash == config_hash]
        return sorted(matches, key=lambda s: s.last_updated, reverse=True)

    def find_resumable(self, config_hash: str) -> ExperimentState | None:
        for state in self.find_by_config_hash(config_hash):
            if state.phase is ExperimentPhase.DONE and not state.failed and state.result is not None:
                return state
        return None

    def held_by_another_live_session(self, state: ExperimentState) -> bool:
        """True if `state` is unfinished and owned by another pytest process still running here."""
        return (
            state.active
            and state.hostname == socket.gethostname()
            and state.owner_pid != os.getpid()
            and process_is_alive(state.owner_pid, state.owner_start_time)
        )

    def cleanup_stale(self) -> list[ExperimentState]:
        """Mark failed every unfinished state of this host whose owner and child are both gone."""
        hostname = socket.gethostname()
        marked = []
        for state in self.all_states():
            if not state.active or state.hostname != hostname:
                continue
            if process_is_alive(state.owner_pid, state.owner_start_time):
                continue
            if state.subprocess_pid is not None and process_is_alive(
                state.subprocess_pid, state.subprocess_start_time
            ):
                continue
            state.mark_failed(
                f"stale: its process is gone (left in phase {state.phase.value} by a session "
                "that ended without cleaning up)"
            )
            self.save(state)
            marked.append(state)
        return marked

    def _require(self, experiment_id: str) -> ExperimentState:
        state = self.load(experiment_id)
        if state is None:
            raise FileNotFoundError(f"no readable state for experiment {experiment_id!r}")
        return state

    def _read(self, path: Path) -> ExperimentState | None:
        try:
            raw = read_regular_file(path)
        except FileNotFoundError:
            return None
        except OSError as exc:
            self._skip(path, f"unreadable: {exc.strerror or exc}")
            return None
        try:
            state = ExperimentState.model_validate_json(raw)
        except (ValidationError, json.JSONDecodeError, ValueError) as exc:
            self._skip(path, f"not a state: {str(exc).splitlines()[0]}")
            return None
        if f"{state.experiment_id}.json" != path.name:
            self._skip(path, f"holds the state of another experiment ({state.experiment_id})")
            return None
        return state

    def _skip(self, path: Path, reason: str) -> None:
        key = f"experiments/{path.name}"
        if key not in self.skipped:
            self.skipped[key] = reason
            log.warning("pytest-llem: skipping state file %s: %s", key, reason)
