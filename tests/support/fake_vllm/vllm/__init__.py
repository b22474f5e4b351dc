"""A stand-in for vLLM's public API, for contract tests of pytest-llem's vLLM backend.

Checked against vLLM 0.33.0 (its wheel's sources: `vllm/entrypoints/llm.py`,
`vllm/engine/arg_utils.py`, `vllm/config/{cache,parallel,scheduler,model}.py`,
`vllm/sampling_params.py`, `vllm/outputs.py`, `vllm/v1/metrics/stats.py`,
`vllm/exceptions.py`). Written from those sources' behaviour, not copied, and only as far as
pytest-llem's adapter reaches:

- `LLM(model, *, tensor_parallel_size, dtype, seed, gpu_memory_utilization, enforce_eager,
  **engine_kwargs)`: the rest goes to `EngineArgs`, a dataclass, so an unknown argument is a
  `TypeError`; ranges are checked as vLLM's config classes do (`gpu_memory_utilization` in
  (0, 1], `tensor_parallel_size` and `max_num_seqs` at least 1, `max_model_len` at least -1).
  `LLM` sets `disable_log_stats=True` unless it is passed, and then requests carry no metrics.
- `SamplingParams(**kwargs)`: a `msgspec.Struct` in vLLM, so an unknown keyword is a
  `TypeError` ("Unexpected keyword argument ..."); `_verify_args` rejects, with
  `VLLMValidationError` (not a `ValueError` in 0.33), a temperature outside [0, 2] or not
  finite, top_p outside (0, 1], top_k below -1, max_tokens below 1, min_tokens outside
  [0, max_tokens], a repetition_penalty at or below 0.
- `LLM.generate(prompts, params, use_tqdm=False)` returns `RequestOutput`s with
  `prompt_token_ids`, `outputs[i].token_ids` and `metrics`, a `RequestStateStats` (V1
  engine): `arrival_time` on the wall clock (`time.time()`), `first_token_ts` and
  `last_token_ts` on the engine core's monotonic clock, `first_token_latency` (seconds, the
  frontend's wall clock minus `arrival_time`) and `num_generation_tokens`. Subtracting a
  wall-clock time from a monotonic one gives nonsense, as it would on a real engine.

Put this folder first on PYTHONPATH. Each call is appended as a JSON line to the file named
by `VLLM_STAND_IN_LOG`, so a test can check what the adapter asked for. Behaviour it models:
a prompt is one token per word; without `ignore_eos` a request stops early (at half of
`max_tokens`), as if the model wrote its end-of-sequence token; the tokens written depend on
the prompt and on `VLLM_STAND_IN_WEIGHTS` (a number standing for the model's weights).

A `generate` call takes time as the V1 engine's does: every prompt of the batch is prefilled
in its first step, which lasts `FIRST_TOKEN_S`; that step's end on the monotonic clock is
each request's `first_token_ts` (the V1 engine stamps every request of a step with the
step's time), and `first_token_latency` is the wall clock then minus `arrival_time`. The
decoding steps follow, one token each `TOKEN_S` (slept at once, as one span), and a
request's `last_token_ts` is its first plus `TOKEN_S` per further token.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from dataclasses import dataclass, field
from typing import Any

__version__ = "0.33.0-stand-in"
FIRST_TOKEN_S = 0.025
TOKEN_S = 0.004


class VLLMValidationError(Exception):
    """As `vllm.exceptions.VLLMValidationError` (a `VLLMClientError`, not a `ValueError`)."""


def _log(event: str, **fields: Any) -> None:
    with open(os.environ["VLLM_STAND_IN_LOG"], "a") as f:
        f.write(json.dumps({"event": event, **fields}) + "\n")


_SAMPLING_DEFAULTS: dict[str, Any] = {
    "n": 1,
    "presence_penalty": 0.0,
    "frequency_penalty": 0.0,
    "repetition_penalty": 1.0,
    "temperature": 1.0,
    "top_p": 1.0,
    "top_k": 0,
    "min_p": 0.0,
    "seed": None,
    "stop": None,
    "stop_token_ids": None,
    "ignore_eos": False,
    "max_tokens": 16,
    "min_tokens": 0,
}


class SamplingParams:
    def __init__(self, **kwargs: Any) -> None:
        for name in kwargs:
            if name not in _SAMPLING_DEFAULTS:
                raise TypeError(f"Unexpected keyword argument {name!r}")
        values = {**_SAMPLING_DEFAULTS, **kwargs}
        for name, value in values.items():
            setattr(self, name, value)
        self._verify_args()
        _log("sampling_params", **kwargs)

    def _verify_args(self) -> None:
        checks = [
            (
                math.isfinite(self.temperature),
                f"temperature must be a finite number, got {self.temperature}.",
            ),
            (self.temperature >= 0.0, f"temperature must be non-negative, got {self.temperature}."),
            (self.temperature <= 2.0, f"temperature must be in [0, 2], got {self.temperature}."),
            (0.0 < self.top_p <= 1.0, f"top_p must be in (0, 1], got {self.top_p}."),
            (self.top_k >= -1, f"top_k must be 0 (disable), or at least 1, got {self.top_k}."),
            (self.repetition_penalty > 0.0, "repetition_penalty must be greater than zero."),
            (
                self.max_tokens is None or self.max_tokens >= 1,
                f"max_tokens must be at least 1, got {self.max_tokens}.",
            ),
            (self.min_tokens >= 0, f"min_tokens must be greater than or equal to 0, got {self.min_tokens}."),
            (
                self.max_tokens is None or self.min_tokens <= self.max_tokens,
                f"min_tokens must be at most max_tokens={self.max_tokens}, got {self.min_tokens}.",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise VLLMValidationError(message)


@dataclass
class EngineArgs:
    """The engine arguments pytest-llem passes (a real `EngineArgs` has many more)."""

    model: str = "facebook/opt-125m"
    tensor_parallel_size: int = 1
    dtype: str = "auto"
    seed: int = 0
    gpu_memory_utilization: float = 0.92
    enforce_eager: bool = False
    max_num_seqs: int | None = None
    max_model_len: int | None = None
    disable_log_stats: bool = False

    def __post_init__(self) -> None:
        problems = []
        if not 0 < self.gpu_memory_utilization <= 1:
            problems.append(("gpu_memory_utilization", "Input should be greater than 0 and at most 1"))
        if self.tensor_parallel_size < 1:
            problems.append(("tensor_parallel_size", "Input should be greater than or equal to 1"))
        if self.max_num_seqs is not None and self.max_num_seqs < 1:
            problems.append(("max_num_seqs", "Input should be greater than or equal to 1"))
        if self.max_model_len is not None and self.max_model_len < -1:
            problems.append(("max_model_len", "Input should be greater than or equal to -1"))
        if problems:
            # vLLM's config classes are pydantic dataclasses: a ValidationError, which is a ValueError.
            raise ValueError("; ".join(f"{name}: {message}" for name, message in problems))


@dataclass
class CompletionOutput:
    index: int
    text: str
    token_ids: list[int]
    cumulative_logprob: float | None = None
    logprobs: Any = None
    finish_reason: str | None = None


@dataclass
class RequestStateStats:
    num_generation_tokens: int = 0
    num_preemptions: int = 0
    arrival_time: float = 0.0  # wall clock
    queued_ts: float = 0.0  # engine core's monotonic clock, as the three below
    scheduled_ts: float = 0.0
    first_token_ts: float = 0.0
    last_token_ts: float = 0.0
    first_token_latency: float = 0.0
    is_corrupted: bool = False


@dataclass
class RequestOutput:
    request_id: str
    prompt: str | None
    prompt_token_ids: list[int] | None
    prompt_logprobs: Any
    outputs: list[CompletionOutput] = field(default_factory=list)
    finished: bool = True
    metrics: RequestStateStats | None = None


def _token_ids(prompt: str, generated: int) -> list[int]:
    """What greedy decoding of `prompt` writes: fixed for a prompt, shifted by the stand-in's
    `VLLM_STAND_IN_WEIGHTS` (as other weights would write other tokens)."""
    start = len(prompt) * 31 + int(os.environ.get("VLLM_STAND_IN_WEIGHTS", "0"))
    return [(start + i) % 50_000 for i in range(generated)]


class LLM:
    def __init__(
        self,
        model: str,
        *,
        tensor_parallel_size: int = 1,
        dtype: str = "auto",
        seed: int = 0,
        gpu_memory_utilization: float = 0.92,
        enforce_eager: bool = False,
        **kwargs: Any,
    ) -> None:
        passed = {
            "tensor_parallel_size": tensor_parallel_size,
            "dtype": dtype,
            "seed": seed,
            "gpu_memory_utilization": gpu_memory_utilization,
            "enforce_eager": enforce_eager,
            **kwargs,
        }
        if "disable_log_stats" not in kwargs:
            kwargs["disable_log_stats"] = True
        self.engine_args = EngineArgs(
            model=model,
            tensor_parallel_size=tensor_parallel_size,
            dtype=dtype,
            seed=seed,
            gpu_memory_utilization=gpu_memory_utilization,
            enforce_eager=enforce_eager,
            **kwargs,
        )
        _log("engine", model=model, **passed)
        self._requests = 0

    def generate(
        self, prompts: list[str], sampling_params: SamplingParams | None = None, *, use_tqdm: bool = True
    ) -> list[RequestOutput]:
        params = sampling_params or SamplingParams()
        arrival, queued = time.time(), time.monotonic()
        _log("generate", prompts=len(prompts), use_tqdm=use_tqdm, started_s=queued)
        outputs = []
        lengths = [
            params.max_tokens if params.ignore_eos else max(params.min_tokens, params.max_tokens // 2)
            for _ in prompts
        ]
        time.sleep(FIRST_TOKEN_S)  # the prefill step: every prompt of the batch
        first_ts, first_wall = time.monotonic(), time.time()
        time.sleep(TOKEN_S * (max(lengths, default=1) - 1))  # the decoding steps
        for prompt, generated in zip(prompts, lengths, strict=True):
            metrics = RequestStateStats(
                num_generation_tokens=generated,
                arrival_time=arrival,
                queued_ts=queued,
                scheduled_ts=queued,
                first_token_ts=first_ts,
                last_token_ts=first_ts + TOKEN_S * (generated - 1),
                first_token_latency=first_wall - arrival,
            )
            self._requests += 1
            outputs.append(
                RequestOutput(
                    request_id=str(self._requests),
                    prompt=prompt,
                    prompt_token_ids=list(range(len(prompt.split()))),
                    prompt_logprobs=None,
                    outputs=[CompletionOutput(0, "", _token_ids(prompt, generated), finish_reason="length")],
                    metrics=None if self.engine_args.disable_log_stats else dataclasses.replace(metrics),
                )
            )
        return outputs
