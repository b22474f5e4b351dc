"""A benchmark suite as a team would keep it: one model, several batch sizes and lengths.

Run it with `pytest --llem examples/cpu_ngram` (or `make demo`). Each case runs in its own
isolated process; the model is built outside the measured window.
"""

from __future__ import annotations

import pytest

from pytest_llem import ExperimentContext


def generate(ctx: ExperimentContext) -> None:
    from ngram_lm import NGramLM, synthetic_prompts, tokenise  # imported in the child only

    model = NGramLM.trained(order=ctx.params.get("order", 3))
    prompts = synthetic_prompts(ctx.config.batch_size * ctx.params["batches"], seed=0)
    batch_size = ctx.config.batch_size
    for start in range(0, len(prompts), batch_size):
        batch = prompts[start : start + batch_size]
        with ctx.window():
            outputs = model.generate(batch, ctx.config.max_new_tokens, seed=ctx.params.get("seed"))
        ctx.record(
            output_tokens=sum(len(o) for o in outputs),
            input_tokens=sum(len(tokenise(p)) for p in batch),
        )
    ctx.record(sample=" ".join(outputs[0][:12]))


@pytest.mark.llem(model="ngram-order3", params={"batches": 100})
@pytest.mark.parametrize("max_new_tokens", [64, 256])
@pytest.mark.parametrize("batch_size", [1, 8, 32])
def test_ngram_generation(llem, batch_size, max_new_tokens):
    result = llem.run(generate, batch_size=batch_size, max_new_tokens=max_new_tokens)
    assert result.output_tokens == 100 * batch_size * max_new_tokens
    assert result.tokens_per_s > 0
