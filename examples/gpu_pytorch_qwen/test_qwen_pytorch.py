"""Qwen2.5-0.5B-Instruct with transformers on one GPU: batch sizes x precisions.

The shape a team keeps in its repo: one model, the settings it ships with, the grid it
cares about. Run on a GPU machine:  pytest --llem examples/gpu_pytorch_qwen
"""

import pytest

from pytest_llem.testing import needs_gpus

MODEL = "Qwen/Qwen2.5-0.5B-Instruct"

pytestmark = [
    needs_gpus(1),
    pytest.mark.llem(
        backend="pytorch",
        model=MODEL,
        device="cuda",
        gpus=[0],
        n_prompts=256,
        max_input_tokens=256,
        max_new_tokens=128,
        warmup_batches=2,
    ),
]


@pytest.mark.parametrize("precision", ["bf16", "fp16", "fp32"])
@pytest.mark.parametrize("batch_size", [1, 8, 32, 64])
def test_generate(llem, batch_size, precision):
    result = llem.run(batch_size=batch_size, precision=precision)
    # Every pass over the prompts (the batches run again until a round lasts min_window_s).
    assert result.output_tokens == 256 * 128 * result.extra["passes"]
    assert result.energy_j is not None, result.energy_notes


@needs_gpus(2)
def test_two_ranks(llem):
    """Data parallel over two GPUs through accelerate: energy is read once for both."""
    result = llem.run(batch_size=32, precision="bf16", gpus=[0, 1], num_processes=2)
    assert result.extra["ranks"] == 2 and len(result.energy_by_device) == 2
