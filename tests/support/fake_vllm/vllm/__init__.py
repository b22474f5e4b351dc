"""A stand-in for vLLM's public API, for contract tests of pytest-llem's vLLM backend.

It implements only what the adapter uses: `LLM(**engine_kwargs)`, `SamplingParams(**kwargs)`
and `LLM.generate(prompts, params, use_tqdm=False)` returning `RequestOutput`-shaped objects
with `prompt_token_ids`, `outputs[i].token_ids` and `metrics` (arrival, first and last token
times). Put this folder first on PYTHONPATH. Each call is appended as a JSON line to the file
named by `VLLM_STAND_IN_LOG`, so a test can check what the adapter asked for.

Behaviour it models: a prompt is one token per word; without `ignore_eos` a request stops
early (at half of `max_tokens`), as if the model wrote its end-of-sequence token.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from typing import Any

__version__ = "0.0-stand-in"
_TOKEN_TIME_S = 0.001


def _log(event: str, **fields: Any) -> None:
    with open(os.environ["VLLM_STAND_IN_LOG"], "a") as f:
        f.write(json.dumps({"event": event, **fields}) + "\n")


class SamplingParams:
    def __init__(self, max_tokens: int = 16, min_tokens: int = 0, ignore_eos: bool = False, **other: Any):
        self.max_tokens, self.min_tokens, self.ignore_eos = max_tokens, min_tokens, ignore_eos
        self.kwargs = {"max_tokens": max_tokens, "min_tokens": min_tokens, "ignore_eos": ignore_eos, **other}
        _log("sampling_params", **self.kwargs)


@dataclass
class CompletionOutput:
    token_ids: list[int]


@dataclass
class RequestMetrics:
    arrival_time: float
    first_token_time: float
    last_token_time: float


@dataclass
class RequestOutput:
    prompt: str
    prompt_token_ids: list[int]
    outputs: list[CompletionOutput] = field(default_factory=list)
    metrics: RequestMetrics | None = None


class LLM:
    def __init__(self, model: str, **kwargs: Any) -> None:
        _log("engine", model=model, **kwargs)

    def generate(
        self, prompts: list[str], params: SamplingParams, use_tqdm: bool = True
    ) -> list[RequestOutput]:
        _log("generate", prompts=len(prompts), use_tqdm=use_tqdm)
        outputs = []
        for prompt in prompts:
            arrival = time.time()
            generated = (
                params.max_tokens if params.ignore_eos else max(params.min_tokens, params.max_tokens // 2)
            )
            time.sleep(_TOKEN_TIME_S * generated)
            first = arrival + _TOKEN_TIME_S
            outputs.append(
                RequestOutput(
                    prompt=prompt,
                    prompt_token_ids=list(range(len(prompt.split()))),
                    outputs=[CompletionOutput(token_ids=list(range(generated)))],
                    metrics=RequestMetrics(arrival, first, first + _TOKEN_TIME_S * (generated - 1)),
                )
            )
        return outputs
