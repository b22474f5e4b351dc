"""The serving table of the terminal summary: one row per serving experiment, each figure the
one the gate compares and the results table would show (`gating.stats.gated_figure`), written
as every table writes figures.

Energy per request and per output token are the steady state's (the headline), with the
whole load's energy per request beside them; `-` where no meter measured (the summary's
footnote says why) or where the load never reached a steady state (a line says why). Usage
that disagrees with the stream, or that the stream cannot hold, and a server saturated or
preempting by its own metrics, get a line of their own.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from pytest_llem.energy.quality import IMPOSSIBLE_USAGE, SERVER_PREEMPTED, SERVER_SATURATED, TOKEN_MISMATCH
from pytest_llem.formatting import aligned, figure_or_missing
from pytest_llem.gating.metrics import METRICS
from pytest_llem.gating.stats import gated_figure
from pytest_llem.results import ExperimentResult
from pytest_llem.store.report import ReportEntry

#: The flags said under the table, where the figures they doubt are: doubtful usage, and a
#: server that its own metrics show saturated or preempting.
SERVING_FLAGS = (TOKEN_MISMATCH, IMPOSSIBLE_USAGE, SERVER_SATURATED, SERVER_PREEMPTED)
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


#: The metric (`METRICS`) behind each figure column, after the test and its rate.
FIGURE_COLUMNS = (
    "requests_per_s",
    "output_tokens_per_s",
    "ttft_p50_s",
    "ttft_p99_s",
    "tpot_p50_s",
    "e2e_p99_s",
    "goodput",
    "errors",
    "energy_per_request_j",
    "energy_per_output_token_j",
    "energy_per_request_whole_j",
)


def _figure(result: ExperimentResult, name: str) -> str:
    """The figure the gate compares (over rounds and processes, their median), as every table
    writes figures; a share in %, a count of errors whole where it is."""
    value = gated_figure(result, METRICS[name])
    if value is not None and name == "goodput":
        return f"{value:.0%}"
    if value is not None and name == "errors" and value.is_integer():
        return str(int(value))
    return figure_or_missing(value)


def format_serving_table(entries: Sequence[ReportEntry]) -> list[str]:
    """Rows for the entries whose result has serving figures; [] when there are none."""
    rows, notes = [], []
    for entry in entries:
        result = entry.result
        serving = result.serving if result is not None else None
        if result is None or serving is None:
            continue
        rows.append((entry.nodeid, _rate(serving), *(_figure(result, name) for name in FIGURE_COLUMNS)))
        if serving.steady_note:
            notes.append(f"{entry.nodeid}: {serving.steady_note}")
        # Doubtful usage, or a server that could not keep up, is said where the figures are:
        # the row's figures rest on it.
        notes.extend(
            f"{entry.nodeid}: {w.code}: {w.message}" for w in serving.warnings if w.code in SERVING_FLAGS
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
