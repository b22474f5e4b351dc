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
from pathlib import Path

import pytest
from helpers import SUPPORT_DIR, read_pids, reports, start_llem_pytest, wait_for_file, wait_until_all_gone

from pytest_llem.backends import BACKEND_ENV_DEFAULTS
from pytest_llem.backends.serving.loadgen import RequestRecord, SteadyState, arrival_offsets
from pytest_llem.backends.serving.server import HOST, server_command, server_env
from pytest_llem.backends.serving.summary import summarise
from pytest_llem.backends.serving.workload import request_extra
from pytest_llem.config import build_config, canonical_config_json, compute_config_hash
from pytest_llem.errors import ConfigError, ExperimentFailed
from pytest_llem.gating.metrics import METRICS
from pytest_llem.results import DeviceEnergy, RoundResult, WindowMeasurement

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


def record(index: int, sent: float, chunks: list[float], usage: int | None, error: str | None = None):
    done = None if error else chunks[-1] + 0.01
    return RequestRecord(index, sent, done, chunks, usage, 4, error)


def window(duration_s: float, energy_j: float | None) -> WindowMeasurement:
    return WindowMeasurement(
        duration_s=duration_s, devices=[DeviceEnergy(device="gpu0", energy_j=energy_j, duration_s=duration_s)]
    )


def test_summary_rates_percentiles_goodput_and_energy():
    records = [
        record(0, 0.0, [0.1, 0.2, 0.3, 0.4], 4),  # ttft 0.1, tpot 0.1033
        record(1, 0.5, [1.5, 1.6, 1.7, 1.8], 4),  # ttft 1.0: misses the ttft objective
        record(2, 1.0, [1.2, 1.3, 1.4], 4),  # usage says 4, 3 streamed: a mismatch
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
    assert summary.error_samples == ["request 3: HTTP 500: boom"] and summary.token_mismatches == 1
    assert summary.output_tokens == 12 and summary.input_tokens == 12
    assert summary.requests_per_s == 1.5 and summary.output_tokens_per_s == 6.0
    assert summary.good_requests == 2 and summary.goodput == 0.5
    assert summary.ttft.count == 3 and summary.ttft.p50_s <= summary.ttft.p90_s <= summary.ttft.p99_s
    assert summary.itl.count == 8
    assert summary.energy_per_request_whole_j == pytest.approx(100 / 3)
    assert summary.energy_per_output_token_whole_j == pytest.approx(100 / 12)
    assert summary.energy_per_good_request_j == pytest.approx(50.0)
    # Steady state: 6 streamed tokens arrived in [0.3, 1.5] -> 10 J/token, x 4 tokens a request.
    assert summary.steady.output_tokens == 6 and summary.energy_per_output_token_j == pytest.approx(10.0)
    assert summary.energy_per_request_j == pytest.approx(40.0)

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
    """`transformers serve` on the tiny model: exact counts, usage agrees with the stream.

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
        assert serving.token_mismatches == 0 and serving.input_tokens == result.input_tokens > 0
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
        server=[sys.executable, STUB, "--port", "{port}", "--token-delay", "0.02"],
        concurrency=4, n_requests=16, max_new_tokens=8, warmup_requests=1,
    )
    assert result.serving.completed == 16
"""


def test_energy_per_request_whole_and_steady_on_simulated_gpus(pytester, tmp_path, monkeypatch):
    """Simulated GPUs at a constant 300 W: every window's energy is 300 W x its duration, right to
    one step of the counter (it advances every 100 ms, as a real one does)."""
    from fake_nvml import FAKE_NVML_DIR, load_fake_nvml

    fake = load_fake_nvml()
    scenario = tmp_path / "scenario.json"
    fake.write_scenario(str(scenario), [fake.FakeGpu(uuid="GPU-0000-sim", power_profile=[[0.0, 300.0]])])
    monkeypatch.setenv("FAKE_NVML_SCENARIO", str(scenario))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(FAKE_NVML_DIR), os.environ.get("PYTHONPATH", "")]))
    pytester.makepyfile(test_energy_serving=ENERGY_SUITE.replace("STUB", repr(STUB)))
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
    result = report["experiments"][0]["result"]
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
    run.stdout.fnmatch_lines(
        ["serving test*J/req*J/tok*J/req_whole", "test_energy_serving.py::test_serve *c4 *"]
    )
    (row,) = [
        line.split()
        for line in run.stdout.lines
        if line.split()[:2] == ["test_energy_serving.py::test_serve", "c4"]
    ]
    assert float(row[-3]) == pytest.approx(serving["energy_per_request_j"], rel=0.01)


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
