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
import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_serializer,
    field_validator,
    model_validator,
)

from pytest_llem.base.digests import DIGEST_LENGTH, canonical_json
from pytest_llem.base.redaction import holds_url_password, is_secret_name
from pytest_llem.energy import CPU_MIN_WINDOW_S, GPU_MIN_WINDOW_S, MeterName
from pytest_llem.errors import ConfigError
from pytest_llem.values import (
    NON_MEASUREMENT_FIELDS,
    meter_name,
    parse_repeats,
    round_count,
    seconds_above_zero,
    seconds_from_zero,
)

#: An experiment id names a file in the state dir: nothing else may be in it.
EXPERIMENT_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
CONFIG_HASH_LENGTH = DIGEST_LENGTH
#: Fields whose values an error never repeats: the terminal, reports and JUnit keep errors,
#: and `env` is where a token is most likely to be put.
UNECHOED_FIELDS = frozenset({"env"})

BackendName = Literal["pytorch", "vllm"]
# vLLM's SamplingParams accepts temperatures in [0, 2] (vllm/sampling_params.py, 0.33).
VLLM_MAX_TEMPERATURE = 2.0
Scenario = Literal["offline", "serving"]
ServerName = Literal["vllm", "transformers"]
# What a service-level objective may bound, per request (see pytest_llem.backends.serving).
SLO_KEYS = ("ttft_s", "tpot_s", "e2e_s")
# Serving fields stay out of the hash of an offline experiment, so adding them changed no
# existing experiment's identity.
SERVING_FIELDS = frozenset(
    {
        "scenario",
        "server",
        "request_rate",
        "concurrency",
        "n_requests",
        "slo",
        "server_startup_timeout",
        "warmup_requests",
        "max_error_rate",
        "endpoint",
        "input_len",
    }
)
Endpoint = Literal["completions", "chat"]
#: Without `timeout=` or `--llem-timeout`, a serving experiment is killed after its server's
#: start-up limit plus this long per round: a server that hangs never holds a session forever.
SERVING_ROUND_TIMEOUT_S = 3600.0
Precision = Literal["auto", "fp32", "fp16", "bf16"]
DeviceName = Literal["auto", "cuda", "cpu"]


