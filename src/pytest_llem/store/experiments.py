"""An experiment's state: its phases, the model, and the rows the results store keeps it as.

Phases move `initialising -> measuring -> done` only; `failed` is a separate flag so a
failure keeps the phase it happened in. A state is one row of the `experiments` table (the
figures queries use as columns, the rest of the result as JSON) and, apart and compressed,
its result's power timelines and raw latencies (`split_bulky`). `StateManager` (`state`)
reads and moves states in the store; `legacy` imports the JSON states of earlier releases
through `save_states`.

Runs in the pytest process and the `pytest-llem` command.
"""

from __future__ import annotations

import json
import re
from enum import Enum
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict

from pytest_llem.base.redaction import redact_json_document
from pytest_llem.errors import InvalidStateTransitionError
from pytest_llem.results import ExperimentResult, UtcDatetime, utc_now
from pytest_llem.store.database import Store, as_utc, pack, upsert
from pytest_llem.store.names import MAX_ID_LENGTH, PlainName, is_plain_name
from pytest_llem.store.schema import experiment_parts, experiments

MAX_EXPERIMENT_ID_LENGTH = MAX_ID_LENGTH
_UNSAFE_ID_CHARS = re.compile(r"[^A-Za-z0-9._-]+")


class ExperimentPhase(str, Enum):
    INITIALISING = "initialising"
    MEASURING = "measuring"
    DONE = "done"


_NEXT_PHASE = {
    ExperimentPhase.INITIALISING: ExperimentPhase.MEASURING,
    ExperimentPhase.MEASURING: ExperimentPhase.DONE,
}


class ExperimentState(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    experiment_id: PlainName
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


#: Keys whose values are the bulky parts of a result: kept apart, compressed.
BULKY_KEYS = frozenset(
    {"timeline", "batch_latencies_s", "first_token_latencies_s", "inter_token_latencies_s"}
)


def split_bulky(document: Any) -> tuple[Any, list[list[Any]]]:
    """`document` without its bulky lists, and those lists as `[path, value]` pairs."""
    parts: list[list[Any]] = []

    def walk(node: Any, path: list[Any]) -> Any:
        if isinstance(node, dict):
            light = {}
            for key, value in node.items():
                if key in BULKY_KEYS and isinstance(value, list) and value:
                    parts.append([[*path, key], value])
                    light[key] = []
                else:
                    light[key] = walk(value, [*path, key])
            return light
        if isinstance(node, list):
            return [walk(item, [*path, index]) for index, item in enumerate(node)]
        return node

    return walk(document, []), parts


def join_bulky(document: Any, parts: list[list[Any]]) -> Any:
    """The inverse of `split_bulky`: put each part back where it came from."""
    for path, value in parts:
        node = document
        for step in path[:-1]:
            node = node[step]
        node[path[-1]] = value
    return document


#: A state as the store keeps it: its `experiments` row and its compressed bulky parts (or None).
StateRows = tuple[dict[str, Any], bytes | None]


def state_rows(
    state: ExperimentState, *, run_id: str | None, nodeid: str | None, case_key: str | None
) -> StateRows:
    # Redacted as every persisted document is (a workload's error may quote a token).
    document = redact_json_document(state.model_dump_json())
    result = document.pop("result")
    light, parts = split_bulky(result) if result is not None else (None, [])
    figures = state.result
    row = dict(
        experiment_id=state.experiment_id,
        run_id=run_id,
        nodeid=nodeid,
        case_key=case_key,
        config_hash=state.config_hash,
        phase=state.phase.value,
        failed=state.failed,
        active=state.active,
        error_message=document["error_message"],
        started_at=as_utc(state.started_at),
        last_updated=as_utc(state.last_updated),
        hostname=state.hostname,
        owner_pid=state.owner_pid,
        owner_start_time=state.owner_start_time,
        subprocess_pid=state.subprocess_pid,
        subprocess_start_time=state.subprocess_start_time,
        duration_s=figures.duration_s if figures else None,
        output_tokens=figures.output_tokens if figures else None,
        energy_j=figures.energy_j if figures else None,
        energy_per_token_j=figures.energy_per_token_j if figures else None,
        tokens_per_s=figures.tokens_per_s if figures else None,
        result_json=None if light is None else json.dumps(light, separators=(",", ":")),
    )
    return row, pack(parts) if parts else None


def write_state_rows(conn: sa.Connection, rows: list[StateRows]) -> None:
    upsert(conn, experiments, [row for row, _ in rows], keep_if_null=("run_id", "nodeid", "case_key"))
    upsert(
        conn,
        experiment_parts,
        [{"experiment_id": row["experiment_id"], "parts_z": blob} for row, blob in rows if blob is not None],
    )
    partless = [row["experiment_id"] for row, blob in rows if blob is None]
    for start in range(0, len(partless), 500):
        conn.execute(
            sa.delete(experiment_parts).where(
                experiment_parts.c.experiment_id.in_(partless[start : start + 500])
            )
        )


def save_states(store: Store, states: list[ExperimentState], *, run_id: str | None = None) -> None:
    """Write many states in one transaction (an import, a history built in bulk): each
    table gets one statement executed for all rows, each state is redacted and its bulky
    parts compressed once."""
    for state in states:
        if not is_plain_name(state.experiment_id):
            raise ValueError(f"experiment id {state.experiment_id!r} is not sanitised")
    rows = [state_rows(state, run_id=run_id, nodeid=None, case_key=None) for state in states]
    with store.write() as conn:
        write_state_rows(conn, rows)
