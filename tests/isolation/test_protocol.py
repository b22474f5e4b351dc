"""The progress file between the worker and pytest (`isolation.protocol`)."""

from __future__ import annotations

from pathlib import Path

from pytest_llem.isolation.files import PROGRESS_FILE
from pytest_llem.isolation.protocol import ProgressReader, append_progress
from pytest_llem.progress import ProgressEvent


def test_the_reader_returns_each_appended_phase_once_in_order(tmp_path: Path):
    reader = ProgressReader(tmp_path)
    assert reader.read_new() == []  # no file yet
    first, second = ProgressEvent(phase="importing", at=1.0), ProgressEvent(phase="warm-up", at=2.0)
    append_progress(tmp_path, first)
    assert reader.read_new() == [first]
    append_progress(tmp_path, second)
    assert reader.read_new() == [second]
    assert reader.read_new() == []


def test_a_half_written_line_waits_and_a_bad_line_is_skipped(tmp_path: Path):
    reader = ProgressReader(tmp_path)
    event = ProgressEvent(phase="measuring", at=3.0, round=1, rounds=2)
    text = event.model_dump_json()
    with (tmp_path / PROGRESS_FILE).open("w") as f:
        f.write("not json\n" + text[:10])  # a child killed in the middle of a write
    assert reader.read_new() == []
    with (tmp_path / PROGRESS_FILE).open("a") as f:
        f.write(text[10:] + "\n")
    assert reader.read_new() == [event]
