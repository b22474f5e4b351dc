"""The transformers generation engine shared by one-process runs and accelerate ranks.

`TorchGeneration` loads a model through `from_pretrained`, tokenises, seeds, generates and
counts; `record_outcomes` reports a list of batches through the workload's context. Runs in
the experiment's child only (it imports torch and transformers, through `extras`).

Decoding follows the config alone, as with `backend="vllm"`: transformers fills every setting
that `generate()` is not given from the checkpoint's `generation_config` (a
`repetition_penalty`, sampling with its own temperature, ...), while vLLM's `LLM.generate`
ignores those when it is given `SamplingParams`. So the checkpoint's decoding defaults are
dropped at load (its special token ids are kept) and listed in `extra['decoding']`, next to
the settings in effect.
"""

from __future__ import annotations

import hashlib
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_llem.backends import DEFAULT_MAX_NEW_TOKENS
from pytest_llem.base.digests import json_digest
from pytest_llem.config import ExperimentConfig
from pytest_llem.context import ExperimentContext, combine_windows
from pytest_llem.energy import quality
from pytest_llem.errors import ConfigError
from pytest_llem.extras import import_extra
from pytest_llem.results import PREFILL_DECODE_KEY, PrefillDecode, QualityWarning, WindowMeasurement

PURPOSE = "backend='pytorch'"
# What a checkpoint's generation_config may hold that is not a decoding choice: kept.
KEPT_GENERATION_FIELDS = ("bos_token_id", "eos_token_id", "pad_token_id", "decoder_start_token_id")


@dataclass(frozen=True)
class BatchOutcome:
    input_tokens: int
    output_tokens: int
    latency_s: float
    first_token_s: float | None
    #: Digest of the generated token ids: equal digests, equal outputs (reproducibility checks).
    output_digest: str = ""
    #: Each request's [input tokens, output tokens], in prompt order.
    request_tokens: list[list[int]] = field(default_factory=list)


class FirstTokenTimer:
    """A generate() streamer that notes when the first new tokens arrive.

    generate() hands the prompt to the streamer first, then each step's new tokens. On CUDA,
    recent transformers may hand tokens over one step late to avoid a synchronisation, so
    the time can include one decoding step. `on_first_token` is called once, right then.
    """

    def __init__(self, on_first_token: Callable[[], None] = lambda: None) -> None:
        self.started = time.perf_counter()
        self.first_token_s: float | None = None
        self._prompt_seen = False
        self._on_first_token = on_first_token

    def put(self, value: Any) -> None:
        if not self._prompt_seen:
            self._prompt_seen = True
        elif self.first_token_s is None:
            self.first_token_s = time.perf_counter() - self.started
            self._on_first_token()

    def end(self) -> None:
        return None


