"""The metrics pytest-llem compares and gates on: name, unit, which direction is better,
and how to read each from a result (whole experiment) or from one of its rounds.

One table serves the statistics over rounds, comparisons, limits, the CLI and exports, so
a metric's direction or unit is never decided in two places.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pytest_llem.results import (
    DECODE_METRICS,
    ENERGY_NOT_MEASURED,
    NO_SERVING_SPLIT,
    PREFILL_METRICS,
    ExperimentResult,
    RoundResult,
)


@dataclass(frozen=True)
class Metric:
    name: str
    unit: str
    higher_is_better: bool
    of_result: Callable[[ExperimentResult], float | None]
    of_round: Callable[[RoundResult], float | None] | None = None

    def worse_by(self, baseline: float, current: float) -> float:
        """How much worse `current` is than `baseline`, in the metric's unit (negative: better)."""
        return baseline - current if self.higher_is_better else current - baseline


def _p50(stats: object) -> float | None:
    return getattr(stats, "p50_s", None)


def _serving_metric(name: str, unit: str, higher_is_better: bool) -> Metric:
    """A serving figure (scenario="serving"): from the result's summary, or a round's headline."""

    def of_result(result: ExperimentResult) -> float | None:
        return result.serving.headline().get(name) if result.serving is not None else None

    def of_round(round_: RoundResult) -> float | None:
        return round_.serving.get(name)

    return Metric(name, unit, higher_is_better, of_result, of_round)


# name, unit, higher is better: see ServingSummary.headline and docs/guides/serving.md.
SERVING_METRICS = (
    ("requests_per_s", "requests/s", True),
    ("output_tokens_per_s", "tokens/s", True),
    ("energy_per_request_j", "J", False),
    ("energy_per_request_whole_j", "J", False),
    ("energy_per_output_token_j", "J", False),
    ("energy_per_good_request_j", "J", False),
    ("goodput", "share", True),
    ("errors", "requests", False),
    ("ttft_p99_s", "s", False),
    ("tpot_p50_s", "s", False),
    ("tpot_p99_s", "s", False),
    ("itl_p50_s", "s", False),
    ("e2e_p50_s", "s", False),
    ("e2e_p99_s", "s", False),
)


METRICS: dict[str, Metric] = {
    m.name: m
    for m in (
        Metric(
            "energy_per_token_j", "J", False, lambda r: r.energy_per_token_j, lambda r: r.energy_per_token_j
        ),
        Metric("energy_j", "J", False, lambda r: r.energy_j, lambda r: r.energy_j),
        Metric("energy_adjusted_j", "J", False, lambda r: r.energy_adjusted_j, lambda r: r.energy_adjusted_j),
        Metric("gpu_energy_j", "J", False, lambda r: r.gpu_energy_j, lambda r: r.gpu_energy_j),
        Metric("cpu_energy_j", "J", False, lambda r: r.cpu_energy_j, lambda r: r.cpu_energy_j),
        Metric("tokens_per_s", "tokens/s", True, lambda r: r.tokens_per_s, lambda r: r.tokens_per_s),
        Metric("duration_s", "s", False, lambda r: r.duration_s, lambda r: r.duration_s),
        Metric(
            "batch_latency_p50_s",
            "s",
            False,
            lambda r: _p50(r.batch_latency),
            lambda r: r.batch_latency_p50_s,
        ),
        Metric("batch_latency_p99_s", "s", False, lambda r: getattr(r.batch_latency, "p99_s", None)),
        Metric("ttft_p50_s", "s", False, lambda r: _p50(r.time_to_first_token)),
        Metric("peak_memory_bytes", "B", False, lambda r: r.peak_memory_bytes),
        # Prefill and decode apart (backend="pytorch"; results.PrefillDecode), summed over the
        # whole measurement: no per-round figure.
        Metric("prefill_energy_per_input_token_j", "J", False, lambda r: r.prefill_energy_per_input_token_j),
        Metric("decode_energy_per_output_token_j", "J", False, lambda r: r.decode_energy_per_output_token_j),
        Metric("prefill_energy_j", "J", False, lambda r: r.prefill_energy_j),
        Metric("decode_energy_j", "J", False, lambda r: r.decode_energy_j),
        Metric("prefill_duration_s", "s", False, lambda r: r.prefill_duration_s),
        Metric("decode_duration_s", "s", False, lambda r: r.decode_duration_s),
        *(_serving_metric(*spec) for spec in SERVING_METRICS),
    )
}


def round_values(rounds: list[RoundResult], metric: Metric) -> list[float]:
    """The metric in each round; empty unless every round has it."""
    if metric.of_round is None or not rounds:
        return []
    values = [metric.of_round(r) for r in rounds]
    return [v for v in values if v is not None] if all(v is not None for v in values) else []


def why_missing(metric: Metric, result: ExperimentResult) -> str:
    """Why `result` has no figure for `metric`, in a few words (the meter's own reason for energy)."""
    if metric.name in PREFILL_METRICS | DECODE_METRICS and result.prefill_decode is None:
        if result.serving is not None:
            return f"a serving load has no prefill/decode split: {NO_SERVING_SPLIT}"
        return "its workload did not measure prefill and decode apart (backend='pytorch' and 'vllm' do)"
    if metric.unit == "J":
        if result.energy_j is None:
            reasons = [w.message for w in result.warnings if w.code == ENERGY_NOT_MEASURED]
            return (reasons or result.energy_notes or ["no meter measured its energy"])[0]
        if not result.output_tokens:
            return "it recorded no output tokens"
    return f"its result has no {metric.name}"
