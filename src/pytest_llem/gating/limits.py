"""Limits of a comparison: `METRIC:LIMIT`, from the command line, ini or a test's marker.

A limit is a percentage (`energy_per_token_j:5%`) or an absolute amount in the metric's unit
(`tokens_per_s:50tokens/s`, `energy_per_token_j:0.002J`); each metric knows which direction
is worse (`metrics.METRICS`), so a limit is unsigned. A bare number is refused: it reads as a
percentage to some and as an amount to others. A limit is shown with its unit (`Limit.text`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pytest_llem.errors import ConfigError
from pytest_llem.gating.metrics import METRICS, Metric

_AMOUNT = re.compile(r"^\s*([-+]?)((?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*(%|[A-Za-z/]+)?\s*$")


@dataclass(frozen=True)
class Limit:
    metric: Metric
    #: How the limit is shown: its number as written, then `%` or the metric's unit.
    text: str
    relative: float | None = None
    absolute: float | None = None

    def exceeded_by(self, baseline: float, current: float) -> bool:
        worse = self.metric.worse_by(baseline, current)
        if self.relative is not None:
            return baseline != 0 and worse / abs(baseline) > self.relative
        assert self.absolute is not None
        return worse > self.absolute


def lookup_metric(name: str, source: str) -> Metric:
    try:
        return METRICS[name]
    except KeyError:
        raise ConfigError(f"{source}: unknown metric {name!r} (known: {', '.join(METRICS)})") from None


def parse_limit_value(
    metric: Metric, text: object, source: str, *, marker: bool = False, bare_is_amount: bool = False
) -> Limit:
    """The limit `text` on `metric`. `marker`: it came from a marker's dict, so the fix is
    spelled as one; `bare_is_amount`: a bare number (or one with a `+`) is an amount in the
    metric's unit, as in a budget, and in a saved run's `compare_fail` from a release that
    read limits so."""

    def spelled(value: str) -> str:
        return repr({metric.name: value}) if marker else f"{metric.name}:{value}"

    match = _AMOUNT.match(str(text))
    if match is None:
        raise ConfigError(
            f"{source}: limit {str(text)!r} for {metric.name} is not a number with a unit; "
            f"write e.g. {spelled('5%')} or {spelled(f'0.01{metric.unit}')}"
        )
    sign, number, unit = match.groups()
    if sign and not (bare_is_amount and sign == "+"):
        worse = "lower" if metric.higher_is_better else "higher"
        raise ConfigError(
            f"{source} {spelled(str(text).strip())}: a limit is unsigned: it is how much worse "
            f"{metric.name} may get ({worse} is worse for it); write {spelled(number + (unit or '%'))}"
        )
    if unit is None and not bare_is_amount:
        raise ConfigError(
            f"{source} {spelled(str(text).strip())}: a limit needs a unit: write {spelled(number + '%')} "
            f"(relative) or {spelled(number + metric.unit)} (absolute, in the metric's unit)"
        )
    value = float(number)
    if unit == "%":
        return Limit(metric, f"{number}%", relative=value / 100)
    if unit is not None and unit != metric.unit:
        raise ConfigError(
            f"{source}: limit {str(text).strip()!r}: {metric.name} is measured in {metric.unit!r}, "
            f"not {unit!r}"
        )
    return Limit(metric, f"{number} {metric.unit}", absolute=value)


def parse_limit(spec: str, source: str = "--llem-compare-fail") -> Limit:
    """`METRIC:LIMIT`, as given on the command line or in ini."""
    name, sep, value = spec.partition(":")
    if not sep or not value.strip():
        raise ConfigError(f"{source}: expected METRIC:LIMIT such as 'energy_per_token_j:5%', got {spec!r}")
    return parse_limit_value(lookup_metric(name.strip(), source), value, source)
