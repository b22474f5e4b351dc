"""The serving table printed after the summary."""

from __future__ import annotations

import math

from sample_reports import make_entry, make_result
from serving_loads import (
    record,
    serving_result,
)

from pytest_llem.backends.serving.summary import summarise
from pytest_llem.results import WindowMeasurement


def test_the_serving_table_says_why_a_figure_is_missing():
    from pytest_llem.output.serving_table import format_serving_table

    records = [record(i, 0.0, [0.1, 0.2], 2) for i in range(3)]
    summary = summarise(
        records,
        server="stub",
        server_log=None,
        request_rate=math.inf,
        concurrency=None,
        slo={},
        whole=WindowMeasurement(duration_s=1.0),
        steady_span=None,
        steady_measured=None,
        steady_note="no steady state: the target concurrency was never reached",
    )
    offline = make_entry("t::offline", make_result([1.0]))
    assert format_serving_table([offline]) == []
    lines = format_serving_table([offline, make_entry("t::serve", make_result([1.0], serving=summary))])
    (row,) = [line.split() for line in lines if line.split()[:1] == ["t::serve"]]
    assert row[1] == "inf" and row[-5:] == ["100%", "0", "-", "-", "-"]
    assert lines[-1] == "t::serve: no steady state: the target concurrency was never reached"


def test_an_infinite_rate_survives_a_report_round_trip():
    from pytest_llem.output.serving_table import format_serving_table
    from pytest_llem.store.report import ReportEntry

    entry = make_entry("t::serve", serving_result(3, math.inf))
    again = ReportEntry.model_validate_json(entry.model_dump_json())
    assert again.result.serving.request_rate == math.inf
    (row,) = [line.split() for line in format_serving_table([again]) if line.startswith("t::serve")]
    assert row[1] == "inf"


def test_each_figure_is_the_one_the_gate_compares_written_as_every_table_writes_figures():
    from pytest_llem.formatting import figure_or_missing
    from pytest_llem.gating.metrics import METRICS
    from pytest_llem.gating.stats import gated_figure
    from pytest_llem.output.serving_table import FIGURE_COLUMNS, HEADER, format_serving_table
    from pytest_llem.results import RoundResult

    result = serving_result(8, 4.0)
    assert result.serving is not None
    # Three rounds whose headline figures differ: the table shows their median, not the last load's.
    rounds = [
        RoundResult(index=i, duration_s=1.0, serving={**result.serving.headline(), "requests_per_s": rate})
        for i, rate in enumerate((3.0, 3.5, 9.0))
    ]
    result = result.model_copy(update={"rounds": rounds})
    (row,) = [
        line.split()
        for line in format_serving_table([make_entry("t::serve", result)])
        if line.startswith("t::serve")
    ]
    cells = dict(zip(HEADER[2:], row[2:], strict=True))
    assert cells["req/s"] == "3.50" != figure_or_missing(result.serving.requests_per_s)
    for header, name in zip(HEADER[2:], FIGURE_COLUMNS, strict=True):
        if name not in ("goodput", "errors"):
            assert cells[header] == figure_or_missing(gated_figure(result, METRICS[name])), name


def test_a_saturated_or_preempting_server_is_said_under_the_table():
    from pytest_llem.output.serving_table import format_serving_table
    from pytest_llem.results import ServerMetrics

    records = [record(i, 0.0, [0.1, 0.2], 2) for i in range(3)]
    seen = ServerMetrics(
        exposed=True, judged_over="steady", judged_samples=8, waiting_share=0.75, preemptions=4.0
    )
    summary = summarise(
        records,
        server="stub",
        server_log=None,
        request_rate=None,
        concurrency=3,
        slo={},
        whole=WindowMeasurement(duration_s=1.0),
        steady_span=(0.0, 1.0),
        steady_measured=WindowMeasurement(duration_s=1.0),
        steady_note=None,
        server_metrics=seen,
    )
    assert summary.server_metrics == seen
    result = make_result([1.0], serving=summary, warnings=summary.warnings)
    lines = format_serving_table([make_entry("t::serve", result)])
    saturated, preempted = lines[-2:]
    assert saturated.startswith(
        "t::serve: server_saturated: the server was saturated: requests waited in its queue in 75% of the 8 "
        "scrapes of the steady state (limit 50%)"
    )
    assert preempted.startswith("t::serve: server_preempted: the server preempted requests 4 times")
