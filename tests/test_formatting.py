"""How figures, tables and paths are written for people: significant digits, missing values,
columns, paths relative to the working directory."""

from __future__ import annotations

from pytest_llem.formatting import (
    MISSING,
    aligned,
    change_or_missing,
    figure_or_missing,
    markdown_cell,
    markdown_table,
    number,
    shown_path,
)
from pytest_llem.formatting import figure as fmt


def test_numbers_keep_three_significant_digits():
    assert [fmt(v) for v in (0.12, 0.00123, 250.0, 12345.6)] == ["0.120", "0.00123", "250", "12,346"]


def test_a_missing_value_is_a_dash_and_a_figure_has_no_trailing_point():
    assert figure_or_missing(None) == MISSING == "-"
    assert figure_or_missing(221.4) == "221"
    assert figure_or_missing(0.5) == "0.500"
    assert number(None, ".3f") == "-" and number(1 / 3, ".3f") == "0.333"


def test_a_change_is_signed_and_one_that_rounds_to_zero_is_never_negative():
    assert [change_or_missing(v) for v in (16.66, -4.0, 0.0, -0.04, 0.04)] == [
        "+16.7%",
        "-4.0%",
        "+0.0%",
        "+0.0%",
        "+0.0%",
    ]
    assert change_or_missing(None) == MISSING


def test_columns_are_padded_to_their_widest_cell_and_numbers_right_aligned():
    lines = aligned(("test", "J"), [("t::a", "1.50"), ("t::longer", "12.5")], right_aligned={1})
    assert lines == ["test          J", "t::a       1.50", "t::longer  12.5"]


def test_a_markdown_table_right_aligns_number_columns_and_escapes_pipes():
    rows = [(markdown_cell("t::x[a|b]"), "1.0")]
    assert markdown_table(("test", "J"), rows, right_aligned={1}) == [
        "| test | J |",
        "| --- | ---: |",
        "| t::x[a\\|b] | 1.0 |",
    ]


def test_a_path_is_shown_relative_to_the_working_directory_only_when_inside_it(tmp_path):
    assert shown_path(tmp_path / "out" / "report.html", cwd=tmp_path) == "out/report.html"
    assert shown_path(tmp_path / "elsewhere.json", cwd=tmp_path / "out") == str(tmp_path / "elsewhere.json")
