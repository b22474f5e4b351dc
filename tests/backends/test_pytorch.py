"""The PyTorch backend end to end: real torch inference on a tiny model built locally.

Every experiment runs in a real isolated child; the model is loaded through the same
`from_pretrained` path a downloaded one takes.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from bench_runs import run
from helpers import reports, run_on_one_simulated_gpu

from pytest_llem.errors import ConfigError, ExperimentFailed
from pytest_llem.session import BenchmarkSession
from pytest_llem.settings import LlemSettings


def pytorch(bench, tiny_model, **fields):
    return run(bench, backend="pytorch", model=str(tiny_model), max_new_tokens=5, **fields)


def test_token_counts_are_exact_and_latencies_consistent_with_the_window(bench, tiny_model):
    result = pytorch(bench, tiny_model, batch_size=4, n_prompts=6)
    assert result.output_tokens == 6 * 5  # ignore_eos (the default): exactly max_new_tokens each
    assert result.workload == "pytest_llem.backends.pytorch:run"
    latency = result.batch_latency
    assert latency is not None and latency.count == 2  # batches of 4 and 2
    assert latency.min_s <= latency.p50_s <= latency.p90_s <= latency.p99_s <= latency.max_s
    assert latency.mean_s * latency.count <= result.duration_s
    ttft = result.time_to_first_token
    assert ttft is not None and ttft.count == 2 and ttft.max_s <= latency.max_s
    assert result.tokens_per_s == pytest.approx(30 / result.duration_s)
    assert result.peak_memory_kind == "peak_rss" and result.peak_memory_bytes > 10_000_000
    assert result.flops_estimate > 0 and result.extra["device"] == "cpu"


def test_input_tokens_do_not_depend_on_batching_and_truncation_applies(bench, tiny_model):
    one = pytorch(bench, tiny_model, batch_size=1, n_prompts=4)
    four = pytorch(bench, tiny_model, batch_size=4, n_prompts=4)
    short = pytorch(bench, tiny_model, batch_size=4, n_prompts=4, max_input_tokens=3)
    assert one.input_tokens == four.input_tokens > 4 * 3
    assert short.input_tokens == 4 * 3
    # Each request's counts are the work compared between runs: batching does not change them.
    digests = [r.extra["request_tokens_digest"] for r in (one, four, short)]
    assert digests[0] == digests[1] != digests[2]


def test_sampling_is_reproducible_for_a_seed(bench, tiny_model):
    sample = {"temperature": 1.0, "top_k": 50, "batch_size": 2, "n_prompts": 2, "max_new_tokens": 12}
    first = run(bench, backend="pytorch", model=str(tiny_model), seed=3, **sample)
    again = run(bench, backend="pytorch", model=str(tiny_model), seed=3, **sample)
    other = run(bench, backend="pytorch", model=str(tiny_model), seed=4, **sample)
    assert first.extra["output_digest"] == again.extra["output_digest"] != other.extra["output_digest"]


def test_precision_and_prompt_sources(bench, tiny_model, tmp_path):
    (tmp_path / "prompts.txt").write_text("first prompt here\n\nsecond prompt\n")
    (tmp_path / "prompts.jsonl").write_text('{"prompt": "first prompt here"}\n{"text": "second prompt"}\n')
    from_list = pytorch(bench, tiny_model, prompts=["first prompt here", "second prompt"], n_prompts=2)
    from_txt = pytorch(bench, tiny_model, prompts=str(tmp_path / "prompts.txt"), n_prompts=2)
    from_jsonl = pytorch(bench, tiny_model, prompts=str(tmp_path / "prompts.jsonl"), n_prompts=2)
    assert from_list.input_tokens == from_txt.input_tokens == from_jsonl.input_tokens
    assert from_list.extra["output_digest"] == from_jsonl.extra["output_digest"]
    # The prompts' text is the prompt set, wherever it came from.
    prompt_digests = [e.work.prompt_digest for e in bench.record.entries[-3:]]
    assert prompt_digests[0] == prompt_digests[1] == prompt_digests[2] is not None
    bf16 = pytorch(bench, tiny_model, precision="bf16", n_prompts=2)
    assert bf16.output_tokens == 10 and bf16.extra["precision"] == "bf16"


def test_bad_inputs_fail_with_one_line_naming_the_field(bench, tiny_model, tmp_path):
    with pytest.raises(ExperimentFailed) as missing:
        run(bench, backend="pytorch", model=str(tmp_path / "no-such-model"))
    assert str(missing.value) == (
        f"model: no such directory {str(tmp_path / 'no-such-model')!r}; "
        "give a local model directory or a hub id"
    )
    (tmp_path / "bad.jsonl").write_text('{"prompt": "ok"}\n{"nope": 1}\n')
    with pytest.raises(  # read before the child starts, for the prompt set's digest
        ConfigError,
        match=r"^prompts: bad.jsonl line 2 is not a JSON object with a 'prompt' or 'text' field$",
    ):
        pytorch(bench, tiny_model, prompts=str(tmp_path / "bad.jsonl"))
    with pytest.raises(
        ConfigError, match=r"precision: Input should be 'auto', 'fp32', 'fp16' or 'bf16' \(got 'fp8'\)"
    ):
        pytorch(bench, tiny_model, precision="fp8")
    with pytest.raises(ExperimentFailed, match=r"^model: backend='pytorch' needs model="):
        run(bench, backend="pytorch")


def test_accelerate_ranks_share_the_work_and_are_measured_once(bench, tiny_model):
    single = pytorch(bench, tiny_model, batch_size=2, n_prompts=8, device="cpu")
    ranks = pytorch(bench, tiny_model, batch_size=2, n_prompts=8, device="cpu", num_processes=2)
    assert ranks.extra["ranks"] == ranks.extra["accelerate_world_size"] == 2
    assert (ranks.input_tokens, ranks.output_tokens) == (single.input_tokens, single.output_tokens)
    assert ranks.window_count == 1 and ranks.batch_latency.count == 4  # 2 batches on each rank
    assert ranks.extra["output_digest"] == single.extra["output_digest"]  # greedy: same tokens
    assert ranks.extra["request_tokens_digest"] == single.extra["request_tokens_digest"]
    # accelerate shares the cores among CPU ranks: the result says how many threads each had.
    threads = ranks.extra["cpu_threads_per_rank"]
    assert len(threads) == 2 and all(t >= 1 for t in threads) and single.extra["cpu_threads"] >= 1
    assert ranks.extra["cpu_threads_note"].startswith(
        f"CPU ranks ran torch with {threads[0]}/{threads[1]} thread"
    )
    assert ranks.extra["decoding"] == single.extra["decoding"]


# Its minimum is three times one pass as measured first: another test's load starting after that
# pass makes each later pass slower, and two of them reach the minimum.
@pytest.mark.alone
def test_batches_repeat_until_each_round_reaches_min_window_s(bench, tiny_model):
    fields = {"batch_size": 2, "n_prompts": 4}  # max_new_tokens=5
    once = pytorch(bench, tiny_model, **fields)
    assert once.extra["passes"] == 1 and once.output_tokens == 4 * 5
    # A minimum of several passes' length, whatever this machine's speed.
    minimum_s = round(3 * once.duration_s, 3)
    result = pytorch(bench, tiny_model, rounds=2, min_window_s=minimum_s, **fields)
    assert all(r.duration_s >= minimum_s for r in result.rounds)
    passes = result.extra["passes"]
    assert passes > 2 and result.extra["min_window_s"] == minimum_s
    # Every token really produced is counted: passes x the tokens of one pass.
    assert result.output_tokens == passes * 4 * 5 == sum(r.output_tokens for r in result.rounds)
    assert result.input_tokens == passes * once.input_tokens
    assert result.batch_latency.count == passes * 2
    # The work is one pass over the prompts, however many passes the machine managed.
    assert result.extra["output_digest"] == once.extra["output_digest"]
    assert result.extra["request_tokens_digest"] == once.extra["request_tokens_digest"]
    assert "short_window" not in [w.code for w in result.warnings]


def test_accelerate_ranks_repeat_their_share_until_the_minimum(bench, tiny_model):
    fields = {"batch_size": 2, "n_prompts": 4, "device": "cpu"}  # max_new_tokens=5
    single = pytorch(bench, tiny_model, **fields)
    ranks = pytorch(bench, tiny_model, num_processes=2, min_window_s=1.0, **fields)
    per_rank = ranks.extra["passes_per_rank"]
    assert len(per_rank) == 2 and all(p >= 2 for p in per_rank) and ranks.extra["passes"] == sum(per_rank)
    assert ranks.duration_s >= 1.0
    assert ranks.output_tokens == sum(p * 2 * 5 for p in per_rank)  # each rank: 2 prompts a pass
    assert ranks.extra["output_digest"] == single.extra["output_digest"]
    assert ranks.extra["request_tokens_digest"] == single.extra["request_tokens_digest"]


def test_the_checkpoints_decoding_defaults_are_not_applied_and_are_listed(bench, tiny_model, tmp_path):
    import shutil

    from pytest_llem.backends.vllm import decoding_settings
    from pytest_llem.config import build_config

    # A checkpoint whose generation_config would sample and penalise repeats (as many do).
    opinionated = tmp_path / "opinionated"
    shutil.copytree(tiny_model, opinionated)
    config_file = opinionated / "generation_config.json"
    defaults = json.loads(config_file.read_text()) if config_file.exists() else {}
    extras = {"repetition_penalty": 10.0, "no_repeat_ngram_size": 1, "do_sample": True, "temperature": 0.3}
    config_file.write_text(json.dumps({**defaults, **extras}))
    fields = {"batch_size": 2, "n_prompts": 2, "max_new_tokens": 12}
    plain = run(bench, backend="pytorch", model=str(tiny_model), **fields)
    result = run(bench, backend="pytorch", model=str(opinionated), **fields)
    assert result.extra["output_digest"] == plain.extra["output_digest"]  # greedy, as configured
    decoding = result.extra["decoding"]
    assert {k: decoding["checkpoint_defaults_ignored"][k] for k in extras} == extras
    # The same config decodes the same way on both backends.
    same = {k: v for k, v in decoding.items() if k != "checkpoint_defaults_ignored"}
    vllm_side = decoding_settings(build_config({"backend": "vllm", "model": "m", **fields}))
    assert same == {k: v for k, v in vllm_side.items() if k != "source"}
    assert same["greedy"] and same["repetition_penalty"] == 1.0


# --- through pytest --llem ---------------------------------------------------------------------

SUITE = """
import pytest

