"""What an experiment is: the validated `ExperimentConfig` and its stable hash.

The same keyword fields come from `@pytest.mark.llem(...)` and `llem.run(...)`; both pass
through `build_config`, which turns pydantic's errors into one line naming each field.
`compute_config_hash` identifies *what is measured*, so resume survives a moved output
folder or a changed timeout.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from pytest_llem.energy import MeterName
from pytest_llem.errors import ConfigError
from pytest_llem.store.redaction import is_secret_name

# Fields that change where or how long, not what is measured; left out of the hash.
NON_MEASUREMENT_FIELDS = frozenset({"timeout", "experiment_id", "compare_fail", "budget", "label"})
CONFIG_HASH_LENGTH = 16
_FLOAT_SIGNIFICANT_DIGITS = 12

BackendName = Literal["pytorch", "vllm"]
Precision = Literal["auto", "fp32", "fp16", "bf16"]
DeviceName = Literal["auto", "cuda", "cpu"]


class ExperimentConfig(BaseModel):
    """One benchmark case. Unknown fields are rejected; `params` carries anything else."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str | None = Field(default=None, description="model id or local directory")
    backend: BackendName | None = Field(
        default=None, description="built-in inference backend; a workload may be omitted when set"
    )
    batch_size: int = Field(default=1, ge=1)
    max_new_tokens: int | None = Field(default=None, ge=1)
    # Inference settings of the built-in backends (a custom workload may read them too).
    precision: Precision = Field(default="auto", description="weights' dtype; auto: the checkpoint's")
    device: DeviceName = Field(default="auto", description="auto: cuda when available, else cpu")
    n_prompts: int | None = Field(default=None, ge=1, description="default: 4 batches' worth")
    max_input_tokens: int = Field(default=128, ge=1, description="prompts are truncated to this")
    ignore_eos: bool = Field(
        default=True, description="generate exactly max_new_tokens per prompt, so runs compare"
    )
    temperature: float = Field(default=0.0, ge=0, description="0: greedy decoding")
    top_p: float = Field(default=1.0, gt=0, le=1)
    top_k: int = Field(default=0, ge=0, description="0: off")
    seed: int = Field(default=0, ge=0, description="seeds prompts and sampling")
    prompts: str | list[str] | None = Field(
        default=None, description="None: seeded synthetic prompts; a list; or a .txt/.jsonl file"
    )
    warmup_batches: int = Field(default=1, ge=0, description="batches run before the measured window")
    rounds: int = Field(default=1, ge=1, description="measured rounds after one load and warm-up")
    repeats: int = Field(
        default=1, ge=1, description="fresh processes the experiment runs in, in turn; rounds pooled"
    )
    compare_fail: dict[str, str] = Field(
        default_factory=dict, description="per-test regression limits, e.g. {'energy_per_token_j': '5%'}"
    )
    budget: dict[str, float] = Field(
        default_factory=dict, description="absolute limits, e.g. {'energy_per_token_j': 0.05}"
    )
    num_processes: int = Field(default=1, ge=1, description="pytorch: data-parallel ranks via accelerate")
    tensor_parallel_size: int = Field(default=1, ge=1, description="vllm")
    gpu_memory_utilization: float = Field(default=0.9, gt=0, le=1, description="vllm")
    max_model_len: int | None = Field(default=None, ge=1, description="vllm")
    enforce_eager: bool = Field(default=False, description="vllm: no CUDA graphs")
    gpus: list[int] | None = Field(
        default=None, description="GPU indices to pin through CUDA_VISIBLE_DEVICES"
    )
    energy: MeterName = Field(default="auto", description="energy meter to use in the child")
    timeout: float | None = Field(default=None, gt=0, description="seconds before the child is killed")
    experiment_id: str | None = Field(default=None, min_length=1, max_length=128)
    label: str | None = Field(
        default=None, min_length=1, max_length=80, description="the experiment's name in charts and reports"
    )
    env: dict[str, str] = Field(
        default_factory=dict, description="extra environment for the child; overrides defaults"
    )
    params: dict[str, Any] = Field(
        default_factory=dict, description="free-form workload settings (JSON values)"
    )

    @field_validator("gpus")
    @classmethod
    def _gpus_non_negative(cls, gpus: list[int] | None) -> list[int] | None:
        if gpus is not None and any(g < 0 for g in gpus):
            raise ValueError("GPU indices must be 0 or more")
        return gpus

    @field_validator("compare_fail")
    @classmethod
    def _limits_parse(cls, limits: dict[str, str]) -> dict[str, str]:
        from pytest_llem.gating.limits import lookup_metric, parse_limit_value

        for name, text in limits.items():
            parse_limit_value(lookup_metric(name, "compare_fail"), text, "compare_fail")
        return limits

    @field_validator("budget")
    @classmethod
    def _budget_metrics_exist(cls, budget: dict[str, float]) -> dict[str, float]:
        from pytest_llem.gating.limits import lookup_metric

        for name in budget:
            lookup_metric(name, "budget")
        return budget

    @field_validator("env")
    @classmethod
    def _no_secrets_in_env(cls, env: dict[str, str]) -> dict[str, str]:
        secret = sorted(name for name in env if is_secret_name(name))
        if secret:
            raise ValueError(
                f"{', '.join(secret)} looks like a secret; set it in the environment of the "
                "pytest process instead (pytest-llem passes it on and never writes it to disk)"
            )
        return env

    @field_validator("params")
    @classmethod
    def _params_are_json(cls, params: dict[str, Any]) -> dict[str, Any]:
        try:
            json.dumps(params, allow_nan=True)
        except (TypeError, ValueError) as exc:
            raise ValueError(
                f"params must hold JSON values (str, number, bool, None, list, dict): {exc}"
            ) from None
        return params


