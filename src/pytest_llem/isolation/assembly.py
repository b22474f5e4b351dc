"""One place that turns measured parts into an `ExperimentResult`.

The worker assembles one process's windows and counts; `repeats` assembles the pooled
processes of `repeats=N`. Both go through `assemble_result`, so a field is derived the same
way whichever path produced it (energy totals and sources, latency percentiles, round
statistics). Runs in the child (worker) and in the pytest process (repeats).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pytest_llem.energy.quality import HOST_DEVICE_KINDS, merge_flags, shared_host_energy_flag
from pytest_llem.gating.stats import round_statistics
from pytest_llem.results import (
    EnergyTotals,
    ExperimentResult,
    LatencyStats,
    RoundResult,
    ServingSummary,
    WindowMeasurement,
)


def assemble_result(
    *,
    identity: dict[str, Any],
    measured: WindowMeasurement,
    window_count: int,
    input_tokens: int | None,
    output_tokens: int | None,
    batch_latencies_s: list[float],
    first_token_latencies_s: list[float],
    inter_token_latencies_s: list[float],
    peak_memory: tuple[int, str | None] | None,
    flops_estimate: float | None,
    rounds: list[RoundResult],
    phase_durations_s: dict[str, float],
    extra: dict[str, Any],
    serving: ServingSummary | None = None,
    started_at: datetime,
    finished_at: datetime,
) -> ExperimentResult:
    """`identity`: experiment_id, config_hash, config and workload, as the request named them."""
    sources = sorted({d.energy_source for d in measured.devices if d.energy_source})
    return ExperimentResult(
        **identity,
        duration_s=measured.duration_s,
        window_count=window_count,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        **EnergyTotals.of(measured.devices).model_dump(),
        energy_source="+".join(sources) or None,
        energy_notes=measured.notes,
        estimated_energy_j=measured.estimated_energy_j,
        energy_by_device=measured.devices,
        # A serving load's flags (its steady-state window's, doubtful usage) doubt the result's
        # figures as much as the whole window's do: the summary and the gate see them all.
        warnings=merge_flags([*measured.warnings, *(serving.warnings if serving is not None else [])]),
        host_other_cpu_share=measured.host_other_cpu_share,
        batch_latencies_s=batch_latencies_s,
        first_token_latencies_s=first_token_latencies_s,
        inter_token_latencies_s=inter_token_latencies_s,
        batch_latency=LatencyStats.of(batch_latencies_s),
        time_to_first_token=LatencyStats.of(first_token_latencies_s),
        inter_token_latency=LatencyStats.of(inter_token_latencies_s),
        peak_memory_bytes=peak_memory[0] if peak_memory else None,
        peak_memory_kind=peak_memory[1] if peak_memory else None,
        flops_estimate=flops_estimate,
        rounds=rounds if len(rounds) > 1 else [],
        statistics=round_statistics(rounds),
        phase_durations_s=phase_durations_s,
        extra=extra,
        serving=serving,
        started_at=started_at,
        finished_at=finished_at,
    )


def without_host_energy(result: ExperimentResult, others: list[str]) -> ExperimentResult:
    """`result` with its CPU/DRAM energy left out of every total, flagged `shared_host_energy`,
    because `others` ran on the same host meanwhile; unchanged when it measured no host device.

    The host devices stay listed in `energy_by_device`, as measured; the totals, rounds and
    statistics keep only the GPUs, which a lease gave to this experiment alone.
    """
    host = [d for d in result.energy_by_device if d.kind in HOST_DEVICE_KINDS]
    if not host or not others:
        return result
    gpus = [d for d in result.energy_by_device if d.kind not in HOST_DEVICE_KINDS]
    totals = EnergyTotals.of(gpus) if gpus else EnergyTotals()
    rounds = [
        r.model_copy(update={"energy_j": r.gpu_energy_j, "cpu_energy_j": None, "energy_adjusted_j": None})
        for r in result.rounds
    ]
    note = "energy_j covers the GPUs only: other experiments shared the host's CPU and memory"
    return result.model_copy(
        update={
            **totals.model_dump(),
            "rounds": rounds,
            "statistics": round_statistics(rounds),
            "energy_notes": [*result.energy_notes, note],
            "warnings": merge_flags(
                [*result.warnings, shared_host_energy_flag([d.device for d in host], others)]
            ),
        }
    )
