"""One way to open the results store: the session's states and runs and the command share it."""

from __future__ import annotations

import json
from pathlib import Path

from pytest_llem.store.database import default_store_url
from pytest_llem.store.history import RunHistory
from pytest_llem.store.opening import open_results_store
from pytest_llem.store.state import StateManager


def test_no_url_opens_the_state_dirs_own_sqlite_file(state_dir: Path):
    store = open_results_store(state_dir, None, {})
    assert store.url == default_store_url(state_dir)
    assert store.sqlite_path is not None and store.sqlite_path.parent == state_dir


def test_the_state_dirs_json_files_are_imported_once_and_what_was_skipped_is_named(state_dir: Path):
    experiments = state_dir / "experiments"
    experiments.mkdir(parents=True)
    (experiments / "foreign.json").write_text(json.dumps({"hello": "world"}))
    skipped: dict[str, str] = {"earlier": "kept"}
    open_results_store(state_dir, None, skipped)
    assert skipped["earlier"] == "kept"
    assert skipped["experiments/foreign.json"].startswith("not a state: ")
    again: dict[str, str] = {}
    open_results_store(state_dir, None, again)
    assert again == {}  # the store remembers the state dir it took in


def test_states_runs_and_the_command_open_the_same_store(state_dir: Path, store_url):
    states, history = StateManager(state_dir, store_url), RunHistory(state_dir, store_url)
    assert states.store is history.store is open_results_store(state_dir, store_url, {})
