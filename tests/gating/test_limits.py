"""Limits: `METRIC:LIMIT` read as a relative or absolute amount, or one line naming the fix."""

from __future__ import annotations

import pytest

from pytest_llem.config import build_config
from pytest_llem.errors import ConfigError
from pytest_llem.gating.limits import parse_limit

# --- limits ----------------------------------------------------------------------------------


def test_limits_are_percentages_or_amounts_in_the_metrics_unit():
    relative = parse_limit("energy_per_token_j:5%")
    assert relative.relative == pytest.approx(0.05) and relative.text == "5%"
    absolute = parse_limit("tokens_per_s:50tokens/s")
    assert absolute.absolute == 50 and absolute.metric.higher_is_better
    assert parse_limit("energy_per_token_j:0.002 J").absolute == 0.002


@pytest.mark.parametrize(
    ("spec", "shown"),
    [
        ("tokens_per_s:50tokens/s", "50 tokens/s"),
        ("energy_per_token_j: 0.002 J", "0.002 J"),
        ("peak_memory_bytes:1e9B", "1e9 B"),
        ("goodput:0.05share", "0.05 share"),
        ("duration_s:10%", "10%"),
    ],
)
def test_a_limit_is_shown_with_its_unit(spec, shown):
    assert parse_limit(spec).text == shown


@pytest.mark.parametrize(
    ("source", "spec", "line"),
    [
        (
            "--llem-compare-fail",
            "tokens_per_s:10",
            "--llem-compare-fail tokens_per_s:10: a limit needs a unit: write tokens_per_s:10% (relative) "
            "or tokens_per_s:10tokens/s (absolute, in the metric's unit)",
        ),
        (
            "ini llem_compare_fail",
            "energy_per_token_j:0.5",
            "ini llem_compare_fail energy_per_token_j:0.5: a limit needs a unit: write "
            "energy_per_token_j:0.5% (relative) or energy_per_token_j:0.5J (absolute, in the metric's unit)",
        ),
        (
            "--fail",
            "duration_s:+10%",
            "--fail duration_s:+10%: a limit is unsigned: it is how much worse duration_s may get (higher is "
            "worse for it); write duration_s:10%",
        ),
        (
            "--llem-compare-fail",
            "tokens_per_s:-3tokens/s",
            "--llem-compare-fail tokens_per_s:-3tokens/s: a limit is unsigned: it is how much worse "
            "tokens_per_s may get (lower is worse for it); write tokens_per_s:3tokens/s",
        ),
    ],
)
def test_a_bare_or_signed_limit_is_one_line_naming_its_source_and_both_forms(source, spec, line):
    with pytest.raises(ConfigError) as raised:
        parse_limit(spec, source)
    assert str(raised.value) == line


def test_a_bare_marker_limit_names_the_field_and_both_forms_spelled_as_a_dict():
    for value in ("10", 10):
        with pytest.raises(ConfigError) as raised:
            build_config({"compare_fail": {"tokens_per_s": value}})
        assert str(raised.value) == (
            "compare_fail {'tokens_per_s': '10'}: a limit needs a unit: write {'tokens_per_s': '10%'} "
            "(relative) or {'tokens_per_s': '10tokens/s'} (absolute, in the metric's unit)"
        )


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            "energy_per_token_j",
            r"expected METRIC:LIMIT such as 'energy_per_token_j:5%', got 'energy_per_token_j'",
        ),
        ("joules:5%", r"unknown metric 'joules' \(known: energy_per_token_j, "),
        ("energy_per_token_j:5W", r"limit '5W': energy_per_token_j is measured in 'J', not 'W'"),
        ("energy_per_token_j:lots", r"limit 'lots' for energy_per_token_j is not a number"),
    ],
)
def test_bad_limits_are_one_line_naming_the_option_and_the_fix(spec, message):
    with pytest.raises(ConfigError, match=rf"^--llem-compare-fail: {message}"):
        parse_limit(spec)


def test_marker_limits_and_budgets_are_checked_when_the_config_is_built():
    with pytest.raises(ConfigError, match="compare_fail: limit '5W'"):
        build_config({"compare_fail": {"energy_per_token_j": "5W"}})
    with pytest.raises(ConfigError, match="budget: unknown metric 'speed'"):
        build_config({"budget": {"speed": 3}})


def test_a_limit_is_exceeded_only_by_a_change_in_the_worse_direction_beyond_it():
    relative = parse_limit("energy_per_token_j:5%")
    assert relative.exceeded_by(1.0, 1.06) and not relative.exceeded_by(1.0, 1.04)
    assert not relative.exceeded_by(1.0, 0.5)  # cheaper is never a regression
    assert not relative.exceeded_by(0.0, 1.0)  # no percentage of nothing
    absolute = parse_limit("tokens_per_s:50tokens/s")
    assert absolute.exceeded_by(1000.0, 940.0) and not absolute.exceeded_by(1000.0, 960.0)
    assert not absolute.exceeded_by(1000.0, 2000.0)


def test_a_limit_from_another_source_names_that_source():
    with pytest.raises(ConfigError, match=r"^llem_compare_fail: unknown metric 'speed'"):
        parse_limit("speed:5%", source="llem_compare_fail")
    assert parse_limit(" tokens_per_s : 2.5e1tokens/s ").absolute == 25.0
