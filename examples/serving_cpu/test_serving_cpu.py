"""A serving suite on the CPU: `transformers serve` with a tiny model, under two request rates.

Each case starts the server inside its own isolated process group on a free port of
127.0.0.1, waits for its health check, warms it up, and then sends 24 streaming requests
with Poisson arrivals at the given rate. The measured window covers the load; its
steady-state part gives the headline energy per request and per output token. No workload
code: the marker says what to measure.
"""

import pytest

N_REQUESTS = 24
MAX_NEW_TOKENS = 16

pytestmark = pytest.mark.llem(
    scenario="serving",
    server="transformers",
    device="cpu",
    n_requests=N_REQUESTS,
    max_new_tokens=MAX_NEW_TOKENS,
    warmup_requests=2,
    slo={"ttft_s": 2.0, "tpot_s": 0.5},
    server_startup_timeout=300,
)


@pytest.mark.parametrize("request_rate", [2.0, 8.0])
def test_serve(llem, tiny_model_dir, request_rate):
    result = llem.run(model=tiny_model_dir, request_rate=request_rate)
    serving = result.serving
    rounds = len(result.rounds) or 1  # --llem-rounds N: each round is one load
    assert serving.errors == 0 and serving.completed == N_REQUESTS
    assert serving.output_tokens == N_REQUESTS * MAX_NEW_TOKENS
    assert result.output_tokens == N_REQUESTS * MAX_NEW_TOKENS * rounds
    # Usage the streamed text cannot hold would be flagged and kept out of the gate.
    assert serving.impossible_usage == 0
    assert serving.ttft.p50_s <= serving.ttft.p90_s <= serving.ttft.p99_s
