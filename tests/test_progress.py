"""Phases and their durations (`pytest_llem.progress`)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from pytest_llem.progress import ProgressEvent, add_durations, phase_durations


def test_each_phase_lasts_until_the_next_and_repeated_phases_add_up():
    events = [
        ProgressEvent(phase="importing", at=100.0),
        ProgressEvent(phase="loading model", at=101.0),
        ProgressEvent(phase="measuring", at=104.0, round=1, rounds=2),
        ProgressEvent(phase="measuring", at=105.5, round=2, rounds=2),
    ]
    durations = phase_durations(events, end=107.0)
    assert durations == {"importing": 1.0, "loading model": 3.0, "measuring": 3.0}
    assert list(durations) == ["importing", "loading model", "measuring"]
    assert phase_durations([], end=1.0) == {}


def test_durations_of_processes_add_up_phase_by_phase():
    assert add_durations([{"a": 1.0, "b": 2.0}, {"b": 0.5, "c": 1.0}]) == {"a": 1.0, "b": 2.5, "c": 1.0}


def test_describe_names_the_round_and_the_detail():
    assert ProgressEvent(phase="measuring", at=0, round=2, rounds=3).describe() == "measuring round 2/3"
    assert (
        ProgressEvent(phase="loading model", at=0, detail="2 ranks").describe() == "loading model (2 ranks)"
    )


def test_a_phase_name_must_be_short_and_not_empty():
    with pytest.raises(ValidationError):
        ProgressEvent(phase="", at=0)
    with pytest.raises(ValidationError):
        ProgressEvent(phase="x" * 61, at=0)