def out_of_memory(ctx):
    import torch
    raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

@pytest.mark.llem(backend="pytorch", model=MODEL, max_new_tokens=4, n_prompts=4)
@pytest.mark.parametrize("batch_size", [1, 2])
def test_tiny(llem, batch_size):
    # Without min_window_s a CPU round lasts the CPU's minimum window: the batches run again
    # until it does, and every pass's tokens count.
    result = llem.run(batch_size=batch_size)
    assert result.output_tokens == 16 * result.extra["passes"]
    assert result.duration_s >= result.extra["min_window_s"] > 0

def test_oom(llem):
    llem.run(out_of_memory)

@pytest.mark.llem(backend="pytorch", model=MODEL + "-missing")
def test_missing_model(llem):
    llem.run()
"""


def test_a_suite_with_one_marker_and_no_workload_code(pytester, tiny_model, tmp_path):
    pytester.makepyfile(test_tiny_suite=SUITE.replace("MODEL", repr(str(tiny_model))))
    state_dir = tmp_path / "state"
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "--llem", f"--llem-state-dir={state_dir}"
    )
    result.assert_outcomes(passed=2, failed=2)
    result.stdout.fnmatch_lines(
        [
            "*workload raised OutOfMemoryError: CUDA out of memory. Tried to allocate 20.00 GiB",
            "*pytest-llem: model: no such directory '*-missing'; give a local model directory or a hub id",
        ]
    )
    (report,) = reports(state_dir)
    outcomes = {e["nodeid"].split("::")[1]: e for e in report["experiments"]}
    tiny = outcomes["test_tiny[2]"]["result"]
    assert tiny["output_tokens"] == 16 * tiny["extra"]["passes"]
    assert outcomes["test_oom"]["failed"] and outcomes["test_missing_model"]["failed"]
    assert str(tmp_path) not in json.dumps(report)


def test_cold_and_preloaded_children_generate_the_same_tokens(state_dir: Path, tiny_model):
    """The start method changes how the child starts, never what it measures."""
    fields = {
        "backend": "pytorch",
        "model": str(tiny_model),
        "max_new_tokens": 5,
        "batch_size": 2,
        "n_prompts": 4,
        "min_window_s": 0,  # one pass each: the tokens compared, not how many passes a window took
    }
    results = {}
    for preload in ("none", "auto"):
        session = BenchmarkSession(
            LlemSettings(enabled=True, state_dir=state_dir / preload, energy="none", preload=preload)
        )
        session.collected_backends = {"pytorch"}
        session.start()
        try:
            results[preload] = run(session, **fields, repeats=2)
        finally:
            session.close_preloaded()
    cold, preloaded = results["none"], results["auto"]
    assert (cold.start_method, preloaded.start_method) == ("cold", "preloaded"), preloaded.start_note
    assert cold.output_tokens == preloaded.output_tokens == 2 * 4 * 5
    assert cold.input_tokens == preloaded.input_tokens
    assert cold.extra["output_digest"] == preloaded.extra["output_digest"]
    assert cold.extra["request_tokens_digest"] == preloaded.extra["request_tokens_digest"]


# --- prefill and decode apart, on simulated GPUs -----------------------------------------------

SPLIT_SUITE = """
import pytest

