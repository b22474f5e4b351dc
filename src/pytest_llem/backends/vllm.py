"""`backend="vllm"`: offline inference through `vllm.LLM`, measured per batch.

A thin adapter over vLLM's public API (`LLM`, `SamplingParams`, `LLM.generate` and the
`RequestOutput`s it returns), so that upgrading vLLM rarely touches it. The engine starts
outside the measured window (with the spine's vLLM environment: in-process engine, spawned
workers, no torch.compile), warms up, and then each batch of `batch_size` prompts is one
`generate` call inside the window, with `max_num_seqs=batch_size`; the batches run again until
the round has been measured for `min_window_s`, and every token produced is counted.

Latencies come from each request's `metrics`, which `LLM` leaves out unless the engine is
made with `disable_log_stats=False`. In the V1 engine (vLLM 0.33: `RequestStateStats`)
`arrival_time` is on the wall clock while `first_token_ts` / `last_token_ts` are on the engine
core's monotonic clock: time to first token is the engine's own `first_token_latency`, and
the inter-token latency comes from the two monotonic stamps only. The V0 engine's
`RequestMetrics` (`arrival_time`, `first_token_time`, `last_token_time`) are all wall clock.
"""

from __future__ import annotations

import time
from typing import Any

from pytest_llem.backends import DEFAULT_MAX_NEW_TOKENS
from pytest_llem.backends.generation import BatchOutcome, describe_outcomes, token_digest
from pytest_llem.backends.prompts import batched, load_prompts
from pytest_llem.config import ExperimentConfig
from pytest_llem.context import ExperimentContext
from pytest_llem.errors import ConfigError
from pytest_llem.extras import import_extra
from pytest_llem.progress import IMPORTING, LOADING_MODEL, WARM_UP

PURPOSE = "backend='vllm'"
DTYPES = {"auto": "auto", "fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}


def engine_kwargs(config: ExperimentConfig) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "model": config.model,
        "tensor_parallel_size": config.tensor_parallel_size,
        "dtype": DTYPES[config.precision],
        "gpu_memory_utilization": config.gpu_memory_utilization,
        "enforce_eager": config.enforce_eager,
        "max_num_seqs": config.batch_size,
        "seed": config.seed,
        # LLM() turns request metrics off unless asked: without them, no latencies.
        "disable_log_stats": False,
    }
    if config.max_model_len is not None:
        kwargs["max_model_len"] = config.max_model_len
    return kwargs


def sampling_kwargs(config: ExperimentConfig) -> dict[str, Any]:
    max_tokens = config.max_new_tokens or DEFAULT_MAX_NEW_TOKENS
    kwargs: dict[str, Any] = {
        "max_tokens": max_tokens,
        "temperature": config.temperature,
        "ignore_eos": config.ignore_eos,
    }
    if config.ignore_eos:
        kwargs["min_tokens"] = max_tokens
    if config.temperature > 0:
        # vLLM reads -1 as "top-k off"; pytest-llem's config uses 0 for that.
        kwargs.update(top_p=config.top_p, top_k=config.top_k or -1, seed=config.seed)
    return kwargs


def request_latencies(output: Any) -> tuple[float | None, float | None]:
    """Time to first token and mean inter-token latency, where vLLM reports request metrics.

    Timestamps are only ever subtracted from others of the same clock.
    """
    metrics = getattr(output, "metrics", None)
    if metrics is None:
        return None, None
    generated = len(output.outputs[0].token_ids) if output.outputs else 0
    if hasattr(metrics, "first_token_ts"):  # V1 RequestStateStats
        first_ts = float(getattr(metrics, "first_token_ts", 0.0) or 0.0)
        last_ts = float(getattr(metrics, "last_token_ts", 0.0) or 0.0)
        latency = getattr(metrics, "first_token_latency", None)
        first_token = float(latency) if first_ts > 0 and latency is not None and latency > 0 else None
        inter_token = (last_ts - first_ts) / (generated - 1) if first_ts > 0 and generated > 1 else None
        return first_token, inter_token
    # V0 RequestMetrics: every time on the wall clock.
    first = getattr(metrics, "first_token_time", None)
    arrival = getattr(metrics, "arrival_time", None)
    last = getattr(metrics, "last_token_time", None)
    first_token = first - arrival if first is not None and arrival is not None else None
    inter_token = (
        (last - first) / (generated - 1) if first is not None and last is not None and generated > 1 else None
    )
    return first_token, inter_token


