"""Measurement-quality flags: when a figure should not be trusted, and why.

Each flag is a `QualityWarning` with a stable code (for machines: reports, gating) and a
sentence (for people). Every threshold is a named constant here, documented in the docs
site's energy page (docs/guides/energy.md, "Quality flags"). Missing energy is not a quality
flag: there is no figure to distrust, and the reason goes in `energy_notes`.
"""

from __future__ import annotations

from pytest_llem.energy import CPU_MIN_WINDOW_S, GPU_MIN_WINDOW_S
from pytest_llem.results import ENERGY_NOT_MEASURED, DeviceEnergy, QualityWarning, ServerMetrics

# The shortest window trusted by default: with a GPU's energy measured (NVML's counter updates
# every ~10-100 ms and windows under ~5 s vary widely), and otherwise (timing noise on the CPU).
MIN_WINDOW_S = GPU_MIN_WINDOW_S
MIN_CPU_WINDOW_S = CPU_MIN_WINDOW_S
# Fewer power samples than this cannot describe the window's power (and integrate poorly).
MIN_POWER_SAMPLES = 10
# Energy depends on temperature (leakage power); more drift than this biases the figure.
MAX_TEMPERATURE_DRIFT_C = 5.0
# An idle baseline measured this long before a window may no longer be the device's idle
# power (seen on an H200: 77.6-78.3 W before the first experiment, 91.6 W later at a similar
# temperature); `energy_adjusted_j` rests on it.
MAX_BASELINE_AGE_S = 600.0
# Clock-limiting reasons that change the work done per joule. Idle and application-clock
# settings are the normal state of a GPU, so they are not flagged.
FLAGGED_THROTTLE_REASONS = frozenset(
    {"sw_power_cap", "hw_slowdown", "sw_thermal_slowdown", "hw_thermal_slowdown", "hw_power_brake"}
)

SHORT_WINDOW = "short_window"
COUNTER_RESOLUTION = "counter_resolution"
ZERO_ENERGY = "zero_energy"
FEW_POWER_SAMPLES = "few_power_samples"
TEMPERATURE_DRIFT = "temperature_drift"
THROTTLED = "throttled"
OTHER_GPU_PROCESS = "other_gpu_process"
PERSISTENCE_MODE_OFF = "persistence_mode_off"
DEVICE_LOST = "device_lost"
STALE_BASELINE = "stale_baseline"
SHARED_HOST_ENERGY = "shared_host_energy"
#: A meter's estimate kept as `estimated_energy_j` (`--llem-allow-estimated-energy`): not a measurement.
ESTIMATED_ENERGY = "estimated_energy"
#: A serving load's usage that disagrees with what was streamed, or that the stream cannot
#: hold (`backends.serving.tokens`): the token figures rest on doubtful counts.
TOKEN_MISMATCH = "token_mismatch"
IMPOSSIBLE_USAGE = "impossible_usage"
#: A serving load the server could not keep up with (`assess_server_metrics`): requests queued
#: for most of the steady state, or its KV cache full. The figures then measure the queue as
#: much as the work, and move steeply with a small change in load or speed.
SERVER_SATURATED = "server_saturated"
#: The server preempted requests during the load (vLLM's `vllm:num_preemptions_total` rose): a
#: preempted request's tokens are computed again, so its energy is partly work done twice.
SERVER_PREEMPTED = "server_preempted"
# "Most of the steady state": more than this share of its scrapes. A Poisson load queues a
# request now and then at any rate; queueing in most scrapes means arrivals outpace the server.
SATURATED_SHARE = 0.5
# vLLM admits a waiting request only when KV-cache blocks are free, and preempts running ones
# when they are not: from about this share in use, the cache, not the compute, sets the pace.
KV_CACHE_FULL = 0.95
# Fewer scrapes than this in the judged span (two seconds at the default interval) cannot
# say what "most of" it was.
MIN_SATURATION_SAMPLES = 3
#: Others took more than `--llem-host-busy-share` of the host's CPU during the measured window.
HOST_BUSY = "host_busy"
#: Devices every experiment on a host draws on at once: their energy cannot be split by case.
HOST_DEVICE_KINDS = frozenset({"cpu", "dram"})

#: Codes that mean "no figure" rather than "a doubtful figure"; the summary does not flag them.
UNMEASURED_CODES = frozenset({ENERGY_NOT_MEASURED})


# A merged flag quotes at most this many of its distinct sentences.
MAX_MESSAGES_PER_FLAG = 3


def default_min_window_s(measures_gpus: bool) -> float:
    """The shortest measured round trusted when the config names no `min_window_s`."""
    return MIN_WINDOW_S if measures_gpus else MIN_CPU_WINDOW_S


