"""From per-request records to a `ServingSummary`: rates, percentiles, goodput, energy, flags.

Every token figure counts tokens, not chunks (`tokens.account_tokens` first). The
steady-state window's quality flags and uncertainty go with the figures computed from it;
usage that disagrees with the stream, or that it cannot hold, is a flag with its counts; so
is a server that its own metrics show saturated or preempting (`energy.quality.assess_server_metrics`).
"""

from __future__ import annotations

from collections import Counter

from pytest_llem.backends.serving.loadgen import RequestRecord
from pytest_llem.backends.serving.tokens import TextCounter, TokenCheck, account_tokens
from pytest_llem.energy.quality import (
    IMPOSSIBLE_USAGE,
    TOKEN_MISMATCH,
    assess_server_metrics,
    flag,
    merge_flags,
)
from pytest_llem.energy.uncertainty import window_uncertainty
from pytest_llem.results import (
    LatencyStats,
    QualityWarning,
    ServerMetrics,
    ServingSummary,
    ServingWindow,
    WindowMeasurement,
)

ERROR_SAMPLES = 5
#: How a steady-state window's own flags read among the result's.
STEADY_PREFIX = "steady-state window: "


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
    """Tokens that arrived in [start_s, end_s] (a chunk's tokens at the chunk's arrival)."""
    return sum(
        k
        for r in records
        for chunk, k in zip(r.chunks, r.tokens_per_chunk, strict=True)
        if start_s <= chunk.time_s <= end_s
    )


def token_flags(records: list[RequestRecord], checks: list[TokenCheck]) -> list[QualityWarning]:
    """One flag per kind of doubtful usage, with its count and the first few requests."""
    warnings = []
    for verdict, code, what in (
        ("mismatch", TOKEN_MISMATCH, "usage disagrees with what was streamed; usage counted"),
        ("impossible", IMPOSSIBLE_USAGE, "usage the streamed text cannot hold; the stream counted"),
    ):
        hits = [(r, c) for r, c in zip(records, checks, strict=True) if c.verdict == verdict]
        if hits:
            samples = "; ".join(f"request {r.index}: {c.detail}" for r, c in hits[:ERROR_SAMPLES])
            warnings.append(flag(code, f"{len(hits)} of {len(records)} requests: {what} ({samples})"))
    return warnings


def describe_sources(checks: list[TokenCheck]) -> str | None:
    counts = Counter(c.source for c in checks)
    if len(counts) <= 1:
        return next(iter(counts), None)
    return ", ".join(f"{source} ({n})" for source, n in counts.most_common())


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
    count_text: TextCounter | None = None,
    server_metrics: ServerMetrics | None = None,
    earlier_flags: list[QualityWarning] | None = None,
) -> ServingSummary:
    """`whole` covers the load; `steady_span` (seconds from the load's start) its steady part.

    `count_text` counts a chunk's tokens from its text (the model's tokenizer) for answers
    whose chunks carry no usage of their own. `server_metrics` (what the server said about
    itself) adds its `server_saturated` and `server_preempted` flags; `earlier_flags` are
    those of earlier rounds' loads, which the result keeps too."""
    ok = [r for r in records if r.ok]
    failed = [r for r in records if not r.ok]
    checks = [account_tokens(r, count_text) for r in ok]
    prompt_counts = [r.prompt_tokens for r in ok]
    warnings = token_flags(ok, checks)
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
            energy_uncertainty=window_uncertainty(steady_measured),
        )
        warnings += [
            flag(w.code, STEADY_PREFIX + w.message) for w in steady_measured.warnings if w.doubts_a_figure
        ]
    if server_metrics is not None:
        warnings += assess_server_metrics(server_metrics)
    warnings += earlier_flags or []
    return ServingSummary(
        server=server,
        server_log=server_log,
        request_rate=request_rate,
        concurrency=concurrency,
        n_requests=len(records),
        completed=len(ok),
        errors=len(failed),
        error_samples=[f"request {r.index}: {r.error or 'no answer'}" for r in failed[:ERROR_SAMPLES]],
        token_mismatches=sum(1 for c in checks if c.verdict == "mismatch"),
        impossible_usage=sum(1 for c in checks if c.verdict == "impossible"),
        token_source=describe_sources(checks),
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
        warnings=merge_flags(warnings),
        server_metrics=server_metrics,
    )
