"""The vLLM adapter, checked against a stand-in of vLLM's public API
(`tests/support/fake_vllm/vllm`): a contract test, since vLLM needs a GPU.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from bench_runs import run
from fake_vllm import FAKE_VLLM_DIR, load_fake_vllm
from helpers import reports, run_on_one_simulated_gpu

from pytest_llem.errors import ConfigError, ExperimentFailed

# --- vLLM: contract test against the stand-in -------------------------------------------------


@pytest.fixture
def vllm_stand_in(monkeypatch, tmp_path):
    log = tmp_path / "vllm-calls.jsonl"
    monkeypatch.setenv("VLLM_STAND_IN_LOG", str(log))
    return {
        "env": {"PYTHONPATH": os.pathsep.join([str(FAKE_VLLM_DIR), os.environ.get("PYTHONPATH", "")])},
        "log": log,
    }


def calls(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()]


def vllm(bench, stand_in, **fields):
    return run(bench, backend="vllm", env=stand_in["env"], **fields)


def test_vllm_adapter_maps_the_config_onto_vllms_api(bench, vllm_stand_in):
    result = vllm(
        bench,
        vllm_stand_in,
        model="org/some-model",
        batch_size=3,
        n_prompts=6,
        max_new_tokens=7,
        precision="bf16",
        tensor_parallel_size=2,
        gpu_memory_utilization=0.8,
        max_model_len=2048,
        enforce_eager=True,
        warmup_batches=1,
    )
    engine, sampling, *generates = calls(vllm_stand_in["log"])
    assert engine == {
        "event": "engine",
        "model": "org/some-model",
        "tensor_parallel_size": 2,
        "dtype": "bfloat16",
        "gpu_memory_utilization": 0.8,
        "enforce_eager": True,
        "max_num_seqs": 3,
        "seed": 0,
        "max_model_len": 2048,
        "disable_log_stats": False,  # else LLM() drops every request's metrics
    }
    assert sampling == {
        "event": "sampling_params",
        "max_tokens": 7,
        "min_tokens": 7,
        "ignore_eos": True,
        "temperature": 0.0,
    }
    assert [g["prompts"] for g in generates] == [3, 3, 3] and not any(g["use_tqdm"] for g in generates)
    assert result.output_tokens == 6 * 7 and result.batch_latency.count == 2
    assert result.time_to_first_token.count == 6 and result.inter_token_latency.count == 6
    assert result.extra["vllm_version"] == "0.33.0-stand-in"


def test_vllm_adapter_sampling_and_natural_lengths(bench, vllm_stand_in):
    result = vllm(
        bench,
        vllm_stand_in,
        model="m",
        n_prompts=2,
        max_new_tokens=8,
        ignore_eos=False,
        temperature=0.7,
        top_p=0.9,
        seed=5,
        warmup_batches=0,
    )
    _, sampling, *_ = calls(vllm_stand_in["log"])
    assert sampling == {
        "event": "sampling_params",
        "max_tokens": 8,
        "ignore_eos": False,
        "temperature": 0.7,
        "top_p": 0.9,
        "top_k": -1,
        "seed": 5,
    }
    assert result.output_tokens == 2 * 4  # the stand-in stops at half of max_tokens without ignore_eos
    assert result.extra["decoding"] == {
        "max_new_tokens": 8,
        "min_new_tokens": 0,
        "ignore_eos": False,
        "greedy": False,
        "temperature": 0.7,
        "top_p": 0.9,
        "top_k": 0,
        "repetition_penalty": 1.0,
        "source": result.extra["decoding"]["source"],
    }


def test_vllm_batches_repeat_until_the_minimum_and_every_token_counts(bench, vllm_stand_in):
    # A pass (two batches) takes about 0.08 s on a quiet machine, so about six fill the window.
    result = vllm(
        bench, vllm_stand_in, model="m", n_prompts=4, batch_size=2, max_new_tokens=5, min_window_s=0.5
    )
    passes = result.extra["passes"]
    generates = [c for c in calls(vllm_stand_in["log"]) if c["event"] == "generate"]
    assert len(generates) == 1 + passes * 2  # one warm-up batch, then 2 batches a pass
    # Passes went on until the window reached its minimum, and not one more (however long a
    # busy machine made each): the last pass began before the minimum was reached.
    pass_starts = [g["started_s"] - generates[1]["started_s"] for g in generates[1::2]]
    assert len(pass_starts) == passes and pass_starts[-1] < 0.5
    assert result.duration_s >= 0.5 and result.output_tokens == passes * 4 * 5
    assert result.time_to_first_token.count == passes * 4


def test_vllm_digests_describe_the_work_and_catch_changed_outputs(bench, vllm_stand_in):
    from pytest_llem.gating.work import outputs_changed, work_differences

    fields = {"model": "m", "n_prompts": 4, "batch_size": 2, "max_new_tokens": 5}
    first = vllm(bench, vllm_stand_in, **fields)
    again = vllm(bench, vllm_stand_in, min_window_s=0.5, **fields)  # passes of about 0.08 s: several
    other_weights = {**vllm_stand_in["env"], "VLLM_STAND_IN_WEIGHTS": "7"}
    changed = run(bench, backend="vllm", env=other_weights, **fields)
    assert again.extra["passes"] > 1  # more passes, the same work
    assert first.extra["output_digest"] == again.extra["output_digest"] != changed.extra["output_digest"]
    digests = {r.extra["request_tokens_digest"] for r in (first, again, changed)}
    assert len(digests) == 1 and None not in digests
    fewer = vllm(bench, vllm_stand_in, **{**fields, "max_new_tokens": 4})
    assert fewer.extra["request_tokens_digest"] != first.extra["request_tokens_digest"]
    base, same, new = (e.work for e in bench.record.entries[:3])
    assert work_differences(base, same) == [] and not outputs_changed(base, same)
    assert work_differences(base, new) == [] and outputs_changed(base, new)


def test_vllm_latencies_come_from_the_v1_metrics_on_one_clock_each(bench, vllm_stand_in):
    stand_in = load_fake_vllm()
    FIRST_TOKEN_S, TOKEN_S = stand_in.FIRST_TOKEN_S, stand_in.TOKEN_S

    result = vllm(bench, vllm_stand_in, model="m", n_prompts=4, batch_size=2, max_new_tokens=6)
    ttft, itl = result.time_to_first_token, result.inter_token_latency
    # The engine's own first-token latency, not a wall-clock arrival minus a monotonic stamp
    # (which would be about -1.7e9 s).
    assert ttft.count == 4 and FIRST_TOKEN_S <= ttft.min_s <= ttft.max_s < FIRST_TOKEN_S + 1.0
    assert itl.count == 4 and itl.p50_s == pytest.approx(TOKEN_S, rel=1e-6)


def test_request_latencies_never_mix_the_wall_and_monotonic_clocks():
    from types import SimpleNamespace

    from pytest_llem.backends.vllm import request_latencies

    def output(metrics, tokens=5):
        return SimpleNamespace(metrics=metrics, outputs=[SimpleNamespace(token_ids=list(range(tokens)))])

    v1 = SimpleNamespace(
        arrival_time=1.7e9,  # time.time()
        first_token_ts=5000.0,  # time.monotonic() in the engine core
        last_token_ts=5000.2,
        first_token_latency=0.03,
    )
    first, inter = request_latencies(output(v1))
    assert first == 0.03 and inter == pytest.approx(0.05)
    # Metrics off (disable_log_stats), or a request that never produced a token: no figure, no zero.
    assert request_latencies(output(None)) == (None, None)
    unset = SimpleNamespace(
        arrival_time=1.7e9, first_token_ts=0.0, last_token_ts=0.0, first_token_latency=0.0
    )
    assert request_latencies(output(unset)) == (None, None)
    v0 = SimpleNamespace(arrival_time=100.0, first_token_time=100.5, last_token_time=101.3)
    assert request_latencies(output(v0)) == (0.5, pytest.approx(0.2))


def test_vllm_temperature_out_of_its_range_fails_when_the_config_is_built(bench):
    with pytest.raises(
        ConfigError, match=r"^temperature: backend='vllm' accepts 0 to 2; lower it \(0 is greedy decoding\)"
    ):
        run(bench, backend="vllm", model="m", temperature=2.5)
    from pytest_llem.config import build_config

    assert build_config({"backend": "pytorch", "temperature": 2.5}).temperature == 2.5


def test_the_stand_in_rejects_what_vllm_0_33_rejects(monkeypatch, tmp_path):
    monkeypatch.setenv("VLLM_STAND_IN_LOG", str(tmp_path / "log.jsonl"))
    stand_in = load_fake_vllm()

    with pytest.raises(TypeError, match="Unexpected keyword argument 'max_new_tokens'"):
        stand_in.SamplingParams(max_new_tokens=4)
    for bad in ({"temperature": 2.5}, {"temperature": -1.0}, {"top_p": 0.0}, {"max_tokens": 0}):
        with pytest.raises(stand_in.VLLMValidationError):
            stand_in.SamplingParams(**bad)
    assert not issubclass(stand_in.VLLMValidationError, ValueError)
    with pytest.raises(TypeError, match="unexpected keyword argument 'max_batch_size'"):
        stand_in.LLM("m", max_batch_size=4)
    with pytest.raises(ValueError, match="gpu_memory_utilization"):
        stand_in.LLM("m", gpu_memory_utilization=1.5)
    # LLM() switches request metrics off unless told otherwise.
    params = stand_in.SamplingParams(max_tokens=3)
    assert stand_in.LLM("m").generate(["a b"], params, use_tqdm=False)[0].metrics is None
    (output,) = stand_in.LLM("m", disable_log_stats=False).generate(["a b"], params, use_tqdm=False)
    assert (
        output.metrics.first_token_latency > 0 and output.metrics.arrival_time > output.metrics.last_token_ts
    )


def test_vllm_missing_names_the_extra(bench):
    with pytest.raises(
        ExperimentFailed,
        match=r"^backend='vllm' needs the 'vllm' extra \(.*\): reinstall pytest-llem with it",
    ):
        run(bench, backend="vllm", model="m")


# --- prefill and decode apart ------------------------------------------------------------------


def test_vllm_splits_each_call_at_the_batchs_first_token_time_from_its_metrics(bench, vllm_stand_in):
    stand_in = load_fake_vllm()
    fields = {"model": "m", "n_prompts": 6, "batch_size": 3, "max_new_tokens": 11, "min_window_s": 0.3}
    result = vllm(bench, vllm_stand_in, **fields)
    split = result.prefill_decode
    # Every generate() call of every pass: 2 batches a pass, the tokens of all of them.
    assert split.calls == 2 * result.extra["passes"] > 0
    assert (split.input_tokens, split.output_tokens) == (result.input_tokens, result.output_tokens)
    # The stand-in's prefill step lasts FIRST_TOKEN_S, its 10 further tokens TOKEN_S each: the
    # split sits where its engine stamped the first tokens, on the meter's clock.
    prefill_s, decode_s = split.prefill_duration_s / split.calls, split.decode_duration_s / split.calls
    assert stand_in.FIRST_TOKEN_S <= prefill_s < stand_in.FIRST_TOKEN_S + 0.5
    assert 10 * stand_in.TOKEN_S <= decode_s < 10 * stand_in.TOKEN_S + 0.5
    assert split.prefill_duration_s + split.decode_duration_s <= result.duration_s
    # energy="none": durations, but no energy to split and nothing to flag.
    assert (result.prefill_energy_j, result.decode_energy_j) == (None, None)
    assert split.prefill_warnings == split.decode_warnings == []


def test_without_request_metrics_there_is_no_split():
    from types import SimpleNamespace

    from pytest_llem.backends.vllm import batch_first_token_at

    def output(**metrics):
        return SimpleNamespace(metrics=SimpleNamespace(**metrics) if metrics else None)

    assert batch_first_token_at([output(), output(first_token_ts=5.0)]) is None
    assert batch_first_token_at([output(first_token_ts=0.0)]) is None  # no token yet
    assert batch_first_token_at([]) is None
    # V1: the engine core's monotonic clock; the batch ends its prefill at its last first token.
    import time

    now_mono, now_perf = time.monotonic(), time.perf_counter()
    at = batch_first_token_at([output(first_token_ts=now_mono - 0.2), output(first_token_ts=now_mono - 0.1)])
    assert at == pytest.approx(now_perf - 0.1, abs=0.01)
    # V0: the wall clock.
    wall = time.time()
    at = batch_first_token_at([output(arrival_time=wall - 1, first_token_time=wall - 0.5)])
    assert at == pytest.approx(time.perf_counter() - 0.5, abs=0.01)


VLLM_SPLIT_SUITE = """
import pytest

