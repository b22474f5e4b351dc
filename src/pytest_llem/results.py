"""The data that crosses the process boundary and lands in reports, as pydantic models.

The child never pickles Python objects back to pytest: it writes a `ChildOutcome` as JSON
and the parent validates it. Energy fields stay `None` when no meter measured them;
`warnings` says why, so a missing figure is never mistaken for a zero.
"""

from __future__ import annotations

import math
import statistics
from datetime import datetime, timezone
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    computed_field,
    field_serializer,
    model_validator,
)


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def as_utc(moment: datetime) -> datetime:
    """A timestamp without a time zone (written by hand, or by another tool) is taken as UTC,
    so every timestamp read back compares with every other."""
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment


#: A timestamp that is always time-zone aware once validated.
UtcDatetime = Annotated[datetime, AfterValidator(as_utc)]


def sum_or_none(values: list[Any]) -> Any:
    """The sum, or None when any part is None: a partial sum would pass for the whole."""
    return None if any(v is None for v in values) else sum(values)


#: The largest token count a result holds: exact as a JSON number everywhere and within the
#: store's 64-bit integers. A workload that records more has counted something else.
MAX_TOKEN_COUNT = 2**53 - 1
#: A latency: seconds, finite and never negative (a clock read backwards is not a latency).
LatencySeconds = Annotated[float, Field(ge=0, allow_inf_nan=False)]

#: The code of the warning that says energy was not measured: a missing figure, not a doubtful one.
ENERGY_NOT_MEASURED = "energy_not_measured"


class QualityWarning(BaseModel):
    """A measurement-quality flag: a stable machine-readable code and a sentence for people."""

    model_config = ConfigDict(frozen=True)

    code: str
    message: str

    @property
    def doubts_a_figure(self) -> bool:
        """True for a quality flag on a measured figure; False where there is no figure at all."""
        return self.code != ENERGY_NOT_MEASURED


DeviceKind = Literal["gpu", "cpu", "dram"]


class PowerSample(BaseModel):
    """One point of a device's timeline, `t_s` seconds after its window began."""

    t_s: float
    power_w: float | None = None
    temperature_c: float | None = None
    sm_clock_mhz: float | None = None


class DeviceEnergy(BaseModel):
    """What one device used during the measured window(s), and how it was measured."""

    device: str = Field(description="label for people: gpu0, cpu-package-0, ...")
    kind: DeviceKind = "gpu"
    name: str | None = None
    uuid: str | None = Field(default=None, description="stable identity of a GPU")
    energy_j: float | None = None
    energy_source: str | None = Field(
        default=None, description="nvml-counter, nvml-power (integrated samples), rapl, zeus, ..."
    )
    duration_s: float = 0.0
    baseline_power_w: float | None = Field(default=None, description="idle power before the model loaded")
    baseline_age_s: float | None = Field(
        default=None, description="seconds from the idle baseline's measurement to the window's start"
    )
    baseline_measured_at: UtcDatetime | None = Field(
        default=None, description="when the idle baseline was measured (UTC)"
    )
    baseline_conditions: str | None = Field(
        default=None,
        description="what the session waited for before measuring the idle baseline (the preloaded "
        "interpreter's imports and model reads, say)",
    )
    avg_power_w: float | None = Field(default=None, description="energy over duration")
    peak_power_w: float | None = Field(
        default=None,
        description="highest sampled power, or avg_power_w when every sample was below it (the peak "
        "is never below the average)",
    )
    temperature_start_c: float | None = None
    temperature_end_c: float | None = None
    throttle_reasons: list[str] = Field(default_factory=list)
    power_samples: int = 0
    timeline: list[PowerSample] = Field(default_factory=list)

    @property
    def baseline_key(self) -> str:
        return self.uuid or self.device

    @computed_field  # type: ignore[prop-decorator]
    @property
    def energy_adjusted_j(self) -> float | None:
        """Energy above idle: raw energy minus baseline power times duration, never below zero."""
        if self.energy_j is None or self.baseline_power_w is None:
            return None
        return max(0.0, self.energy_j - self.baseline_power_w * self.duration_s)


