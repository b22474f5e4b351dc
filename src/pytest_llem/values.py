"""The values a session setting and an experiment's field share, each checked by one function.

`settings` reads `--llem-timeout`, `--llem-rounds`, ... through these, and
`config.ExperimentConfig` reads the `timeout`, `rounds`, ... fields through the same ones, so a
value means the same and is refused in the same words on both sides. Each takes the raw value
(text from an option or ini key, or a marker field's value) and raises ValueError with the
sentence to show after the option's or field's name; each caller adds where the value came
from and the value itself.

Also the names of the case fields that are not measurement settings (`NON_MEASUREMENT_FIELDS`),
which the config hash and the report's charts both read.

Runs in the pytest process, the CLI and the experiment's child. Imported by `settings` at
pytest start-up, `--llem` or not, so it imports only the standard library and `energy`'s names.
"""

from __future__ import annotations

import math
import re
from typing import Any

from pytest_llem.energy import METER_NAMES

#: Case fields that change where or how long it runs, or how it is named and gated, not what is
#: measured: left out of the config hash (`config`), and never what tells one chart line from
#: another (`output.html.points`).
NON_MEASUREMENT_FIELDS = frozenset(
    {"timeout", "experiment_id", "compare_fail", "budget", "label", "preload_model_files"}
)


def number_of_seconds(value: Any, minimum: float = 0.0, allow_equal: bool = True) -> float:
    """A finite number of seconds, at least `minimum` (more than it unless `allow_equal`)."""
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise ValueError("expected a number of seconds") from None
    if not math.isfinite(seconds):
        raise ValueError("expected a finite number of seconds")
    if seconds < minimum or (seconds == minimum and not allow_equal):
        raise ValueError(f"must be {'at least' if allow_equal else 'more than'} {minimum:g} seconds")
    return seconds


def seconds_above_zero(value: Any) -> float:
    """A time limit: `--llem-timeout` and the `timeout` field."""
    return number_of_seconds(value, 0.0, allow_equal=False)


def seconds_from_zero(value: Any) -> float:
    """A duration of 0 or more seconds: the baseline, cool-down and minimum window settings
    (0 turns each off), and the `min_window_s` field."""
    return number_of_seconds(value, 0.0)


def whole_number(value: Any, minimum: int = 0) -> int:
    """A whole number, at least `minimum`: digits as text, or an int (a float only when whole)."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    try:
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise ValueError
        number = int(value)
    except ValueError:
        raise ValueError("expected a whole number") from None
    if number < minimum:
        raise ValueError(f"must be at least {minimum}")
    return number


def round_count(value: Any) -> int:
    """Measured rounds per experiment: `--llem-rounds` and the `rounds` field."""
    return whole_number(value, 1)


def meter_name(value: Any) -> str:
    """An energy meter's name: `--llem-energy` and the `energy` field."""
    if value not in METER_NAMES:
        raise ValueError(f"unknown energy meter; choose one of {', '.join(METER_NAMES)}")
    return str(value)


#: `repeats="auto"` adds processes up to this many unless `auto:N` says otherwise.
DEFAULT_AUTO_REPEATS = 8
_AUTO_REPEATS = re.compile(r"auto(?::(\d+))?")


def parse_repeats(value: Any) -> int | str:
    """A count of processes (1 or more), or `auto` / `auto:N`, written back as `auto:N`:
    `--llem-repeats` and the `repeats` field."""
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 1:
            raise ValueError("must be at least 1, or 'auto' / 'auto:N'")
        return value
    text = str(value).strip()
    if text.isdigit():
        return parse_repeats(int(text))
    match = _AUTO_REPEATS.fullmatch(text)
    if isinstance(value, bool) or match is None:
        raise ValueError("expected a number of processes, 'auto' or 'auto:N' (N processes at most)")
    from pytest_llem.gating.stats import MIN_ROUNDS_FOR_SIGNIFICANCE  # only for the auto form

    maximum = int(match.group(1) or DEFAULT_AUTO_REPEATS)
    if maximum < MIN_ROUNDS_FOR_SIGNIFICANCE:
        raise ValueError(
            f"auto:{maximum} allows too few processes for the rank test, which needs "
            f"{MIN_ROUNDS_FOR_SIGNIFICANCE}; use auto:{MIN_ROUNDS_FOR_SIGNIFICANCE} or more"
        )
    return f"auto:{maximum}"
