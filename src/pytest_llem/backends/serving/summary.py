"""From per-request records to a `ServingSummary`: rates, percentiles, goodput, energy."""

from __future__ import annotations

from pytest_llem.backends.serving.loadgen import RequestRecord
from pytest_llem.results import LatencyStats, ServingSummary, ServingWindow, WindowMeasurement

ERROR_SAMPLES = 5


def meets_slo(record: RequestRecord, slo: dict[str, float]) -> bool:
    """No error, and every objective met (an objective that cannot be measured is not met)."""
    if not record.ok:
        return False
    measured = {"ttft_s": record.ttft_s, "tpot_s": record.tpot_s, "e2e_s": record.e2e_s}
    for name, limit in slo.items():
        value = measured[name]
        if name == "tpot_s" and value is None and record.output_tokens == 1:
            continue  # one token has no time per output token to miss
        if value is None or value > limit:
            return False
    return True


def tokens_between(records: list[RequestRecord], start_s: float, end_s: float) -> int:
    """Streamed tokens that arrived in [start_s, end_s]."""
    return sum(1 for r in records for t in r.chunk_times_s if start_s <= t <= end_s)


def summarise(
    records: list[RequestRecord],
    *,
    server: str,
    server_log: str | None,
    request_rate: float | None,
    concurrency: int | None,
    slo: dict[str, float],
    whole: WindowMeasurement,
    steady_span: tuple[float, float] | None,
    steady_measured: WindowMeasurement | None,
    steady_note: str | None,
) -> ServingSummary:
    """`whole` covers the load; `steady_span` (seconds from the load's start) its steady part."""
    ok = [r for r in records if r.ok]
    failed = [r for r in records if not r.ok]
    prompt_counts = [r.prompt_tokens for r in ok]
    steady = None
    if steady_span is not None and steady_measured is not None:
        start_s, end_s = steady_span
        steady = ServingWindow(
            start_s=start_s,
            end_s=end_s,
            output_tokens=tokens_between(ok, start_s, end_s),
            energy_j=steady_measured.energy_j,
            energy_scope=steady_measured.totals.energy_scope,
            warnings=steady_measured.warnings,
        )
    return ServingSummary(
        server=server,
        server_log=server_log,
        request_rate=request_rate,
        concurrency=concurrency,
        n_requests=len(records),
        completed=len(ok),
        errors=len(failed),
        error_samples=[f"request {r.index}: {r.error or 'no answer'}" for r in failed[:ERROR_SAMPLES]],
        token_mismatches=sum(
            1 for r in ok if r.usage_tokens is not None and r.usage_tokens != r.streamed_tokens
        ),
        duration_s=whole.duration_s,
        input_tokens=None if not ok or None in prompt_counts else sum(c for c in prompt_counts if c),
        output_tokens=sum(r.output_tokens for r in ok),
        ttft=LatencyStats.of([v for r in ok if (v := r.ttft_s) is not None]),
        tpot=LatencyStats.of([v for r in ok if (v := r.tpot_s) is not None]),
        itl=LatencyStats.of([v for r in ok for v in r.inter_token_s]),
        e2e=LatencyStats.of([v for r in ok if (v := r.e2e_s) is not None]),
        slo=dict(slo),
        good_requests=sum(1 for r in records if meets_slo(r, slo)),
        energy_j=whole.energy_j,
        steady=steady,
        steady_note=steady_note,
    )