class EnergyTotals(BaseModel):
    """Per-kind sums over devices. A sum is None when any device of its kind lacks a figure:
    a partial sum would pass for the whole."""

    energy_j: float | None = None
    gpu_energy_j: float | None = None
    cpu_energy_j: float | None = None
    energy_adjusted_j: float | None = None
    baseline_power_w: float | None = None
    energy_scope: list[DeviceKind] = Field(default_factory=list)

    @classmethod
    def of(cls, devices: list[DeviceEnergy]) -> EnergyTotals:
        def total(values: list[float | None]) -> float | None:
            return sum_or_none(values) if values else None

        scope = [k for k in ("gpu", "cpu", "dram") if any(d.kind == k for d in devices)]
        return cls(
            energy_j=total([d.energy_j for d in devices]),
            gpu_energy_j=total([d.energy_j for d in devices if d.kind == "gpu"]),
            cpu_energy_j=total([d.energy_j for d in devices if d.kind == "cpu"]),
            energy_adjusted_j=total([d.energy_adjusted_j for d in devices]),
            baseline_power_w=total([d.baseline_power_w for d in devices]),
            energy_scope=scope,  # type: ignore[arg-type]
        )


class WindowMeasurement(BaseModel):
    """What an energy meter saw over one window."""

    duration_s: float
    devices: list[DeviceEnergy] = Field(default_factory=list)
    warnings: list[QualityWarning] = Field(default_factory=list)
    #: Why energy is missing or partial (unreadable RAPL, no GPU, ...): facts, not quality flags.
    notes: list[str] = Field(default_factory=list)
    #: A meter's estimate of what `devices` leave out, kept only when asked for (never energy).
    estimated_energy_j: float | None = None
    #: The share of the host's CPU capacity (0 to 1) that others took meanwhile
    #: (`energy.host_load`); None where it could not be read.
    host_other_cpu_share: float | None = Field(default=None, ge=0, le=1)

    @property
    def totals(self) -> EnergyTotals:
        return EnergyTotals.of(self.devices)

    @property
    def energy_j(self) -> float | None:
        return self.totals.energy_j


class LatencyStats(BaseModel):
    """Summary of a list of latencies (percentiles interpolate linearly, as numpy's default)."""

    count: int = Field(ge=1)
    mean_s: float
    min_s: float
    p50_s: float
    p90_s: float
    p99_s: float
    max_s: float

    @classmethod
    def of(cls, values_s: list[float]) -> LatencyStats | None:
        if not values_s:
            return None
        ordered = sorted(values_s)

        def percentile(q: float) -> float:
            position = (len(ordered) - 1) * q
            low = int(position)
            high = min(low + 1, len(ordered) - 1)
            return ordered[low] + (ordered[high] - ordered[low]) * (position - low)

        return cls(
            count=len(ordered),
            mean_s=statistics.fmean(ordered),
            min_s=ordered[0],
            p50_s=percentile(0.5),
            p90_s=percentile(0.9),
            p99_s=percentile(0.99),
            max_s=ordered[-1],
        )


class MetricStats(BaseModel):
    """One metric over an experiment's rounds; `ci95_*` is the t-interval of the mean."""

    n: int
    mean: float
    median: float
    stdev: float | None
    min: float
    max: float
    ci95_low: float | None
    ci95_high: float | None


class EnergyUncertainty(BaseModel):
    """How sure an energy figure is, part by part, each part relative to the figure
    (0.05 = 5%); see `energy.uncertainty` and docs/uncertainty.md for the model."""

    parts: dict[str, float] = Field(default_factory=dict)
    #: Parts that are systematic per device: they cancel between runs on the same devices.
    systematic: list[str] = Field(default_factory=list)
    #: The measured devices (GPU UUIDs, else labels): "the same devices" means these.
    devices: list[str] = Field(default_factory=list)

    @property
    def relative(self) -> float:
        """All parts, as the root sum of their squares."""
        return math.sqrt(sum(v * v for v in self.parts.values()))


