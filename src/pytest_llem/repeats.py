"""One experiment repeated in several fresh processes (`repeats=N`), pooled into one result.

Rounds inside one process share its state (memory layout, kernel choices, clocks), so they
vary less than separate runs do; regression tests then see differences between sessions as
significant. Running the experiment in several processes and treating each process as one
sample (see `stats.sample_values`) puts that variation into the statistics, as asv does with
its repeated processes. Each process loads the model again: the price of honest error bars.
"""

from __future__ import annotations

from pytest_llem.context import combine_device
from pytest_llem.results import EnergyTotals, ExperimentResult, LatencyStats, RoundResult
from pytest_llem.stats import round_statistics


def as_rounds(result: ExperimentResult, process: int) -> list[RoundResult]:
    """A process's rounds; a process measured as a whole (one round) becomes one round."""
    if result.rounds:
        return [r.model_copy(update={"process": process}) for r in result.rounds]
    energy = EnergyTotals(**{name: getattr(result, name) for name in EnergyTotals.model_fields})
    return [
        RoundResult.of(
            0,
            result.duration_s,
            result.output_tokens,
            result.input_tokens,
            energy,
            result.batch_latency,
            process,
        ).model_copy(update={"serving": result.serving.headline() if result.serving else {}})
    ]


def _sum(values: list[int | None]) -> int | None:
    return None if any(v is None for v in values) else sum(v for v in values if v is not None)


def pool_processes(results: list[ExperimentResult]) -> ExperimentResult:
    """One result from the same experiment measured in each of `results`' processes."""
    if len(results) == 1:
        return results[0]
    first = results[0]
    rounds = [r for process, result in enumerate(results) for r in as_rounds(result, process)]
    rounds = [r.model_copy(update={"index": index}) for index, r in enumerate(rounds)]
    by_device: dict[str, list] = {}
    for result in results:
        for device in result.energy_by_device:
            by_device.setdefault(device.baseline_key, []).append(device)
    devices = [combine_device(parts) for parts in by_device.values()]
    batch = [v for r in results for v in r.batch_latencies_s]
    first_token = [v for r in results for v in r.first_token_latencies_s]
    inter_token = [v for r in results for v in r.inter_token_latencies_s]
    peaks = [r.peak_memory_bytes for r in results if r.peak_memory_bytes is not None]
    flops = [r.flops_estimate for r in results]
    warnings = []
    for result in results:
        warnings.extend(w for w in result.warnings if w not in warnings)
    notes = list(dict.fromkeys(n for r in results for n in r.energy_notes))
    return first.model_copy(
        update={
            "duration_s": sum(r.duration_s for r in results),
            "window_count": sum(r.window_count for r in results),
            "input_tokens": _sum([r.input_tokens for r in results]),
            "output_tokens": _sum([r.output_tokens for r in results]),
            **EnergyTotals.of(devices).model_dump(),
            "energy_source": "+".join(sorted({r.energy_source for r in results if r.energy_source})) or None,
            "energy_notes": notes,
            "energy_by_device": devices,
            "warnings": warnings,
            "batch_latencies_s": batch,
            "first_token_latencies_s": first_token,
            "inter_token_latencies_s": inter_token,
            "batch_latency": LatencyStats.of(batch),
            "time_to_first_token": LatencyStats.of(first_token),
            "inter_token_latency": LatencyStats.of(inter_token),
            "peak_memory_bytes": max(peaks) if peaks else None,
            "flops_estimate": None
            if any(f is None for f in flops)
            else sum(f for f in flops if f is not None),
            "rounds": rounds,
            "statistics": round_statistics(rounds),
            "extra": {**first.extra, "repeats": len(results)},
            "finished_at": results[-1].finished_at,
        }
    )
