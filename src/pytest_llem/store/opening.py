"""Opening the results store: the one way the session's `StateManager` and `RunHistory` and
the `pytest-llem` command open it.

The URL (`urls.store_url_from`, or the session's resolved `--llem-store`; None: the state
dir's own SQLite file) is opened once per process (`database.open_store`), and the state
dir's JSON states and reports of earlier releases are imported on first use (`legacy`).

Runs in the pytest process and the `pytest-llem` command.
"""

from __future__ import annotations

from pathlib import Path

from pytest_llem.store.database import Store, open_default_store
from pytest_llem.store.legacy import import_json_state


class OpensStoreOnUse:
    """Holds the results store of `state_dir` and opens it on first use, so that building a
    `StateManager` or a `RunHistory` touches no file. The subclass sets `state_dir`,
    `store_url`, `_store` (a store already open, or None) and `skipped`."""

    state_dir: Path
    store_url: str | None
    _store: Store | None
    skipped: dict[str, str]

    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = open_results_store(self.state_dir, self.store_url, self.skipped)
        return self._store


def open_results_store(state_dir: Path, url: str | None, skipped: dict[str, str]) -> Store:
    """The store for `state_dir` (see `database.open_default_store`), with the state dir's JSON
    files imported on first use; the files skipped are added to `skipped`."""
    store = open_default_store(state_dir, url)
    skipped.update(import_json_state(state_dir, store))
    return store
