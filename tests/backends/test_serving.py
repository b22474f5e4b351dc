"""scenario="serving": config, load generator, steady state, summary, and real servers.

The unit tests drive the pieces directly. The process tests start real servers inside
real experiments: `transformers serve` on the tiny model (the torch extra), and
`tests/support/fake_openai_server.py`, a small server of our own whose switches make it misbehave.
"""

from __future__ import annotations

import json
import math
import os
import signal
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest
from helpers import SUPPORT_DIR, read_pids, reports, start_llem_pytest, wait_for_file, wait_until_all_gone
from sample_reports import make_entry, make_report, make_result

from pytest_llem.backends import BACKEND_ENV_DEFAULTS
from pytest_llem.backends.serving.loadgen import (
    RequestRecord,
    SteadyState,
    StreamChunk,
    arrival_offsets,
    read_chunk,
)
from pytest_llem.backends.serving.server import HOST, server_command, server_env
from pytest_llem.backends.serving.summary import summarise
from pytest_llem.backends.serving.workload import request_extra
from pytest_llem.config import build_config, canonical_config_json, compute_config_hash
from pytest_llem.energy.uncertainty import energy_uncertainty
from pytest_llem.errors import ConfigError, ExperimentFailed
from pytest_llem.gating.limits import parse_limit
from pytest_llem.gating.metrics import METRICS
from pytest_llem.isolation.assembly import assemble_result
from pytest_llem.output.summary import SummaryView
from pytest_llem.output.terminal import format_summary
from pytest_llem.results import DeviceEnergy, RoundResult, ServingSummary, WindowMeasurement

STUB = str(SUPPORT_DIR / "fake_openai_server.py")
SERVING = {"scenario": "serving"}


def stub_server(*switches: str) -> list[str]:
    return [sys.executable, STUB, "--port", "{port}", *switches]


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


# --- commands and environments ---------------------------------------------------------------


def test_vllm_serve_command_and_environment_reuse_the_vllm_backend():
    config = build_config(
        {
            **SERVING,
            "server": "vllm",
            "model": "Qwen/Qwen2.5-0.5B-Instruct",
            "request_rate": 4,
            "precision": "bf16",
            "tensor_parallel_size": 2,
            "max_model_len": 2048,
            "enforce_eager": True,
            "env": {"VLLM_LOGGING_LEVEL": "DEBUG"},
        }
    )
    command = server_command(config, 8123)
    assert Path(command[0]).name == "vllm" and command[1:3] == ["serve", "Qwen/Qwen2.5-0.5B-Instruct"]
    flags = command[3:]
    assert flags[:4] == ["--host", HOST, "--port", "8123"] and HOST == "127.0.0.1"

    def value(flag: str) -> str:
        return flags[flags.index(flag) + 1]

    assert value("--tensor-parallel-size") == "2" and value("--dtype") == "bfloat16"
    assert value("--max-model-len") == "2048" and value("--seed") == "0"
    assert value("--gpu-memory-utilization") == "0.9"
    assert "--enforce-eager" in flags
    # batch_size defaults to 1: a server must not be capped at one sequence unless asked.
    assert "--max-num-seqs" not in flags
    capped = server_command(config.model_copy(update={"batch_size": 64}), 8123)
    assert capped == server_command(build_config({**config.model_dump(), "batch_size": 64}), 8123)
    assert capped[capped.index("--max-num-seqs") + 1] == "64"

    env = server_env(config, {"PATH": "/bin", "TORCH_COMPILE_DISABLE": "0", "VLLM_LOGGING_LEVEL": "DEBUG"})
    assert env["VLLM_WORKER_MULTIPROC_METHOD"] == BACKEND_ENV_DEFAULTS["vllm"]["VLLM_WORKER_MULTIPROC_METHOD"]
    assert env["TORCH_COMPILE_DISABLE"] == "0"  # the user's environment wins over the defaults
    assert env["VLLM_LOGGING_LEVEL"] == "DEBUG" and env["PATH"] == "/bin"
    assert request_extra(config) == {"ignore_eos": True, "min_tokens": 32}


def test_transformers_and_custom_commands(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "generation_config.json").write_text(
        json.dumps({"eos_token_id": 1, "suppress_tokens": [0], "transformers_version": "5"})
    )
    config = build_config(
        {**SERVING, "server": "transformers", "model": str(model), "concurrency": 2, "device": "cpu"}
    )
    command = server_command(config, 9000)
    assert Path(command[0]).name == "transformers" and command[1:3] == ["serve", str(model)]
    assert command[3:7] == ["--host", "127.0.0.1", "--port", "9000"]
    assert command[command.index("--device") + 1] == "cpu"
    assert "VLLM_WORKER_MULTIPROC_METHOD" not in server_env(config, {})
    # transformers serve replaces the model's generation config with the request's: keep the model's.
    generation = json.loads(request_extra(config)["generation_config"])
    assert generation == {
        "eos_token_id": 1,
        "suppress_tokens": [0],
        "min_new_tokens": 32,
        "max_new_tokens": 32,
    }

    custom = build_config(
        {**SERVING, "server": ["srv", "--model={model}", "{port}"], "model": "m", "request_rate": 1}
    )
    assert server_command(custom, 7) == ["srv", "--model=m", "7"]
    assert request_extra(custom) == {}  # OpenAI's fields only


# --- arrivals and the steady state -----------------------------------------------------------


def test_poisson_arrivals_are_seeded_and_have_the_asked_rate():
    offsets = arrival_offsets(4000, 8.0, seed=3)
    assert offsets == arrival_offsets(4000, 8.0, seed=3) != arrival_offsets(4000, 8.0, seed=4)
    assert offsets[0] == 0.0 and offsets == sorted(offsets)
    assert 7.0 < (len(offsets) - 1) / offsets[-1] < 9.0
    assert arrival_offsets(5, math.inf, 0) == [0.0] * 5 == arrival_offsets(5, None, 0)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_closed_loop_steady_state_runs_from_full_concurrency_to_the_first_drop_after_the_last_send():
    clock, events = Clock(), []
    steady = SteadyState(
        5, None, 2, lambda: events.append("open"), lambda: events.append("close"), clock=clock
    )
    clock.now = 1.0
    steady.request_sent()
    assert events == []
    clock.now = 2.0
    steady.request_sent()  # 2 in flight: the target
    for t in (3.0, 4.0, 5.0):  # one answered, the next sent
        clock.now = t
        steady.request_done()
        steady.request_sent()
    assert events == ["open"]
    clock.now = 6.0
    steady.request_done()  # all 5 sent: the drain begins
    clock.now = 7.0
    steady.request_done()
    steady.finish()
    assert events == ["open", "close"] and (steady.opened_at, steady.closed_at) == (2.0, 6.0)
    assert steady.note is None


def test_open_loop_steady_state_and_a_load_that_never_reaches_it():
    clock = Clock()
    steady = SteadyState(3, 2.0, None, clock=clock)
    clock.now = 0.0
    steady.request_sent()
    clock.now = 0.4
    steady.request_sent()
    clock.now = 0.5
    steady.request_done()  # answers while arrivals go on: steady
    clock.now = 0.9
    steady.request_sent()  # the last arrival: the drain begins
    steady.finish()
    assert (steady.opened_at, steady.closed_at) == (0.5, 0.9)

    burst = SteadyState(3, 50.0, None, clock=clock)
    for _ in range(3):
        burst.request_sent()
    burst.request_done()
    burst.finish()
    assert burst.opened_at is None and "no steady state: all 3 requests were sent" in burst.note


# --- the summary ------------------------------------------------------------------------------


def record(
    index: int,
    sent: float,
    chunks: list[float],
    usage: int | None,
    error: str | None = None,
    text: str = " word",
):
    done = None if error else chunks[-1] + 0.01
    return RequestRecord(index, sent, done, [StreamChunk(t, text) for t in chunks], usage, 4, error)


def window(duration_s: float, energy_j: float | None) -> WindowMeasurement:
    return WindowMeasurement(
        duration_s=duration_s, devices=[DeviceEnergy(device="gpu0", energy_j=energy_j, duration_s=duration_s)]
    )


def test_summary_rates_percentiles_goodput_and_energy():
    records = [
        record(0, 0.0, [0.1, 0.2, 0.3, 0.4], 4),  # ttft 0.1, tpot 0.1033
        record(1, 0.5, [1.5, 1.6, 1.7, 1.8], 4),  # ttft 1.0: misses the ttft objective
        record(2, 1.0, [1.2, 1.3, 1.4], 4),  # usage says 4 in 3 chunks: the first held 2
        record(3, 1.5, [], None, error="HTTP 500: boom"),
    ]
    summary = summarise(
        records,
        server="stub",
        server_log=None,
        request_rate=2.0,
        concurrency=None,
        slo={"ttft_s": 0.5},
        whole=window(2.0, 100.0),
        steady_span=(0.3, 1.5),
        steady_measured=window(1.0, 60.0),
        steady_note=None,
    )
    assert (summary.n_requests, summary.completed, summary.errors) == (4, 3, 1)
    assert summary.error_samples == ["request 3: HTTP 500: boom"] and summary.token_mismatches == 0
    assert summary.output_tokens == 12 and summary.input_tokens == 12
    assert summary.requests_per_s == 1.5 and summary.output_tokens_per_s == 6.0
    assert summary.good_requests == 2 and summary.goodput == 0.5
    assert summary.ttft.count == 3 and summary.ttft.p50_s <= summary.ttft.p90_s <= summary.ttft.p99_s
    assert summary.itl.count == 8
    assert summary.energy_per_request_whole_j == pytest.approx(100 / 3)
    assert summary.energy_per_output_token_whole_j == pytest.approx(100 / 12)
    assert summary.energy_per_good_request_j == pytest.approx(50.0)
    # Steady state: 7 tokens arrived in [0.3, 1.5] (2 + 1 + request 2's 2 + 1 + 1) -> 60/7 J/token,
    # x 4 tokens a request.
    assert summary.steady.output_tokens == 7 and summary.energy_per_output_token_j == pytest.approx(60 / 7)
    assert summary.energy_per_request_j == pytest.approx(60 / 7 * 4)

    unmeasured = summary.model_copy(update={"energy_j": None, "steady": None})
    assert unmeasured.energy_per_request_j is None and unmeasured.energy_per_good_request_j is None


def test_serving_metrics_are_gateable_from_results_and_rounds():
    assert METRICS["goodput"].higher_is_better and METRICS["requests_per_s"].higher_is_better
    assert not METRICS["energy_per_request_j"].higher_is_better and not METRICS["tpot_p99_s"].higher_is_better
    round_ = RoundResult(index=0, duration_s=1.0, serving={"energy_per_request_j": 2.5})
    assert METRICS["energy_per_request_j"].of_round(round_) == 2.5
    assert METRICS["goodput"].of_round(RoundResult(index=0, duration_s=1.0)) is None


# --- real servers in real experiments --------------------------------------------------------


def test_transformers_serve_at_two_rates(bench, tiny_model):
    """`transformers serve` on the tiny model: exact counts, usage the stream can hold.

    At 4 requests/s at most 2 are in flight, so the third is sent only after an answer: the
    steady state is reached however slow the machine is (as it is with all sent at once).
    """
    for rate, concurrency in ((4.0, 2), (math.inf, None)):
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
        for stats in (serving.ttft, serving.tpot, serving.itl, serving.e2e):
            assert stats.min_s <= stats.p50_s <= stats.p90_s <= stats.p99_s <= stats.max_s
        assert serving.ttft.max_s <= serving.e2e.max_s
        assert serving.steady is not None, serving.steady_note
        assert 0 <= serving.steady.start_s < serving.steady.end_s <= serving.duration_s == result.duration_s
        assert 0 < serving.steady.output_tokens <= serving.output_tokens
        assert Path(serving.server_log).is_file() and Path(serving.server_log).parent.name == "servers"


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
    from fake_nvml import FAKE_NVML_DIR, load_fake_nvml

    fake = load_fake_nvml()
    scenario = tmp_path / "scenario.json"
    fake.write_scenario(str(scenario), [fake.FakeGpu(uuid="GPU-0000-sim", power_profile=[[0.0, 300.0]])])
    monkeypatch.setenv("FAKE_NVML_SCENARIO", str(scenario))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(FAKE_NVML_DIR), os.environ.get("PYTHONPATH", "")]))
    suite = ENERGY_SUITE.replace("STUB", repr(STUB)).replace("SWITCHES", repr(list(switches)))
    pytester.makepyfile(test_energy_serving=suite)
    state_dir = tmp_path / "state"
    run = pytester.runpytest_subprocess(
        "-p",
        "no:cacheprovider",
        "--llem",
        f"--llem-state-dir={state_dir}",
        "--llem-energy=nvml",
        "--llem-baseline=0",
        "--llem-sample-interval=0.02",
    )
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


def test_the_serving_table_says_why_a_figure_is_missing():
    from types import SimpleNamespace

    from pytest_llem.output.serving_table import format_serving_table

    records = [record(i, 0.0, [0.1, 0.2], 2) for i in range(3)]
    summary = summarise(
        records,
        server="stub",
        server_log=None,
        request_rate=math.inf,
        concurrency=None,
        slo={},
        whole=WindowMeasurement(duration_s=1.0),
        steady_span=None,
        steady_measured=None,
        steady_note="no steady state: the target concurrency was never reached",
    )
    offline = SimpleNamespace(nodeid="t::offline", result=SimpleNamespace(serving=None))
    assert format_serving_table([offline]) == []
    lines = format_serving_table(
        [offline, SimpleNamespace(nodeid="t::serve", result=SimpleNamespace(serving=summary))]
    )
    (row,) = [line.split() for line in lines if line.split()[:1] == ["t::serve"]]
    assert row[1] == "inf" and row[-5:] == ["100%", "0", "-", "-", "-"]
    assert lines[-1] == "t::serve: no steady state: the target concurrency was never reached"


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


def test_a_part_lies_inside_an_open_window_and_leaves_the_windows_figures_alone():
    from pytest_llem.context import ExperimentContext
    from pytest_llem.energy.meter import NoEnergyMeter

    ctx = ExperimentContext(build_config({}), NoEnergyMeter())
    with pytest.raises(RuntimeError, match="needs an open ctx.window"):
        ctx.begin_part("steady")
    with ctx.window():
        ctx.begin_part("steady")
        with pytest.raises(RuntimeError, match="already open"):
            ctx.begin_part("steady")
        time.sleep(0.01)
        part = ctx.end_part("steady")
    with pytest.raises(RuntimeError, match="never begun"):
        ctx.end_part("steady")
    (whole,) = ctx.windows
    assert 0 < part.duration_s <= whole.duration_s


# --- tokens, not chunks ----------------------------------------------------------------------


def chunked(index: int, sent: float, times: list[float], texts: list[str], usage: object, **fields):
    """A finished request whose chunks carry `texts`; its usage is read as a server's would be."""
    chunks = [StreamChunk(t, x) for t, x in zip(times, texts, strict=True)]
    rec = RequestRecord(index, sent, times[-1] + 0.01, chunks)
    read_chunk({"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": usage}}, times[-1], rec)
    for name, value in fields.items():
        setattr(rec, name, value)
    return rec


def summarise_records(records, count_text=None, steady_span=(0.0, 10.0), steady=None):
    return summarise(
        records,
        server="stub",
        server_log=None,
        request_rate=None,
        concurrency=2,
        slo={},
        whole=window(10.0, 100.0),
        steady_span=steady_span,
        steady_measured=steady or window(5.0, 50.0),
        steady_note=None,
        count_text=count_text,
    )


def test_a_chunk_of_k_tokens_counts_k_tokens_at_its_arrival_and_k_per_token_gaps():
    # Two tokens a chunk, usage in a final chunk of its own: 8 tokens in 4 chunks each.
    two = [" t0 t1", " t2 t3", " t4 t5", " t6 t7"]
    records = [chunked(0, 0.0, [1.0, 2.0, 3.0, 4.0], two, 8), chunked(1, 0.0, [1.5, 2.5, 3.5, 4.5], two, 8)]
    summary = summarise_records(records, steady_span=(1.8, 3.6))
    assert summary.output_tokens == 16 and summary.token_mismatches == summary.impossible_usage == 0
    assert summary.token_source == "chunks" and summary.warnings == []
    assert [r.chunk_tokens for r in records] == [[2, 2, 2, 2]] * 2
    # 4 chunks in [1.8, 3.6], 2 tokens each: 50 J / 8 tokens, not 50 J / 4 chunks.
    assert summary.steady.output_tokens == 8 and summary.energy_per_output_token_j == pytest.approx(6.25)
    # Per-token gaps: each later chunk's 1 s gap is 2 tokens of 0.5 s.
    assert summary.itl.count == 12 and summary.itl.max_s == pytest.approx(0.5)
    assert summary.tpot.p50_s == pytest.approx((4.01 - 1.0) / 7)


def test_per_chunk_usage_and_the_tokenizer_count_each_chunk_and_usage_sets_the_total():
    exact = RequestRecord(0, 0.0, 3.0)
    for time_s, cumulative in ((1.0, 1), (2.0, 4), (3.0, 5)):  # vLLM's continuous usage
        read_chunk(
            {"choices": [{"text": "x" * cumulative}], "usage": {"completion_tokens": cumulative}},
            time_s,
            exact,
        )
    read_chunk({"choices": [], "usage": {"completion_tokens": 5}}, 3.0, exact)
    counted = chunked(1, 0.0, [1.0, 2.0], ["a b c", "d"], 4)
    words = chunked(2, 0.0, [1.0, 2.0], ["a b c", "d"], 9)  # the tokenizer says 4: off by more than 2
    summary = summarise_records([exact, counted, words], count_text=lambda text: len(text.split()))
    assert exact.chunk_tokens == [1, 3, 1] and counted.chunk_tokens == [3, 1]
    assert words.chunk_tokens == [7, 2] and summary.output_tokens == 5 + 4 + 9
    assert summary.token_source == "tokenizer (2), usage_per_chunk (1)"
    assert summary.token_mismatches == 1
    (mismatch,) = summary.warnings
    assert mismatch.code == "token_mismatch" and mismatch.message.startswith(
        "1 of 3 requests: usage disagrees with what was streamed; usage counted (request 2: usage says 9"
    )


def test_usage_the_stream_cannot_hold_or_cannot_read_is_flagged_and_not_believed():
    liar = chunked(0, 0.0, [1.0, 2.0], [" t0", " t1"], 1_000_000)
    too_few = chunked(1, 0.0, [1.0, 2.0, 3.0], [" t0", " t1", " t2"], 2)
    text = chunked(2, 0.0, [1.0, 2.0], [" t0", " t1"], "2")  # a string where a number belongs
    honest = chunked(3, 0.0, [1.0, 2.0], [" t0", " t1"], 2)
    summary = summarise_records([liar, too_few, text, honest])
    assert summary.output_tokens == 2 + 3 + 2 + 2  # the stream's own count where usage is doubtful
    assert (summary.impossible_usage, summary.token_mismatches) == (2, 1)
    flags = {w.code: w.message for w in summary.warnings}
    assert flags["impossible_usage"].startswith("2 of 4 requests: usage the streamed text cannot hold")
    assert (
        "request 0: usage claims 1000000 completion tokens, 2 chunks of text were streamed"
        in flags["impossible_usage"]
    )
    assert "request 2: usage completion_tokens '2' is not a whole number" in flags["token_mismatch"]


def test_the_steady_windows_flags_and_uncertainty_travel_with_its_figures():
    from pytest_llem.energy.quality import assess_window

    def measured(duration_s: float, samples: int) -> WindowMeasurement:
        device = DeviceEnergy(
            device="gpu0",
            energy_j=300 * duration_s,
            duration_s=duration_s,
            energy_source="nvml-counter",
            power_samples=samples,
        )
        return WindowMeasurement(
            duration_s=duration_s, devices=[device], warnings=assess_window(duration_s, [device])
        )

    records = [chunked(0, 0.0, [1.0, 2.0], [" t0", " t1"], 2)]
    steady = measured(0.31, 3)
    summary = summarise_records(records, steady_span=(1.0, 1.31), steady=steady)
    codes = [w.code for w in summary.warnings]
    assert codes == ["short_window", "few_power_samples"]
    assert all(w.message.startswith("steady-state window: ") for w in summary.warnings)
    # Its own uncertainty: a 0.31 s window's counter resolution, not the whole load's.
    assert summary.steady.energy_uncertainty.parts["counter_resolution"] == pytest.approx(
        0.1 / math.sqrt(6) / 0.31
    )
    whole = measured(20.0, 400)
    result = assemble_result(
        identity={"experiment_id": "e", "config_hash": "c", "config": {}, "workload": None},
        measured=whole,
        window_count=1,
        input_tokens=None,
        output_tokens=2,
        batch_latencies_s=[],
        first_token_latencies_s=[],
        inter_token_latencies_s=[],
        peak_memory=None,
        flops_estimate=None,
        rounds=[],
        phase_durations_s={},
        extra={},
        serving=summary,
        started_at=datetime.now(timezone.utc),
        finished_at=datetime.now(timezone.utc),
    )
    assert result.flagged and [w.code for w in result.warnings] == codes
    result.energy_uncertainty = energy_uncertainty(result)
    assert result.uncertainty_of("energy_per_output_token_j") == summary.steady.energy_uncertainty
    assert result.uncertainty_of("energy_per_request_whole_j") == result.energy_uncertainty
    cells = [
        line
        for line in format_summary(
            [make_entry("t::serve", result)], SummaryView(("test", "energy_per_output_token_j", "status"))
        )
    ]
    steady_pct = 100 * summary.steady.energy_uncertainty.relative
    assert any(f"±{steady_pct:.1f}%" in line and "passed !" in line for line in cells)


