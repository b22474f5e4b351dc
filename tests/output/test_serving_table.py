"""The serving table printed after the summary."""

from __future__ import annotations

import math

from sample_reports import make_entry
from serving_loads import (
    record,
    serving_result,
)

from pytest_llem.backends.serving.summary import summarise
from pytest_llem.results import WindowMeasurement


def test_the_serving_table_says_why_a_figure_is_missing():
    from types import SimpleNamespace

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
    offline = SimpleNamespace(nodeid="t::offline", result=SimpleNamespace(serving=None))
    assert format_serving_table([offline]) == []
    lines = format_serving_table(
        [offline, SimpleNamespace(nodeid="t::serve", result=SimpleNamespace(serving=summary))]
    )
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