def decoding_settings(config: ExperimentConfig) -> dict[str, Any]:
    """The decoding vLLM applies: the sampling arguments sent, over SamplingParams' defaults."""
    sent = sampling_kwargs(config)
    greedy = config.temperature == 0
    return {
        "max_new_tokens": sent["max_tokens"],
        "min_new_tokens": sent.get("min_tokens", 0),
        "ignore_eos": sent["ignore_eos"],
        "greedy": greedy,
        "temperature": config.temperature,
        "top_p": 1.0 if greedy else config.top_p,
        "top_k": 0 if greedy else config.top_k,
        "repetition_penalty": 1.0,
        "source": "pytest-llem config; vLLM applies no checkpoint generation defaults to LLM.generate "
        "when SamplingParams are given",
    }


def run(ctx: ExperimentContext) -> None:
    """The workload behind `backend="vllm"`."""
    config = ctx.config
    if config.model is None:
        raise ConfigError("model: backend='vllm' needs model= (a hub id or a local directory)")
    ctx.phase(IMPORTING, "vllm")
    vllm = import_extra("vllm", "vllm", PURPOSE)
    ctx.phase(LOADING_MODEL)
    llm = vllm.LLM(**engine_kwargs(config))
    params = vllm.SamplingParams(**sampling_kwargs(config))
    batches = batched(load_prompts(config), config.batch_size)
    if config.warmup_batches:
        ctx.phase(WARM_UP)
    for index in range(config.warmup_batches):
        llm.generate(batches[index % len(batches)], params, use_tqdm=False)
    torch = _torch_with_cuda()
    if torch is not None:
        torch.cuda.reset_peak_memory_stats()
    for _ in ctx.rounds():
        _measure_round(ctx, llm, params, batches)
    if torch is not None:
        ctx.record_resources(int(torch.cuda.max_memory_allocated()), "cuda_max_allocated")
    ctx.record(
        vllm_version=getattr(vllm, "__version__", None),
        precision=config.precision,
        batches=len(batches),
        decoding=decoding_settings(config),
    )


def _measure_round(ctx: ExperimentContext, llm: Any, params: Any, batches: list[list[str]]) -> None:
    """One round: every batch is one `generate` call inside one measured window, all batches
    again until the round has been measured for `min_window_s` (`ExperimentContext.passes`).
    The work is described by the first pass: generated tokens and each request's counts."""
    outcomes: list[BatchOutcome] = []
    with ctx.window():
        for _ in ctx.passes():
            outcomes.extend(_generate_batch(ctx, llm, params, batch) for batch in batches)
    ctx.record(**describe_outcomes(outcomes[: len(batches)]))


def _generate_batch(ctx: ExperimentContext, llm: Any, params: Any, batch: list[str]) -> BatchOutcome:
    started = time.perf_counter()
    outputs = llm.generate(batch, params, use_tqdm=False)
    latency_s = time.perf_counter() - started
    ctx.record_latency(batch_s=latency_s)
    requests = []
    for output in outputs:
        request = [len(output.prompt_token_ids), sum(len(c.token_ids) for c in output.outputs)]
        ctx.record(input_tokens=request[0], output_tokens=request[1])
        first_token_s, inter_token_s = request_latencies(output)
        ctx.record_latency(first_token_s=first_token_s, inter_token_s=inter_token_s)
        requests.append(request)
    return BatchOutcome(
        input_tokens=sum(r[0] for r in requests),
        output_tokens=sum(r[1] for r in requests),
        latency_s=latency_s,
        first_token_s=None,
        output_digest=token_digest([list(c.token_ids) for output in outputs for c in output.outputs]),
        request_tokens=requests,
    )


def _torch_with_cuda() -> Any:
    try:
        import torch
    except ImportError:
        return None
    return torch if torch.cuda.is_available() and torch.cuda.is_initialized() else None
