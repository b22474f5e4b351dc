"""Limits of a comparison: `METRIC:LIMIT`, from the command line, ini or a test's marker.

A limit is a percentage (`energy_per_token_j:5%`) or an absolute amount in the metric's unit
(`tokens_per_s:50tokens/s`, `energy_per_token_j:0.002J`); each metric knows which direction
is worse (`metrics.METRICS`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pytest_llem.errors import ConfigError
from pytest_llem.gating.metrics import METRICS, Metric

_AMOUNT = re.compile(r"^\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*(%|[A-Za-z/]+)?\s*$")


@dataclass(frozen=True)
class Limit:
    metric: Metric
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


def parse_limit_value(metric: Metric, text: str, source: str) -> Limit:
    match = _AMOUNT.match(str(text))
    if match is None:
        raise ConfigError(
            f"{source}: limit {text!r} for {metric.name} is not a number with an optional unit; "
            f"write e.g. '5%' or '0.01{metric.unit}'"
        )
    value, unit = float(match.group(1)), match.group(2)
    if value < 0:
        raise ConfigError(f"{source}: limit {text!r} for {metric.name} must not be negative")
    if unit == "%":
        return Limit(metric, str(text).strip(), relative=value / 100)
    if unit is not None and unit != metric.unit:
        raise ConfigError(
            f"{source}: limit {text!r}: {metric.name} is measured in {metric.unit!r}, not {unit!r}"
        )
    return Limit(metric, str(text).strip(), absolute=value)


def parse_limit(spec: str, source: str = "--llem-compare-fail") -> Limit:
    """`METRIC:LIMIT`, as given on the command line or in ini."""
    name, sep, value = spec.partition(":")
    if not sep or not value.strip():
        raise ConfigError(f"{source}: expected METRIC:LIMIT such as 'energy_per_token_j:5%', got {spec!r}")
    return parse_limit_value(lookup_metric(name.strip(), source), value, source)
