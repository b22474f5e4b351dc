"""The serving table of the terminal summary: one row per serving experiment.

Energy per request and per output token are the steady state's (the headline), with the
whole load's energy per request beside them; `-` where no meter measured (the summary's
footnote says why) or where the load never reached a steady state (a line says why). Usage
that disagrees with the stream, or that the stream cannot hold, gets a line of its own.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from pytest_llem.energy.quality import IMPOSSIBLE_USAGE, TOKEN_MISMATCH
from pytest_llem.formatting import aligned, number

TOKEN_FLAGS = (TOKEN_MISMATCH, IMPOSSIBLE_USAGE)
HEADER = (
    "serving test",
    "rate",
    "req/s",
    "tok/s",
    "ttft_p50",
    "ttft_p99",
    "tpot_p50",
    "e2e_p99",
    "goodput",
    "errors",
    "J/req",
    "J/tok",
    "J/req_whole",
)


def _rate(serving: Any) -> str:
    if serving.request_rate is not None:
        rate = "inf" if math.isinf(serving.request_rate) else f"{serving.request_rate:g}/s"
        return rate if serving.concurrency is None else f"{rate} c{serving.concurrency}"
    return f"c{serving.concurrency}"


def format_serving_table(entries: Sequence[Any]) -> list[str]:
    """Rows for the entries whose result has serving figures; [] when there are none."""
    rows, notes = [], []
    for entry in entries:
        serving = getattr(entry.result, "serving", None)
        if serving is None:
            continue
        rows.append(
            (
                entry.nodeid,
                _rate(serving),
                number(serving.requests_per_s, ".2f"),
                number(serving.output_tokens_per_s, ".1f"),
                number(serving.ttft.p50_s if serving.ttft else None, ".3f"),
                number(serving.ttft.p99_s if serving.ttft else None, ".3f"),
                number(serving.tpot.p50_s if serving.tpot else None, ".4f"),
                number(serving.e2e.p99_s if serving.e2e else None, ".3f"),
                f"{serving.goodput:.0%}",
                str(serving.errors),
                number(serving.energy_per_request_j, ".3f"),
                number(serving.energy_per_output_token_j, ".4f"),
                number(serving.energy_per_request_whole_j, ".3f"),
            )
        )
        if serving.steady_note:
            notes.append(f"{entry.nodeid}: {serving.steady_note}")
        # Doubtful usage is said where the token figures are: the row's figures rest on it.
        notes.extend(
            f"{entry.nodeid}: {w.code}: {w.message}" for w in serving.warnings if w.code in TOKEN_FLAGS
        )
    if not rows:
        return []
    lines = ["", *aligned(HEADER, rows, right_aligned=set(range(1, len(HEADER))))]
    lines.append(
        "serving: J/req and J/tok over the steady state (target load reached until the drain "
        "began); J/req_whole over the whole load; goodput: share of requests meeting every slo"
    )
    lines.extend(notes)
    return lines
