"""The results table as the terminal prints it (`output.terminal`)."""

from __future__ import annotations

from sample_reports import entry

from pytest_llem.output.terminal import format_summary


def test_the_terminal_table_says_what_the_brackets_mean_only_when_they_appear():
    single = format_summary([entry("t.py::one", [3.0])])
    assert single[0].split() == ["test", "n", "duration_s", "tokens/s", "energy_j", "J/token", "status"]
    assert not any("interquartile" in line for line in single)
    several = format_summary([entry("t.py::many", [4.0, 5.0, 6.0])])
    assert any(line.startswith("n > 1: each figure is the median [interquartile range]") for line in several)
