"""The transformers generation engine (`backends.generation`). What needs no torch is tested
here: digests, the first-token timer, how batches are recorded. `TorchGeneration` itself runs
on the tiny model in a fresh interpreter (this process never imports torch); its results
through the pytorch backend are in test_pytorch.py."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from simulated_windows import FAST, gpus

from pytest_llem.backends.generation import (
    BatchOutcome,
    FirstTokenTimer,
    PrefillDecodeParts,
    describe_outcomes,
    record_outcomes,
    token_digest,
)
from pytest_llem.config import build_config
from pytest_llem.context import ExperimentContext
from pytest_llem.energy import quality
from pytest_llem.energy.factory import create_meter
from pytest_llem.energy.meter import SampledMeter
from pytest_llem.results import ExperimentResult


def outcome(rows: list[list[int]], requests: list[list[int]], latency_s: float = 0.5) -> BatchOutcome:
    return BatchOutcome(
        input_tokens=sum(i for i, _ in requests),
        output_tokens=sum(o for _, o in requests),
        latency_s=latency_s,
        first_token_s=latency_s / 10,
        output_digest=token_digest(rows),
        request_tokens=requests,
    )


def test_the_token_digest_tells_rows_apart_not_just_their_tokens():
    assert token_digest([[1, 2], [3]]) == token_digest([[1, 2], [3]])
    assert token_digest([[1, 2], [3]]) != token_digest([[1], [2, 3]])
    assert token_digest([[1, 2], [3]]) != token_digest([[3], [1, 2]])
    assert len(token_digest([[1]])) == 16


def test_the_first_token_timer_ignores_the_prompt_and_keeps_the_first_new_tokens_time():
    timer = FirstTokenTimer()
    timer.put("prompt ids")
    assert timer.first_token_s is None
    time.sleep(0.01)
    timer.put("first step")
    first = timer.first_token_s
    assert first is not None and first >= 0.01
    time.sleep(0.01)
    timer.put("second step")
    timer.end()
    assert timer.first_token_s == first


def test_the_first_token_timer_calls_back_once_at_the_first_new_tokens():
    calls = []
    timer = FirstTokenTimer(lambda: calls.append(timer.first_token_s))
    timer.put("prompt ids")
    assert calls == []
    timer.put("first step")
    timer.put("second step")
    assert calls == [timer.first_token_s] and calls[0] is not None


def simulated_call(parts: PrefillDecodeParts, prefill_s: float, decode_s: float, first_token: bool = True):
    """One generate() call as the parts see it: begun, first tokens after `prefill_s`, ended."""
    parts.begin()
    time.sleep(prefill_s)
    if first_token:
        parts.first_token()
    time.sleep(decode_s)
    parts.end()


def test_a_prefill_shorter_than_the_counters_update_is_flagged_and_kept_out_of_the_gate(fake_nvml):
    # The simulated counter steps every 100 ms, as a real GPU's: a 10 ms prefill reads 0 J or a
    # whole step, so its figures carry counter_resolution; the 300 ms decode is not doubted.
    session = gpus(fake_nvml, {"power_profile": [[0, 200.0]]})
    meter = SampledMeter(session.visible_gpus(None), FAST)
    ctx = ExperimentContext(build_config({"energy": "nvml"}), meter)
    parts = PrefillDecodeParts(ctx)
    try:
        with ctx.window():
            simulated_call(parts, prefill_s=0.01, decode_s=0.3)
    finally:
        meter.close()
    parts.count([outcome([[1, 2, 3]], [[7, 3]])])
    split = parts.summary()
    assert quality.COUNTER_RESOLUTION in {w.code for w in split.prefill_warnings}
    assert quality.COUNTER_RESOLUTION not in {w.code for w in split.decode_warnings}
    # Each part's length flags are about one part, not the sum the figures rest on: not kept.
    assert quality.SHORT_WINDOW not in {w.code for w in split.prefill_warnings + split.decode_warnings}
    assert split.prefill_energy_j is not None and split.decode_energy_j is not None  # figures, flagged
    assert split.decode_energy_j == pytest.approx(200.0 * split.decode_duration_s, abs=200.0 * 0.1)
    assert (split.calls, split.input_tokens, split.output_tokens) == (1, 7, 3)
    result = ExperimentResult.model_validate(
        {**sample_result(), "extra": {"prefill_decode": split.model_dump(exclude=DERIVED)}}
    )
    assert result.flagged_for("prefill_energy_per_input_token_j")
    assert not result.flagged_for("decode_energy_per_output_token_j") and not result.flagged


DERIVED = {"prefill_energy_per_input_token_j", "decode_energy_per_output_token_j"}


def sample_result() -> dict:
    return {
        "experiment_id": "e1",
        "config_hash": "h",
        "config": {},
        "duration_s": 1.0,
        "window_count": 1,
        "started_at": "2026-01-01T00:00:00Z",
        "finished_at": "2026-01-01T00:00:01Z",
    }


def test_without_a_meter_the_parts_keep_their_durations_and_no_energy():
    ctx = ExperimentContext(build_config({"energy": "none"}), create_meter("none"))
    parts = PrefillDecodeParts(ctx)
    with ctx.window():
        simulated_call(parts, prefill_s=0.02, decode_s=0.05)
        simulated_call(parts, prefill_s=0.02, decode_s=0.0, first_token=False)  # no new token: all prefill
    split = parts.summary()
    assert split.calls == 2 and split.prefill_duration_s >= 0.04 and split.decode_duration_s >= 0.05
    assert split.prefill_duration_s + split.decode_duration_s <= ctx.windows[0].duration_s
    assert (split.prefill_energy_j, split.decode_energy_j) == (None, None)
    assert [w.code for w in split.prefill_warnings] == [quality.ENERGY_NOT_MEASURED]
    assert split.prefill_energy_per_input_token_j is None


def test_the_request_counts_digest_does_not_depend_on_how_requests_were_batched():
    one_batch = [outcome([[7, 8], [9, 9]], [[3, 2], [4, 2]])]
    two_batches = [outcome([[7, 8]], [[3, 2]]), outcome([[9, 9]], [[4, 2]])]
    assert (
        describe_outcomes(one_batch)["request_tokens_digest"]
        == describe_outcomes(two_batches)["request_tokens_digest"]
    )
    other_counts = [outcome([[7, 8]], [[3, 2]]), outcome([[9, 9]], [[5, 2]])]
    assert (
        describe_outcomes(other_counts)["request_tokens_digest"]
        != describe_outcomes(two_batches)["request_tokens_digest"]
    )
    reordered = list(reversed(two_batches))
    assert describe_outcomes(reordered)["output_digest"] != describe_outcomes(two_batches)["output_digest"]


def test_every_batch_is_counted_and_the_work_is_described_by_one_pass():
    ctx = ExperimentContext(build_config({"energy": "none"}), create_meter("none"))
    one_pass = [outcome([[1, 2]], [[3, 2]], latency_s=0.2), outcome([[3, 4]], [[4, 2]], latency_s=0.4)]
    record_outcomes(ctx, one_pass * 3, one_pass=one_pass)  # three passes over the same prompts
    assert (ctx.input_tokens, ctx.output_tokens) == (3 * 7, 3 * 4)
    assert ctx.batch_latencies_s == [0.2, 0.4] * 3
    assert ctx.first_token_latencies_s == pytest.approx([0.02, 0.04] * 3)
    assert {k: ctx.extra[k] for k in ("output_digest", "request_tokens_digest")} == describe_outcomes(
        one_pass
    )


ENGINE_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from pytest_llem.backends.generation import TorchGeneration
    from pytest_llem.config import build_config
    from pytest_llem.errors import ConfigError

    model, out = sys.argv[1], {}
    engine = TorchGeneration(build_config({"model": model, "device": "cpu", "max_new_tokens": 3}))
    eos = engine.tokenizer.eos_token_id
    out["ignored"] = sorted(engine.ignored_checkpoint_defaults)
    out["kept_eos"] = engine.model.generation_config.eos_token_id == eos
    out["decoding"] = engine.decoding_settings()
    batch = engine.generate(engine.encode(["a benchmark measures", "energy"]))
    out["batch"] = [batch.input_tokens, batch.output_tokens, batch.request_tokens, batch.latency_s > 0]
    import torch
    rows = torch.tensor([[5, eos, 6, 7], [5, 6, 7, 8]])
    out["ignoring_eos"] = engine.new_tokens_per_row(rows)  # ignore_eos, the default
    engine.config = engine.config.model_copy(update={"ignore_eos": False})
    out["until_eos"] = engine.new_tokens_per_row(rows)
    try:
        TorchGeneration(build_config({"model": model, "device": "cuda"}))
    except ConfigError as exc:
        out["cuda"] = str(exc)
    print(json.dumps(out))
    """
)


def test_the_engine_loads_generates_and_counts_in_a_fresh_interpreter(tiny_model: Path):
    done = subprocess.run(
        [sys.executable, "-c", ENGINE_SCRIPT, str(tiny_model)], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout.splitlines()[-1])
    # The tiny model's checkpoint suppresses tokens: a decoding default, dropped and listed.
    assert "suppress_tokens" in out["ignored"] and out["kept_eos"]
    assert out["decoding"]["greedy"] and out["decoding"]["max_new_tokens"] == 3
    assert out["decoding"]["min_new_tokens"] == 3  # ignore_eos (the default): exactly as many
    input_tokens, output_tokens, requests, timed = out["batch"]
    assert output_tokens == 2 * 3 and timed
    assert [o for _, o in requests] == [3, 3] and sum(i for i, _ in requests) == input_tokens
    assert requests[0][0] > requests[1][0]  # the longer prompt, counted without its padding
    assert out["until_eos"] == [2, 4]  # up to and including the first end-of-sequence token
    assert out["ignoring_eos"] == [4, 4]
    if "cuda" in out:  # a machine without a CUDA GPU
        assert (
            out["cuda"]
            == "device: 'cuda' was asked for but torch sees no CUDA GPU; use device='cpu' or 'auto'"
        )