class RoundResult(BaseModel):
    """One measured round: its windows summed, and the tokens recorded during it."""

    index: int
    process: int = Field(default=0, description="which of the experiment's processes ran it")
    duration_s: float
    output_tokens: int | None = Field(default=None, ge=0, le=MAX_TOKEN_COUNT)
    input_tokens: int | None = Field(default=None, ge=0, le=MAX_TOKEN_COUNT)
    energy_j: float | None = None
    gpu_energy_j: float | None = None
    cpu_energy_j: float | None = None
    energy_adjusted_j: float | None = None
    batch_latency_p50_s: float | None = None
    serving: dict[str, float | None] = Field(
        default_factory=dict, description="a serving round's headline figures (ServingSummary.headline)"
    )

    @classmethod
    def of(
        cls,
        index: int,
        duration_s: float,
        output_tokens: int | None,
        input_tokens: int | None,
        energy: EnergyTotals,
        batch_latency: LatencyStats | None,
        process: int = 0,
    ) -> RoundResult:
        return cls(
            index=index,
            process=process,
            duration_s=duration_s,
            output_tokens=output_tokens,
            input_tokens=input_tokens,
            energy_j=energy.energy_j,
            gpu_energy_j=energy.gpu_energy_j,
            cpu_energy_j=energy.cpu_energy_j,
            energy_adjusted_j=energy.energy_adjusted_j,
            batch_latency_p50_s=batch_latency.p50_s if batch_latency else None,
        )

    @computed_field  # type: ignore[prop-decorator]
    @property
    def tokens_per_s(self) -> float | None:
        return self.output_tokens / self.duration_s if self.output_tokens and self.duration_s > 0 else None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def energy_per_token_j(self) -> float | None:
        return (
            self.energy_j / self.output_tokens if self.energy_j is not None and self.output_tokens else None
        )


def _ratio(energy_j: float | None, count: int) -> float | None:
    return energy_j / count if energy_j is not None and count else None


def _per_s(count: int, duration_s: float) -> float | None:
    return count / duration_s if duration_s > 0 else None


class ServingWindow(BaseModel):
    """One part of a serving load: its span (seconds from the load's start), tokens and energy.

    Its `warnings` and `energy_uncertainty` are its own meter's, not the whole load's: the
    figures computed from it carry them (the summary's warnings, `ExperimentResult.uncertainty_of`).
    """

    start_s: float
    end_s: float
    output_tokens: int = Field(
        ge=0, description="streamed tokens that arrived inside the span (a chunk's tokens at its arrival)"
    )
    energy_j: float | None = None
    energy_scope: list[DeviceKind] = Field(default_factory=list)
    warnings: list[QualityWarning] = Field(default_factory=list)
    energy_uncertainty: EnergyUncertainty | None = None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s

    @computed_field  # type: ignore[prop-decorator]
    @property
    def output_tokens_per_s(self) -> float | None:
        return _per_s(self.output_tokens, self.duration_s)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def energy_per_output_token_j(self) -> float | None:
        return _ratio(self.energy_j, self.output_tokens)


class ServerMetricsSample(BaseModel):
    """One scrape of the server's Prometheus `/metrics`, `t_s` seconds on the power timeline
    (the measured windows end to end, as `PowerSample.t_s`); a figure is None where the
    server did not report it (or reported a value that is not a finite number)."""

    t_s: float
    kv_cache_usage: float | None = Field(default=None, description="share of the KV cache in use, 0 to 1")
    requests_running: float | None = None
    requests_waiting: float | None = None
    preemptions: float | None = Field(
        default=None, description="the preemption counter as read: cumulative since the server started"
    )