def flag(code: str, message: str) -> QualityWarning:
    return QualityWarning(code=code, message=message)


def merge_flags(warnings: list[QualityWarning]) -> list[QualityWarning]:
    """One flag per code, in first-seen order; its distinct sentences joined (a few, then a count).

    Windows and devices raise the same flag with different figures (`short_window` for each
    short window): a result lists each flag once.
    """
    messages: dict[str, list[str]] = {}
    for warning in warnings:
        seen = messages.setdefault(warning.code, [])
        if warning.message not in seen:
            seen.append(warning.message)
    merged = []
    for code, texts in messages.items():
        message = "; ".join(texts[:MAX_MESSAGES_PER_FLAG])
        if len(texts) > MAX_MESSAGES_PER_FLAG:
            message += f"; and {len(texts) - MAX_MESSAGES_PER_FLAG} more like these"
        merged.append(flag(code, message))
    return merged


def assess_window(
    duration_s: float,
    devices: list[DeviceEnergy],
    other_pids: dict[str, set[int]] | None = None,
    persistence_off: list[str] | None = None,
    lost: list[str] | None = None,
    coarse_counters: dict[str, float] | None = None,
) -> list[QualityWarning]:
    """The flags that apply to one measured window. `coarse_counters`: devices whose counter
    gave the energy but updates less often than the window lasted (label: update period, s)."""
    warnings: list[QualityWarning] = []
    minimum_s = default_min_window_s(any(device.kind == "gpu" for device in devices))
    if devices and duration_s < minimum_s:
        warnings.append(
            flag(
                SHORT_WINDOW,
                f"measured window lasted {duration_s:.2f} s, under {minimum_s:g} s: energy counters "
                "update every 1-100 ms and short windows vary widely; measure more work per window",
            )
        )
    for label, update_s in sorted((coarse_counters or {}).items()):
        warnings.append(
            flag(
                COUNTER_RESOLUTION,
                f"{label}: the window lasted {duration_s * 1000:.0f} ms, less than the energy counter's "
                f"update period (~{update_s * 1000:.0f} ms): the counter reads 0 J or a whole update's "
                "worth over so short a span, so the figure is not the window's energy; measure longer",
            )
        )
    for device in devices:
        warnings.extend(_device_flags(device))
    for label, pids in sorted((other_pids or {}).items()):
        if pids:
            warnings.append(
                flag(
                    OTHER_GPU_PROCESS,
                    f"{label}: other processes used the GPU during the window (PIDs "
                    f"{', '.join(map(str, sorted(pids)))}); their energy is included",
                )
            )
    for label in persistence_off or []:
        warnings.append(
            flag(
                PERSISTENCE_MODE_OFF,
                f"{label}: persistence mode is off, so the driver may reinitialise the GPU between "
                "processes and add start-up energy and latency; enable it with `nvidia-smi -pm 1`",
            )
        )
    for label in lost or []:
        warnings.append(flag(DEVICE_LOST, f"{label}: the device stopped answering during the window"))
    return merge_flags(warnings)


def assess_length(round_durations_s: list[float], min_window_s: float) -> list[QualityWarning]:
    """`short_window` for each round (or the whole measurement) shorter than `min_window_s`.

    About the time measured, so it applies with every meter, `energy='none'` included: a round
    of a few milliseconds times scheduling noise as much as the work.
    """
    numbered = len(round_durations_s) > 1
    return merge_flags(
        [
            flag(
                SHORT_WINDOW,
                f"{f'round {index + 1}' if numbered else 'the work'} was measured for {duration_s:.2f} s, "
                f"under min_window_s={min_window_s:g} s; measure more work per round (the built-in "
                "backends repeat their batches until the minimum is reached)",
            )
            for index, duration_s in enumerate(round_durations_s)
            if duration_s < min_window_s
        ]
    )


def assess_host_load(round_shares: list[float | None], limit: float) -> list[QualityWarning]:
    """`host_busy` for each round (or the whole measurement) in which others took more than
    `limit` of the host's CPU capacity (`energy.host_load`): the figures were measured while
    the experiment shared its CPUs, and tokens/s falls with that share."""
    numbered = len(round_shares) > 1
    return merge_flags(
        [
            flag(
                HOST_BUSY,
                f"other processes took {share:.0%} of the host's CPU time during "
                f"{f'round {index + 1}' if numbered else 'the measured window'} (limit {limit:.0%}, "
                "--llem-host-busy-share); figures measured on a busy host vary with its load: run on a "
                "quiet host, or raise the limit if that load is part of what you measure",
            )
            for index, share in enumerate(round_shares)
            if share is not None and share > limit
        ]
    )