class ExperimentConfig(BaseModel):
    """One benchmark case. Unknown fields are rejected; `params` carries anything else."""

    # NaN or infinity in a number field would mean "no limit" or crash the child: refused.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    model: str | None = Field(
        default=None, description="model id (hub) or local directory, passed to the workload or backend"
    )
    backend: BackendName | None = Field(
        default=None, description="built-in inference backend; a workload may be omitted when set"
    )
    batch_size: int = Field(default=1, ge=1, description="prompts per generate call (vllm: max_num_seqs)")
    max_new_tokens: int | None = Field(
        default=None, ge=1, description="new tokens per prompt; None: the backends' default, 32"
    )
    # Inference settings of the built-in backends (a custom workload may read them too).
    precision: Precision = Field(default="auto", description="weights' dtype; auto: the checkpoint's")
    device: DeviceName = Field(default="auto", description="auto: cuda when available, else cpu")
    n_prompts: int | None = Field(default=None, ge=1, description="default: 4 batches' worth")
    max_input_tokens: int = Field(default=128, ge=1, description="prompts are truncated to this")
    ignore_eos: bool = Field(
        default=True, description="generate exactly max_new_tokens per prompt, so runs compare"
    )
    temperature: float = Field(default=0.0, ge=0, description="0: greedy decoding")
    top_p: float = Field(default=1.0, gt=0, le=1, description="nucleus sampling; 1: off")
    top_k: int = Field(default=0, ge=0, description="0: off")
    seed: int = Field(default=0, ge=0, description="seeds prompts and sampling")
    prompts: str | list[str] | None = Field(
        default=None,
        description="None: seeded synthetic prompts; a list of strings; or a .txt file (one prompt a "
        "line) or a .jsonl file (a prompt or text field per line)",
    )
    warmup_batches: int = Field(default=1, ge=0, description="batches run before the measured window")
    rounds: Annotated[int, BeforeValidator(round_count)] = Field(
        default=1, description="measured rounds after one load and warm-up"
    )
    min_window_s: Annotated[float, BeforeValidator(seconds_from_zero)] | None = Field(
        default=None,
        description="built-in backends repeat their batches until each round is measured this long, "
        f"and a shorter round is flagged short_window; None: {GPU_MIN_WINDOW_S:g} s when a GPU's energy "
        f"is measured, else {CPU_MIN_WINDOW_S:g} s; 0: off",
    )
    repeats: Annotated[int | str, BeforeValidator(parse_repeats)] = Field(
        default=1,
        description="fresh processes the experiment runs in, in turn, rounds pooled; 'auto' or 'auto:N': "
        "more while the comparison with the baseline is undecided, N at most (default 8)",
    )
    compare_fail: dict[str, str] = Field(
        default_factory=dict,
        description="per-test regression limits, each with its unit, e.g. {'energy_per_token_j': '5%'} "
        "or {'tokens_per_s': '50tokens/s'}",
    )
    budget: dict[str, float] = Field(
        default_factory=dict,
        description="absolute limits in the metric's unit, e.g. {'energy_per_token_j': 0.05} or "
        "{'energy_per_token_j': '0.05J'}",
    )
    preload_model_files: bool = Field(
        default=False,
        description="with a preloaded start: its interpreter reads a local model directory's files "
        "into the page cache once, before the first fork of a case that names it",
    )
    num_processes: int = Field(default=1, ge=1, description="pytorch: data-parallel ranks via accelerate")
    tensor_parallel_size: int = Field(default=1, ge=1, description="vllm")
    gpu_memory_utilization: float = Field(default=0.9, gt=0, le=1, description="vllm")
    max_model_len: int | None = Field(default=None, ge=1, description="vllm")
    enforce_eager: bool = Field(default=False, description="vllm: no CUDA graphs")
    gpus: int | list[int] | None = Field(
        default=None,
        description="a number of whole GPUs to lease, or NVML indices; default: tensor_parallel_size "
        "or num_processes GPUs (1) when the host has any; 0 (or device='cpu'): none",
    )
    # Serving benchmarks (scenario="serving"): a server under load, see pytest_llem.backends.serving.
    scenario: Scenario = Field(default="offline", description="serving: an OpenAI-compatible server")
    server: ServerName | list[str] | None = Field(
        default=None, description="vllm, transformers, or a command with {model} and {port} placeholders"
    )
    # The one number allowed to be infinite (all requests at once); NaN is still refused, by
    # `gt=0` (NaN compares false).
    request_rate: float | None = Field(
        default=None,
        gt=0,
        allow_inf_nan=True,
        description="requests/s, Poisson arrivals seeded by seed; inf: all at once",
    )
    concurrency: int | None = Field(default=None, ge=1, description="requests in flight at most")
    n_requests: int | None = Field(default=None, ge=1, description="measured requests (default 64)")
    slo: dict[str, float] = Field(
        default_factory=dict, description="per-request limits for goodput: ttft_s, tpot_s, e2e_s"
    )
    server_startup_timeout: float = Field(
        default=600.0, gt=0, description="seconds for the server to answer its health check"
    )
    warmup_requests: int = Field(default=2, ge=0, description="requests sent before the measured window")
    endpoint: Endpoint = Field(
        default="completions", description="completions: /v1/completions; chat: /v1/chat/completions"
    )
    max_error_rate: float = Field(
        default=0.0, ge=0, le=1, description="share of failed requests above which the case fails"
    )
    input_len: int | None = Field(
        default=None,
        ge=1,
        le=1_000_000,
        description="tokens of each synthetic prompt (the model's tokenizer where it is local, else "
        "words); with max_new_tokens, a prefill-heavy or decode-heavy load",
    )
    energy: Annotated[MeterName, BeforeValidator(meter_name)] = Field(
        default="auto", description="energy meter to use in the child (overrides --llem-energy)"
    )
    timeout: Annotated[float, BeforeValidator(seconds_above_zero)] | None = Field(
        default=None,
        description="seconds before the experiment's process group is killed (overrides --llem-timeout)",
    )
    experiment_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=128,
        description="a fixed id instead of a generated one (letters, digits, '.', '_', '-'; starting with "
        "a letter or digit); taken by a session still running here, the result gets a unique suffix",
    )
    label: str | None = Field(
        default=None, min_length=1, max_length=80, description="the experiment's name in charts and reports"
    )
    env: dict[str, str] = Field(
        default_factory=dict,
        description="extra environment variables for the child; overrides defaults. Secrets (by name, "
        "or a URL with a password) are refused: set those in pytest's environment",
    )
    params: dict[str, Any] = Field(
        default_factory=dict, description="free-form workload settings (JSON values)"
    )

    @field_validator("temperature")
    @classmethod
    def _temperature_in_backend_range(cls, temperature: float, info: ValidationInfo) -> float:
        # vLLM's SamplingParams rejects a temperature above 2; say so before any process starts.
        if info.data.get("backend") == "vllm" and temperature > VLLM_MAX_TEMPERATURE:
            raise ValueError(
                f"backend='vllm' accepts 0 to {VLLM_MAX_TEMPERATURE:g}; lower it (0 is greedy decoding)"
            )
        return temperature

    @field_validator("*")
    @classmethod
    def _no_nul_characters(cls, value: Any) -> Any:
        where = _nul_in(value)
        if where is not None:
            raise ValueError(f"a NUL character{where} cannot reach a process; remove it")
        return value

    @field_validator("experiment_id")
    @classmethod
    def _usable_experiment_id(cls, experiment_id: str | None) -> str | None:
        if experiment_id is not None and not EXPERIMENT_ID_PATTERN.fullmatch(experiment_id):
            raise ValueError("use letters, digits, '.', '_' and '-' only, starting with a letter or digit")
        return experiment_id

    @field_validator("gpus")
    @classmethod
    def _gpus_non_negative(cls, gpus: int | list[int] | None) -> int | list[int] | None:
        if isinstance(gpus, int) and gpus < 0:
            raise ValueError("a number of GPUs is 0 (none) or more")
        if isinstance(gpus, list) and any(g < 0 for g in gpus):
            raise ValueError("GPU indices must be 0 or more")
        return gpus

    @field_validator("request_rate", "concurrency", "n_requests", mode="before")
    @classmethod
    def _not_a_boolean(cls, value: Any) -> Any:
        # pydantic reads True as 1: request_rate=True would quietly mean one request a second.
        if isinstance(value, bool):
            raise ValueError("a number, not True or False")
        return value

    @field_validator("endpoint", mode="before")
    @classmethod
    def _known_endpoint(cls, endpoint: Any) -> Any:
        if endpoint not in ("completions", "chat"):
            raise ValueError("use 'completions' (/v1/completions) or 'chat' (/v1/chat/completions)")
        return endpoint

    @field_serializer("request_rate", when_used="json")
    def _rate_in_json(self, rate: float | None) -> float | str | None:
        # JSON has no infinity and pydantic would write null: keep "inf", which reads back.
        return "inf" if rate is not None and math.isinf(rate) else rate

    @field_validator("server")
    @classmethod
    def _server_command_usable(cls, server: str | list[str] | None) -> str | list[str] | None:
        if isinstance(server, list) and (not server or not all(part.strip() for part in server)):
            raise ValueError(
                "a server command is a non-empty list of non-empty strings, e.g. "
                "['python', 'my_server.py', '--port', '{port}']"
            )
        return server

    @field_validator("slo")
    @classmethod
    def _slo_known(cls, slo: dict[str, float]) -> dict[str, float]:
        for name, value in slo.items():
            if name not in SLO_KEYS:
                raise ValueError(f"unknown objective {name!r}; use {', '.join(SLO_KEYS)} (seconds)")
            if not value > 0:
                raise ValueError(f"{name} must be a number of seconds above 0")
        return slo

    @model_validator(mode="after")
    def _serving_fields_fit(self) -> ExperimentConfig:
        if self.scenario != "serving":
            given = sorted(
                name
                for name in SERVING_FIELDS - {"scenario"}
                if name in self.model_fields_set and getattr(self, name) != _SERVING_DEFAULTS[name]
            )
            if given:
                raise ValueError(f"{', '.join(given)}: only for scenario='serving'; add scenario='serving'")
            return self
        if self.backend is not None:
            raise ValueError("backend: does not apply to scenario='serving'; the server runs the model")
        if self.input_len is not None and self.prompts is not None:
            raise ValueError(
                "input_len: sets the length of synthetic prompts, and prompts= gives your own; drop one"
            )
        return self

    @field_validator("compare_fail", mode="before")
    @classmethod
    def _limits_parse(cls, limits: object) -> object:
        from pytest_llem.gating.limits import lookup_metric, parse_limit_value

        if not isinstance(limits, dict):
            return limits
        for name, text in limits.items():
            parse_limit_value(lookup_metric(name, "compare_fail"), text, "compare_fail", marker=True)
        # A number reaches here only with its unit refused above; the limit is kept as written.
        return {name: str(text).strip() for name, text in limits.items()}

    @field_validator("budget", mode="before")
    @classmethod
    def _budget_amounts(cls, budget: object) -> object:
        """A budget is an amount in the metric's unit: a number, or a text with that unit
        (`'0.05J'`); a percentage has no baseline to be taken of."""
        from pytest_llem.gating.limits import lookup_metric, parse_limit_value

        if not isinstance(budget, dict):
            return budget
        amounts = {}
        for name, value in budget.items():
            metric = lookup_metric(name, "budget")
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                amounts[name] = value
                continue
            limit = parse_limit_value(metric, value, "budget", marker=True, bare_is_amount=True)
            if limit.absolute is None:
                raise ConfigError(
                    f"budget {{{name!r}: {value!r}}}: a budget is an amount in the metric's unit, checked "
                    f"without a baseline, so it cannot be a percentage; write an amount such as "
                    f"{{{name!r}: 0.05}} (in {metric.unit}), or set a relative limit with "
                    f"compare_fail={{{name!r}: {value!r}}}"
                )
            amounts[name] = limit.absolute
        return amounts

    @field_validator("env")
    @classmethod
    def _no_secrets_in_env(cls, env: dict[str, str]) -> dict[str, str]:
        bad_names = sorted(repr(name) for name in env if not name or "=" in name)
        if bad_names:
            raise ValueError(f"{', '.join(bad_names)} cannot name a variable (empty or with '='); rename it")
        secret = sorted(
            name for name, value in env.items() if is_secret_name(name) or holds_url_password(value)
        )
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
            json.dumps(params, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise ValueError(
                f"params must hold JSON values (str, finite number, bool, None, list, dict): {exc}".replace(
                    "Out of range float values are not JSON compliant", "NaN or infinity"
                )
            ) from None
        return params


_SERVING_DEFAULTS = {
    name: field.get_default(call_default_factory=True)
    for name, field in ExperimentConfig.model_fields.items()
    if name in SERVING_FIELDS
}


def check_serving_complete(config: ExperimentConfig) -> None:
    """What a serving experiment needs once every layer (marker, `run()`) is merged.

    Not a validator: a marker may leave these to `run()`, so they are checked before it runs.
    """
    try:
        _serving_needs(config)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def default_timeout_s(config: ExperimentConfig) -> float | None:
    """The time limit of an experiment that sets none: a serving one's start-up limit plus
    `SERVING_ROUND_TIMEOUT_S` per round; None (no limit) for the others."""
    if config.scenario != "serving":
        return None
    return config.server_startup_timeout + SERVING_ROUND_TIMEOUT_S * config.rounds


def _serving_needs(config: ExperimentConfig) -> None:
    if config.server is None:
        raise ValueError(
            "server: scenario='serving' needs server='vllm', server='transformers' or a command list "
            "such as ['python', 'my_server.py', '--port', '{port}']"
        )
    if config.server in ("vllm", "transformers") and config.model is None:
        raise ValueError(f"model: server={config.server!r} needs model= (a hub id or a local directory)")
    if config.request_rate is None and config.concurrency is None:
        raise ValueError(
            "request_rate: scenario='serving' needs request_rate= (requests/s; float('inf') for all "
            "at once) or concurrency= (requests in flight)"
        )


def _nul_in(value: Any, where: str = "") -> str | None:
    """Where a NUL character hides in a field's value: "" (the value itself), " at ['a'][0]",
    " in key 'a'"; None when there is none."""
    if isinstance(value, str):
        return (f" at {where}" if where else "") if "\0" in value else None
    items: list[tuple[Any, Any]] = []
    if isinstance(value, Mapping):
        for key in value:
            if isinstance(key, str) and "\0" in key:
                return f" in key {key!r}"
        items = list(value.items())
    elif isinstance(value, (list, tuple)):
        items = list(enumerate(value))
    for key, item in items:
        found = _nul_in(item, f"{where}[{key!r}]")
        if found is not None:
            return found
    return None


def allowed_fields() -> str:
    return ", ".join(ExperimentConfig.model_fields)


def format_validation_error(exc: ValidationError) -> str:
    """One `field: problem` clause per error, joined on one line."""
    parts = []
    for error in exc.errors():
        if not error["loc"]:  # a check across fields: its message names the field itself
            parts.append(error["msg"].removeprefix("Value error, "))
            continue
        field = ".".join(str(p) for p in error["loc"])
        if error["type"] == "extra_forbidden":
            parts.append(f"unknown field {field!r} (allowed: {allowed_fields()})")
            continue
        message = error["msg"].removeprefix("Value error, ")
        if error["loc"][0] in UNECHOED_FIELDS:
            parts.append(f"{field}: {message}")
        else:
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


def canonical_config_json(config: ExperimentConfig, workload: str | None) -> str:
    excluded = set(NON_MEASUREMENT_FIELDS)
    if config.scenario != "serving":
        excluded |= SERVING_FIELDS
    if config.min_window_s is None:  # as before the field existed: those experiments keep their hash
        excluded.add("min_window_s")
    if config.endpoint == "completions":  # likewise
        excluded.add("endpoint")
    if config.input_len is None:  # likewise
        excluded.add("input_len")
    view = config.model_dump(exclude=excluded)
    view["workload"] = workload
    return canonical_json(view)


def compute_config_hash(
    config: ExperimentConfig, workload: str | None, model_fingerprint: str | None = None
) -> str:
    """SHA-256 (first 16 hex) of what is measured: the config's measurement fields and the workload.

    With the model's fingerprint (`fingerprints.model`), it stands for the model instead of its
    path, so a model rebuilt elsewhere with the same files resumes.
    """
    if model_fingerprint is not None:
        config = config.model_copy(update={"model": f"files:{model_fingerprint}"})
    digest = hashlib.sha256(canonical_config_json(config, workload).encode("ascii"))
    return digest.hexdigest()[:CONFIG_HASH_LENGTH]
