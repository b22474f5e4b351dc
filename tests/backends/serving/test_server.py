"""The server's command line and environment, per server kind."""

from __future__ import annotations

import json
from pathlib import Path

from serving_loads import (
    SERVING,
)

from pytest_llem.backends import BACKEND_ENV_DEFAULTS
from pytest_llem.backends.serving.server import (
    HOST,
    describe_status,
    log_tail,
    server_command,
    server_env,
    server_label,
)
from pytest_llem.backends.serving.workload import request_extra
from pytest_llem.config import build_config

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


def test_a_servers_label_log_tail_and_exit_read_as_one_line_each(tmp_path):
    assert server_label(build_config({**SERVING, "server": ["/opt/bin/srv", "{port}"]})) == "srv"
    assert server_label(build_config({**SERVING, "server": "vllm", "model": "m"})) == "vllm"
    log = tmp_path / "server.log"
    assert log_tail(log) == "(no server log)"
    log.write_text("")
    assert log_tail(log) == "(the server wrote nothing)"
    log.write_text("".join(f"line {i}\n" for i in range(50)) + "\n\n")
    assert log_tail(log, lines=2) == "line 48\nline 49"
    assert describe_status(3) == "exited with status 3"
    assert describe_status(-9) == "was killed by SIGKILL"
