"""The server under test: its command, its environment, and its life inside the experiment.

The server is a child of the experiment's worker and stays in the worker's process group
(no new session, no new group), so every teardown path of an experiment (Ctrl-C, timeout,
pytest killed) reaches it and whatever it spawned. It listens on a free port of 127.0.0.1
only. Its stdout and stderr go to a file kept in the state dir, under
`servers/<experiment_id>.log`; when it fails to start or dies, the error quotes its last lines.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

from pytest_llem.config import ExperimentConfig
from pytest_llem.errors import LlemError
from pytest_llem.processes import signal_name

HOST = "127.0.0.1"
HEALTH_PATHS = ("/health", "/v1/models")
HEALTH_POLL_INTERVAL_S = 0.5
LOG_TAIL_LINES = 20
STOP_GRACE_S = 5.0
DTYPES = {"auto": "auto", "fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}


class ServerFailed(LlemError):
    """The server never became healthy, or died while it was measured; the message says why."""


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on now (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _console_script(name: str) -> str:
    """The script installed next to this interpreter (a venv's bin), else the one on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.is_file():
        return str(beside)
    return shutil.which(name) or name


def server_command(config: ExperimentConfig, port: int) -> list[str]:
    """The command line that starts `config.server` on `port` of 127.0.0.1."""
    server = config.server
    model = str(config.model)
    if isinstance(server, list):
        return [part.replace("{model}", model).replace("{port}", str(port)) for part in server]
    if server == "vllm":
        from pytest_llem.backends.vllm import engine_kwargs

        kwargs = engine_kwargs(config)
        kwargs.pop("model")
        if "batch_size" not in config.model_fields_set:
            # batch_size defaults to 1: a server capped at one sequence would measure nothing useful.
            kwargs.pop("max_num_seqs")
        command = [_console_script("vllm"), "serve", model, "--host", HOST, "--port", str(port)]
        for key, value in kwargs.items():
            flag = "--" + key.replace("_", "-")
            if isinstance(value, bool):
                command += [flag] if value else []
            else:
                command += [flag, str(value)]
        return command
    if server == "transformers":
        device = "auto" if config.device == "auto" else config.device
        command = [_console_script("transformers"), "serve", model, "--host", HOST, "--port", str(port)]
        command += ["--device", device, "--dtype", DTYPES[config.precision], "--log-level", "info"]
        return command + ["--default-seed", str(config.seed)]
    raise ValueError(f"unknown server {server!r}")


def server_env(config: ExperimentConfig, base_env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The server's environment: the worker's (which holds `config.env`), over vLLM's defaults."""
    from pytest_llem.backends import BACKEND_ENV_DEFAULTS

    base = dict(os.environ if base_env is None else base_env)
    env = dict(BACKEND_ENV_DEFAULTS["vllm"]) if config.server == "vllm" else {}
    env.update(base)
    env.setdefault("PYTHONUNBUFFERED", "1")  # so the log tail is current when the server fails
    return env


def server_label(config: ExperimentConfig) -> str:
    server = config.server
    return Path(server[0]).name if isinstance(server, list) else str(server)


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no server log)"
    tail = text.rstrip().splitlines()[-lines:]
    return "\n".join(tail) if tail else "(the server wrote nothing)"


def describe_status(returncode: int) -> str:
    if returncode < 0:
        return f"was killed by {signal_name(-returncode)}"
    return f"exited with status {returncode}"


class ServerProcess:
    """A started server: its process, port and log; `wait_healthy`, `check_alive`, `stop`."""

    def __init__(self, command: list[str], env: Mapping[str, str], port: int, log: Path) -> None:
        self.command = command
        self.port = port
        self.log = log
        self.base_url = f"http://{HOST}:{port}"
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "ab") as out:
            try:
                # Same process group as the worker: the experiment's teardown covers the server.
                self.proc = subprocess.Popen(
                    command, env=dict(env), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
                )
            except OSError as exc:
                raise ServerFailed(f"server command {command[0]!r} could not start: {exc}") from None

    def failure(self, what: str) -> ServerFailed:
        return ServerFailed(f"{what}; server log {self.log}, last lines:\n{log_tail(self.log)}")

    def check_alive(self) -> None:
        returncode = self.proc.poll()
        if returncode is not None:
            raise self.failure(f"the server {describe_status(returncode)}")

    def wait_healthy(self, timeout_s: float) -> str:
        """Poll the health endpoint until it answers 200; the path that answered."""
        import httpx

        deadline = time.monotonic() + timeout_s
        with httpx.Client(timeout=HEALTH_POLL_INTERVAL_S * 4, trust_env=False) as client:
            while True:
                returncode = self.proc.poll()
                if returncode is not None:
                    raise self.failure(f"the server {describe_status(returncode)} before it became healthy")
                for path in HEALTH_PATHS:
                    try:
                        if client.get(self.base_url + path).status_code == 200:
                            return path
                    except httpx.HTTPError:
                        break  # not listening yet
                if time.monotonic() > deadline:
                    raise self.failure(
                        f"the server did not answer {HEALTH_PATHS[0]} with 200 on port {self.port} within "
                        f"server_startup_timeout={timeout_s:g} s (raise server_startup_timeout= if it "
                        "loads slowly)"
                    )
                time.sleep(HEALTH_POLL_INTERVAL_S)

    def stop(self, grace_s: float = STOP_GRACE_S) -> int | None:
        """SIGTERM, `grace_s` to exit, then SIGKILL. Its own children are left to the
        experiment's teardown, which kills the whole process group."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode
