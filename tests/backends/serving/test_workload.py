"""scenario="serving" run as a workload: its config, and real servers in real experiments.

The process tests start `transformers serve` on the tiny model (the torch extra), and
`tests/support/fake_openai_server.py`, a small server of our own whose switches make it misbehave.
"""

from __future__ import annotations

import math
import os
import signal
import sys
import time
from pathlib import Path

import pytest
from helpers import (
    SIMULATED_RUN,
    read_pids,
    reports,
    run_on_one_simulated_gpu,
    start_llem_pytest,
    wait_for_file,
    wait_until_all_gone,
)
from sample_reports import make_entry, make_report
from serving_loads import (
    SERVING,
    STUB,
    stub_server,
)

from pytest_llem.config import build_config, canonical_config_json, compute_config_hash
from pytest_llem.errors import ConfigError, ExperimentFailed
from pytest_llem.gating.limits import parse_limit

# --- configuration -------------------------------------------------------------------------


def test_serving_fields_need_the_serving_scenario_and_say_so_in_one_line():
    with pytest.raises(ConfigError) as caught:
        build_config({"request_rate": 2.0})
    assert str(caught.value) == "request_rate: only for scenario='serving'; add scenario='serving'"
    with pytest.raises(ConfigError, match=r"^slo: unknown objective 'ttft'; use ttft_s, tpot_s, e2e_s"):
        build_config({**SERVING, "slo": {"ttft": 1.0}})
    with pytest.raises(ConfigError, match=r"^slo: tpot_s must be a number of seconds above 0"):
        build_config({**SERVING, "slo": {"tpot_s": 0}})
    with pytest.raises(ConfigError, match=r"^server: a server command is a non-empty list"):
        build_config({**SERVING, "server": []})
    with pytest.raises(ConfigError, match=r"^backend: does not apply to scenario='serving'"):
        build_config({**SERVING, "backend": "pytorch"})


def test_what_run_may_still_supply_is_checked_when_the_experiment_starts(bench):
    # A marker alone may leave server, model and rate to llem.run(): valid at collection.
    build_config({**SERVING, "n_requests": 4})
    cases = [
        ({**SERVING}, "server: scenario='serving' needs server="),
        ({**SERVING, "server": "vllm", "request_rate": 1}, "model: server='vllm' needs model="),
        ({**SERVING, "server": stub_server()}, "request_rate: scenario='serving' needs request_rate="),
    ]
    for fields, message in cases:
        with pytest.raises(ConfigError) as caught:
            bench.run_experiment("tests/test_serving.py::incomplete", None, [fields])
        assert str(caught.value).startswith(message) and "\n" not in str(caught.value)


def test_an_infinite_rate_survives_the_trip_to_the_child_and_offline_hashes_are_unchanged():
    config = build_config({**SERVING, "server": stub_server(), "request_rate": math.inf})
    assert type(config).model_validate_json(config.model_dump_json()).request_rate == math.inf
    offline = build_config({"batch_size": 4})
    assert "scenario" not in canonical_config_json(offline, "m:f")
    # The hash this offline config had before the serving fields existed.
    assert compute_config_hash(build_config({}), "a:b") == "d3ba6425f293b3e5"


def test_input_len_is_a_serving_field_checked_in_one_line_and_absent_from_hashes_without_it():
    cases = [
        ({"input_len": 8}, "input_len: only for scenario='serving'; add scenario='serving'"),
        ({**SERVING, "input_len": 0}, "input_len: Input should be greater than or equal to 1 (got 0)"),
        (
            {**SERVING, "input_len": 8, "prompts": ["a b"]},
            "input_len: sets the length of synthetic prompts, and prompts= gives your own; drop one",
        ),
    ]
    for fields, line in cases:
        with pytest.raises(ConfigError) as caught:
            build_config(fields)
        assert str(caught.value) == line
    plain = build_config({**SERVING, "request_rate": 2.0})
    assert "input_len" not in canonical_config_json(plain, "m:f")  # serving hashes made before stay
    sized = build_config({**SERVING, "request_rate": 2.0, "input_len": 8})
    assert compute_config_hash(sized, "m:f") != compute_config_hash(plain, "m:f")


# --- real servers in real experiments --------------------------------------------------------


def test_transformers_serve_at_two_rates(bench, tiny_model):
    """`transformers serve` on the tiny model: exact counts, usage the stream can hold.

    At 4 requests/s at most 2 are in flight, so the third is sent only after an answer: the
    steady state is reached however slow the machine is (as it is with all sent at once).
    """
    for rate, concurrency, input_len in ((4.0, 2, 16), (math.inf, None, None)):
        result = bench.run_experiment(
            f"tests/test_serving.py::transformers[{rate}]",
            None,
            [
                {
                    **SERVING,
                    "server": "transformers",
                    "model": str(tiny_model),
                    "device": "cpu",
                    "request_rate": rate,
                    "concurrency": concurrency,
                    "n_requests": 6,
                    "max_new_tokens": 8,
                    "input_len": input_len,
                    "warmup_requests": 1,
                    "server_startup_timeout": 300,
                }
            ],
        )
        serving = result.serving
        assert (serving.n_requests, serving.completed, serving.errors) == (6, 6, 0)
        assert serving.output_tokens == result.output_tokens == 6 * 8
        # Usage is believable (the stream can hold it) and each chunk's tokens were counted by
        # the model's tokenizer: the server puts several tokens in a chunk under load.
        assert serving.impossible_usage == 0 and serving.token_source == "tokenizer"
        assert serving.input_tokens == result.input_tokens > 0
        if input_len is not None:
            # Prompts fitted by the model's tokenizer: the server counted what was asked for.
            assert result.extra["input_len_counted_by"] == "tokenizer"
            assert serving.input_tokens == 6 * input_len
        for stats in (serving.ttft, serving.tpot, serving.itl, serving.e2e):
            assert stats.min_s <= stats.p50_s <= stats.p90_s <= stats.p99_s <= stats.max_s
        assert serving.ttft.max_s <= serving.e2e.max_s
        assert serving.steady is not None, serving.steady_note
        assert 0 <= serving.steady.start_s < serving.steady.end_s <= serving.duration_s == result.duration_s
        assert 0 < serving.steady.output_tokens <= serving.output_tokens
        assert Path(serving.server_log).is_file() and Path(serving.server_log).parent.name == "servers"
        # `transformers serve` has no Prometheus endpoint: said once, not an error.
        assert serving.server_metrics.note == "server exposes no metrics: /metrics answered HTTP 404"
        assert not serving.server_metrics.exposed and not result.flagged


def test_a_server_past_its_batch_size_is_scraped_flagged_saturated_and_preempting(bench):
    """The stub runs 2 requests at once in a KV cache of 90 tokens; 6 are kept in flight, so 4
    wait throughout the steady state and the cache overflows: its own metrics say so."""
    stub = stub_server("--batch-size", "2", "--kv-tokens", "90", "--token-delay", "0.05")
    fields = {**SERVING, "server": stub, "concurrency": 6, "n_requests": 14, "max_new_tokens": 20}
    fields["warmup_requests"] = 1
    result = bench.run_experiment("tests/test_serving.py::saturated", None, [fields])
    metrics = result.serving.server_metrics
    assert metrics.exposed and metrics.note is None
    assert metrics.names == [
        "vllm:kv_cache_usage_perc",
        "vllm:num_preemptions_total",
        "vllm:num_requests_running",
        "vllm:num_requests_waiting",
    ]
    assert metrics.judged_over == "steady" and metrics.judged_samples >= 3
    assert metrics.waiting_share > 0.5 and metrics.preemptions >= 1
    # On the power timeline's clock: inside the measured window, in order, a few per second.
    times = [s.t_s for s in metrics.timeline]
    assert times == sorted(times) and 0 <= times[0] < 1.0 and times[-1] <= result.duration_s
    assert len(times) == metrics.scrapes <= result.duration_s / metrics.interval_s + 1
    # Gauges that move with the load: never more running than the batch size, the rest of the
    # 6 in flight waiting (a preempted request waits again too).
    assert max(s.requests_running for s in metrics.timeline) == 2
    assert max(s.requests_running + s.requests_waiting for s in metrics.timeline) == 6
    assert max(s.requests_waiting for s in metrics.timeline) >= 4
    assert 0 < metrics.peak_kv_cache_usage <= 1
    # The counter steps up (never down) across the series.
    counts = [s.preemptions for s in metrics.timeline]
    assert counts == sorted(counts) and counts[-1] - counts[0] == metrics.preemptions
    codes = {w.code for w in result.warnings}
    assert {"server_saturated", "server_preempted"} <= codes and result.flagged
    (saturated,) = [w for w in result.warnings if w.code == "server_saturated"]
    assert "requests waited in its queue in " in saturated.message
    assert "scrapes of the steady state" in saturated.message


def test_a_server_within_its_batch_size_is_scraped_under_vllms_old_names_and_not_flagged(bench):
    fields = {**SERVING, "server": stub_server("--metrics", "old", "--token-delay", "0.02")}
    fields.update(concurrency=2, n_requests=20, max_new_tokens=20, warmup_requests=1)
    result = bench.run_experiment("tests/test_serving.py::within", None, [fields])
    metrics = result.serving.server_metrics
    assert metrics.exposed and "vllm:gpu_cache_usage_perc" in metrics.names
    assert metrics.waiting_share == 0 and metrics.preemptions == 0
    assert {s.requests_running for s in metrics.timeline} <= {0.0, 1.0, 2.0}
    assert not {"server_saturated", "server_preempted"} & {w.code for w in result.warnings}


def test_a_flag_an_earlier_rounds_server_raised_stays_on_the_result_marked_with_its_round(bench):
    # One request at a time, 0.3 s each, 4 in flight: about 3 s of steady state, 6 scrapes.
    stub = stub_server("--batch-size", "1", "--token-delay", "0.03")
    fields = {**SERVING, "server": stub, "concurrency": 4, "n_requests": 12, "max_new_tokens": 10}
    fields.update(warmup_requests=0, rounds=2)
    result = bench.run_experiment("tests/test_serving.py::rounds", None, [fields])
    (saturated,) = [w for w in result.warnings if w.code == "server_saturated"]
    # The last round's own sentence, then the first round's, marked.
    last, first = saturated.message.split("; round 1: ")
    assert last.startswith("the server was saturated: requests waited in its queue")
    assert first.startswith("the server was saturated: requests waited in its queue")
    # result.serving is the last round's load; its series sits after the first round's window.
    assert result.serving.server_metrics.timeline[0].t_s >= result.rounds[0].duration_s


@pytest.mark.parametrize(
    ("switch", "note"),
    [
        ("none", "server exposes no metrics: /metrics answered HTTP 404"),
        ("garbage", "server exposes no metrics: /metrics is not Prometheus text (ValueError)"),
    ],
)
def test_a_server_without_metrics_is_said_to_expose_none_once_and_the_load_runs(bench, switch, note):
    fields = {**SERVING, "server": stub_server("--metrics", switch), "concurrency": 2, "n_requests": 6}
    result = bench.run_experiment(f"tests/test_serving.py::{switch}", None, [fields])
    assert result.serving.completed == 6
    metrics = result.serving.server_metrics
    assert (metrics.exposed, metrics.note, metrics.timeline, metrics.scrapes) == (False, note, [], 0)
    # Asked once, before the load: the stub's log shows a single GET /metrics.
    log = Path(result.serving.server_log).read_text()
    assert log.count("GET /metrics") == 1


def test_input_len_and_max_new_tokens_shape_a_prefill_heavy_or_decode_heavy_load(bench):
    """The stub counts a prompt's words as its tokens, as a server without our tokenizer would."""
    base = {**SERVING, "server": stub_server(), "concurrency": 2, "n_requests": 6, "warmup_requests": 0}
    shapes = {"prefill": (48, 2), "decode": (2, 48)}
    results = {}
    for name, (input_len, output_len) in shapes.items():
        fields = {**base, "input_len": input_len, "max_new_tokens": output_len}
        results[name] = result = bench.run_experiment(f"tests/test_serving.py::{name}", None, [fields])
        assert result.serving.input_tokens == result.input_tokens == 6 * input_len
        assert result.output_tokens == 6 * output_len
        assert result.extra["input_len_counted_by"] == "words"
        assert result.serving.prefill_decode.startswith("not split: continuous batching runs prefills")
        assert result.prefill_decode is None
    assert results["prefill"].config_hash != results["decode"].config_hash


def test_a_server_that_never_becomes_healthy_fails_naming_the_startup_timeout(bench):
    with pytest.raises(ExperimentFailed) as caught:
        bench.run_experiment(
            "tests/test_serving.py::never_healthy",
            None,
            [
                {
                    **SERVING,
                    "server": stub_server("--never-healthy"),
                    "concurrency": 1,
                    # Long enough for the stub to start and say so even on a busy machine.
                    "server_startup_timeout": 10,
                }
            ],
        )
    message = str(caught.value)
    assert "within server_startup_timeout=10 s (raise server_startup_timeout= if" in message
    assert message.endswith('stub: "GET /v1/models HTTP/1.1" 503 -')  # the log's last lines
    assert "; server log " in message and "/servers/" in message


def test_a_servers_log_in_the_state_dir_keeps_no_secret(bench, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("HF_TOKEN", "hf_serverlog9secret")
    chatty = "import os, time; print('loading with', os.environ['HF_TOKEN'], flush=True); time.sleep(60)"
    with pytest.raises(ExperimentFailed):
        bench.run_experiment(
            "tests/test_serving.py::chatty_server",
            None,
            [
                {
                    **SERVING,
                    "server": [sys.executable, "-c", chatty, "--port", "{port}"],
                    "concurrency": 1,
                    "server_startup_timeout": 3,
                }
            ],
        )
    (log,) = (bench.settings.state_dir / "servers").glob("*.log")
    assert log.read_text() == "loading with ***\n"


def test_a_server_killed_mid_load_fails_with_its_exit_status_and_the_session_goes_on(bench):
    fields = {**SERVING, "concurrency": 2, "n_requests": 20, "max_new_tokens": 4, "warmup_requests": 1}
    with pytest.raises(ExperimentFailed) as caught:
        bench.run_experiment(
            "tests/test_serving.py::dies",
            None,
            [{**fields, "server": stub_server("--die-after", "4", "--token-delay", "0.05")}],
        )
    message = str(caught.value)
    assert message.startswith("the server exited with status 3; server log ")
    assert "stub: dying with status 3" in message
    # The next experiment of the same session runs as usual.
    result = bench.run_experiment("tests/test_serving.py::next", None, [{**fields, "server": stub_server()}])
    assert result.serving.completed == 20 and result.output_tokens == 80
    assert result.serving.steady is not None and result.serving.goodput == 1.0


def test_a_server_killed_by_a_signal_mid_load_fails_naming_the_signal(bench, tmp_path):
    import threading

    pid_file = tmp_path / "server.json"
    killed = threading.Event()

    def kill_the_server_once_requests_stream() -> None:
        wait_for_file(pid_file, timeout_s=60)
        (server_pid,) = read_pids(pid_file)
        stub_log = tmp_path / "state" / "servers"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # until the measured load has sent some requests
            logs = list(stub_log.glob("*.log"))
            if logs and logs[0].read_text().count("POST /v1/completions") >= 2:
                break
            time.sleep(0.05)
        os.kill(server_pid, signal.SIGKILL)
        killed.set()

    killer = threading.Thread(target=kill_the_server_once_requests_stream, daemon=True)
    killer.start()
    fields = {**SERVING, "concurrency": 2, "n_requests": 50, "max_new_tokens": 50, "warmup_requests": 0}
    server = stub_server("--pid-file", str(pid_file), "--token-delay", "0.05")
    with pytest.raises(ExperimentFailed) as caught:
        bench.run_experiment("tests/test_serving.py::killed", None, [{**fields, "server": server}])
    killer.join(timeout=60)
    assert killed.is_set()
    assert str(caught.value).startswith("the server was killed by SIGKILL; server log ")


def test_request_errors_above_the_threshold_fail_the_case(bench):
    # The stub answers every third request with HTTP 500.
    fields = {**SERVING, "server": stub_server("--fail-every", "3"), "concurrency": 2, "n_requests": 6}
    fields["warmup_requests"] = 0
    with pytest.raises(ExperimentFailed) as caught:
        bench.run_experiment("tests/test_serving.py::errors", None, [{**fields, "max_error_rate": 0.25}])
    message = str(caught.value)
    assert message.startswith("2 of 6 requests failed (33%, above max_error_rate=0.25): request ")
    assert "HTTP 500" in message
    # Under the threshold the errors are counted and the figures kept.
    tolerated = {**fields, "max_error_rate": 0.5}
    result = bench.run_experiment("tests/test_serving.py::tolerated", None, [tolerated])
    assert (result.serving.errors, result.serving.completed, result.serving.goodput) == (2, 4, 4 / 6)


SIGNAL_SUITE = """
import os, sys
import pytest

def test_serve(llem):
    llem.run(
        scenario="serving",
        server=[sys.executable, os.environ["STUB"], "--port", "{port}", "--ignore-term",
                "--children", "2", "--pid-file", os.environ["PID_FILE"], "--token-delay", "30"],
        concurrency=2, n_requests=4, warmup_requests=0,
    )
"""


@pytest.mark.signals
def test_ctrl_c_leaves_no_server_or_server_child_running(tmp_path):
    pid_file = tmp_path / "server-pids.json"
    (tmp_path / "test_suite.py").write_text(SIGNAL_SUITE)
    state_dir = tmp_path / "state"
    proc = start_llem_pytest(tmp_path, state_dir, "test_suite.py", STUB=STUB, PID_FILE=str(pid_file))
    try:
        wait_for_file(pid_file, timeout_s=60)
        pids = read_pids(pid_file)  # the server (ignores SIGTERM) and its 2 stubborn children
        assert len(pids) == 3
        time.sleep(1.0)  # the load is under way: requests stream one token every 30 s
        os.kill(proc.pid, signal.SIGINT)
        assert wait_until_all_gone(pids, timeout_s=10) == []
        output, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 130, output
    assert "interrupted by SIGINT" in output
    (report,) = reports(state_dir)
    assert report["outcome"] == "interrupted"
    (entry,) = report["experiments"]
    assert entry["failed"] and entry["result"] is None


ENERGY_SUITE = """
import sys

def test_serve(llem):
    result = llem.run(
        scenario="serving",
        server=[sys.executable, STUB, "--port", "{port}", "--token-delay", "0.02", *SWITCHES],
        concurrency=4, n_requests=16, max_new_tokens=8, warmup_requests=1,
    )
    assert result.serving.completed == 16
"""


def run_energy_suite(pytester, tmp_path, monkeypatch, *switches: str):
    """ENERGY_SUITE on simulated GPUs at a constant 300 W: every window's energy is 300 W x its
    duration. The pytest run and the experiment's result as its report holds it."""
    suite = ENERGY_SUITE.replace("STUB", repr(STUB)).replace("SWITCHES", repr(list(switches)))
    pytester.makepyfile(test_energy_serving=suite)
    run, state_dir = run_on_one_simulated_gpu(pytester, tmp_path, monkeypatch, 300.0)
    run.assert_outcomes(passed=1)
    (report,) = reports(state_dir)
    return run, report["experiments"][0]["result"]


def test_energy_per_request_whole_and_steady_on_simulated_gpus(pytester, tmp_path, monkeypatch):
    """Simulated GPUs at a constant 300 W: every window's energy is 300 W x its duration."""
    run, result = run_energy_suite(pytester, tmp_path, monkeypatch)
    serving = result["serving"]
    one_step_j = 300 * 0.1
    assert (
        serving["energy_j"] == result["energy_j"] == pytest.approx(300 * result["duration_s"], abs=one_step_j)
    )
    steady = serving["steady"]  # one span at concurrency 4: right to one step as well
    assert steady["energy_j"] == pytest.approx(300 * steady["duration_s"], abs=one_step_j)
    # A part of the window: shorter, and never more energy (the same count of counter steps may fall in both).
    assert steady["duration_s"] < result["duration_s"] and 0 < steady["energy_j"] <= serving["energy_j"]
    assert serving["energy_per_request_whole_j"] == pytest.approx(serving["energy_j"] / 16)
    per_token = steady["energy_j"] / steady["output_tokens"]
    assert serving["energy_per_output_token_j"] == pytest.approx(per_token)
    assert serving["energy_per_request_j"] == pytest.approx(per_token * 8)
    assert serving["energy_per_good_request_j"] == serving["energy_per_request_whole_j"]
    # The steady window lasted well under 5 s: its own flag is the result's (merged with the
    # whole load's flag of the same code), so the summary's `!` and the gate see it; its
    # uncertainty is its own, larger than the whole load's (a shorter window).
    (short,) = [w for w in result["warnings"] if w["code"] == "short_window"]
    assert "; steady-state window: measured window lasted " in short["message"]
    steady_parts, whole_parts = steady["energy_uncertainty"]["parts"], result["energy_uncertainty"]["parts"]
    assert steady_parts["counter_resolution"] > whole_parts["counter_resolution"]
    run.stdout.fnmatch_lines(["test_energy_serving.py::test_serve *passed !"])
    run.stdout.fnmatch_lines(
        ["serving test*J/req*J/tok*J/req_whole", "test_energy_serving.py::test_serve *c4 *"]
    )
    (row,) = [
        line.split()
        for line in run.stdout.lines
        if line.split()[:2] == ["test_energy_serving.py::test_serve", "c4"]
    ]
    assert float(row[-3]) == pytest.approx(serving["energy_per_request_j"], rel=0.01)


def test_a_server_streaming_two_tokens_a_chunk_gives_the_true_tokens_and_energy_per_token(
    pytester, tmp_path, monkeypatch
):
    """Two tokens in every chunk, usage in a final chunk of its own: counting chunks would
    halve the steady state's tokens and double its J/token (and see one gap per chunk).
    The counter is exact here (ideal mode): this checks the token count, and a steady window of
    a few tenths of a second read in 100 ms steps would hide a factor of two in its noise."""
    monkeypatch.setenv("FAKE_NVML_IDEAL", "1")
    run, result = run_energy_suite(pytester, tmp_path, monkeypatch, "--tokens-per-chunk", "2")
    serving, steady = result["serving"], result["serving"]["steady"]
    assert serving["output_tokens"] == result["output_tokens"] == 16 * 8
    # A closed loop at one concurrency: the steady state makes tokens at the whole load's rate,
    # so its J/token is the whole load's (which usage counts right), not twice it.
    whole_per_token = serving["energy_j"] / serving["output_tokens"]
    assert 0.6 < serving["energy_per_output_token_j"] / whole_per_token < 1.4
    assert serving["energy_per_output_token_j"] == pytest.approx(steady["energy_j"] / steady["output_tokens"])
    assert steady["output_tokens"] % 2 == 0  # tokens arrive in pairs
    # Per-token gaps: 8 tokens in 4 chunks, the first chunk's 2 in the TTFT -> 6 gaps a request.
    assert serving["itl"]["count"] == 16 * 6
    assert (serving["token_mismatches"], serving["impossible_usage"]) == (0, 0)


def test_rounds_and_repeats_keep_each_loads_figures_as_samples(bench):
    fields = {**SERVING, "server": stub_server(), "concurrency": 2, "n_requests": 4, "max_new_tokens": 4}
    result = bench.run_experiment("tests/test_serving.py::rounds", None, [{**fields, "rounds": 2}])
    assert len(result.rounds) == 2 and result.output_tokens == 2 * 4 * 4
    assert all(r.serving["requests_per_s"] > 0 and r.serving["goodput"] == 1.0 for r in result.rounds)
    assert result.serving.completed == 4  # the last round's load
    assert result.statistics["requests_per_s"].n == 2

    pooled = bench.run_experiment("tests/test_serving.py::repeats", None, [{**fields, "repeats": 2}])
    assert [r.process for r in pooled.rounds] == [0, 1]
    assert all(r.serving["tpot_p50_s"] is not None for r in pooled.rounds)


def test_booleans_and_unknown_endpoints_are_refused_in_one_line():
    for name in ("request_rate", "concurrency", "n_requests"):
        with pytest.raises(ConfigError) as caught:
            build_config({**SERVING, name: True})
        assert str(caught.value) == f"{name}: a number, not True or False (got True)"
    with pytest.raises(ConfigError) as caught:
        build_config({**SERVING, "endpoint": "responses"})
    assert str(caught.value) == (
        "endpoint: use 'completions' (/v1/completions) or 'chat' (/v1/chat/completions) (got 'responses')"
    )
    # The default endpoint leaves a serving config's hash as it was before the field existed.
    config = build_config({**SERVING, "request_rate": 2})
    assert "endpoint" not in canonical_config_json(config, "w")
    assert "endpoint" in canonical_config_json(config.model_copy(update={"endpoint": "chat"}), "w")


def test_a_serving_experiment_has_a_time_limit_when_none_is_set():
    from pytest_llem.config import SERVING_ROUND_TIMEOUT_S, default_timeout_s

    config = build_config({**SERVING, "request_rate": 2, "server_startup_timeout": 100, "rounds": 2})
    assert default_timeout_s(config) == 100 + 2 * SERVING_ROUND_TIMEOUT_S
    assert default_timeout_s(build_config({})) is None


# --- hostile servers in real experiments -----------------------------------------------------

SMALL_LOAD = {**SERVING, "concurrency": 2, "n_requests": 4, "max_new_tokens": 4, "warmup_requests": 0}


def test_a_server_that_claims_impossible_usage_is_flagged_and_kept_out_of_the_gate(bench):
    from pytest_llem.gating.compare import compare_reports

    honest = bench.run_experiment(
        "tests/test_serving.py::honest", None, [{**SMALL_LOAD, "server": stub_server()}]
    )
    # It claims a million tokens while it streams 4, and slowly: a requests/s "regression".
    lying = stub_server("--claim-tokens", "1000000", "--token-delay", "0.1")
    liar = bench.run_experiment("tests/test_serving.py::liar", None, [{**SMALL_LOAD, "server": lying}])
    serving = liar.serving
    assert serving.output_tokens == liar.output_tokens == 4 * 4 and serving.impossible_usage == 4
    assert serving.output_tokens_per_s < 100
    assert not honest.flagged and liar.flagged
    (warning,) = [w for w in liar.warnings if w.code == "impossible_usage"]
    assert warning.message.startswith(
        "4 of 4 requests: usage the streamed text cannot hold; the stream counted"
    )
    comparison = compare_reports(
        make_report("base", [make_entry("t::serve", honest)]),
        make_report("now", [make_entry("t::serve", liar)]),
        [parse_limit("requests_per_s:5%")],
    )
    (change,) = [c for c in comparison.changes if c.metric == "requests_per_s"]
    assert change.change_pct < -5 and change.status == "flagged" and not comparison.failures
    from pytest_llem.output.serving_table import format_serving_table

    lines = format_serving_table([make_entry("t::liar", liar)])
    assert lines[-1].startswith("t::liar: impossible_usage: 4 of 4 requests: usage the streamed text")


def test_usage_as_a_string_is_a_flagged_mismatch_and_the_chat_endpoint_streams_deltas(bench):
    fields = {**SMALL_LOAD, "server": stub_server("--usage-as-string", "--tokens-per-chunk", "3")}
    result = bench.run_experiment("tests/test_serving.py::string_usage", None, [fields])
    serving = result.serving
    assert (serving.completed, serving.errors, serving.token_mismatches) == (4, 0, 4)
    assert serving.output_tokens == 4 * 2  # unreadable usage: the stream's 2 chunks a request
    (warning,) = [w for w in result.warnings if w.code == "token_mismatch"]
    assert "request 0: usage completion_tokens '4' is not a whole number" in warning.message

    chat = {**SMALL_LOAD, "endpoint": "chat", "server": stub_server("--tokens-per-chunk", "3")}
    result = bench.run_experiment("tests/test_serving.py::chat", None, [chat])
    serving = result.serving
    assert (serving.completed, serving.output_tokens, serving.token_mismatches) == (4, 16, 0)
    # No tokenizer here (no model): usage's 4 tokens spread evenly over each answer's 2 chunks.
    assert serving.token_source == "chunks" and serving.itl.count == 4 * 2
    assert Path(serving.server_log).read_text().count("POST /v1/chat/completions") == 4


STATUS_SUITE = """
import sys

FIELDS = dict(
    scenario="serving", server=[sys.executable, STUB, "--port", "{port}"],
    concurrency=1, n_requests=2, max_new_tokens=2, warmup_requests=0,
)

def test_measures_then_fails(llem):
    llem.run(**FIELDS)
    assert False, "the test's own check"

def test_measures_and_passes(llem):
    llem.run(**FIELDS)
"""


def test_the_summary_status_of_a_test_that_fails_after_measuring_is_failed(pytester, tmp_path):
    pytester.makepyfile(test_status=STATUS_SUITE.replace("STUB", repr(STUB)))
    state_dir = tmp_path / "state"
    # The stub's load takes well under the CPU's minimum window: no flag marks the status column.
    run = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "--llem", f"--llem-state-dir={state_dir}", *SIMULATED_RUN
    )
    run.assert_outcomes(passed=1, failed=1)
    rows: dict[str, str] = {}
    for line in run.stdout.lines:  # the results table's rows come first, the serving table's after
        if line.startswith("test_status.py::"):
            rows.setdefault(line.split()[0], line.split()[-1])
    assert rows == {
        "test_status.py::test_measures_then_fails": "failed",
        "test_status.py::test_measures_and_passes": "passed",
    }
    (report,) = reports(state_dir)
    status = {e["nodeid"]: e["test_failed"] for e in report["experiments"]}
    assert status == {
        "test_status.py::test_measures_then_fails": True,
        "test_status.py::test_measures_and_passes": False,
    }