# --- equal work, round trips, bad input ------------------------------------------------------


def serving_result(n_requests: int, rate: float | None = 2.0, concurrency: int | None = None):
    summary = ServingSummary(
        server="stub",
        request_rate=rate,
        concurrency=concurrency,
        n_requests=n_requests,
        completed=n_requests,
        errors=0,
        duration_s=1.0,
        output_tokens=2 * n_requests,
        good_requests=n_requests,
    )
    config = {"scenario": "serving", "request_rate": "inf" if rate == math.inf else rate, "max_new_tokens": 2}
    return make_result([10.0], serving=summary, config=config)


def test_a_load_of_another_size_rate_or_concurrency_is_other_work():
    from pytest_llem.gating.compare import compare_reports
    from pytest_llem.gating.work import describe_work, work_differences

    def work(result):
        return describe_work(result.config, result, "prompts")

    assert work_differences(work(serving_result(64)), work(serving_result(64))) == []
    assert work_differences(work(serving_result(64)), work(serving_result(2))) == ["n_requests 64 -> 2"]
    assert work_differences(work(serving_result(4, 2.0)), work(serving_result(4, math.inf))) == [
        "request_rate 2.0 -> 'inf'"
    ]
    assert work_differences(work(serving_result(4, None, 2)), work(serving_result(4, None, 4))) == [
        "concurrency 2 -> 4"
    ]
    base, now = serving_result(64), serving_result(2)
    comparison = compare_reports(
        make_report("base", [make_entry("t::serve", base, work=work(base))]),
        make_report("now", [make_entry("t::serve", now, work=work(now))]),
        [parse_limit("requests_per_s:5%")],
    )
    assert comparison.incomparable == {"t::serve": "n_requests 64 -> 2"}
    assert {c.status for c in comparison.changes} == {"incomparable"}


def test_an_infinite_rate_survives_a_report_round_trip():
    from pytest_llem.output.serving_table import format_serving_table
    from pytest_llem.store.report import ReportEntry

    entry = make_entry("t::serve", serving_result(3, math.inf))
    again = ReportEntry.model_validate_json(entry.model_dump_json())
    assert again.result.serving.request_rate == math.inf
    (row,) = [line.split() for line in format_serving_table([again]) if line.startswith("t::serve")]
    assert row[1] == "inf"


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


def test_negative_or_nan_latencies_are_refused_in_one_line():
    from pytest_llem.context import ExperimentContext
    from pytest_llem.energy.meter import NoEnergyMeter

    ctx = ExperimentContext(build_config({}), NoEnergyMeter())
    for bad in (-0.5, math.nan, math.inf):
        with pytest.raises(ValueError) as caught:
            ctx.record_latency(first_token_s=bad)
        assert (
            str(caught.value)
            == f"ctx.record_latency(first_token_s=...) takes a finite number of seconds >= 0, got {bad!r}"
        )
    assert ctx.first_token_latencies_s == []


def test_a_server_that_trickles_bytes_hits_the_limit_on_the_whole_request(tmp_path):

    from pytest_llem.backends.serving.loadgen import LoadPlan, run_load
    from pytest_llem.backends.serving.server import ServerProcess, free_port

    port = free_port()
    command = [part.replace("{port}", str(port)) for part in stub_server("--trickle", "30")]
    server = ServerProcess(command, dict(os.environ), port, tmp_path / "stub.log")
    try:
        server.wait_healthy(30)
        plan = LoadPlan(server.base_url, "m", ["a b"], 4, 0.0, None, 1, 0, request_timeout_s=1.0)
        started = time.monotonic()
        (record,), _ = run_load(plan)
        elapsed = time.monotonic() - started
    finally:
        server.stop()
    assert record.error == "no complete answer within 1 s (the limit on a whole request)"
    assert elapsed < 10 and not record.ok


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
    run = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--llem", f"--llem-state-dir={state_dir}")
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
