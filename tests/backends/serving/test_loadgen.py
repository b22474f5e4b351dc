"""The load generator: seeded arrivals, the steady state's edges, and the limit on a whole request."""

from __future__ import annotations

import math
import os
import time

from serving_loads import (
    stub_server,
)

from pytest_llem.backends.serving.loadgen import (
    SteadyState,
    arrival_offsets,
)

# --- arrivals and the steady state -----------------------------------------------------------


def test_poisson_arrivals_are_seeded_and_have_the_asked_rate():
    offsets = arrival_offsets(4000, 8.0, seed=3)
    assert offsets == arrival_offsets(4000, 8.0, seed=3) != arrival_offsets(4000, 8.0, seed=4)
    assert offsets[0] == 0.0 and offsets == sorted(offsets)
    assert 7.0 < (len(offsets) - 1) / offsets[-1] < 9.0
    assert arrival_offsets(5, math.inf, 0) == [0.0] * 5 == arrival_offsets(5, None, 0)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_closed_loop_steady_state_runs_from_full_concurrency_to_the_first_drop_after_the_last_send():
    clock, events = Clock(), []
    steady = SteadyState(
        5, None, 2, lambda: events.append("open"), lambda: events.append("close"), clock=clock
    )
    clock.now = 1.0
    steady.request_sent()
    assert events == []
    clock.now = 2.0
    steady.request_sent()  # 2 in flight: the target
    for t in (3.0, 4.0, 5.0):  # one answered, the next sent
        clock.now = t
        steady.request_done()
        steady.request_sent()
    assert events == ["open"]
    clock.now = 6.0
    steady.request_done()  # all 5 sent: the drain begins
    clock.now = 7.0
    steady.request_done()
    steady.finish()
    assert events == ["open", "close"] and (steady.opened_at, steady.closed_at) == (2.0, 6.0)
    assert steady.note is None


def test_open_loop_steady_state_and_a_load_that_never_reaches_it():
    clock = Clock()
    steady = SteadyState(3, 2.0, None, clock=clock)
    clock.now = 0.0
    steady.request_sent()
    clock.now = 0.4
    steady.request_sent()
    clock.now = 0.5
    steady.request_done()  # answers while arrivals go on: steady
    clock.now = 0.9
    steady.request_sent()  # the last arrival: the drain begins
    steady.finish()
    assert (steady.opened_at, steady.closed_at) == (0.5, 0.9)

    burst = SteadyState(3, 50.0, None, clock=clock)
    for _ in range(3):
        burst.request_sent()
    burst.request_done()
    burst.finish()
    assert burst.opened_at is None and "no steady state: all 3 requests were sent" in burst.note


def test_a_server_that_trickles_bytes_hits_the_limit_on_the_whole_request(tmp_path):

    from pytest_llem.backends.serving.loadgen import LoadPlan, run_load
    from pytest_llem.backends.serving.server import ServerProcess, free_port

    port = free_port()
    command = [part.replace("{port}", str(port)) for part in stub_server("--trickle", "30")]
    server = ServerProcess(command, dict(os.environ), port, tmp_path / "stub.log")
    try:
        server.wait_healthy(30)
        plan = LoadPlan(server.base_url, "m", ["a b"], 4, 0.0, None, 1, 0, request_timeout_s=1.0)
        started = time.monotonic()
        (record,), _ = run_load(plan)
        elapsed = time.monotonic() - started
    finally:
        server.stop()
    assert record.error == "no complete answer within 1 s (the limit on a whole request)"
    assert elapsed < 10 and not record.ok
