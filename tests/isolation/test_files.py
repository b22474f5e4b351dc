"""The names of the files pytest and an experiment's child group exchange."""

from __future__ import annotations

from pathlib import Path

from pytest_llem.isolation.files import (
    OUTCOME_FILE,
    PROGRESS_FILE,
    REQUEST_FILE,
    WORKER_STATUS_FILE,
    server_log_path,
)


def test_a_servers_log_lies_under_the_state_dir_named_by_its_experiment():
    assert server_log_path(Path("/state"), "abc123") == Path("/state/servers/abc123.log")


def test_each_exchanged_file_has_its_own_name():
    names = [REQUEST_FILE, OUTCOME_FILE, WORKER_STATUS_FILE, PROGRESS_FILE]
    assert len(set(names)) == len(names)