class TorchGeneration:
    """A loaded model and tokenizer, and batched generation with the config's decoding."""

    def __init__(self, config: ExperimentConfig, device: Any = None) -> None:
        self.config = config
        torch = self.torch = import_extra("torch", "torch", PURPOSE)
        transformers = import_extra("transformers", "torch", PURPOSE)
        transformers.utils.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()
        if config.model is None:
            raise ConfigError("model: backend='pytorch' needs model= (a hub id or a local directory)")
        self.device = torch.device(device) if device is not None else self._choose_device()
        self.tokenizer, self.model = _load(transformers, torch, config, self.device)
        self.max_new_tokens = config.max_new_tokens or DEFAULT_MAX_NEW_TOKENS
        self.ignored_checkpoint_defaults = neutral_generation_config(transformers, self.model)

    def decoding_settings(self) -> dict[str, Any]:
        """The decoding in effect (same keys as the vLLM backend's), and what was not applied."""
        kwargs = self.generation_kwargs()
        greedy = not kwargs["do_sample"]
        return {
            "max_new_tokens": kwargs["max_new_tokens"],
            "min_new_tokens": kwargs.get("min_new_tokens", 0),
            "ignore_eos": self.config.ignore_eos,
            "greedy": greedy,
            "temperature": self.config.temperature,
            "top_p": 1.0 if greedy else self.config.top_p,
            "top_k": 0 if greedy else self.config.top_k,
            "repetition_penalty": 1.0,
            "checkpoint_defaults_ignored": self.ignored_checkpoint_defaults,
        }

    def _choose_device(self) -> Any:
        wanted = self.config.device
        if wanted == "auto":
            wanted = "cuda" if self.torch.cuda.is_available() else "cpu"
        if wanted == "cuda" and not self.torch.cuda.is_available():
            raise ConfigError(
                "device: 'cuda' was asked for but torch sees no CUDA GPU; use device='cpu' or 'auto'"
            )
        return self.torch.device(wanted)

    def encode(self, prompts: list[str]) -> Any:
        return self.tokenizer(
            prompts,
            return_tensors="pt",
            padding=True,
            truncation=True,
            max_length=self.config.max_input_tokens,
        ).to(self.device)

    def generation_kwargs(self) -> dict[str, Any]:
        config = self.config
        kwargs: dict[str, Any] = {
            "max_new_tokens": self.max_new_tokens,
            "pad_token_id": self.tokenizer.pad_token_id,
            "do_sample": config.temperature > 0,
        }
        if config.ignore_eos:
            kwargs["min_new_tokens"] = self.max_new_tokens
        if config.temperature > 0:
            kwargs.update(temperature=config.temperature, top_p=config.top_p, top_k=config.top_k)
        return kwargs

    def synchronize(self) -> None:
        if self.device.type == "cuda":
            self.torch.cuda.synchronize(self.device)

    def generate(self, encoding: Any, parts: PrefillDecodeParts | None = None) -> BatchOutcome:
        """One batch; with `parts` (inside an open window) its prefill and decode measured apart."""
        if parts is not None:
            parts.begin()
        timer = FirstTokenTimer(parts.first_token if parts is not None else lambda: None)
        with self.torch.inference_mode():
            output = self.model.generate(**encoding, **self.generation_kwargs(), streamer=timer)
        self.synchronize()
        latency_s = time.perf_counter() - timer.started
        if parts is not None:
            parts.end()
        prompt_length = encoding["input_ids"].shape[1]
        inputs = [int(n) for n in encoding["attention_mask"].sum(dim=1).tolist()]
        outputs = self.new_tokens_per_row(output[:, prompt_length:])
        return BatchOutcome(
            input_tokens=sum(inputs),
            output_tokens=sum(outputs),
            latency_s=latency_s,
            first_token_s=timer.first_token_s,
            output_digest=token_digest(output[:, prompt_length:].tolist()),
            request_tokens=[[i, o] for i, o in zip(inputs, outputs, strict=True)],
        )

    def new_tokens_per_row(self, new_tokens: Any) -> list[int]:
        """Generated tokens per row, up to and including the first end-of-sequence token."""
        rows = new_tokens.tolist()
        if self.config.ignore_eos:
            return [len(row) for row in rows]
        eos = self.tokenizer.eos_token_id
        return [row.index(eos) + 1 if eos in row else len(row) for row in rows]

    def seed(self) -> None:
        self.torch.manual_seed(self.config.seed)

    def reset_peak_memory(self) -> None:
        if self.device.type == "cuda":
            self.torch.cuda.reset_peak_memory_stats(self.device)

    def peak_memory(self) -> tuple[int, str]:
        if self.device.type == "cuda":
            return int(self.torch.cuda.max_memory_allocated(self.device)), "cuda_max_allocated"
        # ru_maxrss is in KiB on Linux: the process's peak, model loading included.
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "peak_rss"

    def non_embedding_parameters(self) -> int:
        embeddings = {id(p) for module in (self.model.get_input_embeddings(),) for p in module.parameters()}
        for name, module in self.model.named_modules():
            if name.endswith(("wpe", "embed_positions")):  # learned position embeddings
                embeddings |= {id(p) for p in module.parameters()}
        return sum(p.numel() for p in self.model.parameters() if id(p) not in embeddings)


class PrefillDecodeParts:
    """Each generate() call's prefill and decode, measured as two parts of the open window.

    The split is made with the window's own meter (`ctx.begin_part`/`ctx.end_part`), not by
    cutting its power timeline afterwards: the energy counter is read at the split itself,
    as at any window's edge, where a timeline sampled every `sample_interval_s` would have
    to be interpolated across a prefill that often lasts less than one sample. The prefill
    part begins just before generate() and ends in the streamer's first-token callback,
    where the decode part begins; decode ends once generate() returned and the device is
    synchronised. As with every window, a part's span starts just before its first counter
    read, so each part holds its own starting read. What lies in the window but in neither
    part: the closing read at each part's end, counting each batch's tokens, and the passes
    loop. A call that never hands over a new token is all prefill. On CUDA, transformers may
    hand the first tokens over one step late (`FirstTokenTimer`): the prefill then holds one
    decoding step, and the meter's synchronisation at the split puts the edge where the work is.
    """

    def __init__(self, ctx: ExperimentContext) -> None:
        self._ctx = ctx
        self._prefill: list[WindowMeasurement] = []
        self._decode: list[WindowMeasurement] = []
        self._in_prefill = False
        self._tokens = [0, 0]  # input, output

    def begin(self) -> None:
        self._ctx.begin_part(PREFILL_PART)
        self._in_prefill = True

    def first_token(self) -> None:
        # In the streamer's callback, inside generate(), which waits for it: one window's
        # edges (an end and a begin). benchmarks/meter_cost.py's "edges" column is their cost:
        # 0.85 ms for one simulated GPU (0.74 ms with no meter); the real driver adds ~0.8 ms a call.
        self._prefill.append(self._ctx.end_part(PREFILL_PART))
        self._in_prefill = False
        self._ctx.begin_part(DECODE_PART)

    def end(self) -> None:
        if self._in_prefill:
            self._prefill.append(self._ctx.end_part(PREFILL_PART))
            self._in_prefill = False
        else:
            self._decode.append(self._ctx.end_part(DECODE_PART))

    def count(self, outcomes: list[BatchOutcome]) -> None:
        """The tokens of the calls measured, for the per-token figures."""
        for outcome in outcomes:
            self._tokens[0] += outcome.input_tokens
            self._tokens[1] += outcome.output_tokens

    def summary(self) -> PrefillDecode:
        prefill, decode = (
            combine_windows(measured) if measured else WindowMeasurement(duration_s=0.0)
            for measured in (self._prefill, self._decode)
        )
        return PrefillDecode(
            calls=len(self._prefill),
            prefill_duration_s=prefill.duration_s,
            decode_duration_s=decode.duration_s,
            prefill_energy_j=prefill.energy_j,
            decode_energy_j=decode.energy_j if self._decode else None,
            energy_scope=prefill.totals.energy_scope,
            input_tokens=self._tokens[0],
            output_tokens=self._tokens[1],
            prefill_warnings=_part_flags(prefill),
            decode_warnings=_part_flags(decode),
        )

    def record(self) -> None:
        """Into the result (`ExperimentResult.prefill_decode`); the per-token figures are derived."""
        self._ctx.record(**{PREFILL_DECODE_KEY: self.summary().as_extra()})


