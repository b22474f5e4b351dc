"""Bringing state dirs written before the results store into it, so that no earlier run is lost.

Before the store, each experiment's state was `<state_dir>/experiments/<id>.json` and each
run's report `<state_dir>/runs/<run_id>/report.json`. The first session (or `pytest-llem`
command) that opens a store for a state dir imports both, once (the store remembers which
state dirs it took in); `pytest-llem import PATH` does it on demand. Files that are not what
they claim (truncated, foreign, links, FIFOs, misnamed) are skipped with the reason, never
followed and never fatal.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy as sa
from pydantic import ValidationError

from pytest_llem.base.atomic import read_regular_file
from pytest_llem.results import utc_now
from pytest_llem.store.database import Store, StoreRefusedValue
from pytest_llem.store.experiments import ExperimentState, save_states
from pytest_llem.store.report import SessionReport, invalid_reason, load_report, save_runs
from pytest_llem.store.schema import store_info

_IMPORTED_KEY = "imported-json-state:"
#: Reports saved per transaction by an import: few transactions, a bounded amount in memory.
IMPORT_BATCH_RUNS = 100


@dataclass
class ImportSummary:
    experiments: int = 0
    runs: int = 0
    #: Files that were skipped, as `experiments/<name>` or `runs/<run>/report.json`, with the reason.
    skipped: dict[str, str] = field(default_factory=dict)


def import_json_state(state_dir: Path, store: Store, force: bool = False) -> dict[str, str]:
    """Import `state_dir`'s JSON states and reports into `store` unless it was done before
    (`force`: again). Returns the skipped files with the reason."""
    key = _IMPORTED_KEY + str(Path(state_dir).absolute())
    if not force and _already_imported(store, key):
        return {}
    summary = import_state_dir(state_dir, store)
    with store.write() as conn:
        conn.execute(sa.delete(store_info).where(store_info.c.key == key))
        conn.execute(
            sa.insert(store_info).values(
                key=key,
                value=json.dumps(
                    {"at": utc_now().isoformat(), "experiments": summary.experiments, "runs": summary.runs}
                ),
            )
        )
    return summary.skipped


def _already_imported(store: Store, key: str) -> bool:
    with store.read() as conn:
        return conn.execute(sa.select(store_info.c.key).where(store_info.c.key == key)).first() is not None


def import_state_dir(state_dir: Path, store: Store) -> ImportSummary:
    """Every readable JSON state and report of `state_dir`, saved into `store` (replacing rows of
    the same id: importing twice changes nothing)."""
    summary = ImportSummary()
    experiments_dir = Path(state_dir) / "experiments"
    if experiments_dir.is_dir():
        found = [read_state_file(path, summary.skipped) for path in sorted(experiments_dir.glob("*.json"))]
        imported = [state for state in found if state is not None]
        try:
            save_states(store, imported)
        except StoreRefusedValue:  # one of them holds a value the store cannot: each alone
            for state in list(imported):
                try:
                    save_states(store, [state])
                except StoreRefusedValue as exc:
                    imported.remove(state)
                    _skip(summary.skipped, f"experiments/{state.experiment_id}.json", f"not a state: {exc}")
        summary.experiments = len(imported)
    batch: dict[str, SessionReport] = {}
    for path in sorted((Path(state_dir) / "runs").glob("*/report.json")):
        key = f"runs/{path.parent.name}/report.json"
        try:
            if path.parent.is_symlink():
                raise OSError("its run folder is a symbolic link, not followed")
            batch[key] = load_report(path)
        except OSError as exc:
            _skip(summary.skipped, key, f"unreadable: {exc.strerror or exc}")
            continue
        except ValueError as exc:  # pydantic's ValidationError too
            _skip(summary.skipped, key, f"not a report: {invalid_reason(exc)}")
            continue
        if len(batch) == IMPORT_BATCH_RUNS:
            summary.runs += _save_batch(store, batch, summary.skipped)
            batch = {}
    summary.runs += _save_batch(store, batch, summary.skipped)
    return summary


def _save_batch(store: Store, batch: dict[str, SessionReport], skipped: dict[str, str]) -> int:
    """The reports in one transaction; if the store refuses a value of one (a number beyond
    its column), each alone, so that the bad one is skipped and named and the rest saved."""
    try:
        return save_runs(store, batch.values())
    except StoreRefusedValue:
        pass
    saved = 0
    for key, report in batch.items():
        try:
            saved += save_runs(store, [report])
        except StoreRefusedValue as exc:
            _skip(skipped, key, f"not a report the store can hold: {exc}")
    return saved


def read_state_file(path: Path, skipped: dict[str, str]) -> ExperimentState | None:
    """A state file as the JSON state dir kept it, or None (and the reason in `skipped`)."""
    key = f"experiments/{path.name}"
    try:
        raw = read_regular_file(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        _skip(skipped, key, f"unreadable: {exc.strerror or exc}")
        return None
    try:
        state = ExperimentState.model_validate_json(raw)
    except (ValidationError, json.JSONDecodeError, ValueError) as exc:
        _skip(skipped, key, f"not a state: {invalid_reason(exc)}")
        return None
    if f"{state.experiment_id}.json" != path.name:
        _skip(skipped, key, f"holds the state of another experiment ({state.experiment_id})")
        return None
    return state


def _skip(skipped: dict[str, str], key: str, reason: str) -> None:
    # Not logged here: the session and the command each name every skipped file once.
    skipped.setdefault(key, reason)
