"""A per-model suite on the CPU: one tiny causal LM over batch sizes and precisions.

Each case runs `backend="pytorch"` in its own isolated process group: the model is loaded
and warmed up outside the measured window, then 32 prompts generate exactly 32 new tokens
each inside it. No workload code: the marker says what to measure.
"""

import pytest

pytestmark = pytest.mark.llem(
    backend="pytorch",
    device="cpu",
    n_prompts=32,
    max_new_tokens=32,
    max_input_tokens=64,
    warmup_batches=1,
)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("batch_size", [1, 8, 32])
def test_generate(llem, tiny_model_dir, batch_size, precision):
    result = llem.run(model=tiny_model_dir, batch_size=batch_size, precision=precision)
    # Read the sizes back from the result's config: --llem-smoke shrinks them to one prompt and
    # one token. Each round runs the batches again until it lasts min_window_s (2 s on a CPU),
    # and --llem-rounds N measures N rounds whose figures add up: extra["passes"] counts them all.
    config = result.config
    passes = result.extra["passes"]
    batches = -(-config["n_prompts"] // batch_size)
    assert result.output_tokens == config["n_prompts"] * config["max_new_tokens"] * passes
    assert result.batch_latency is not None and result.batch_latency.count == batches * passes
