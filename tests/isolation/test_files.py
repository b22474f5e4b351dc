"""The names of the files pytest and an experiment's child group exchange."""

from __future__ import annotations

from pytest_llem.isolation.files import (
    OUTCOME_FILE,
    PROGRESS_FILE,
    REQUEST_FILE,
    WORKER_STATUS_FILE,
)


def test_each_exchanged_file_has_its_own_name():
    names = [REQUEST_FILE, OUTCOME_FILE, WORKER_STATUS_FILE, PROGRESS_FILE]
    assert len(set(names)) == len(names)
