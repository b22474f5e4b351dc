"""The checks a setting and a case field share: each value's one reading and one sentence."""

from __future__ import annotations

import pytest

from pytest_llem.values import meter_name, number_of_seconds, whole_number


@pytest.mark.parametrize(("value", "expected"), [("3", 3), (" 3 ", 3), (3, 3), (3.0, 3), ("0", 0)])
def test_a_whole_number_comes_from_digits_an_int_or_a_whole_float(value: object, expected: int):
    assert whole_number(value) == expected


@pytest.mark.parametrize("value", ["3.0", "three", 2.5, True, None, -1])
def test_anything_else_is_not_a_whole_number(value: object):
    with pytest.raises(ValueError, match=r"^(expected a whole number|must be at least 0)$"):
        whole_number(value)


def test_seconds_are_finite_and_bounded_below():
    assert number_of_seconds("0") == 0.0
    assert number_of_seconds(2, minimum=1) == 2.0
    with pytest.raises(ValueError, match=r"^must be more than 0 seconds$"):
        number_of_seconds(0, allow_equal=False)
    with pytest.raises(ValueError, match=r"^expected a number of seconds$"):
        number_of_seconds(None)


def test_a_meter_is_one_of_the_known_names():
    assert meter_name("nvml") == "nvml"
    with pytest.raises(ValueError, match=r"^unknown energy meter; choose one of auto, nvml, rapl, zeus"):
        meter_name("nvlm")
