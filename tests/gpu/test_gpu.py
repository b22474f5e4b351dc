"""The real NVML path on a real NVIDIA GPU (marked `gpu`; skipped cleanly without one).

Run with `pytest -m gpu -s tests/gpu/test_gpu.py` on a GPU machine with torch for CUDA; each
test prints the figures recorded in docs/gpu-validation.md.
"""

from __future__ import annotations

import importlib.util

import pytest
import workloads

from pytest_llem.energy.devices import integrate_power_j
from pytest_llem.energy.idle import IdleBaselines
from pytest_llem.energy.meter import MeterOptions
from pytest_llem.energy.nvml import NvmlSession
from pytest_llem.errors import MeterUnavailable
from pytest_llem.session import BenchmarkSession
from pytest_llem.settings import LlemSettings
from pytest_llem.testing import needs_gpus

pytestmark = [pytest.mark.gpu, needs_gpus(1)]


def _first_gpu_or_skip():
    try:
        session = NvmlSession.open()
        gpus = session.visible_gpus("0")
    except MeterUnavailable as exc:
        pytest.skip(f"no usable NVIDIA GPU: {exc}")
    return session, gpus[0]


@pytest.fixture
def gpu_bench(state_dir) -> BenchmarkSession:
    session, _ = _first_gpu_or_skip()
    session.close()
    bench = BenchmarkSession(
        LlemSettings(enabled=True, state_dir=state_dir, energy="nvml", baseline_s=5.0, sample_interval_s=0.1)
    )
    bench.start()
    return bench


def run_matmul(bench: BenchmarkSession, seconds: float):
    result = bench.run_experiment(
        "tests/test_gpu.py::matmul", workloads.gpu_matmul, [{"gpus": [0], "params": {"seconds": seconds}}]
    )
    (device,) = result.energy_by_device
    return result, device


def test_counter_and_integrated_power_agree_within_two_percent(gpu_bench):
    result, device = run_matmul(gpu_bench, 12.0)
    integrated_j = integrate_power_j(device.timeline)
    print(
        f"\n{device.name} ({device.uuid}): window {result.duration_s:.2f} s, "
        f"counter {device.energy_j:.1f} J, "
        f"integrated {integrated_j:.1f} J over {device.power_samples} samples, "
        f"avg {device.avg_power_w:.1f} W, peak {device.peak_power_w:.1f} W, "
        f"baseline {device.baseline_power_w:.1f} W, "
        f"{device.temperature_start_c}->{device.temperature_end_c} C, "
        f"throttle {device.throttle_reasons}, flags {[w.code for w in result.warnings]}"
    )
    assert device.energy_source == "nvml-counter" and device.power_samples >= 100
    assert integrated_j == pytest.approx(device.energy_j, rel=0.02)


def test_energy_of_a_fixed_workload_scales_with_its_duration(gpu_bench):
    short, short_device = run_matmul(gpu_bench, 5.0)
    long, long_device = run_matmul(gpu_bench, 10.0)
    energy_ratio = long_device.energy_j / short_device.energy_j
    work_ratio = long.output_tokens / short.output_tokens
    print(
        f"\nenergy ratio {energy_ratio:.3f}, work ratio {work_ratio:.3f}, "
        f"J per matmul {short_device.energy_j / short.output_tokens:.3f} / "
        f"{long_device.energy_j / long.output_tokens:.3f}"
    )
    assert energy_ratio == pytest.approx(work_ratio, rel=0.1)


def test_idle_baseline_is_plausible_for_the_card():
    session, gpu = _first_gpu_or_skip()
    try:
        limit_w = session.nvml.nvmlDeviceGetEnforcedPowerLimit(gpu.handle) / 1000.0
        persistence_off = gpu.persistence_mode_off()
    finally:
        session.close()
    idle = IdleBaselines(duration_s=5.0).measure("nvml", MeterOptions(), {"CUDA_VISIBLE_DEVICES": "0"})
    (reading,) = idle.values()
    print(
        f"\n{gpu.name}: idle {reading.power_w:.1f} W at {reading.temperature_c} C, "
        f"power limit {limit_w:.0f} W, "
        f"persistence mode {'off' if persistence_off else 'on'}"
    )
    assert 5.0 < reading.power_w < 0.5 * limit_w


# --- the backends on CUDA --------------------------------------------------------------------


def run_backend(bench: BenchmarkSession, tiny_model, **fields):
    fields = {"model": str(tiny_model), "gpus": [0], "batch_size": 8, "n_prompts": 64, **fields}
    return bench.run_experiment(f"tests/test_gpu.py::{fields['backend']}", None, [fields])


def test_pytorch_backend_on_cuda_reports_gpu_memory_and_energy(gpu_bench, tiny_model):
    result = run_backend(
        gpu_bench, tiny_model, backend="pytorch", device="cuda", precision="fp16", max_new_tokens=64
    )
    print(
        f"\npytorch on {result.extra['device']}: {result.tokens_per_s:.0f} tokens/s, "
        f"{result.energy_per_token_j} J/token, peak {result.peak_memory_bytes} B"
    )
    assert result.extra["device"].startswith("cuda") and result.peak_memory_kind == "cuda_max_allocated"
    assert result.gpu_energy_j is not None and result.gpu_energy_j > 0
    # A GPU's energy is measured: the batches repeat until the window lasts 5 s (min_window_s).
    assert result.extra["min_window_s"] == 5.0 and result.duration_s >= 5.0
    assert result.output_tokens == result.extra["passes"] * 64 * 64
    assert "short_window" not in [w.code for w in result.warnings]


@needs_gpus(2)
def test_accelerate_ranks_on_two_gpus_are_measured_once(gpu_bench, tiny_model):
    result = run_backend(
        gpu_bench,
        tiny_model,
        backend="pytorch",
        device="cuda",
        gpus=[0, 1],
        num_processes=2,
        max_new_tokens=32,
    )
    assert result.extra["accelerate_world_size"] == 2 and len(result.energy_by_device) == 2


def test_vllm_backend_for_real(gpu_bench, tiny_model):
    if importlib.util.find_spec("vllm") is None:
        pytest.skip("vLLM is not installed")
    result = run_backend(
        gpu_bench,
        tiny_model,
        backend="vllm",
        batch_size=16,
        max_new_tokens=32,
        gpu_memory_utilization=0.3,
        enforce_eager=True,
    )
    ttft, itl = result.time_to_first_token, result.inter_token_latency
    print(
        f"\nvLLM {result.extra['vllm_version']}: {result.tokens_per_s:.0f} tokens/s, "
        f"ttft p50 {ttft and ttft.p50_s} p99 {ttft and ttft.p99_s}, itl p50 {itl and itl.p50_s}"
    )
    passes = result.extra["passes"]  # batches repeated until the window lasts min_window_s (5 s)
    assert result.duration_s >= 5.0 and result.gpu_energy_j is not None
    assert result.output_tokens == passes * 64 * 32
    # Request metrics exist only with disable_log_stats=False, and each latency is on one clock.
    assert ttft is not None and ttft.count == passes * 64 and 0 < ttft.p50_s <= ttft.p99_s < result.duration_s
    assert itl is not None and itl.count == passes * 64 and 0 < itl.p50_s < result.duration_s
