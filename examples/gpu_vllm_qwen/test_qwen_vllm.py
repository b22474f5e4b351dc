"""Qwen2.5-0.5B-Instruct served by vLLM's offline engine: batch sizes x precisions.

Run on a GPU machine with vLLM installed:  pytest --llem examples/gpu_vllm_qwen
"""

import pytest

from pytest_llem.testing import needs_gpus

pytestmark = [
    needs_gpus(1),
    pytest.mark.llem(
        backend="vllm",
        model="Qwen/Qwen2.5-0.5B-Instruct",
        gpus=[0],
        n_prompts=512,
        max_new_tokens=128,
        max_model_len=2048,
        gpu_memory_utilization=0.85,
        warmup_batches=1,
    ),
]


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
@pytest.mark.parametrize("batch_size", [16, 64, 256])
def test_generate(llem, batch_size, precision):
    result = llem.run(batch_size=batch_size, precision=precision)
    # Every pass over the prompts (the batches run again until a round lasts min_window_s).
    assert result.output_tokens == 512 * 128 * result.extra["passes"]
    assert result.energy_j is not None, result.energy_notes