class ServerMetrics(BaseModel):
    """What the server said about itself during one load (scenario="serving"): its Prometheus
    `/metrics` scraped on the power sampler's clock (`backends.serving.metrics`), and the
    figures the `server_saturated` and `server_preempted` flags are decided on
    (`energy.quality.assess_server_metrics`)."""

    exposed: bool = Field(description="whether the server answered /metrics with metrics pytest-llem reads")
    note: str | None = Field(
        default=None, description="why there is no series: 'server exposes no metrics: ...'"
    )
    names: list[str] = Field(default_factory=list, description="the metric names read")
    scrapes: int = Field(0, ge=0, description="scrapes that gave a sample")
    failed_scrapes: int = Field(0, ge=0, description="scrapes that timed out or failed during the load")
    interval_s: float | None = None
    timeline: list[ServerMetricsSample] = Field(default_factory=list)
    judged_over: Literal["steady", "whole"] | None = Field(
        default=None, description="the span saturation is judged over: the steady state, else the whole load"
    )
    judged_samples: int = Field(0, ge=0, description="the scrapes inside that span")
    waiting_share: float | None = Field(
        default=None, description="share of those scrapes with requests waiting in the server's queue"
    )
    kv_cache_full_share: float | None = Field(
        default=None, description="share of those scrapes with the KV cache at least KV_CACHE_FULL in use"
    )
    peak_kv_cache_usage: float | None = None
    preemptions: float | None = Field(
        default=None, description="preemptions during the load: the counter's increase (resets counted)"
    )


#: Why a serving load has no prefill/decode split (`ServingSummary.prefill_decode`).
NO_SERVING_SPLIT = (
    "continuous batching runs prefills and decoding steps of different requests in the same "
    "engine steps, so no span of the load is one or the other; energy per output token and per "
    "request over the steady state are its figures, and input_len= with max_new_tokens= makes a "
    "load prefill-heavy or decode-heavy"
)

#: The serving figures computed from the steady-state window alone.
STEADY_STATE_METRICS = frozenset({"energy_per_request_j", "energy_per_output_token_j"})


