"""Serving loads for the tests: the stub server's command, request records and summaries built by hand."""

from __future__ import annotations

import math
import sys

from helpers import SUPPORT_DIR
from sample_reports import make_result

from pytest_llem.backends.serving.loadgen import (
    RequestRecord,
    StreamChunk,
    read_chunk,
)
from pytest_llem.backends.serving.summary import summarise
from pytest_llem.results import DeviceEnergy, ServingSummary, WindowMeasurement

STUB = str(SUPPORT_DIR / "fake_openai_server.py")
SERVING = {"scenario": "serving"}


def stub_server(*switches: str) -> list[str]:
    return [sys.executable, STUB, "--port", "{port}", *switches]


def record(
    index: int,
    sent: float,
    chunks: list[float],
    usage: int | None,
    error: str | None = None,
    text: str = " word",
):
    done = None if error else chunks[-1] + 0.01
    return RequestRecord(index, sent, done, [StreamChunk(t, text) for t in chunks], usage, 4, error)


def window(duration_s: float, energy_j: float | None) -> WindowMeasurement:
    return WindowMeasurement(
        duration_s=duration_s, devices=[DeviceEnergy(device="gpu0", energy_j=energy_j, duration_s=duration_s)]
    )


def chunked(index: int, sent: float, times: list[float], texts: list[str], usage: object, **fields):
    """A finished request whose chunks carry `texts`; its usage is read as a server's would be."""
    chunks = [StreamChunk(t, x) for t, x in zip(times, texts, strict=True)]
    rec = RequestRecord(index, sent, times[-1] + 0.01, chunks)
    read_chunk({"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": usage}}, times[-1], rec)
    for name, value in fields.items():
        setattr(rec, name, value)
    return rec


def summarise_records(records, count_text=None, steady_span=(0.0, 10.0), steady=None):
    return summarise(
        records,
        server="stub",
        server_log=None,
        request_rate=None,
        concurrency=2,
        slo={},
        whole=window(10.0, 100.0),
        steady_span=steady_span,
        steady_measured=steady or window(5.0, 50.0),
        steady_note=None,
        count_text=count_text,
    )


def serving_result(n_requests: int, rate: float | None = 2.0, concurrency: int | None = None):
    summary = ServingSummary(
        server="stub",
        request_rate=rate,
        concurrency=concurrency,
        n_requests=n_requests,
        completed=n_requests,
        errors=0,
        duration_s=1.0,
        output_tokens=2 * n_requests,
        good_requests=n_requests,
    )
    config = {"scenario": "serving", "request_rate": "inf" if rate == math.inf else rate, "max_new_tokens": 2}
    return make_result([10.0], serving=summary, config=config)