def allowed_fields() -> str:
    return ", ".join(ExperimentConfig.model_fields)


def format_validation_error(exc: ValidationError) -> str:
    """One `field: problem` clause per error, joined on one line."""
    parts = []
    for error in exc.errors():
        field = ".".join(str(p) for p in error["loc"]) or "config"
        if error["type"] == "extra_forbidden":
            parts.append(f"unknown field {field!r} (allowed: {allowed_fields()})")
            continue
        message = error["msg"].removeprefix("Value error, ")
        parts.append(f"{field}: {message} (got {error.get('input')!r})")
    return "; ".join(parts)


def build_config(*layers: Mapping[str, Any]) -> ExperimentConfig:
    """Validate config layers, later layers overriding earlier ones (marker, then call)."""
    merged: dict[str, Any] = {}
    for layer in layers:
        merged.update(layer)
    try:
        return ExperimentConfig(**merged)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc)) from None


def _normalise(value: Any) -> Any:
    """Make equal configs serialise equally: 1.0 == 1, rounding noise and NaN/Inf tamed."""
    if isinstance(value, bool) or value is None or isinstance(value, (int, str)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        rounded = float(f"{value:.{_FLOAT_SIGNIFICANT_DIGITS}g}")
        return int(rounded) if rounded.is_integer() else rounded
    if isinstance(value, Mapping):
        return {str(k): _normalise(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_normalise(v) for v in value]
    return str(value)


def canonical_json(value: Any) -> str:
    return json.dumps(_normalise(value), sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def json_digest(value: Any) -> str:
    """SHA-256 (first 16 hex) of `value` as canonical JSON: equal values, equal digests."""
    return hashlib.sha256(canonical_json(value).encode("ascii")).hexdigest()[:CONFIG_HASH_LENGTH]


def canonical_config_json(config: ExperimentConfig, workload: str | None) -> str:
    view = config.model_dump(exclude=set(NON_MEASUREMENT_FIELDS))
    view["workload"] = workload
    return canonical_json(view)


def compute_config_hash(
    config: ExperimentConfig, workload: str | None, model_fingerprint: str | None = None
) -> str:
    """SHA-256 (first 16 hex) of what is measured: the config's measurement fields and the workload.

    With the model's fingerprint (`store.models`), it stands for the model instead of its
    path, so a model rebuilt elsewhere with the same files resumes.
    """
    if model_fingerprint is not None:
        config = config.model_copy(update={"model": f"files:{model_fingerprint}"})
    digest = hashlib.sha256(canonical_config_json(config, workload).encode("ascii"))
    return digest.hexdigest()[:CONFIG_HASH_LENGTH]