class ServingSummary(BaseModel):
    """A server under load (scenario="serving"): requests, latencies, energy, goodput.

    The whole window covers the load from the first request sent to the last answer; the
    steady-state window (None when the load never reached it) runs from when the target
    concurrency or rate is reached until the drain begins. Energy per request in the steady
    state is its energy per output token times the mean output tokens of a request, since the
    requests that overlap the window are only partly inside it.
    """

    server: str = Field(description="vllm, transformers, or the command's program")
    server_log: str | None = Field(default=None, description="the server's output, kept with the run")
    request_rate: float | None = None
    concurrency: int | None = None
    n_requests: int
    completed: int = Field(description="requests answered without error")
    errors: int
    error_samples: list[str] = Field(default_factory=list, description="the first few errors")
    token_mismatches: int = Field(
        0, description="requests whose usage disagrees with what was streamed (or could not be read)"
    )
    impossible_usage: int = Field(
        0, description="requests whose usage the streamed text cannot hold: not believed, the stream counted"
    )
    token_source: str | None = Field(
        default=None,
        description="how streamed chunks became tokens: usage_per_chunk, tokenizer or chunks "
        "(backends.serving.tokens), the requests of each when mixed",
    )
    duration_s: float
    input_tokens: int | None = None
    output_tokens: int
    ttft: LatencyStats | None = None
    tpot: LatencyStats | None = None
    itl: LatencyStats | None = None
    e2e: LatencyStats | None = None
    slo: dict[str, float] = Field(default_factory=dict)
    good_requests: int = Field(description="requests without error that met every objective in slo")
    energy_j: float | None = None
    steady: ServingWindow | None = None
    steady_note: str | None = Field(default=None, description="why there is no steady-state window")
    warnings: list[QualityWarning] = Field(
        default_factory=list,
        description="quality flags of the figures: the steady-state window's own, usage that disagrees "
        "with the stream, a saturated or preempting server; the result carries them too",
    )
    server_metrics: ServerMetrics | None = Field(
        default=None, description="the server's own metrics during the load (None: not scraped)"
    )

    @field_serializer("request_rate", when_used="json")
    def _rate_in_json(self, rate: float | None) -> float | str | None:
        # JSON has no infinity and pydantic would write null: keep "inf", which reads back.
        return "inf" if rate is not None and math.isinf(rate) else rate

    @computed_field  # type: ignore[prop-decorator]
    @property
    def requests_per_s(self) -> float | None:
        return _per_s(self.completed, self.duration_s)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def output_tokens_per_s(self) -> float | None:
        return _per_s(self.output_tokens, self.duration_s)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def goodput(self) -> float:
        """Share of the requests that met every objective (and had no error)."""
        return self.good_requests / self.n_requests if self.n_requests else 0.0

    @computed_field  # type: ignore[prop-decorator]
    @property
    def energy_per_request_whole_j(self) -> float | None:
        return _ratio(self.energy_j, self.completed)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def energy_per_output_token_whole_j(self) -> float | None:
        return _ratio(self.energy_j, self.output_tokens)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def energy_per_good_request_j(self) -> float | None:
        return _ratio(self.energy_j, self.good_requests)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def energy_per_request_j(self) -> float | None:
        """The headline: steady-state energy per output token x mean output tokens per request."""
        per_token = self.steady.energy_per_output_token_j if self.steady else None
        if per_token is None or not self.completed:
            return None
        return per_token * self.output_tokens / self.completed

    @computed_field  # type: ignore[prop-decorator]
    @property
    def energy_per_output_token_j(self) -> float | None:
        """The headline per output token: the steady-state window's."""
        return self.steady.energy_per_output_token_j if self.steady else None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def prefill_decode(self) -> str:
        """No split, and why (`NO_SERVING_SPLIT`): said in the result, not left to be guessed."""
        return f"not split: {NO_SERVING_SPLIT}"

    def headline(self) -> dict[str, float | None]:
        """The figures a round keeps, so that repeats and rounds give samples to compare."""
        return {
            "requests_per_s": self.requests_per_s,
            "output_tokens_per_s": self.output_tokens_per_s,
            "energy_per_request_j": self.energy_per_request_j,
            "energy_per_request_whole_j": self.energy_per_request_whole_j,
            "energy_per_output_token_j": self.energy_per_output_token_j,
            "energy_per_good_request_j": self.energy_per_good_request_j,
            "goodput": self.goodput,
            "errors": float(self.errors),
            "ttft_p50_s": self.ttft.p50_s if self.ttft else None,
            "ttft_p99_s": self.ttft.p99_s if self.ttft else None,
            "tpot_p50_s": self.tpot.p50_s if self.tpot else None,
            "tpot_p99_s": self.tpot.p99_s if self.tpot else None,
            "itl_p50_s": self.itl.p50_s if self.itl else None,
            "e2e_p50_s": self.e2e.p50_s if self.e2e else None,
            "e2e_p99_s": self.e2e.p99_s if self.e2e else None,
        }


#: Where a workload records its prefill/decode split (`PrefillDecode`) in `extra`: the child's
#: context carries any JSON-able figure there, and the result reads it back typed.
PREFILL_DECODE_KEY = "prefill_decode"