def _device_flags(device: DeviceEnergy) -> list[QualityWarning]:
    warnings = []
    label = device.device
    if device.energy_j is not None and device.energy_j <= 0:
        warnings.append(
            flag(
                ZERO_ENERGY,
                f"{label}: measured 0 J over {device.duration_s:.2f} s; the counter did not advance "
                "(window too short for its update period, or the device does not report energy)",
            )
        )
    if device.kind == "gpu" and device.power_samples < MIN_POWER_SAMPLES:
        warnings.append(
            flag(
                FEW_POWER_SAMPLES,
                f"{label}: {device.power_samples} power samples in the window, fewer than "
                f"{MIN_POWER_SAMPLES}; lengthen the window or shorten --llem-sample-interval",
            )
        )
    if device.temperature_start_c is not None and device.temperature_end_c is not None:
        drift = device.temperature_end_c - device.temperature_start_c
        if abs(drift) > MAX_TEMPERATURE_DRIFT_C:
            warnings.append(
                flag(
                    TEMPERATURE_DRIFT,
                    f"{label}: temperature moved {drift:+.1f} C during the window (limit "
                    f"{MAX_TEMPERATURE_DRIFT_C:g} C); warm up longer or use --llem-cooldown-temp",
                )
            )
    if device.baseline_age_s is not None and device.baseline_age_s > MAX_BASELINE_AGE_S:
        warnings.append(
            flag(
                STALE_BASELINE,
                f"{label}: the idle baseline was measured {device.baseline_age_s / 60:.0f} min before "
                f"the window (limit {MAX_BASELINE_AGE_S / 60:g} min); idle power drifts, so "
                "energy_adjusted_j may be off",
            )
        )
    throttled = sorted(FLAGGED_THROTTLE_REASONS.intersection(device.throttle_reasons))
    if throttled:
        warnings.append(
            flag(THROTTLED, f"{label}: clocks were limited during the window ({', '.join(throttled)})")
        )
    return warnings


def assess_server_metrics(metrics: ServerMetrics) -> list[QualityWarning]:
    """`server_saturated` and `server_preempted` from what the server said during one load.

    Saturation is judged over the steady state (the whole load where there is none): more
    than `SATURATED_SHARE` of its scrapes with requests waiting, or with the KV cache at least
    `KV_CACHE_FULL` in use. Any preemption during the load flags it: a counter that rose."""
    warnings = []
    span = "the steady state" if metrics.judged_over == "steady" else "the load"
    n = metrics.judged_samples
    if n >= MIN_SATURATION_SAMPLES:
        reasons = []
        if metrics.waiting_share is not None and metrics.waiting_share > SATURATED_SHARE:
            reasons.append(
                f"requests waited in its queue in {metrics.waiting_share:.0%} of the {n} scrapes of {span}"
            )
        if metrics.kv_cache_full_share is not None and metrics.kv_cache_full_share > SATURATED_SHARE:
            reasons.append(
                f"its KV cache was at least {KV_CACHE_FULL:.0%} full in {metrics.kv_cache_full_share:.0%} "
                f"of the {n} scrapes of {span}"
            )
        if reasons:
            warnings.append(
                flag(
                    SERVER_SATURATED,
                    f"the server was saturated: {' and '.join(reasons)} (limit {SATURATED_SHARE:.0%}); the "
                    "figures measure its queue as much as its work and move steeply with load: lower "
                    "request_rate= or concurrency=, or give the server more capacity",
                )
            )
    if metrics.preemptions:
        warnings.append(
            flag(
                SERVER_PREEMPTED,
                f"the server preempted requests {metrics.preemptions:g} times during the load: their "
                "tokens were computed again, so the energy includes work done twice; lower the load "
                "or give the KV cache more memory",
            )
        )
    return warnings


def shared_host_energy_flag(labels: list[str], others: list[str]) -> QualityWarning:
    """The flag of a result whose host devices were measured while other experiments ran."""
    shown = ", ".join(others[:MAX_MESSAGES_PER_FLAG]) + (
        f" and {len(others) - MAX_MESSAGES_PER_FLAG} more" if len(others) > MAX_MESSAGES_PER_FLAG else ""
    )
    return flag(
        SHARED_HOST_ENERGY,
        f"{', '.join(labels)}: measured while other experiments ran on this host ({shown}); host energy "
        "mixes cases, so it is left out of energy_j (run them one at a time, e.g. without -n, to measure it)",
    )
