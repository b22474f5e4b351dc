"""One experiment repeated in several fresh processes (`repeats=N`), pooled into one result.

Rounds inside one process share its state (memory layout, kernel choices, clocks), so they
vary less than separate runs do; regression tests then see differences between sessions as
significant. Running the experiment in several processes and treating each process as one
sample (see `stats.sample_values`) puts that variation into the statistics, as asv does with
its repeated processes. Each process loads the model again: the price of honest error bars.

`repeats="auto"` (or `"auto:N"`) pays that price only where it buys an answer: it starts with
the fewest processes the rank test can decide on (`gating.stats.MIN_ROUNDS_FOR_SIGNIFICANCE`)
and adds one at a time while the case's comparison with its baseline is undecided
(`gating.compare.needs_more_samples`), up to N (default `values.DEFAULT_AUTO_REPEATS`). Without a
baseline or a limit there is nothing to decide, and the minimum is run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pytest_llem.context import combine_windows
from pytest_llem.gating.stats import MIN_ROUNDS_FOR_SIGNIFICANCE
from pytest_llem.isolation.assembly import assemble_result
from pytest_llem.progress import add_durations
from pytest_llem.results import (
    PREFILL_DECODE_KEY,
    EnergyTotals,
    ExperimentResult,
    PrefillDecode,
    RoundResult,
    WindowMeasurement,
    sum_or_none,
)


@dataclass(frozen=True)
class RepeatPlan:
    """How many processes an experiment runs in: `minimum` always, more while undecided."""

    minimum: int
    maximum: int

    @property
    def adaptive(self) -> bool:
        return self.maximum > self.minimum

    @classmethod
    def of(cls, repeats: int | str) -> RepeatPlan:
        """`repeats` as `ExperimentConfig` holds it: a count, or `auto:N` (`values.parse_repeats`)."""
        if isinstance(repeats, int):
            return cls(repeats, repeats)
        maximum = int(repeats.partition(":")[2])
        return cls(min(MIN_ROUNDS_FOR_SIGNIFICANCE, maximum), maximum)


def run_repeats(
    plan: RepeatPlan,
    run_process: Callable[[int], ExperimentResult],
    undecided: Callable[[ExperimentResult], bool],
) -> ExperimentResult:
    """Run `plan.minimum` processes, then one more at a time while `undecided` says the pooled
    result cannot settle its comparison yet, up to `plan.maximum`. `run_process(i)` runs the
    i-th process. An adaptive plan's result says how many processes it took and whether that
    decided (`extra`: `repeats`, `repeats_max`, `repeats_decided`)."""
    results = [run_process(index) for index in range(plan.minimum)]
    pooled = pool_processes(results)
    if not plan.adaptive:
        return pooled
    still_open = undecided(pooled)
    while still_open and len(results) < plan.maximum:
        results.append(run_process(len(results)))
        pooled = pool_processes(results)
        still_open = undecided(pooled)
    pooled.extra.update(repeats=len(results), repeats_max=plan.maximum, repeats_decided=not still_open)
    return pooled


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


def pool_processes(results: list[ExperimentResult]) -> ExperimentResult:
    """One result from the same experiment measured in each of `results`' processes."""
    if len(results) == 1:
        return results[0]
    first = results[0]
    rounds = [r for process, result in enumerate(results) for r in as_rounds(result, process)]
    rounds = [r.model_copy(update={"index": index}) for index, r in enumerate(rounds)]
    # Each process's figures are one window of the pooled experiment: devices, flags and
    # notes combine exactly as one process's windows do.
    measured = combine_windows(
        [
            WindowMeasurement(
                duration_s=r.duration_s,
                devices=r.energy_by_device,
                warnings=r.warnings,
                notes=r.energy_notes,
                host_other_cpu_share=r.host_other_cpu_share,
            )
            for r in results
        ]
    )
    peaks = [r.peak_memory_bytes for r in results if r.peak_memory_bytes is not None]
    methods = {r.start_method for r in results}
    notes = list(dict.fromkeys(r.start_note for r in results if r.start_note))
    pooled = assemble_result(
        identity={
            name: getattr(first, name) for name in ("experiment_id", "config_hash", "config", "workload")
        },
        measured=measured,
        window_count=sum(r.window_count for r in results),
        input_tokens=sum_or_none([r.input_tokens for r in results]),
        output_tokens=sum_or_none([r.output_tokens for r in results]),
        batch_latencies_s=[v for r in results for v in r.batch_latencies_s],
        first_token_latencies_s=[v for r in results for v in r.first_token_latencies_s],
        inter_token_latencies_s=[v for r in results for v in r.inter_token_latencies_s],
        peak_memory=(max(peaks), first.peak_memory_kind) if peaks else None,
        flops_estimate=sum_or_none([r.flops_estimate for r in results]),
        rounds=rounds,
        phase_durations_s=add_durations(r.phase_durations_s for r in results),
        extra=_pooled_extra(results),
        serving=first.serving,  # one load's figures; every process's headline is in its rounds
        started_at=first.started_at,
        finished_at=results[-1].finished_at,
    )
    return pooled.model_copy(
        update={
            "start_method": methods.pop() if len(methods) == 1 else "mixed",
            "start_note": "; ".join(notes) or None,
            "preloaded_modules": _union([r.preloaded_modules for r in results]),
        }
    )


def _pooled_extra(results: list[ExperimentResult]) -> dict:
    """The first process's extra figures, with the prefill/decode split of every process
    added up (a split from one process would pass for the pooled experiment's); a split
    some process lacks is left out."""
    extra = {**results[0].extra, "repeats": len(results)}
    splits = [r.prefill_decode for r in results]
    extra.pop(PREFILL_DECODE_KEY, None)
    if all(split is not None for split in splits):
        extra[PREFILL_DECODE_KEY] = PrefillDecode.pooled([s for s in splits if s is not None]).as_extra()
    return extra


def _union(lists: list[list[str] | None]) -> list[str] | None:
    """Every name of the lists, in order of first appearance; None if every one is None."""
    present = [names for names in lists if names is not None]
    return list(dict.fromkeys(name for names in present for name in names)) if present else None
