"""Identifiers from outside: plain names for ids, run names, run folders, printable output."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import BaseModel, ValidationError

from pytest_llem.store.names import (
    MAX_ID_LENGTH,
    MAX_NAME_LENGTH,
    PlainName,
    RunName,
    check_plain_name,
    check_run_name,
    is_plain_name,
    printable,
    run_folder,
    skipped_line,
)


@pytest.mark.parametrize("value", ["20260101T000000-ab12", "a", "A.b_c-d", "_x", "-x", "x" * MAX_ID_LENGTH])
def test_plain_names_are_accepted(value: str):
    assert is_plain_name(value)
    assert check_plain_name(value) == value


@pytest.mark.parametrize(
    "value",
    ["", ".", "..", ".hidden", "a/b", "../up", "a b", "a\nb", "é", "x" * (MAX_ID_LENGTH + 1), None, 7],
)
def test_anything_that_could_leave_its_folder_is_not_a_plain_name(value: object):
    assert not is_plain_name(value)


def test_a_refused_id_names_the_field_and_the_rule_with_control_characters_escaped():
    with pytest.raises(ValueError) as caught:
        check_plain_name("../\x1b[2Jrun", "run_id")
    message = str(caught.value)
    assert message.startswith("run_id '../\\x1b[2Jrun' is not a plain name: ")
    assert f"at most {MAX_ID_LENGTH} characters" in message
    assert "\x1b" not in message and "\n" not in message


def test_a_long_refused_id_is_quoted_only_in_part():
    with pytest.raises(ValueError) as caught:
        check_plain_name("/" * 1000)
    assert str(caught.value).count("/") == 80


@pytest.mark.parametrize("value", ["main", "nightly run 3", "v1.2 (rc)", "x" * MAX_NAME_LENGTH])
def test_run_names_may_hold_spaces_and_punctuation(value: str):
    assert check_run_name(value) == value


@pytest.mark.parametrize(
    "value",
    ["", "   ", "a/b", "report.json", "bell\x07", "two\nlines", "\x1b[31mred", "x" * (MAX_NAME_LENGTH + 1)],
)
def test_a_run_name_is_never_blank_a_path_a_report_file_or_a_control_sequence(value: str):
    with pytest.raises(ValueError, match=r"^--llem-save '.*' cannot name a run: no '/'"):
        check_run_name(value, "--llem-save")


def test_the_pydantic_field_types_check_what_a_file_or_row_holds():
    class Row(BaseModel):
        run_id: PlainName
        name: RunName

    assert Row(run_id="r1", name="main").run_id == "r1"
    with pytest.raises(ValidationError, match="id '..' is not a plain name"):
        Row(run_id="..", name="main")
    with pytest.raises(ValidationError, match="cannot name a run"):
        Row(run_id="r1", name="a/b")


def test_printable_escapes_control_characters_and_keeps_the_rest():
    assert printable("plain text, ünïcode ✓") == "plain text, ünïcode ✓"
    assert printable("\x1b[2J\nend\x7f\x9b") == "\\x1b[2J\\x0aend\\x7f\\x9b"


def test_run_folder_is_the_plain_named_folder_directly_inside_runs(tmp_path: Path):
    runs = tmp_path / "runs"
    (runs / "r1").mkdir(parents=True)
    assert run_folder(runs, "r1") == runs / "r1"
    assert run_folder(runs, "not-made-yet") == runs / "not-made-yet"  # checked before it exists too
    assert run_folder(runs, "..") is None
    assert run_folder(runs, "r1/../../etc") is None


def test_run_folder_refuses_a_symbolic_link_out_of_runs(tmp_path: Path):
    runs = tmp_path / "runs"
    runs.mkdir()
    outside = tmp_path / "precious"
    outside.mkdir()
    os.symlink(outside, runs / "r2")
    assert run_folder(runs, "r2") is None
    assert outside.is_dir()


def test_run_folder_follows_a_linked_runs_dir_to_its_own_children(tmp_path: Path):
    real = tmp_path / "real-runs"
    (real / "r3").mkdir(parents=True)
    linked = tmp_path / "runs"
    os.symlink(real, linked)
    # The runs dir itself may be a link (a state dir on another disk): its children are still inside.
    assert run_folder(linked, "r3") == linked / "r3"


def test_skipped_line_says_where_the_skipped_thing_was_and_escapes_both_parts():
    assert skipped_line("runs/r1/report.json", "not a report") == (
        "skipped runs/r1/report.json in the state dir: not a report"
    )
    assert (
        skipped_line("the store's row of run r1", "bad\njson")
        == "skipped the store's row of run r1: bad\\x0ajson"
    )