class PrefillDecode(BaseModel):
    """Generation measured in two parts, summed over every generate() call in the measured
    windows (batches, passes and rounds): prefill from the call's start to the batch's first
    new tokens, decode from there to the call's end (see `backends.generation`; vLLM's split,
    made after each call from its request metrics: `backends.vllm.FirstTokenSplit`).

    Each part is measured by the window's own meter, so each has its own quality flags: a
    part shorter than the energy counter's update period is flagged `counter_resolution`
    and its figures stay out of the gate (`ExperimentResult.flagged_for`). Energies are None
    where the meter reads no energy (the result's `energy_not_measured` says why); the
    durations are there whatever the meter.
    """

    model_config = ConfigDict(extra="forbid")

    calls: int = Field(ge=0, description="generate() calls measured")
    prefill_duration_s: float = Field(ge=0)
    decode_duration_s: float = Field(ge=0)
    prefill_energy_j: float | None = None
    decode_energy_j: float | None = None
    energy_scope: list[DeviceKind] = Field(default_factory=list)
    input_tokens: int = Field(ge=0, le=MAX_TOKEN_COUNT, description="prompt tokens of the calls measured")
    output_tokens: int = Field(ge=0, le=MAX_TOKEN_COUNT, description="new tokens of the calls measured")
    prefill_warnings: list[QualityWarning] = Field(default_factory=list)
    decode_warnings: list[QualityWarning] = Field(default_factory=list)

    @classmethod
    def pooled(cls, splits: list[PrefillDecode]) -> PrefillDecode:
        """The split of one experiment measured in several processes (`repeats`): every
        call of every process, as one process's calls add up. An energy any process lacks
        is unknown for all (a partial sum would pass for the whole)."""
        return cls(
            calls=sum(s.calls for s in splits),
            prefill_duration_s=sum(s.prefill_duration_s for s in splits),
            decode_duration_s=sum(s.decode_duration_s for s in splits),
            prefill_energy_j=sum_or_none([s.prefill_energy_j for s in splits]),
            decode_energy_j=sum_or_none([s.decode_energy_j for s in splits]),
            energy_scope=list(dict.fromkeys(kind for s in splits for kind in s.energy_scope)),
            input_tokens=sum(s.input_tokens for s in splits),
            output_tokens=sum(s.output_tokens for s in splits),
            prefill_warnings=_distinct([w for s in splits for w in s.prefill_warnings]),
            decode_warnings=_distinct([w for s in splits for w in s.decode_warnings]),
        )

    def as_extra(self) -> dict[str, Any]:
        """What a result's `extra` keeps: the measured parts; the per-token figures are derived
        again when it is read."""
        derived = {"prefill_energy_per_input_token_j", "decode_energy_per_output_token_j"}
        return self.model_dump(mode="json", exclude=derived)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def prefill_energy_per_input_token_j(self) -> float | None:
        return _ratio(self.prefill_energy_j, self.input_tokens)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def decode_energy_per_output_token_j(self) -> float | None:
        return _ratio(self.decode_energy_j, self.output_tokens)


def _distinct(warnings: list[QualityWarning]) -> list[QualityWarning]:
    return list({(w.code, w.message): w for w in warnings}.values())


#: The result's figures read from its `PrefillDecode`, and which part's flags each rests on.
PREFILL_METRICS = frozenset({"prefill_energy_j", "prefill_duration_s", "prefill_energy_per_input_token_j"})
DECODE_METRICS = frozenset({"decode_energy_j", "decode_duration_s", "decode_energy_per_output_token_j"})


class Placement(BaseModel):
    """Where an experiment ran: its host, the GPUs it held, the scheduler's job, who ran beside it."""

    model_config = ConfigDict(extra="forbid")

    host: str
    gpu_uuids: list[str] = Field(default_factory=list, description="the GPUs leased to it, whole")
    gpu_indices: list[int] = Field(default_factory=list, description="their NVML indices on the host")
    job_id: str | None = Field(default=None, description="the Slurm job it ran in, if any")
    overlapped_with: list[str] = Field(
        default_factory=list, description="experiments that ran on the same host at the same time"
    )

    def describe(self) -> str:
        gpus = f"GPU {','.join(map(str, self.gpu_indices))}" if self.gpu_indices else "no GPU"
        return f"{self.host}, {gpus}" + (f", job {self.job_id}" if self.job_id else "")


