"""Qwen2.5-0.5B-Instruct behind `vllm serve`, under Poisson load at three request rates.

Run on a GPU machine with vLLM installed:  pytest --llem examples/gpu_vllm_serving
"""

import pytest

from pytest_llem.testing import needs_gpus

N_REQUESTS = 512
MAX_NEW_TOKENS = 128

pytestmark = [
    needs_gpus(1),
    pytest.mark.llem(
        scenario="serving",
        server="vllm",
        model="Qwen/Qwen2.5-0.5B-Instruct",
        gpus=[0],
        precision="bf16",
        n_requests=N_REQUESTS,
        max_new_tokens=MAX_NEW_TOKENS,
        max_model_len=2048,
        gpu_memory_utilization=0.85,
        warmup_requests=8,
        slo={"ttft_s": 0.5, "tpot_s": 0.05},
        server_startup_timeout=900,
    ),
]


@pytest.mark.parametrize("request_rate", [4.0, 16.0, 64.0])
def test_serve(llem, request_rate):
    result = llem.run(request_rate=request_rate)
    serving = result.serving
    assert serving.errors == 0 and serving.completed == N_REQUESTS
    assert serving.output_tokens == N_REQUESTS * MAX_NEW_TOKENS  # ignore_eos: exact lengths
    assert serving.token_mismatches == 0
    assert result.energy_j is not None, result.energy_notes