PREFILL_PART, DECODE_PART = "prefill", "decode"
# Flags about one window's length: every part is a fraction of a second by nature, and what
# the figures rest on is the sum of many, so these would doubt every split. Each part's
# counter resolution, zero readings, drift, throttling and the rest are kept.
_PER_WINDOW_LENGTH_FLAGS = frozenset({quality.SHORT_WINDOW, quality.FEW_POWER_SAMPLES})


def _part_flags(measured: WindowMeasurement) -> list[QualityWarning]:
    return [w for w in measured.warnings if w.code not in _PER_WINDOW_LENGTH_FLAGS]


def neutral_generation_config(transformers: Any, model: Any) -> dict[str, Any]:
    """Replace the checkpoint's generation_config with one holding only its token ids.

    Returns the decoding defaults it had, which `generate()` would otherwise have applied.
    """
    checkpoint = getattr(model, "generation_config", None)
    if checkpoint is None:
        return {}
    ignored = {
        key: value
        for key, value in sorted(checkpoint.to_diff_dict().items())
        if key not in KEPT_GENERATION_FIELDS and not key.startswith("_") and key != "transformers_version"
    }
    model.generation_config = transformers.GenerationConfig(
        **{key: getattr(checkpoint, key, None) for key in KEPT_GENERATION_FIELDS}
    )
    return ignored


def _load(transformers: Any, torch: Any, config: ExperimentConfig, device: Any) -> tuple[Any, Any]:
    model_ref = str(config.model)
    if model_ref.startswith((".", "/", "~")) and not Path(model_ref).expanduser().is_dir():
        raise ConfigError(f"model: no such directory {model_ref!r}; give a local model directory or a hub id")
    dtypes = {"auto": "auto", "fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(model_ref)
        # transformers 5 renamed `torch_dtype` to `dtype`.
        dtype_arg = "dtype" if int(transformers.__version__.split(".")[0]) >= 5 else "torch_dtype"
        model = transformers.AutoModelForCausalLM.from_pretrained(
            model_ref, **{dtype_arg: dtypes[config.precision]}
        )
    except (OSError, ValueError) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"model: cannot load {model_ref!r}: {first_line}") from None
    tokenizer.padding_side = "left"  # decoder-only: new tokens follow the prompt, pads go first
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer, model.to(device).eval()


def token_digest(rows: list[list[int]]) -> str:
    """Digest of a batch's generated token ids, row by row: equal digests, equal outputs."""
    return hashlib.sha256(str(rows).encode()).hexdigest()[:16]


def record_outcomes(
    ctx: ExperimentContext, outcomes: list[BatchOutcome], one_pass: list[BatchOutcome] | None = None
) -> None:
    """Count every batch run; describe the work by `one_pass` over the prompts (default: all of
    `outcomes`): further passes repeat the same requests, and how many ran depends on the machine."""
    for outcome in outcomes:
        ctx.record(output_tokens=outcome.output_tokens, input_tokens=outcome.input_tokens)
        ctx.record_latency(batch_s=outcome.latency_s, first_token_s=outcome.first_token_s)
    ctx.record(**describe_outcomes(outcomes if one_pass is None else one_pass))


def describe_outcomes(one_pass: list[BatchOutcome]) -> dict[str, str]:
    """The digests of one pass over the prompts: generated tokens, and each request's counts."""
    digests = "".join(o.output_digest for o in one_pass)
    return {
        "output_digest": hashlib.sha256(digests.encode()).hexdigest()[:16],
        "request_tokens_digest": json_digest([pair for o in one_pass for pair in o.request_tokens]),
    }
