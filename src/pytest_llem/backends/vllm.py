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

Prefill and decode are split after each call, from the same metrics (`FirstTokenSplit`):
`LLM.generate` gives no signal while it runs, so the split cannot be a meter's edge as in
the pytorch backend. A call's prefill runs from its start to the batch's first-token time
(its last request's first token, converted from the engine's clock to the meter's), its
decode from there to its end; the window's energy is shared out between the spans by the
power timeline (`energy.devices.energy_within_j`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from pytest_llem.backends import DEFAULT_MAX_NEW_TOKENS
from pytest_llem.backends.generation import BatchOutcome, describe_outcomes, token_digest
from pytest_llem.backends.prompts import batched, load_prompts
from pytest_llem.config import ExperimentConfig
from pytest_llem.context import ExperimentContext
from pytest_llem.energy import quality
from pytest_llem.energy.devices import energy_within_j, samples_within
from pytest_llem.errors import ConfigError
from pytest_llem.extras import import_extra
from pytest_llem.progress import IMPORTING, LOADING_MODEL, WARM_UP
from pytest_llem.results import (
    PREFILL_DECODE_KEY,
    DeviceKind,
    PrefillDecode,
    QualityWarning,
    WindowMeasurement,
    sum_or_none,
)

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


def batch_first_token_at(outputs: list[Any]) -> float | None:
    """When the batch's last request got its first token, on `time.perf_counter` (the meter's
    clock): where the batch's prefill ends. Until then some prompt was still being prefilled
    (with chunked prefill, beside other requests' first decoding steps); the V1 engine stamps
    every request of a step with the step's time, so a batch prefilled in one step has one.
    V1's `first_token_ts` is on the engine core's monotonic clock (system-wide, so the same in
    another process), V0's `first_token_time` on the wall clock: each is moved onto
    `perf_counter` by its offset now. None where a request has no such time (metrics off, or
    no token yet)."""
    now = time.perf_counter()
    offsets = {"monotonic": now - time.monotonic(), "wall": now - time.time()}
    moments = []
    for output in outputs:
        metrics = getattr(output, "metrics", None)
        if metrics is None:
            return None
        if hasattr(metrics, "first_token_ts"):  # V1 RequestStateStats
            stamp, clock = float(getattr(metrics, "first_token_ts", 0.0) or 0.0), "monotonic"
        else:
            stamp, clock = float(getattr(metrics, "first_token_time", None) or 0.0), "wall"
        if stamp <= 0:
            return None
        moments.append(stamp + offsets[clock])
    return max(moments) if moments else None


@dataclass
class _Call:
    """One generate() call on the power timeline (seconds in the measured windows)."""

    start_s: float
    first_token_s: float
    end_s: float
    input_tokens: int
    output_tokens: int


@dataclass
class FirstTokenSplit:
    """Every measured generate() call's prefill and decode, split after the call at the
    batch's first-token time (`batch_first_token_at`), into the `PrefillDecode` the pytorch
    backend gives too.

    The spans are known only once the call has returned, so their energy cannot come from a
    meter's reads at the split: each window's energy, device by device, is shared out by its
    power timeline (`energy.devices.energy_within_j`): the total stays the measured one, and
    the split is as sharp as the power readings (`sample_interval_s` apart; on GPUs whose
    power reading is a ~1 s average, a short prefill takes the average of its surroundings).
    A part whose spans hold fewer than `quality.MIN_POWER_SAMPLES` power readings of a device
    is flagged `few_power_samples`, which keeps its figures out of the gate. A call whose
    requests carry no first-token time is left out of the split (and of its token counts).
    """

    calls: int = 0
    prefill_duration_s: float = 0.0
    decode_duration_s: float = 0.0
    input_tokens: int = 0
    output_tokens: int = 0
    prefill_energy_j: list[float | None] = field(default_factory=list)
    decode_energy_j: list[float | None] = field(default_factory=list)
    energy_scope: list[DeviceKind] = field(default_factory=list)
    #: Power readings inside each part's spans, per device label.
    samples: dict[str, dict[str, int]] = field(default_factory=lambda: {"prefill": {}, "decode": {}})
    _open: list[_Call] = field(default_factory=list)

    def add(self, start_s: float, first_token_s: float, end_s: float, outcome: BatchOutcome) -> None:
        """A call of the open window, its moments already on the power timeline."""
        first_token_s = min(max(first_token_s, start_s), end_s)
        self._open.append(_Call(start_s, first_token_s, end_s, outcome.input_tokens, outcome.output_tokens))

    def window_closed(self, window: WindowMeasurement, before_s: float) -> None:
        """Share out the window's energy between its calls' spans; `before_s`: the windows
        measured before it, end to end (where its own timeline starts on the result's)."""
        calls, self._open = self._open, []
        if not calls:
            return
        prefill = [(c.start_s - before_s, c.first_token_s - before_s) for c in calls]
        decode = [(c.first_token_s - before_s, c.end_s - before_s) for c in calls]
        self.calls += len(calls)
        self.prefill_duration_s += sum(end - start for start, end in prefill)
        self.decode_duration_s += sum(end - start for start, end in decode)
        self.input_tokens += sum(c.input_tokens for c in calls)
        self.output_tokens += sum(c.output_tokens for c in calls)
        for part, spans, energies in (
            ("prefill", prefill, self.prefill_energy_j),
            ("decode", decode, self.decode_energy_j),
        ):
            shares = [energy_within_j(device, spans) for device in window.devices]
            energies.append(sum_or_none(shares) if shares else None)
            for device in window.devices:
                counts = self.samples[part]
                counts[device.device] = counts.get(device.device, 0) + samples_within(device.timeline, spans)
        self.energy_scope = list(dict.fromkeys([*self.energy_scope, *window.totals.energy_scope]))

    def _flags(self, part: str) -> list[QualityWarning]:
        return [
            quality.flag(
                quality.FEW_POWER_SAMPLES,
                f"{label}: the {part} spans held {count} power samples in all, fewer than "
                f"{quality.MIN_POWER_SAMPLES}: the {part} share of the energy rests on too few; measure "
                "more batches (min_window_s=) or shorten --llem-sample-interval",
            )
            for label, count in sorted(self.samples[part].items())
            if count < quality.MIN_POWER_SAMPLES
        ]

    def summary(self) -> PrefillDecode | None:
        if not self.calls:
            return None
        return PrefillDecode(
            calls=self.calls,
            prefill_duration_s=self.prefill_duration_s,
            decode_duration_s=self.decode_duration_s,
            prefill_energy_j=sum_or_none(self.prefill_energy_j),
            decode_energy_j=sum_or_none(self.decode_energy_j),
            energy_scope=self.energy_scope,
            input_tokens=self.input_tokens,
            output_tokens=self.output_tokens,
            prefill_warnings=self._flags("prefill"),
            decode_warnings=self._flags("decode"),
        )

    def record(self, ctx: ExperimentContext) -> None:
        """Into the result (`ExperimentResult.prefill_decode`), as the pytorch backend's split."""
        summary = self.summary()
        if summary is not None:
            ctx.record(**{PREFILL_DECODE_KEY: summary.as_extra()})


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
    split = FirstTokenSplit()
    for _ in ctx.rounds():
        _measure_round(ctx, llm, params, batches, split)
    split.record(ctx)
    if torch is not None:
        ctx.record_resources(int(torch.cuda.max_memory_allocated()), "cuda_max_allocated")
    ctx.record(
        vllm_version=getattr(vllm, "__version__", None),
        precision=config.precision,
        batches=len(batches),
        decoding=decoding_settings(config),
    )


def _measure_round(
    ctx: ExperimentContext, llm: Any, params: Any, batches: list[list[str]], split: FirstTokenSplit
) -> None:
    """One round: every batch is one `generate` call inside one measured window, all batches
    again until the round has been measured for `min_window_s` (`ExperimentContext.passes`).
    The work is described by the first pass: generated tokens and each request's counts."""
    outcomes: list[BatchOutcome] = []
    before_s = sum(w.duration_s for w in ctx.windows)
    with ctx.window():
        on_timeline = ctx.on_timeline()
        for _ in ctx.passes():
            for batch in batches:
                started = time.perf_counter()
                outputs = llm.generate(batch, params, use_tqdm=False)
                ended = time.perf_counter()
                outcome = _record_batch(ctx, outputs, ended - started)
                first_token = batch_first_token_at(outputs)
                if first_token is not None:
                    split.add(on_timeline(started), on_timeline(first_token), on_timeline(ended), outcome)
                outcomes.append(outcome)
    split.window_closed(ctx.windows[-1], before_s)
    ctx.record(**describe_outcomes(outcomes[: len(batches)]))


def _record_batch(ctx: ExperimentContext, outputs: list[Any], latency_s: float) -> BatchOutcome:
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