@pytest.mark.llem(backend="pytorch", model=MODEL, gpus=[0], n_prompts=4, batch_size=2,
                  max_new_tokens=8, min_window_s=0.5)
def test_split(llem):
    llem.run()
"""


def run_split_suite(pytester, tmp_path, monkeypatch, power_w: float, *args: str):
    """SPLIT_SUITE on one simulated GPU drawing `power_w` throughout, its counter exact at every
    instant (ideal mode: what is under test is the split, not the counter's 100 ms steps)."""
    run, state_dir = run_on_one_simulated_gpu(pytester, tmp_path, monkeypatch, power_w, *args, ideal=True)
    return run, reports(state_dir)[-1]["experiments"][0]["result"]


def test_prefill_and_decode_apart_add_up_to_the_window_and_gate(pytester, tiny_model, tmp_path, monkeypatch):
    pytester.makepyfile(test_split_suite=SPLIT_SUITE.replace("MODEL", repr(str(tiny_model))))
    columns = "--llem-columns=test,prefill_duration_s,decode_duration_s,decode_energy_per_output_token_j"
    saved, result = run_split_suite(pytester, tmp_path, monkeypatch, 300.0, "--llem-save=main", columns)
    saved.assert_outcomes(passed=1)
    split = result["extra"]["prefill_decode"]
    # Every generate() call, in every pass: 2 batches a pass.
    assert split["calls"] == 2 * result["extra"]["passes"] > 0
    assert (split["input_tokens"], split["output_tokens"]) == (
        result["input_tokens"],
        result["output_tokens"],
    )
    # A constant 300 W and an exact counter: each part's energy is 300 W x its own duration.
    for part in ("prefill", "decode"):
        assert result[f"{part}_energy_j"] == pytest.approx(300 * result[f"{part}_duration_s"], rel=0.02)
        assert result[f"{part}_duration_s"] > 0
    # The parts cover the generate() calls; outside them, inside the window: the meter's reads at
    # each split, tokenising and counting each batch and the passes loop. Most of the window,
    # though less on a loaded machine (seen: 79% of it beside other test runs on 2 cores).
    parts_j = result["prefill_energy_j"] + result["decode_energy_j"]
    assert 0.5 * result["energy_j"] < parts_j <= result["energy_j"]
    assert result["prefill_energy_per_input_token_j"] == pytest.approx(
        result["prefill_energy_j"] / result["input_tokens"]
    )
    assert result["decode_energy_per_output_token_j"] == pytest.approx(
        result["decode_energy_j"] / result["output_tokens"]
    )
    assert result["prefill_energy_per_input_token_j"] > 0 and result["decode_energy_per_output_token_j"] > 0
    # The summary's first row (the placement table below it starts with the test too).
    row = next(line.split() for line in saved.outlines if line.startswith("test_split_suite.py::test_split"))
    assert float(row[1]) == pytest.approx(result["prefill_duration_s"], rel=0.01)

    # Twenty times the power for the same work: both per-token figures regress, each in its unit
    # (a factor no timing noise on a loaded machine reaches: per-token energy is power x time).
    gate = [
        f"--llem-compare-fail={m}:10%"
        for m in ("prefill_energy_per_input_token_j", "decode_energy_per_output_token_j")
    ]
    regressed, _ = run_split_suite(
        pytester, tmp_path, monkeypatch, 6000.0, "--llem-compare=main", *gate, "--llem-gate-flagged"
    )
    assert regressed.ret == 1
    regressed.stdout.re_match_lines(
        [
            r"pytest-llem: REGRESSION .*::test_split prefill_energy_per_input_token_j .* J .*",
            r"pytest-llem: REGRESSION .*::test_split decode_energy_per_output_token_j .* J .*",
        ],
        consecutive=False,
    )