@pytest.mark.llem(backend="vllm", model="m", gpus=[0], n_prompts=6, batch_size=3,
                  max_new_tokens=40, min_window_s=1.0)
def test_split(llem):
    llem.run()
"""


def test_vllm_prefill_and_decode_share_the_windows_measured_energy_by_power(
    pytester, tmp_path, monkeypatch, vllm_stand_in
):
    """One simulated GPU at a constant 300 W, its counter exact: each part's energy is 300 W
    times its duration, and the parts add up to the calls' share of the window."""
    pytester.makepyfile(test_vllm_split=VLLM_SPLIT_SUITE)
    outcome, state_dir = run_on_one_simulated_gpu(
        pytester, tmp_path, monkeypatch, 300.0, ideal=True, paths=(str(FAKE_VLLM_DIR),)
    )
    outcome.assert_outcomes(passed=1)
    (report,) = reports(state_dir)
    result = report["experiments"][0]["result"]
    for part in ("prefill", "decode"):
        assert result[f"{part}_energy_j"] == pytest.approx(300 * result[f"{part}_duration_s"], rel=0.05)
    parts_j = result["prefill_energy_j"] + result["decode_energy_j"]
    assert 0.5 * result["energy_j"] < parts_j <= result["energy_j"]
    split = result["extra"]["prefill_decode"]
    # Each prefill lasts ~25 ms, sampled every 20 ms: over ~10 calls, enough readings to share by.
    assert split["calls"] >= 6
    assert split["decode_warnings"] == []