class ExperimentResult(BaseModel):
    """One experiment's measured figures. Rates are derived, so they can never disagree."""

    model_config = ConfigDict(extra="forbid")

    experiment_id: str
    config_hash: str
    config: dict[str, Any]
    workload: str | None = None
    duration_s: float = Field(description="summed length of the measured windows")
    window_count: int = Field(ge=1)
    input_tokens: int | None = Field(default=None, ge=0, le=MAX_TOKEN_COUNT)
    output_tokens: int | None = Field(default=None, ge=0, le=MAX_TOKEN_COUNT)
    energy_j: float | None = Field(default=None, description="sum of the parts in energy_scope")
    gpu_energy_j: float | None = None
    cpu_energy_j: float | None = None
    energy_adjusted_j: float | None = Field(default=None, description="energy_j above idle power")
    baseline_power_w: float | None = None
    energy_scope: list[DeviceKind] = Field(default_factory=list)
    energy_source: str | None = None
    energy_notes: list[str] = Field(default_factory=list)
    estimated_energy_j: float | None = Field(
        default=None,
        description="a meter's estimate, not a measurement (--llem-allow-estimated-energy): flagged "
        "estimated_energy, in no energy figure, never gated",
    )
    energy_by_device: list[DeviceEnergy] = Field(default_factory=list)
    energy_uncertainty: EnergyUncertainty | None = Field(
        default=None, description="how sure energy_j is, part by part (energy.uncertainty)"
    )
    warnings: list[QualityWarning] = Field(default_factory=list)
    host_other_cpu_share: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="share of the host's CPU capacity (0 to 1) that processes other than the "
        "experiment's took during its measured windows; above --llem-host-busy-share: flagged host_busy",
    )
    batch_latencies_s: list[LatencySeconds] = Field(default_factory=list, description="raw, for pooling")
    first_token_latencies_s: list[LatencySeconds] = Field(default_factory=list)
    inter_token_latencies_s: list[LatencySeconds] = Field(default_factory=list)
    batch_latency: LatencyStats | None = Field(default=None, description="per batch, in the window")
    time_to_first_token: LatencyStats | None = None
    inter_token_latency: LatencyStats | None = None
    peak_memory_bytes: int | None = None
    peak_memory_kind: str | None = Field(default=None, description="cuda_max_allocated or peak_rss")
    flops_estimate: float | None = Field(
        default=None, description="an estimate: 2 x non-embedding parameters x processed tokens"
    )
    rounds: list[RoundResult] = Field(default_factory=list, description="one per round when rounds > 1")
    statistics: dict[str, MetricStats] = Field(
        default_factory=dict, description="per metric, over the rounds (when there are 2 or more)"
    )
    phase_durations_s: dict[str, float] = Field(
        default_factory=dict,
        description="seconds in each phase the child reported (importing, loading model, warm-up, "
        "measuring, ...), in order; added up over repeated processes",
    )
    extra: dict[str, Any] = Field(default_factory=dict)
    serving: ServingSummary | None = Field(default=None, description="scenario='serving' only")
    placement: Placement | None = Field(default=None, description="where it ran (set by the pytest process)")
    started_at: UtcDatetime
    finished_at: UtcDatetime
    resumed: bool = False
    start_method: str | None = Field(
        default=None,
        description="how the child group started: cold (fresh interpreters) or preloaded (forked from "
        "the session's preloaded interpreter); mixed over repeats that started differently",
    )
    start_note: str | None = Field(
        default=None, description="why a preloaded start was asked for but not used"
    )
    preloaded_modules: list[str] | None = Field(
        default=None,
        description="the modules the preloaded interpreter had imported before it forked this "
        "experiment's group: those --llem-preload named or auto chose, then those earlier "
        "experiments' workers imported (auto); None on a cold start; over repeats, every process's",
    )

    @model_validator(mode="before")
    @classmethod
    def _drop_derived_fields(cls, data: Any) -> Any:
        # A dumped result carries its derived rates; they are recomputed, never trusted.
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if k not in _DERIVED_RESULT_FIELDS}
        return data

    @property
    def prefill_decode(self) -> PrefillDecode | None:
        """Prefill and decode apart, where the workload measured them (backend='pytorch' or 'vllm')."""
        recorded = self.extra.get(PREFILL_DECODE_KEY)
        try:
            return PrefillDecode.model_validate(recorded) if isinstance(recorded, dict) else None
        except ValidationError:  # a workload's own figure under this key: not a split to read
            return None

    def flagged_for(self, metric_name: str) -> bool:
        """Whether a quality flag doubts this metric's figure: the result's own flags, and for
        a prefill or decode figure the flags of that part too (a 20 ms prefill read through a
        100 ms counter doubts the prefill's figures, not the whole window's)."""
        split = self.prefill_decode
        if split is not None and metric_name in PREFILL_METRICS | DECODE_METRICS:
            part = split.prefill_warnings if metric_name in PREFILL_METRICS else split.decode_warnings
            if any(w.doubts_a_figure for w in part):
                return True
        return self.flagged

    def uncertainty_of(self, metric_name: str) -> EnergyUncertainty | None:
        """The energy uncertainty behind a metric: the steady-state window's for the figures
        computed from it, none for a prefill or decode part (no model covers a sum of short
        parts), the whole measurement's for the others."""
        if metric_name in PREFILL_METRICS | DECODE_METRICS:
            return None
        if metric_name in STEADY_STATE_METRICS:
            steady = self.serving.steady if self.serving is not None else None
            return steady.energy_uncertainty if steady is not None else None
        return self.energy_uncertainty

    @property
    def flagged(self) -> bool:
        """Whether a measurement-quality flag casts doubt on this result's figures (not gated
        unless asked; marked `!` in summaries). Missing energy alone is not a flag."""
        return any(w.doubts_a_figure for w in self.warnings)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def tokens_per_s(self) -> float | None:
        if not self.output_tokens or self.duration_s <= 0:
            return None
        return self.output_tokens / self.duration_s

    @computed_field  # type: ignore[prop-decorator]
    @property
    def energy_per_token_j(self) -> float | None:
        """Energy per *output* token, the figure LLM energy benchmarks compare."""
        if self.energy_j is None or not self.output_tokens:
            return None
        return self.energy_j / self.output_tokens

    def _split_figure(self, name: str) -> float | None:
        split = self.prefill_decode
        return getattr(split, name) if split is not None else None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def prefill_energy_j(self) -> float | None:
        return self._split_figure("prefill_energy_j")

    @computed_field  # type: ignore[prop-decorator]
    @property
    def decode_energy_j(self) -> float | None:
        return self._split_figure("decode_energy_j")

    @computed_field  # type: ignore[prop-decorator]
    @property
    def prefill_duration_s(self) -> float | None:
        return self._split_figure("prefill_duration_s")

    @computed_field  # type: ignore[prop-decorator]
    @property
    def decode_duration_s(self) -> float | None:
        return self._split_figure("decode_duration_s")

    @computed_field  # type: ignore[prop-decorator]
    @property
    def prefill_energy_per_input_token_j(self) -> float | None:
        """Prefill energy per prompt token of the calls measured (`PrefillDecode`)."""
        return self._split_figure("prefill_energy_per_input_token_j")

    @computed_field  # type: ignore[prop-decorator]
    @property
    def decode_energy_per_output_token_j(self) -> float | None:
        """Decode energy per new token of the calls measured (`PrefillDecode`)."""
        return self._split_figure("decode_energy_per_output_token_j")


#: The result's computed fields: a dumped result carries them, and reading it back drops them.
_DERIVED_RESULT_FIELDS = frozenset({"tokens_per_s", "energy_per_token_j", *PREFILL_METRICS, *DECODE_METRICS})
