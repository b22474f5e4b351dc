"""`backend="pytorch"`: Hugging Face transformers models, generated with `model.generate`.

Everything up to the measured window happens outside it: loading the tokenizer and model
through `from_pretrained`, tokenising every batch, and `warmup_batches` of generation. The
window covers generation only: every batch, again and again until the round has been
measured for `min_window_s` (`ExperimentContext.passes`); tokens are counted per batch
actually run, and `extra['passes']` says how many passes that took. Each generate() call's
prefill and decode are measured apart as parts of the window (`PrefillDecodeParts`), summed
into the result's `prefill_decode`. With
`num_processes > 1` the work is spread over ranks started through accelerate (see
`backends.distributed`), measured once for all of them.
"""

from __future__ import annotations

from pytest_llem.backends.distributed import coordinate_ranks
from pytest_llem.backends.generation import (
    BatchOutcome,
    PrefillDecodeParts,
    TorchGeneration,
    record_outcomes,
)
from pytest_llem.backends.prompts import batched, load_prompts
from pytest_llem.context import ExperimentContext
from pytest_llem.progress import LOADING_MODEL, WARM_UP


def run(ctx: ExperimentContext) -> None:
    """The workload behind `backend="pytorch"`."""
    config = ctx.config
    if config.num_processes > 1:
        coordinate_ranks(ctx)
        return
    ctx.phase(LOADING_MODEL)
    engine = TorchGeneration(config)
    encodings = [engine.encode(batch) for batch in batched(load_prompts(config), config.batch_size)]
    engine.seed()
    if config.warmup_batches:
        ctx.phase(WARM_UP)
    for index in range(config.warmup_batches):
        engine.generate(encodings[index % len(encodings)])
    engine.reset_peak_memory()
    outcomes = []
    parts = PrefillDecodeParts(ctx)
    for _ in ctx.rounds():
        engine.seed()  # every round draws the same samples, whatever ran before it
        round_outcomes: list[BatchOutcome] = []
        with ctx.window():
            for _ in ctx.passes():  # every batch again, until the round lasts min_window_s
                round_outcomes.extend(engine.generate(encoding, parts) for encoding in encodings)
        record_outcomes(ctx, round_outcomes, one_pass=round_outcomes[: len(encodings)])
        parts.count(round_outcomes)
        outcomes.extend(round_outcomes)
    parts.record()
    processed = sum(o.input_tokens + o.output_tokens for o in outcomes)
    peak_bytes, kind = engine.peak_memory()
    ctx.record_resources(peak_bytes, kind, flops=2.0 * engine.non_embedding_parameters() * processed)
    ctx.record(
        device=str(engine.device),
        batches=len(outcomes),
        precision=config.precision,
        decoding=engine.decoding_settings(),
    )
    if engine.device.type == "cpu":
        ctx.record(cpu_threads=engine.torch.get_num_threads())
