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
    assert parse_limit("energy_per_token_j:0.002").absolute == 0.002


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
        ("tokens_per_s:-3%", r"limit '-3%' for tokens_per_s must not be negative"),
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
    assert parse_limit(" tokens_per_s : 2.5e1 ").absolute == 25.0
